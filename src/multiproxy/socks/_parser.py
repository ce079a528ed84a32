"""
The SOCKS handshake, sans I/O: bytes in, events out.

`SocksParser` reads what a client sends before the tunnel opens: a SOCKS5
(RFC 1928) method greeting, the username/password sub-negotiation (RFC
1929) and the request, or a SOCKS4 / SOCKS4a request.  It owns no socket
and no clock; the protocol in `multiproxy.socks._proxy` feeds it, acts on
its events and writes the replies built here.  Every bad input raises a
`SocksError` carrying the reply the protocol's own rules give for it, so
the caller writes ``error.reply`` and closes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "AUTH_NONE",
    "AUTH_USERPASS",
    "NO_ACCEPTABLE_METHOD",
    "REPLY_ADDRESS_NOT_SUPPORTED",
    "REPLY_COMMAND_NOT_SUPPORTED",
    "REPLY_CONNECTION_REFUSED",
    "REPLY_GENERAL_FAILURE",
    "REPLY_HOST_UNREACHABLE",
    "REPLY_NETWORK_UNREACHABLE",
    "REPLY_NOT_ALLOWED",
    "REPLY_SUCCEEDED",
    "REPLY_TTL_EXPIRED",
    "ConnectRequest",
    "Credentials",
    "Greeting",
    "SocksError",
    "SocksParser",
    "socks4_reply",
    "socks5_reply",
]

AUTH_NONE = 0x00
AUTH_USERPASS = 0x02
NO_ACCEPTABLE_METHOD = 0xFF

# RFC 1928 section 6, the REP field.
REPLY_SUCCEEDED = 0x00
REPLY_GENERAL_FAILURE = 0x01
REPLY_NOT_ALLOWED = 0x02
REPLY_NETWORK_UNREACHABLE = 0x03
REPLY_HOST_UNREACHABLE = 0x04
REPLY_CONNECTION_REFUSED = 0x05
REPLY_TTL_EXPIRED = 0x06
REPLY_COMMAND_NOT_SUPPORTED = 0x07
REPLY_ADDRESS_NOT_SUPPORTED = 0x08

_SOCKS4_GRANTED = 0x5A
_SOCKS4_REJECTED = 0x5B

MAX_SOCKS4_FIELD = 255
"""Longest SOCKS4 user id or SOCKS4a host name (NUL-terminated fields have no length byte)."""

AddressType = Literal["ipv4", "ipv6", "domain"]


@dataclass(frozen=True, slots=True)
class Greeting:
    """A SOCKS5 client's offer of authentication methods."""

    methods: frozenset[int]


@dataclass(frozen=True, slots=True)
class Credentials:
    """An RFC 1929 username and password."""

    username: bytes
    password: bytes


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """
    A CONNECT request: the destination the client wants a tunnel to.

    @ivar version: 5, or 4 (SOCKS4 and SOCKS4a).
    @ivar host: an IP literal (canonical form) or a domain name as sent
        (ASCII; the caller normalises it).
    @ivar user_id: the SOCKS4 USERID field (not a credential), else None.
    """

    version: int
    host: str
    port: int
    address_type: AddressType
    user_id: bytes | None = None


class SocksError(Exception):
    """
    The client sent something the handshake cannot accept.

    @ivar reply: the bytes to send before closing (may be empty).
    @ivar ended: a short word for the access log.
    """

    def __init__(self, message: str, reply: bytes, ended: str = "bad-request") -> None:
        super().__init__(message)
        self.reply = reply
        self.ended = ended


