"""
One error tree for multiproxy.

Every error a person can act on derives from `MultiproxyError`.  Errors that
map to an HTTP answer carry the status code to send, so the Twisted layer
never has to guess.
"""

from __future__ import annotations


class MultiproxyError(Exception):
    """Base class of every error multiproxy raises on purpose."""


class ConfigError(MultiproxyError):
    """A configuration value is wrong; the message names the key and the problem."""


class ProtocolError(MultiproxyError):
    """
    A peer broke the HTTP/1.x grammar or a limit; `status` is what to answer.
    ``request_line`` is the (method, target, version) of a request refused
    after its request line was read, else None.
    """

    status: int = 400
    reason: bytes = b"Bad Request"
    request_line: tuple[bytes, bytes, bytes] | None = None

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
            self.reason = STATUS_REASONS.get(status, b"Error")


class HeadTooLarge(ProtocolError):
    """The request or response head is larger than the configured limit."""

    status = 431
    reason = b"Request Header Fields Too Large"


class TargetTooLong(ProtocolError):
    """The request line is longer than the configured limit."""

    status = 414
    reason = b"URI Too Long"


class BodyTooLarge(ProtocolError):
    """The body is larger than the configured limit."""

    status = 413
    reason = b"Content Too Large"


class UnsupportedFraming(ProtocolError):
    """A transfer coding or feature this proxy does not implement."""

    status = 501
    reason = b"Not Implemented"


class UpstreamError(MultiproxyError):
    """
    Reaching or talking to the upstream failed; `status` is what the client
    sees, `kind` one word for counting (one of `UPSTREAM_ERROR_KINDS`).
    """

    status: int = 502
    retry_after: int | None = None
    """Seconds for the answer's ``Retry-After``, when there is a sensible one."""
    ended: str = "upstream-error"
    """How the access log says the exchange ended."""

    def __init__(self, message: str, status: int = 502, kind: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


UPSTREAM_ERROR_KINDS = (
    "connect-refused", "connect-timeout", "dns", "connect", "tls", "response-timeout",
    "stalled", "closed", "invalid-response", "parent-refused", "no-parent", "error",
)
"""Kinds of `UpstreamError`: where reaching or talking to the upstream went wrong."""


class PoolUnavailable(UpstreamError):
    """
    No backend of a reverse proxy's pool could take the request: all are
    ejected (``ended`` is ``no-backend``) or none could be connected to
    (``connect-failed``).  The answer is 503 with ``Retry-After``; a cache
    in front may answer from storage instead.
    """

    def __init__(self, message: str, retry_after: int, ended: str) -> None:
        super().__init__(message, 503)
        self.retry_after = retry_after
        self.ended = ended


class ParentsUnavailable(UpstreamError):
    """
    No parent proxy of a forward proxy could take the request and its
    fallback is to fail: every parent is down (``ended`` is ``no-parent``)
    or none could be reached (``connect-failed``).  The answer is 502.
    """

    def __init__(self, message: str, kind: str, ended: str) -> None:
        super().__init__(message, 502, kind)
        self.ended = ended


STATUS_REASONS: dict[int, bytes] = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    203: b"Non-Authoritative Information",
    204: b"No Content",
    206: b"Partial Content",
    301: b"Moved Permanently",
    302: b"Found",
    304: b"Not Modified",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    411: b"Length Required",
    412: b"Precondition Failed",
    413: b"Content Too Large",
    414: b"URI Too Long",
    416: b"Range Not Satisfiable",
    417: b"Expectation Failed",
    421: b"Misdirected Request",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}
