"""
Header injection: CR/LF (and other control bytes) that a client smuggles
into values the proxy builds from its input never reach the upstream as
structure, and never split or forge an access-log line.

What the forward proxy builds from client input: the origin-form path (from
the target), ``Host`` (from the target's authority), ``Max-Forwards``
(decremented), the access log's request line, user agent and referer.
Everything else is passed on as received, and the reader already refuses
control bytes in a head.
"""

from __future__ import annotations

import re

import pytest
import pytest_twisted
from hardening import no_tracebacks, recorder, status_of, to_recorder  # noqa: F401
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback import raw_exchange

from multiproxy._accesslog import AccessLog, format_record
from multiproxy.pipeline._values import AccessRecord

# Combined Log Format with multiproxy's key=value tail: every quoted field is
# a run of non-quote characters or backslash escapes.
_QUOTED = r'"(?:[^"\\\x00-\x1f\x7f]|\\x[0-9A-F]{2}|\\\\|\\u[0-9a-f]{4}|\\U[0-9a-f]{8})*"'
COMBINED = re.compile(
    r"(?P<host>\S+) - (?P<user>\S+) \[[^\]]+\] (?P<request>" + _QUOTED + r") "
    r"(?P<status>\d{3}|-) (?P<size>\d+|-) (?P<referer>" + _QUOTED + r") (?P<agent>" + _QUOTED + r")"
    r" rt=\S+ up=\S+ cache=\S+ rule=\S+ end=\S+( in=\d+)?( sni=\S+( alpn=\S+)?)?"
    r"( reason=" + _QUOTED + ")?"
)


@pytest.fixture
def proxy(start_forward, recorder):
    port, _ = start_forward(chooser=to_recorder(recorder))
    return port


@pytest_twisted.ensureDeferred
async def test_percent_encoded_crlf_in_path_is_forwarded_still_encoded(proxy, recorder):
    paths = [
        b"/a%0d%0aX-Injected:%201",
        b"/a%0D%0A%0D%0AGET%20/smuggled%20HTTP/1.1",
        b"/q?x=%0d%0aSet-Cookie:%20a=b",
        b"/nul%00byte",
    ]
    request = b"".join(
        b"GET http://origin.test" + p + b" HTTP/1.1\r\nHost: origin.test\r\n\r\n" for p in paths
    )
    answer = await raw_exchange(proxy, request + b"GET http://origin.test/last HTTP/1.1\r\n"
                                b"Host: origin.test\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == len(paths) + 1
    # The origin saw exactly these targets, byte for byte, and no extra field.
    assert [r.target for r, _ in recorder.requests] == paths + [b"/last"]
    for request, _ in recorder.requests:
        names = {n for n, _ in request.headers}
        assert names <= {b"host", b"via", b"x-forwarded-for", b"connection"}, names
    assert b"X-Injected:" not in recorder.raw.replace(b"X-Injected:%20", b"")
    assert b"\r\nSet-Cookie" not in recorder.raw


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET http://a%0d%0ab.test/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET http://a%0ax-injected:1.test/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET http://a%00.test/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"CONNECT a%0d%0ab.test:443 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ],
    ids=["crlf", "lf-field", "nul", "connect-crlf"],
)
@pytest_twisted.ensureDeferred
async def test_encoded_control_bytes_in_host_are_refused(proxy, recorder, request_bytes):
    answer = await raw_exchange(proxy, request_bytes, timeout=5)
    assert status_of(answer) == 400
    body = answer.partition(b"\r\n\r\n")[2]
    assert re.fullmatch(rb"[\x20-\x7e]*\n", body), body
    assert recorder.raw == b""


@pytest_twisted.ensureDeferred
async def test_field_values_pass_byte_for_byte_and_max_forwards_is_rebuilt(proxy, recorder):
    request = (
        b"OPTIONS http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n"
        b"Max-Forwards: 0005\r\n"
        b"X-Quote: a\"b\\c\r\n"
        b"X-Latin: caf\xe9 \xff\r\n"
        b"Connection: close\r\n\r\n"
    )
    answer = await raw_exchange(proxy, request)
    assert status_of(answer) == 200
    [(seen, _)] = recorder.requests
    fields = dict(seen.headers)
    assert fields[b"max-forwards"] == b"4"
    assert fields[b"x-quote"] == b'a"b\\c'
    assert fields[b"x-latin"] == b"caf\xe9 \xff"
    assert fields[b"host"] == b"origin.test"
    assert all(c.h11_error is None for c in recorder.connections)