def socks5_reply(code: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    """A SOCKS5 reply with ``code`` and the bound address (an IP literal)."""
    if ":" in host:
        atyp, packed = b"\x04", ipaddress.IPv6Address(host).packed
    else:
        atyp, packed = b"\x01", ipaddress.IPv4Address(host).packed
    return b"\x05" + bytes((code, 0)) + atyp + packed + port.to_bytes(2, "big")


def socks4_reply(granted: bool, host: str = "0.0.0.0", port: int = 0) -> bytes:
    """A SOCKS4 reply: request granted (0x5A) or rejected (0x5B)."""
    try:
        packed = ipaddress.IPv4Address(host).packed
    except ValueError:
        packed = b"\x00" * 4
    code = _SOCKS4_GRANTED if granted else _SOCKS4_REJECTED
    return bytes((0, code)) + port.to_bytes(2, "big") + packed


# The failure replies, made once: every parsed request names one in advance.
_FAILURES5 = {code: socks5_reply(code) for code in range(1, 9)}


def _reply5(code: int) -> bytes:
    return _FAILURES5[code]


_SOCKS4_FAILURE = socks4_reply(False)

State = Literal[
    "start", "greeting", "method", "auth", "auth-check", "request", "socks4", "done", "failed"
]


class SocksParser:
    """
    The client side of one SOCKS handshake, as a state machine.

    Call `feed` with whatever arrived; it returns the events complete so far.
    After a `Greeting`, the caller picks a method with `choose_method` (and
    sends what it returns); after `Credentials`, it calls `authenticated`.
    After a `ConnectRequest` the parser is done: `rest` holds any bytes that
    followed it (tunnel data sent early).  `SocksError` ends the handshake.
    """

    def __init__(self, max_buffer: int = 64 * 1024) -> None:
        self.state: State = "start"
        self.version: int | None = None
        self._buffer = bytearray()
        self._max_buffer = max_buffer

    @property
    def rest(self) -> bytes:
        """Bytes received after the request (to relay once the tunnel opens)."""
        return bytes(self._buffer) if self.state == "done" else b""

    def feed(self, data: bytes) -> list[Greeting | Credentials | ConnectRequest]:
        """Add ``data``; return the events now complete (raise `SocksError` on bad input)."""
        if self.state == "failed":
            return []
        self._buffer += data
        if len(self._buffer) > self._max_buffer:
            self.state = "failed"
            raise SocksError("too much data before the tunnel opened", self.failure_reply())
        events: list[Greeting | Credentials | ConnectRequest] = []
        try:
            while True:
                event = self._step()
                if event is None:
                    break
                events.append(event)
        except SocksError:
            self.state = "failed"
            raise
        return events

    def choose_method(self, method: int) -> bytes:
        """Answer the greeting with ``method`` (0xFF refuses); return the bytes to send."""
        if self.state != "method":
            raise RuntimeError(f"no greeting to answer (state {self.state})")
        if method == NO_ACCEPTABLE_METHOD:
            self.state = "failed"
        else:
            self.state = "auth" if method == AUTH_USERPASS else "request"
        return bytes((5, method))

    def authenticated(self, ok: bool) -> bytes:
        """The RFC 1929 status to send after checking the credentials."""
        if self.state != "auth-check":
            raise RuntimeError(f"no credentials to answer (state {self.state})")
        self.state = "request" if ok else "failed"
        return b"\x01\x00" if ok else b"\x01\x01"

    def failure_reply(self) -> bytes:
        """What to send when the handshake is cut short here (a timeout, an end of input)."""
        if self.version == 4:
            return _SOCKS4_FAILURE
        return {
            "start": b"",
            "greeting": bytes((5, NO_ACCEPTABLE_METHOD)),
            "method": bytes((5, NO_ACCEPTABLE_METHOD)),
            "auth": b"\x01\x01",
            "auth-check": b"\x01\x01",
        }.get(self.state, _reply5(REPLY_GENERAL_FAILURE))

    # -- states ------------------------------------------------------------------

    def _step(self) -> Greeting | Credentials | ConnectRequest | None:
        buf = self._buffer
        state = self.state
        if state == "start":
            if not buf:
                return None
            if buf[0] == 5:
                self.version, self.state = 5, "greeting"
            elif buf[0] == 4:
                self.version, self.state = 4, "socks4"
            else:
                raise SocksError(f"unknown SOCKS version {buf[0]}",
                                 bytes((5, NO_ACCEPTABLE_METHOD)))
            return self._step()
        if state == "greeting":
            if len(buf) < 2 or len(buf) < 2 + buf[1]:
                return None
            count = buf[1]
            methods = frozenset(buf[2:2 + count])
            del buf[:2 + count]
            if not methods:
                raise SocksError("no authentication method offered",
                                 bytes((5, NO_ACCEPTABLE_METHOD)))
            self.state = "method"
            return Greeting(methods)
        if state == "auth":
            return self._credentials()
        if state == "request":
            return self._request5()
        if state == "socks4":
            return self._request4()
        return None  # waiting for the caller (method, auth-check) or done

    def _credentials(self) -> Credentials | None:
        buf = self._buffer
        if not buf:
            return None
        if buf[0] != 1:
            raise SocksError(f"unknown username/password version {buf[0]}", b"\x01\x01")
        if len(buf) < 2 or len(buf) < 3 + buf[1]:
            return None
        ulen = buf[1]
        plen = buf[2 + ulen]
        if len(buf) < 3 + ulen + plen:
            return None
        username = bytes(buf[2:2 + ulen])
        password = bytes(buf[3 + ulen:3 + ulen + plen])
        del buf[:3 + ulen + plen]
        self.state = "auth-check"
        return Credentials(username, password)

    def _request5(self) -> ConnectRequest | None:
        buf = self._buffer
        if not buf:
            return None
        if buf[0] != 5:
            raise SocksError(f"request with SOCKS version {buf[0]}",
                             _reply5(REPLY_GENERAL_FAILURE))
        if len(buf) < 2:
            return None
        if buf[1] != 1:
            name = {2: "BIND", 3: "UDP ASSOCIATE"}.get(buf[1], f"command {buf[1]}")
            raise SocksError(f"{name} is not supported (CONNECT only)",
                             _reply5(REPLY_COMMAND_NOT_SUPPORTED), "unsupported")
        if len(buf) < 4:
            return None
        atyp = buf[3]
        if atyp == 1:
            end = 4 + 4
        elif atyp == 4:
            end = 4 + 16
        elif atyp == 3:
            if len(buf) < 5:
                return None
            if buf[4] == 0:
                raise SocksError("empty host name", _reply5(REPLY_HOST_UNREACHABLE))
            end = 5 + buf[4]
        else:
            raise SocksError(f"address type {atyp} is not supported",
                             _reply5(REPLY_ADDRESS_NOT_SUPPORTED), "unsupported")
        if len(buf) < end + 2:
            return None
        raw = bytes(buf[4:end]) if atyp != 3 else bytes(buf[5:end])
        port = int.from_bytes(buf[end:end + 2], "big")
        del buf[:end + 2]
        if atyp == 1:
            host, kind = str(ipaddress.IPv4Address(raw)), "ipv4"
        elif atyp == 4:
            host, kind = str(ipaddress.IPv6Address(raw)), "ipv6"
        else:
            host, kind = _domain(raw, _reply5(REPLY_HOST_UNREACHABLE)), "domain"
        self.state = "done"
        return ConnectRequest(5, host, port, kind)  # type: ignore[arg-type]

    def _request4(self) -> ConnectRequest | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        if buf[1] != 1:
            raise SocksError(f"SOCKS4 command {buf[1]} is not supported (CONNECT only)",
                             _SOCKS4_FAILURE, "unsupported")
        if len(buf) < 9:
            return None
        user_end = buf.find(b"\x00", 8)
        if user_end < 0:
            if len(buf) > 8 + MAX_SOCKS4_FIELD:
                raise SocksError("SOCKS4 user id too long", _SOCKS4_FAILURE)
            return None
        port = int.from_bytes(buf[2:4], "big")
        ip = bytes(buf[4:8])
        user_id = bytes(buf[8:user_end])
        if len(user_id) > MAX_SOCKS4_FIELD:
            raise SocksError("SOCKS4 user id too long", _SOCKS4_FAILURE)
        if ip[:3] == b"\x00\x00\x00" and ip[3] != 0:
            # SOCKS4a: 0.0.0.x (x != 0) means a host name follows the user id.
            name_end = buf.find(b"\x00", user_end + 1)
            if name_end < 0:
                if len(buf) > user_end + 1 + MAX_SOCKS4_FIELD:
                    raise SocksError("SOCKS4a host name too long", _SOCKS4_FAILURE)
                return None
            raw = bytes(buf[user_end + 1:name_end])
            if len(raw) > MAX_SOCKS4_FIELD:
                raise SocksError("SOCKS4a host name too long", _SOCKS4_FAILURE)
            if not raw:
                raise SocksError("empty SOCKS4a host name", _SOCKS4_FAILURE)
            del buf[:name_end + 1]
            host, kind = _domain(raw, _SOCKS4_FAILURE), "domain"
        else:
            del buf[:user_end + 1]
            host, kind = str(ipaddress.IPv4Address(ip)), "ipv4"
        self.state = "done"
        return ConnectRequest(4, host, port, kind, user_id)  # type: ignore[arg-type]


def _domain(raw: bytes, reply: bytes) -> str:
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise SocksError("host name is not ASCII", reply) from None
    if not name.isprintable() or " " in name:
        raise SocksError("host name has control characters or spaces", reply)
    return name
