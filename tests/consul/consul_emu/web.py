"""Request and response values passed between the HTTP server and the endpoint handlers."""

import json
import urllib.parse

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"


class Request:
    """An HTTP request with Go-style query parsing (`?passing` is present with value "")."""

    def __init__(self, method, target, headers, body, connection=None):
        split = urllib.parse.urlsplit(target)
        self.method = method                 # upper-case verb
        self.path = urllib.parse.unquote(split.path)  # decoded path, as Go's URL.Path
        self.raw_query = split.query         # query string as sent
        self.params = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        self.headers = headers               # email.message.Message (case-insensitive)
        self.body = body                     # raw bytes
        self.connection = connection         # client socket, kept open across a restart
        self.log_entry = None                # request-log record (set for /v1 requests)

    def param(self, name, default=None):
        """First value of a query parameter, like Go's url.Values.Get (default when absent)."""
        values = self.params.get(name)
        return values[0] if values else default

    def has(self, name):
        return name in self.params


class Response:
    """What to send back. `chunks` streams a body of known `length`."""

    def __init__(self, status=200, body=b"", content_type=None, headers=None):
        self.status = status                  # HTTP status code
        self.body = body                      # bytes
        self.content_type = content_type      # None: no Content-Type header
        self.headers = dict(headers or {})    # extra headers
        self.chunks = None                    # iterator of bytes, replaces body
        self.length = None                    # Content-Length when streaming
        self.truncate = False                 # send half the body, then close
        self.close = False                    # add Connection: close


def encode_json(obj, pretty=False):
    """Serialise like Go's encoding/json: compact, HTML-safe escapes, raw UTF-8."""
    if pretty:
        text = json.dumps(obj, indent=4, ensure_ascii=False) + "\n"
    else:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text.encode("utf-8")


def json_response(obj, status=200, headers=None, pretty=False):
    return Response(status, encode_json(obj, pretty), JSON_TYPE, headers)


def text_response(status, text, headers=None):
    return Response(status, text.encode("utf-8"), TEXT_TYPE if text else None, headers)


def empty_response(status=200, headers=None):
    return Response(status, b"", None, headers)