@pytest_twisted.ensureDeferred
async def test_access_log_lines_stay_one_line_each_for_hostile_requests(
    start_forward, recorder, tmp_path
):
    from twisted.internet import reactor

    path = tmp_path / "access.log"
    log = AccessLog(reactor, str(path))
    port, _ = start_forward(chooser=to_recorder(recorder), reporters=(log,))
    hostile = [
        (
            b"GET http://origin.test/a%0d%0ab HTTP/1.1\r\nHost: x\r\n"
            b"User-Agent: evil\" 200 0 \"-\" \"forged\r\nReferer: http://r/\\\"x\r\n\r\n"
        ),
        b"GET http://origin.test/ HTTP/1.1\r\nHost: x\r\nUser-Agent: \xe9\xff\x80\r\n\r\n",
        b"GET http://origin.test/ HTTP/1.1\r\nHost: x\r\nX: a\rInjected: 1\r\n\r\n",
        b"GE\x00T http://origin.test/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://origin.test/\x1b[2J HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT origin.test:443 HTTP/1.1\r\nHost: x\r\nUser-Agent: t\tab\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
    ]
    for data in hostile:
        await raw_exchange(port, data + b"GET http://origin.test/ HTTP/1.1\r\nHost: x\r\n"
                           b"Connection: close\r\n\r\n", timeout=5)
    log.close()
    text = path.read_bytes()
    lines = text.split(b"\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    assert len(lines) >= len(hostile)
    for line in lines:
        assert re.fullmatch(rb"[\x20-\x7e]+", line), line
        assert COMBINED.fullmatch(line.decode("ascii")), line
    agents = [COMBINED.fullmatch(line.decode()).group("agent") for line in lines]
    # The forged quote is escaped, so "forged" stays inside the agent field.
    assert any("forged" in agent for agent in agents)
    assert b'"forged' not in text



@pytest_twisted.ensureDeferred
async def test_refused_requests_are_logged_with_their_request_line_and_reason(
    start_forward, recorder, tmp_path
):
    from twisted.internet import reactor

    path = tmp_path / "access.log"
    log = AccessLog(reactor, str(path))
    port, _ = start_forward(chooser=to_recorder(recorder), reporters=(log,))
    refused = [
        b"GET http://origin.test/two HTTP/1.1\r\nHost: origin.test\r\nHost: other.test\r\n\r\n",
        b"POST http://origin.test/both HTTP/1.1\r\nHost: origin.test\r\n"
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET http://origin.test/cr HTTP/1.1\r\nHost: origin.test\r\nX: a\rb\r\n\r\n",
        b"GET /no-line\x01 HTTP/1.1\r\nHost: origin.test\r\n\r\n",
    ]
    for data in refused:
        answer = await raw_exchange(port, data, timeout=5)
        assert status_of(answer) == 400
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == len(refused)
    for line in lines:
        assert COMBINED.fullmatch(line), line
    assert lines[0].split("] ", 1)[1].startswith('"GET http://origin.test/two HTTP/1.1" 400 ')
    assert lines[0].endswith(' end=bad-request reason="more than one Host header field"')
    assert '"POST http://origin.test/both HTTP/1.1" 400 ' in lines[1]
    assert 'reason="both Content-Length and Transfer-Encoding in a request"' in lines[1]
    assert '"GET http://origin.test/cr HTTP/1.1" 400 ' in lines[2]
    assert 'reason="bare CR in the header section"' in lines[2]
    # No valid request line: nothing of it is claimed, the reason still is.
    assert '"- - HTTP/1.1" 400 ' in lines[3] and " end=bad-request reason=" in lines[3]


_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=40)


@settings(max_examples=100, deadline=None)
@given(
    method=_TEXT, target=_TEXT, agent=st.none() | _TEXT, referer=st.none() | _TEXT,
    user=st.none() | _TEXT, host=_TEXT, upstream=st.none() | _TEXT, ended=_TEXT,
    kind=st.sampled_from(["http", "connect", "tcp"]),
)
def test_format_record_never_emits_control_bytes_or_breaks_fields(
    method, target, agent, referer, user, host, upstream, ended, kind
):
    record = AccessRecord(
        kind=kind, proxy="p", started=0.0, client_host=host, user=user, method=method,
        target=target, user_agent=agent, referer=referer, upstream=upstream, ended=ended,
        status=200,
    )
    line = format_record(record)
    assert "\n" not in line and "\r" not in line
    assert not re.search(r"[\x00-\x1f\x7f]", line)
    match = COMBINED.fullmatch(line)
    assert match is not None, line
    # What the client sent is recoverable from the quoted field (nothing lost to forging).
    if agent:
        assert match.group("agent") != '"-"'
