"""
A corpus of request-smuggling and parsing vectors for HTTP/1.x.

Each `Vector` is one complete message.  Request vectors use
``http://origin.test/`` targets and ``Host: origin.test`` so they can be
replayed through a live forward proxy: `Vector.render` swaps in the real
origin's authority.  ``status`` is the answer expected (None: the message is
valid and must be accepted, with ``body`` as its decoded body); ``stage``
says which check refuses it: the message reader ("parser"), the
absolute-form target check ("target") or the CONNECT authority check
("authority").  Response vectors (``direction == "response"``) are what an
upstream might send; a proxy answers its client 502 for each.

Sizes for the limit vectors follow the reader's default `Limits`.

Load with `load_vectors()`; this file has no imports from the package so it
can be used by any harness.
"""

from __future__ import annotations

from dataclasses import dataclass

ORIGIN = b"origin.test"


@dataclass(frozen=True)
class Vector:
    """One hostile or tricky message and the answer expected for it."""

    name: str
    data: bytes
    status: int | None
    stage: str = "parser"
    direction: str = "request"
    body: bytes | None = None
    note: str = ""

    def render(self, authority: bytes) -> bytes:
        """The message with ``origin.test`` replaced by ``authority`` (e.g. b"127.0.0.1:8000")."""
        return self.data.replace(ORIGIN, authority)


def _req(head_fields: bytes, body: bytes = b"", method: bytes = b"POST", version=b"HTTP/1.1") -> bytes:
    return (
        method + b" http://origin.test/ " + version + b"\r\nHost: origin.test\r\n" + head_fields + b"\r\n" + body
    )


def _target(target: bytes, method: bytes = b"GET") -> bytes:
    return method + b" " + target + b" HTTP/1.1\r\nHost: origin.test\r\n\r\n"


_CHUNKED = b"Transfer-Encoding: chunked\r\n"


def _chunked(body: bytes) -> bytes:
    return _req(_CHUNKED, body)


