"""
Peeking at a CONNECT tunnel's first flight before relaying it.

After ``200 Connection established`` the client's bytes go to a `HelloGate`
instead of straight to the tunnel's `Relay`: the gate holds them (bounded in
size by the `HelloReader` and in time by a timer) until it knows whether
they start a TLS handshake and what its ClientHello asks for, asks a judge,
and then either hands every held byte, unchanged, to the relay (which from
then on gets the client's bytes directly, splice included), or ends the
tunnel.  Bytes from the origin flow to the client all along, so protocols
where the server speaks first still work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from multiproxy.forward._sni import ClientHello, HelloError, HelloReader, NotTLS
from multiproxy.transport._relay import Relay

__all__ = ["HelloGate", "alert"]

ACCESS_DENIED = 49
DECODE_ERROR = 50


def alert(description: int) -> bytes:
    """A fatal TLS alert record (RFC 8446 6), sent in the clear before the handshake."""
    return bytes((21, 3, 1, 0, 2, 2, description))


class HelloGate:
    """
    Stands between the client and its tunnel's relay until the first flight
    is judged.

    ``judge(answer)`` gets a `ClientHello`, a `NotTLS`, or None (the client
    ended its side before sending anything) and returns None to let the
    tunnel through or a one-line reason to refuse it.  ``passed(relay)`` is
    called when the tunnel is let through, so the owner can route the
    client's bytes to the relay directly from then on.
    """

    def __init__(
        self,
        reactor: Any,
        relay: Relay,
        judge: Callable[[ClientHello | NotTLS | None], str | None],
        passed: Callable[[Relay], None],
        *,
        timeout: float | None = 10.0,
        reader: HelloReader | None = None,
    ) -> None:
        self.reactor = reactor
        self.relay = relay
        self.judge = judge
        self.passed = passed
        self.timeout = timeout
        self.reader = reader or HelloReader()
        self.refused: str | None = None
        """Why the tunnel was refused, once it was."""
        self._held: list[bytes] = []
        self._timer: Any = None
        self._done = False

    def downstream_data(self, data: bytes) -> None:
        """Bytes from the client: held until the first flight is judged."""
        if self._done:
            if self.refused is None:
                self.relay.downstream_data(data)
            return
        self._held.append(data)
        try:
            answer = self.reader.feed(data)
        except HelloError as e:
            self._refuse(f"malformed TLS ClientHello: {e}", alert(DECODE_ERROR))
            return
        if answer is None:
            if self._timer is None and self.timeout:
                self._timer = self.reactor.callLater(self.timeout, self._timed_out)
            return
        self._decide(answer)

    def downstream_eof(self) -> None:
        """The client ended its side: judge what came (nothing counts as not TLS)."""
        if not self._done:
            if self._held:
                self._refuse("the client closed its side in the middle of a ClientHello")
                return
            self._decide(None)
        if self.refused is None:
            self.relay.downstream_eof()

    def downstream_lost(self, reason) -> None:
        """The client's connection is gone."""
        self._stop_timer()
        self._done = True
        self.relay.downstream_lost(reason)

    def _timed_out(self) -> None:
        self._timer = None
        if not self._done:
            self._refuse(f"no complete TLS ClientHello within {self.timeout:g} s")

    def _decide(self, answer: ClientHello | NotTLS | None) -> None:
        self._stop_timer()
        reason = self.judge(answer)
        if reason is not None:
            self._refuse(reason, alert(ACCESS_DENIED) if isinstance(answer, ClientHello) else b"")
            return
        self._done = True
        held, self._held = self._held, []
        self.passed(self.relay)
        if held:
            self.relay.downstream_data(b"".join(held))

    def _refuse(self, reason: str, answer: bytes = b"") -> None:
        self._stop_timer()
        self._done = True
        self.refused = reason
        self.relay.bytes_from_downstream += sum(map(len, self._held))
        self._held = []
        if answer and self.relay.ended is None:
            self.relay.downstream.write(answer)
        self.relay.end("denied")

    def _stop_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
