"""
Frozen values that travel through the proxy pipeline.

Every proxy, whatever its layer, does the same five things: learn what the
client wants (an `Intent`), ask the policy (a `Decision`), choose an upstream,
relay, and report (an `AccessRecord`).  These values are the vocabulary of
that pipeline; they hold no sockets and need no reactor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from multiproxy.http1._headers import Headers

IntentKind = Literal["http", "connect", "tcp"]
Action = Literal["allow", "deny", "authenticate"]


@dataclass(frozen=True)
class Intent:
    """
    What a client asked a proxy for, as far as the proxy has learnt it.

    ``host`` is the normalised destination (lower case, no trailing dot, IDNA
    ASCII form, IP literals in canonical form); for a TCP relay it is empty and
    ``port`` is the listening port.  ``target`` is the absolute URL of an HTTP
    request, ``host:port`` for CONNECT and empty for a TCP connection.
    ``route`` is what the reverse proxy's routing matched (a `RouteMatch`),
    so its chooser picks the backend from the route's pool; None elsewhere.
    """

    kind: IntentKind
    proxy: str
    client_host: str
    client_port: int
    host: str = ""
    port: int = 0
    method: str = ""
    scheme: str = ""
    target: str = ""
    headers: Headers | None = None
    user: str | None = None
    groups: frozenset[str] = frozenset()
    route: Any = None

    def __init__(
        self,
        kind: IntentKind,
        proxy: str,
        client_host: str,
        client_port: int,
        host: str = "",
        port: int = 0,
        method: str = "",
        scheme: str = "",
        target: str = "",
        headers: Headers | None = None,
        user: str | None = None,
        groups: frozenset[str] = frozenset(),
        route: Any = None,
    ) -> None:
        # An Intent is made for every request.  The __init__ a frozen
        # dataclass generates sets each field through object.__setattr__,
        # four times the cost of this one update (dataclass keeps an
        # __init__ the class defines; tests/test_values.py checks that
        # this one matches the fields).
        self.__dict__.update(
            kind=kind, proxy=proxy, client_host=client_host, client_port=client_port,
            host=host, port=port, method=method, scheme=scheme, target=target,
            headers=headers, user=user, groups=groups, route=route,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What a policy decided about an `Intent`, and which rule decided it."""

    action: Action
    rule: str | None = None
    message: str | None = None
    parents: tuple[str, ...] = ()
    """Parent proxy URLs the deciding rule sends an allowed request through (forward proxy)."""

    @property
    def allowed(self) -> bool:
        return self.action == "allow"


ALLOW = Decision("allow", rule=None)


@dataclass(slots=True)
class AccessRecord:
    """
    One line of the access log: a finished request, tunnel or connection.

    Mutable while the exchange runs (the protocol fills it in as it learns),
    then handed to every `IReporter` once, when the exchange ends.
    """

    kind: IntentKind
    proxy: str
    started: float
    client_host: str
    client_port: int = 0
    user: str | None = None
    method: str = "-"
    target: str = "-"
    version: str = "HTTP/1.1"
    status: int = 0
    bytes_to_client: int = 0
    bytes_from_client: int = 0
    duration: float = 0.0
    referer: str | None = None
    user_agent: str | None = None
    upstream: str | None = None
    bytes_to_upstream: int = 0
    bytes_from_upstream: int = 0
    rule: str | None = None
    cache: str | None = None
    ended: str = "ok"
    extra: dict[str, str] = field(default_factory=dict)
    upstream_error: str | None = None
    """The `UpstreamError` kind when the upstream failed (``connect-refused``, ...)."""
