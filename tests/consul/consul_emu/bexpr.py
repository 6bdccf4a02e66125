"""A subset of go-bexpr, the `?filter=` language, evaluated over response JSON objects.

Supported: `==`, `!=`, `in`, `not in`, `contains`, `not contains`, `matches`,
`not matches`, `is empty`, `is not empty`, `and`, `or`, `not`, parentheses; selectors as
dotted paths (`Service.Meta.version`, `Checks.Status`) with a list on the way collecting
every element's value. Values are "double quoted", `backquoted`, numbers or bare words.
"""

import re

_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<op>==|!=|\(|\))'
                    r'|(?P<word>[A-Za-z0-9_.\-/:]+))')
_KEYWORDS = {"and", "or", "not", "in", "contains", "matches", "is", "empty"}


class FilterError(ValueError):
    """An expression that does not parse; str() is the message after Consul's prefix."""


def _tokenize(text):
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match:
            raise FilterError("1:%d: no match found, expected a selector or value" % (pos + 1))
        pos = match.end()
        if match.group("str"):
            tokens.append(("value", bytes(match.group("str")[1:-1], "utf-8")
                           .decode("unicode_escape")))
        elif match.group("raw"):
            tokens.append(("value", match.group("raw")[1:-1]))
        elif match.group("op"):
            tokens.append(("op", match.group("op")))
        else:
            word = match.group("word")
            tokens.append(("kw", word) if word in _KEYWORDS else ("word", word))
    return tokens


class _Parser:
    def __init__(self, text):
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self, offset=0):
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else (None, None)

    def take(self, kind=None, value=None):
        token = self.peek()
        if token[0] is None or (kind and token[0] != kind) or (value and token[1] != value):
            raise FilterError("unexpected %s, expected %s" % (token[1] or "end of input",
                                                              value or kind or "more input"))
        self.pos += 1
        return token[1]

    def parse(self):
        node = self.or_expr()
        if self.peek()[0] is not None:
            raise FilterError("unexpected %r after expression" % (self.peek()[1],))
        return node

    def or_expr(self):
        node = self.and_expr()
        while self.peek() == ("kw", "or"):
            self.take()
            node = ("or", node, self.and_expr())
        return node

    def and_expr(self):
        node = self.not_expr()
        while self.peek() == ("kw", "and"):
            self.take()
            node = ("and", node, self.not_expr())
        return node

    def not_expr(self):
        if self.peek() == ("kw", "not"):
            self.take()
            return ("not", self.not_expr())
        if self.peek() == ("op", "("):
            self.take()
            node = self.or_expr()
            self.take("op", ")")
            return node
        return self.match_expr()

    def match_expr(self):
        first = self.take()
        negate = False
        if self.peek() == ("kw", "not") and self.peek(1)[1] == "in":
            self.take()
            negate = True
        if self.peek() == ("kw", "in"):
            self.take()
            return self._negated(negate, ("in", self.selector(), first))
        selector = _selector(first)
        token = self.peek()
        if token in (("op", "=="), ("op", "!=")):
            self.take()
            return self._negated(token[1] == "!=", ("eq", selector, self.value()))
        if token == ("kw", "is"):
            self.take()
            negate = self.peek() == ("kw", "not")
            if negate:
                self.take()
            self.take("kw", "empty")
            return self._negated(negate, ("empty", selector))
        if token == ("kw", "not"):
            self.take()
            negate = True
        operator = self.take("kw")
        if operator == "contains":
            return self._negated(negate, ("in", selector, self.value()))
        if operator == "matches":
            pattern = self.value()
            try:
                return self._negated(negate, ("re", selector, re.compile(pattern)))
            except re.error as err:
                raise FilterError("invalid regular expression: %s" % err) from None
        raise FilterError("unexpected %r" % operator)

    @staticmethod
    def _negated(negate, node):
        return ("not", node) if negate else node

    def selector(self):
        return _selector(self.take("word"))

    def value(self):
        kind, text = self.peek()
        if kind not in ("value", "word"):
            raise FilterError("expected a value, got %s" % (text or "end of input"))
        self.pos += 1
        return text


def _selector(text):
    parts = [p for p in re.split(r"[./]", text) if p]
    if not parts:
        raise FilterError("invalid selector %r" % text)
    return parts


def compile_filter(text, top_fields):
    """Parse an expression; selectors must start with one of top_fields."""
    try:
        tree = _Parser(text).parse()
        _check_selectors(tree, top_fields)
    except RecursionError:
        raise FilterError("expression nested too deeply") from None
    return lambda obj: _eval(tree, obj)


def _check_selectors(node, top_fields):
    if node[0] in ("and", "or"):
        _check_selectors(node[1], top_fields)
        _check_selectors(node[2], top_fields)
    elif node[0] == "not":
        _check_selectors(node[1], top_fields)
    elif node[1][0] not in top_fields:
        raise FilterError('Selector "%s" is not valid' % ".".join(node[1]))


def _select(obj, path):
    values = [obj]
    for part in path:
        nxt = []
        for value in values:
            if isinstance(value, list):
                value = [v.get(part) for v in value if isinstance(v, dict)]
                nxt.append(value)
            elif isinstance(value, dict):
                nxt.append(value.get(part))
        values = nxt
    return values[0] if len(values) == 1 else values


def _text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _eval(node, obj):
    op = node[0]
    if op == "and":
        return _eval(node[1], obj) and _eval(node[2], obj)
    if op == "or":
        return _eval(node[1], obj) or _eval(node[2], obj)
    if op == "not":
        return not _eval(node[1], obj)
    value = _select(obj, node[1])
    if op == "empty":
        return value in (None, "", [], {})
    if op == "eq":
        if isinstance(value, list):
            return any(_text(v) == node[2] for v in value)
        return _text(value) == node[2]
    if op == "in":
        if isinstance(value, (list, dict)):
            return node[2] in [_text(v) for v in value] if isinstance(value, list) \
                else node[2] in value
        return node[2] in _text(value)
    return bool(node[2].search(_text(value)))
