"""JSON request bodies decoded the way Consul's Go decoder does.

Field names match case-insensitively and snake_case aliases are accepted (Consul's
lib.TranslateKeys), unknown fields are ignored, null leaves the zero value, and a type
mismatch yields Go's error text. Map keys (Meta, Header) are never normalised.
"""

import json

from .durations import DurationError, parse_duration


class DecodeError(ValueError):
    """Body cannot be decoded; the HTTP layer prefixes "Request decode failed: "."""


# Schema types: "str", "int", "bool", "duration", ("list", T), ("map", T), or a Struct.
class Struct:
    """A Go struct: Go type name plus {FieldName: type}."""

    def __init__(self, go_name, fields):
        self.go_name = go_name
        self.fields = fields
        self.lookup = {_fold(name): name for name in fields}


def _fold(key):
    return key.replace("_", "").replace("-", "").lower()


_GO_TYPES = {"str": "string", "int": "int", "bool": "bool", "duration": "time.Duration"}


def _go_type(kind):
    if isinstance(kind, Struct):
        return "structs." + kind.go_name
    if isinstance(kind, tuple):
        if kind[0] == "list":
            return "[]" + _go_type(kind[1])
        return "map[string]" + _go_type(kind[1])
    return _GO_TYPES[kind]


def _json_type(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _mismatch(value, kind, where):
    return DecodeError("json: cannot unmarshal %s into Go struct field %s of type %s"
                       % (_json_type(value), where, _go_type(kind)))


def _decode_value(value, kind, where):
    if value is None:
        return None
    if isinstance(kind, Struct):
        if not isinstance(value, dict):
            raise _mismatch(value, kind, where)
        return decode_struct(value, kind)
    if isinstance(kind, tuple):
        return _decode_container(value, kind, where)
    if kind == "str":
        if not isinstance(value, str):
            raise _mismatch(value, kind, where)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _mismatch(value, kind, where)
        return value
    if kind == "int":
        if not _is_integral(value):
            raise _mismatch(value, kind, where)
        return int(value)
    return _decode_duration(value, where)


def _is_integral(value):
    # Go's int is 64-bit; fractions, booleans and out-of-range numbers do not decode.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not value.is_integer():
        return False
    return -(2**63) <= value < 2**63


def _decode_container(value, kind, where):
    if kind[0] == "list":
        if not isinstance(value, list):
            raise _mismatch(value, kind, where)
        return [_or_zero(_decode_value(item, kind[1], where), kind[1]) for item in value]
    if not isinstance(value, dict):
        raise _mismatch(value, kind, where)
    return {key: _or_zero(_decode_value(item, kind[1], where), kind[1])
            for key, item in value.items()}


def _or_zero(value, kind):
    # Go decodes a null element of a slice or map into the element's zero value.
    if value is not None:
        return value
    if isinstance(kind, (Struct, tuple)):
        return {} if not (isinstance(kind, tuple) and kind[0] == "list") else []
    return {"str": "", "int": 0, "bool": False, "duration": 0}[kind]


def _decode_duration(value, where):
    # Consul accepts "10s" strings and integer nanoseconds.
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except DurationError as err:
            raise DecodeError(str(err)) from None
    if not _is_integral(value):
        raise _mismatch(value, "duration", where)
    return int(value)


def decode_struct(raw, struct):
    """Decode a JSON object into {FieldName: value} for the fields that were present."""
    out = {}
    for key, value in raw.items():
        name = struct.lookup.get(_fold(key))
        if name is None:
            continue
        decoded = _decode_value(value, struct.fields[name], struct.go_name + "." + name)
        if decoded is not None:
            out[name] = decoded
    return out


def parse_body(body, struct):
    """Parse raw request bytes as one JSON object of the given struct."""
    if not body.strip():
        raise DecodeError("EOF")
    try:
        raw = load_json(body)
    except UnicodeDecodeError:
        raise DecodeError("invalid character in string literal") from None
    except ValueError as err:
        raise DecodeError(_json_error(err)) from None
    if not isinstance(raw, dict):
        raise DecodeError("json: cannot unmarshal %s into Go value of type structs.%s"
                          % (_json_type(raw), struct.go_name))
    return decode_struct(raw, struct)


def _reject_constant(name):
    raise ValueError("invalid character '%s' looking for beginning of value" % name[0])


def load_json(data):
    """json.loads as strict as Go: no NaN/Infinity, and absurd nesting is an error."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("exceeded max depth") from None


def _json_error(err):
    msg = getattr(err, "msg", str(err))
    pos = getattr(err, "pos", None)
    if pos is None:
        return msg
    return "%s (offset %d)" % (msg, pos)


SERVICE_ADDRESS = Struct("ServiceAddress", {"Address": "str", "Port": "int"})
WEIGHTS = Struct("Weights", {"Passing": "int", "Warning": "int"})

CHECK_TYPE = Struct("CheckType", {
    "CheckID": "str",
    "ID": "str",
    "Name": "str",
    "Notes": "str",
    "Status": "str",
    "ServiceID": "str",
    "HTTP": "str",
    "Header": ("map", ("list", "str")),
    "Method": "str",
    "Body": "str",
    "TLSServerName": "str",
    "TLSSkipVerify": "bool",
    "TCP": "str",
    "TTL": "duration",
    "Interval": "duration",
    "Timeout": "duration",
    "DeregisterCriticalServiceAfter": "duration",
    "SuccessBeforePassing": "int",
    "FailuresBeforeWarning": "int",
    "FailuresBeforeCritical": "int",
    "OutputMaxSize": "int",
    "Script": "str",
    "Args": ("list", "str"),
    "GRPC": "str",
    "UDP": "str",
    "AliasService": "str",
    "AliasNode": "str",
})

SERVICE_DEFINITION = Struct("ServiceDefinition", {
    "Kind": "str",
    "ID": "str",
    "Name": "str",
    "Tags": ("list", "str"),
    "Address": "str",
    "TaggedAddresses": ("map", SERVICE_ADDRESS),
    "Meta": ("map", "str"),
    "Port": "int",
    "Weights": WEIGHTS,
    "Check": CHECK_TYPE,
    "Checks": ("list", CHECK_TYPE),
    "EnableTagOverride": "bool",
})

CHECK_UPDATE = Struct("checkUpdate", {"Status": "str", "Output": "str"})

HEALTH_CHECK_DEFINITION = Struct("HealthCheckDefinition", {
    "HTTP": "str",
    "Header": ("map", ("list", "str")),
    "Method": "str",
    "TLSSkipVerify": "bool",
    "TCP": "str",
    "Interval": "duration",
    "Timeout": "duration",
    "DeregisterCriticalServiceAfter": "duration",
})

HEALTH_CHECK = Struct("HealthCheck", {
    "Node": "str",
    "CheckID": "str",
    "Name": "str",
    "Status": "str",
    "Notes": "str",
    "Output": "str",
    "ServiceID": "str",
    "ServiceName": "str",
    "Type": "str",
    "Definition": HEALTH_CHECK_DEFINITION,
})

NODE_SERVICE = Struct("NodeService", {
    "Kind": "str",
    "ID": "str",
    "Service": "str",
    "Tags": ("list", "str"),
    "Address": "str",
    "TaggedAddresses": ("map", SERVICE_ADDRESS),
    "Meta": ("map", "str"),
    "Port": "int",
    "Weights": WEIGHTS,
    "EnableTagOverride": "bool",
})

REGISTER_REQUEST = Struct("RegisterRequest", {
    "Datacenter": "str",
    "ID": "str",
    "Node": "str",
    "Address": "str",
    "TaggedAddresses": ("map", "str"),
    "NodeMeta": ("map", "str"),
    "Service": NODE_SERVICE,
    "Check": HEALTH_CHECK,
    "Checks": ("list", HEALTH_CHECK),
    "SkipNodeUpdate": "bool",
})

DEREGISTER_REQUEST = Struct("DeregisterRequest", {
    "Datacenter": "str",
    "Node": "str",
    "ServiceID": "str",
    "CheckID": "str",
})
