"""Exceptions that cross module boundaries and become HTTP responses."""


class HTTPError(Exception):
    """Answer the request with this status and plain-text body (Consul's HTTPError)."""

    def __init__(self, status, message="", headers=None):
        super().__init__(message)
        self.status = status              # HTTP status code
        self.message = message            # body, written without a trailing newline
        self.headers = dict(headers or {})  # extra response headers


class AbortConnection(Exception):
    """Close the client connection without answering (agent restart, `drop` fault)."""
