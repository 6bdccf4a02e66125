"""Go-compatible parsing of query-string values."""

_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_go_bool(text):
    """strconv.ParseBool; raises ValueError on anything else."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(text)


def bool_param(req, name):
    """Consul's getBoolQueryParam: absent False, "" True, else ParseBool (ValueError)."""
    if not req.has(name):
        return False
    value = req.param(name)
    return True if value == "" else parse_go_bool(value)


def go_quote(text):
    """Go's %q for the printable strings that show up in error messages."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
