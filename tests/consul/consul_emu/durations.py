"""Go time.Duration parsing and formatting, so the emulator reads and writes Consul's durations."""

import re

NANOSECOND = 1
MICROSECOND = 1_000
MILLISECOND = 1_000_000
SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # micro sign, as Go accepts
    "\u03bcs": MICROSECOND,  # Greek mu, as Go accepts
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}

_NUMBER = re.compile(r"(\d*)(?:\.(\d*))?")
_UNIT = re.compile(r"[^\d.]*")
_MAX_DURATION = 2**63 - 1


class DurationError(ValueError):
    """A duration string Go's time.ParseDuration would reject; str() is Go's message."""


def _quote(text):
    # Go quotes the original input with %q; plain double quotes match for the
    # printable ASCII that clients actually send.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_duration(text):
    """Parse a Go duration ("55s", "1m30s", "100ms") into integer nanoseconds.

    Raises DurationError with Go's exact wording so error bodies match Consul's.
    """
    original = text
    invalid = DurationError("time: invalid duration " + _quote(original))
    negative = False
    if text[:1] in ("+", "-"):
        negative = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if text == "":
        raise invalid
    total = 0
    while text:
        number = _NUMBER.match(text)
        whole, fraction = number.group(1), number.group(2)
        if whole == "" and not fraction:
            raise invalid
        text = text[number.end():]
        unit = _UNIT.match(text).group(0)
        if unit == "":
            raise DurationError("time: missing unit in duration " + _quote(original))
        if unit not in _UNITS:
            raise DurationError('time: unknown unit "%s" in duration %s' % (unit, _quote(original)))
        text = text[len(unit):]
        scale = _UNITS[unit]
        total += int(whole or "0") * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        if total > _MAX_DURATION:
            raise invalid
    return -total if negative else total


def _decimal(value, precision):
    # Prints value / 10**precision without trailing zeros, like Go's fmtFrac.
    whole, fraction = divmod(value, 10**precision)
    if fraction == 0:
        return str(whole)
    return "%d.%s" % (whole, str(fraction).rjust(precision, "0").rstrip("0"))


def format_duration(nanos):
    """Format integer nanoseconds the way Go's Duration.String() does ("10s", "1m0s")."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    value = abs(nanos)
    if value < MICROSECOND:
        return "%s%dns" % (sign, value)
    if value < MILLISECOND:
        return sign + _decimal(value, 3) + "\u00b5s"
    if value < SECOND:
        return sign + _decimal(value, 6) + "ms"
    text = _decimal(value % MINUTE, 9) + "s"
    minutes = value // MINUTE
    if minutes:
        text = "%dm%s" % (minutes % 60, text)
        if minutes >= 60:
            text = "%dh%s" % (minutes // 60, text)
    return sign + text


def to_seconds(nanos):
    """Nanoseconds as float seconds, for time.sleep() and Condition.wait()."""
    return nanos / SECOND