_VECTORS: list[Vector] = [
    # -- CL.TE / TE.CL -------------------------------------------------------
    Vector("cl-te", _req(b"Content-Length: 13\r\n" + _CHUNKED, b"0\r\n\r\nSMUGGLED"), 400,
           note="front end uses CL, back end TE"),
    Vector("te-cl", _req(_CHUNKED + b"Content-Length: 3\r\n", b"8\r\nSMUGGLED\r\n0\r\n\r\n"), 400,
           note="front end uses TE, back end CL"),
    Vector("cl-te-zero-cl", _req(b"Content-Length: 0\r\n" + _CHUNKED, b"5\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("te-cl-http10", _req(_CHUNKED + b"Content-Length: 5\r\n", b"hello", version=b"HTTP/1.0"), 400),
    Vector("te-http10", _req(_CHUNKED, b"0\r\n\r\n", version=b"HTTP/1.0"), 400,
           note="RFC 9112 6.1: TE in HTTP/1.0 means faulty framing"),
    # -- TE.TE obfuscations --------------------------------------------------
    Vector("te-xchunked", _req(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), 400,
           note="RFC 9112 6.3: final coding not chunked -> 400 and close"),
    Vector("te-chunkedx", _req(b"Transfer-Encoding: chunkedx\r\n", b"0\r\n\r\n"), 400),
    Vector("te-identity", _req(b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n", b"hello"), 400),
    Vector("te-gzip-only", _req(b"Transfer-Encoding: gzip\r\n", b"hello"), 400),
    Vector("te-chunked-identity", _req(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"), 400),
    Vector("te-identity-chunked", _req(b"Transfer-Encoding: identity, chunked\r\n", b"0\r\n\r\n"), 501),
    Vector("te-chunked-chunked", _req(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"), 400),
    Vector("te-two-fields", _req(_CHUNKED + b"Transfer-Encoding: identity\r\n", b"0\r\n\r\n"), 400),
    Vector("te-two-fields-x-first", _req(b"Transfer-Encoding: x\r\n" + _CHUNKED, b"0\r\n\r\n"), 501),
    Vector("te-space-before-colon", _req(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), 400),
    Vector("te-tab-before-colon", _req(b"Transfer-Encoding\t: chunked\r\n", b"0\r\n\r\n"), 400),
    Vector("te-vtab-value", _req(b"Transfer-Encoding: \x0bchunked\r\n", b"0\r\n\r\n"), 400),
    Vector("te-formfeed-value", _req(b"Transfer-Encoding: chunked\x0c\r\n", b"0\r\n\r\n"), 400),
    Vector("te-nul-value", _req(b"Transfer-Encoding: chunked\x00\r\n", b"0\r\n\r\n"), 400),
    Vector("te-leading-space-line", _req(b" Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400,
           note="whitespace-led line = obs-fold of the Host line"),
    Vector("te-obs-fold", _req(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"), 400),
    Vector("te-obs-fold-tab", _req(b"X: y\r\n\tTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400),
    Vector("te-quoted", _req(b'Transfer-Encoding: "chunked"\r\n', b"0\r\n\r\n"), 400),
    Vector("te-params", _req(b"Transfer-Encoding: chunked;q=1\r\n", b"0\r\n\r\n"), 400),
    Vector("te-empty", _req(b"Transfer-Encoding: \r\n", b""), 400),
    Vector("te-empty-elements", _req(b"Transfer-Encoding: ,chunked\r\n", b"0\r\n\r\n"), 400,
           note="stricter than RFC 9110 5.6.1 on purpose: list parsers disagree"),
    Vector("te-underscore", _req(b"Transfer_Encoding: chunked\r\nContent-Length: 5\r\n", b"hello"), 400,
           note="CGI back ends read Transfer_Encoding as Transfer-Encoding"),
    Vector("te-unicode-k", _req(b"Transfer-Encoding: chun\xe2\x84\xaaed\r\n", b"0\r\n\r\n"), 400,
           note="KELVIN SIGN lower-cases to k in some parsers"),
    Vector("te-gzip-chunked", _req(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501),
    Vector("te-bare-cr-name", _req(b"Transfer-Encoding\r: chunked\r\n", b"0\r\n\r\n"), 400),
    # -- Content-Length --------------------------------------------------------
    Vector("cl-two-different", _req(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"), 400),
    Vector("cl-list-different", _req(b"Content-Length: 5, 6\r\n", b"hello!"), 400),
    Vector("cl-plus", _req(b"Content-Length: +5\r\n", b"hello"), 400),
    Vector("cl-minus", _req(b"Content-Length: -5\r\n", b"hello"), 400),
    Vector("cl-hex", _req(b"Content-Length: 0x5\r\n", b"hello"), 400),
    Vector("cl-decimal-point", _req(b"Content-Length: 5.0\r\n", b"hello"), 400),
    Vector("cl-exponent", _req(b"Content-Length: 5e0\r\n", b"hello"), 400),
    Vector("cl-inner-space", _req(b"Content-Length: 5 5\r\n", b"hello"), 400),
    Vector("cl-empty", _req(b"Content-Length: \r\n", b""), 400),
    Vector("cl-trailing-comma", _req(b"Content-Length: 5,\r\n", b"hello"), 400),
    Vector("cl-overflow-64", _req(b"Content-Length: 18446744073709551621\r\n", b"hello"), 400,
           note="2**64 + 5: wraps to 5 in a 64-bit parser"),
    Vector("cl-overflow-long", _req(b"Content-Length: " + b"9" * 40 + b"\r\n", b"hello"), 400),
    Vector("cl-arabic-digit", _req(b"Content-Length: \xd9\xa5\r\n", b"hello"), 400),
    Vector("cl-fullwidth-digit", _req(b"Content-Length: \xef\xbc\x95\r\n", b"hello"), 400),
    Vector("cl-space-before-colon", _req(b"Content-Length : 5\r\n", b"hello"), 400),
    Vector("cl-vtab", _req(b"Content-Length:\x0b5\r\n", b"hello"), 400),
    Vector("cl-nul", _req(b"Content-Length: 5\x00\r\n", b"hello"), 400),
    Vector("cl-underscore", _req(b"Content_Length: 5\r\n", b"hello"), 400),
    Vector("cl-obs-fold", _req(b"Content-Length:\r\n 5\r\n", b"hello"), 400),
    # -- chunked bodies --------------------------------------------------------
    Vector("chunk-size-17-hex", _chunked(b"1" + b"0" * 16 + b"\r\nhello\r\n0\r\n\r\n"), 400,
           note="2**64: wraps to 0 in a 64-bit parser"),
    Vector("chunk-size-overflow-f", _chunked(b"f" * 17 + b"\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-size-negative", _chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-size-plus", _chunked(b"+5\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-size-0x", _chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-size-empty", _chunked(b"\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-size-leading-space", _chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-size-trailing-space", _chunked(b"5 \r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-size-trailing-tab", _chunked(b"5\t\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-size-underscore", _chunked(b"5_0\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-size-nul", _chunked(b"5\x00\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-size-bare-lf", _chunked(b"5\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-data-bare-lf", _chunked(b"5\r\nhello\n0\r\n\r\n"), 400),
    Vector("chunk-data-too-long", _chunked(b"3\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-data-bare-cr", _chunked(b"5\r\nhello\r0\r\n\r\n"), 400),
    Vector("chunk-last-bare-lf", _chunked(b"5\r\nhello\r\n0\n\n"), 400),
    Vector("chunk-ext-long", _chunked(b"5;x=" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n"), 400,
           note="bounded by Limits.max_chunk_line (4096)"),
    Vector("chunk-ext-bare-lf", _chunked(b"5;x\ny\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-ext-bare-cr", _chunked(b"5;x\ry\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-ext-ctl", _chunked(b"5;x=\x01\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-ext-empty", _chunked(b"5;\r\nhello\r\n0\r\n\r\n"), 400),
    Vector("chunk-ext-unterminated-quote", _chunked(b'5;x="a\r\nhello\r\n0\r\n\r\n'), 400),
    Vector("trailer-obs-fold", _chunked(b"0\r\nX: a\r\n b\r\n\r\n"), 400),
    Vector("trailer-space-before-colon", _chunked(b"0\r\nX : a\r\n\r\n"), 400),
    Vector("trailer-nul", _chunked(b"0\r\nX: \x00\r\n\r\n"), 400),
    Vector("trailer-bare-lf", _chunked(b"0\r\nX: a\n\r\n"), 400),
    Vector("trailer-too-large", _chunked(b"0\r\nX: " + b"a" * 70000 + b"\r\n\r\n"), 431),
    # -- line endings and control bytes -----------------------------------------
    Vector("bare-lf-head", b"GET http://origin.test/ HTTP/1.1\nHost: origin.test\n\n", 400),
    Vector("bare-lf-one-field", _req(b"X: a\nContent-Length: 5\r\n", b"hello"), 400),
    Vector("bare-lf-terminator", b"GET http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\n", 400),
    Vector("bare-cr-head", b"GET http://origin.test/ HTTP/1.1\rHost: origin.test\r\n\r\n", 400),
    Vector("bare-cr-value", _req(b"X: a\rContent-Length: 5\r\n", b"hello"), 400),
    Vector("nul-method", b"GE\x00T http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n", 400),
    Vector("nul-target", b"GET http://origin.test/\x00 HTTP/1.1\r\nHost: origin.test\r\n\r\n", 400),
    Vector("nul-name", _req(b"X\x00: a\r\n", method=b"GET"), 400),
    Vector("nul-value", _req(b"X: a\x00b\r\n", method=b"GET"), 400),
    Vector("ctl-value-escape", _req(b"X: \x1b[2J\r\n", method=b"GET"), 400),
    Vector("ctl-value-del", _req(b"X: a\x7f\r\n", method=b"GET"), 400),
    Vector("ctl-value-backspace", _req(b"X: a\x08\r\n", method=b"GET"), 400),
    Vector("obs-fold-space", _req(b"X: a\r\n b\r\n", method=b"GET"), 400),
    Vector("obs-fold-tab", _req(b"X: a\r\n\tb\r\n", method=b"GET"), 400),
    Vector("empty-field-name", _req(b": a\r\n", method=b"GET"), 400),
    Vector("field-without-colon", _req(b"X a\r\n", method=b"GET"), 400),
    Vector("field-name-separator", _req(b"X/Y: a\r\n", method=b"GET"), 400),
    Vector("field-name-utf8", _req(b"X\xc3\xa9: a\r\n", method=b"GET"), 400),
    Vector("many-leading-empty-lines", b"\r\n" * 20 + _target(b"http://origin.test/"), 400),
    # -- limits -----------------------------------------------------------------
    Vector("request-line-too-long", _target(b"http://origin.test/" + b"a" * 9000), 414),
    Vector("field-too-long", _req(b"X: " + b"a" * 70000 + b"\r\n", method=b"GET"), 431),
    Vector("head-too-large", _req(b"".join(b"X-%d: %s\r\n" % (i, b"a" * 700) for i in range(99)), method=b"GET"), 431),
    Vector("too-many-fields", _req(b"X: a\r\n" * 101, method=b"GET"), 431),
    # -- request line ------------------------------------------------------------
    Vector("method-space", b"G ET http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n", 400),
    Vector("method-separator", b"GE(T http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n", 400),
    Vector("method-utf8", b"G\xc3\x89T http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n", 400),
    Vector("method-tab", b"GET\thttp://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n", 400),
    Vector("double-space", b"GET  http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n", 400),
    Vector("leading-space", b" GET http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n", 400),
    Vector("trailing-space", b"GET http://origin.test/ HTTP/1.1 \r\nHost: origin.test\r\n\r\n", 400),
    Vector("target-space", b"GET http://origin.test/a b HTTP/1.1\r\nHost: origin.test\r\n\r\n", 400),
    Vector("target-tab", b"GET http://origin.test/a\tb HTTP/1.1\r\nHost: origin.test\r\n\r\n", 400),
    Vector("target-del", b"GET http://origin.test/\x7f HTTP/1.1\r\nHost: origin.test\r\n\r\n", 400),
    Vector("target-raw-utf8", b"GET http://origin.test/\xc3\xa9 HTTP/1.1\r\nHost: origin.test\r\n\r\n", 400),
    Vector("http09", b"GET http://origin.test/\r\n\r\n", 400),
    Vector("version-lowercase", b"GET http://origin.test/ http/1.1\r\nHost: origin.test\r\n\r\n", 400),
    Vector("version-2", b"GET http://origin.test/ HTTP/2.0\r\nHost: origin.test\r\n\r\n", 505),
    Vector("version-0.9", b"GET http://origin.test/ HTTP/0.9\r\nHost: origin.test\r\n\r\n", 505),
    Vector("version-two-digits", b"GET http://origin.test/ HTTP/11.1\r\nHost: origin.test\r\n\r\n", 400),
    Vector("version-suffix", b"GET http://origin.test/ HTTP/1.1x\r\nHost: origin.test\r\n\r\n", 400),
    Vector("missing-host", b"GET http://origin.test/ HTTP/1.1\r\n\r\n", 400),
    Vector("double-host", b"GET http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\nHost: evil.test\r\n\r\n", 400),
    Vector("host-userinfo", b"GET http://origin.test/ HTTP/1.1\r\nHost: a@origin.test\r\n\r\n", 400),
    Vector("host-space", b"GET http://origin.test/ HTTP/1.1\r\nHost: origin.test evil\r\n\r\n", 400),
    Vector("host-path", b"GET http://origin.test/ HTTP/1.1\r\nHost: origin.test/x\r\n\r\n", 400),
    # -- absolute-form target oddities --------------------------------------------
    Vector("target-userinfo", _target(b"http://user@origin.test/"), 400, stage="target"),
    Vector("target-userinfo-password", _target(b"http://user:pw@origin.test/"), 400, stage="target"),
    Vector("target-userinfo-confusion", _target(b"http://origin.test@evil.test/"), 400, stage="target"),
    Vector("target-userinfo-encoded", _target(b"http://evil.test%40origin.test/"), None, stage="target",
           note="percent-encoded @ is a (strange) reg-name: accepted, the resolver refuses it"),
    Vector("target-empty-host", _target(b"http:///path"), 400, stage="target"),
    Vector("target-empty-host-port", _target(b"http://:80/"), 400, stage="target"),
    Vector("target-ipv6-unbracketed", _target(b"http://::1/"), 400, stage="target"),
    Vector("target-ipv6-unterminated", _target(b"http://[::1/"), 400, stage="target"),
    Vector("target-ipv6-invalid", _target(b"http://[::g]/"), 400, stage="target"),
    Vector("target-ipv6-zone", _target(b"http://[fe80::1%25eth0]/"), 400, stage="target"),
    Vector("target-ipvfuture", _target(b"http://[v7.x]/"), 400, stage="target"),
    Vector("target-ipv4-in-brackets", _target(b"http://[127.0.0.1]/"), 400, stage="target"),
    Vector("target-idn-raw", _target(b"http://b\xc3\xbccher.test/"), 400,
           note="raw UTF-8 is refused by the reader already; send IDNA (xn--)"),
    Vector("target-idn-punycode", _target(b"http://xn--bcher-kva.test/"), None, stage="target"),
    Vector("target-port-zero", _target(b"http://origin.test:0/"), 400, stage="target"),
    Vector("target-port-too-big", _target(b"http://origin.test:65536/"), 400, stage="target"),
    Vector("target-port-letters", _target(b"http://origin.test:8o/"), 400, stage="target"),
    Vector("target-port-sign", _target(b"http://origin.test:+80/"), 400, stage="target"),
    # A fragment is never sent in a target (RFC 9112 3.2): the reader refuses '#'.
    Vector("target-fragment", _target(b"http://origin.test/#frag"), 400),
    # A backslash before the query: read as "/" by some servers (path confusion).
    Vector("target-backslash-host", _target(b"http://evil.test\\@origin.test/"), 400),
    Vector("target-backslash-path", _target(b"http://origin.test/public\\..\\admin"), 400),
    Vector("target-scheme-ftp", _target(b"ftp://origin.test/"), 501, stage="target"),
    Vector("target-scheme-file", _target(b"file:///etc/passwd"), 501, stage="target"),
    Vector("target-scheme-relative", _target(b"//origin.test/"), 400, stage="target"),
    Vector("target-origin-form", _target(b"/path"), 400, stage="target"),
    Vector("target-asterisk", _target(b"*", method=b"OPTIONS"), 400, stage="target"),
    Vector("target-no-slashes", _target(b"http:origin.test/"), 400, stage="target"),
    # -- CONNECT authority oddities ------------------------------------------------
    Vector("connect-no-port", _target(b"origin.test", method=b"CONNECT"), 400, stage="authority"),
    Vector("connect-userinfo", _target(b"user@origin.test:443", method=b"CONNECT"), 400, stage="authority"),
    Vector("connect-path", _target(b"origin.test:443/x", method=b"CONNECT"), 400, stage="authority"),
    Vector("connect-absolute", _target(b"http://origin.test:443", method=b"CONNECT"), 400, stage="authority"),
    Vector("connect-ipv6-unbracketed", _target(b"::1:443", method=b"CONNECT"), 400, stage="authority"),
    Vector("connect-port-zero", _target(b"origin.test:0", method=b"CONNECT"), 400, stage="authority"),
    Vector("connect-empty-host", _target(b":443", method=b"CONNECT"), 400, stage="authority"),
    # -- tricky but valid: must be accepted, with this body ------------------------
    Vector("ok-chunked-mixed-case", _req(b"Transfer-Encoding: ChUnKeD\r\n", b"5\r\nhello\r\n0\r\n\r\n"), None,
           body=b"hello"),
    Vector("ok-te-tab-ows", _req(b"Transfer-Encoding:\tchunked\t\r\n", b"5\r\nhello\r\n0\r\n\r\n"), None,
           body=b"hello", note="HTAB is OWS (RFC 9110 5.6.3)"),
    Vector("ok-cl-identical-list", _req(b"Content-Length: 5, 5\r\n", b"hello"), None, body=b"hello",
           note="RFC 9110 8.6: identical values may be accepted; normalised to one field"),
    Vector("ok-cl-identical-fields", _req(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), None,
           body=b"hello"),
    Vector("ok-cl-leading-zeros", _req(b"Content-Length: 005\r\n", b"hello"), None, body=b"hello"),
    Vector("ok-chunk-ext", _chunked(b'5;a=b;c="d \\" e"\r\nhello\r\n0\r\n\r\n'), None, body=b"hello"),
    Vector("ok-chunk-size-leading-zeros", _chunked(b"0005\r\nhello\r\n0\r\n\r\n"), None, body=b"hello"),
    Vector("ok-chunk-upper-hex", _chunked(b"A\r\n0123456789\r\n0\r\n\r\n"), None, body=b"0123456789"),
    Vector("ok-trailers", _chunked(b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n"), None, body=b"hello"),
    Vector("ok-one-leading-empty-line", b"\r\n" + _target(b"http://origin.test/"), None, body=b""),
    Vector("ok-obs-text-value", _req(b"X: caf\xc3\xa9\r\n", method=b"GET"), None, body=b""),
    # -- responses (an upstream's answer; the proxy must answer 502) ---------------
    Vector("resp-cl-te", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
           400, direction="response", note="RFC lets TE win; a proxy refuses instead"),
    Vector("resp-cl-conflict", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
           400, direction="response"),
    Vector("resp-cl-signed", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", 400, direction="response"),
    Vector("resp-te-gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxxxx", 501, direction="response"),
    Vector("resp-te-http10", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
           direction="response"),
    Vector("resp-chunk-overflow", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           + b"1" + b"0" * 16 + b"\r\nx\r\n", 400, direction="response"),
    Vector("resp-obs-fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", 400,
           direction="response"),
    Vector("resp-bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", 400, direction="response"),
    Vector("resp-nul", b"HTTP/1.1 200 OK\r\nX: \x00\r\nContent-Length: 0\r\n\r\n", 400, direction="response"),
    Vector("resp-status-junk", b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", 400, direction="response"),
    Vector("resp-status-range", b"HTTP/1.1 999 Weird\r\nContent-Length: 0\r\n\r\n", 400, direction="response"),
    Vector("resp-not-http", b"SSH-2.0-OpenSSH_9.6\r\n\r\n", 400, direction="response"),
    Vector("resp-version-2", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", 505, direction="response"),
    Vector("resp-header-injection-cr", b"HTTP/1.1 200 OK\r\nX: a\rSet-Cookie: x=1\r\nContent-Length: 0\r\n\r\n",
           400, direction="response"),
]


def load_vectors(direction: str | None = None, stage: str | None = None) -> list[Vector]:
    """The vectors, optionally only those for one direction and/or stage."""
    return [
        v
        for v in _VECTORS
        if (direction is None or v.direction == direction) and (stage is None or v.stage == stage)
    ]
