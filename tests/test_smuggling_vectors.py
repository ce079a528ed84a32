"""
The parser's smuggling and parsing corpus (tests/vectors/smuggling.py),
replayed through a live forward proxy over loopback.

Every request the proxy forwards goes to a `Recorder` origin (a chooser
sends every intent there, whatever host it names), which reads it with h11.
A rejected vector must get the status the corpus names (or a close), the
connection must close after the answer, and the recorder must not have
received a single byte.  An accepted vector must reach the recorder as one
request h11 accepts, with the body the corpus names.  Response vectors are
what an upstream might send: the client gets 502 and nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_twisted
from hardening import (  # noqa: F401
    no_tracebacks,
    recorder,
    sleep,
    status_of,
    to_recorder,
    wait_until,
)
from loopback import listen_scripted, raw_exchange
from twisted.internet import defer

sys.path.insert(0, str(Path(__file__).parent))
from vectors.smuggling import load_vectors

REQUESTS = load_vectors(direction="request")
REJECTED = [v for v in REQUESTS if v.status is not None]
ACCEPTED = [v for v in REQUESTS if v.status is None]
RESPONSES = load_vectors(direction="response")

REJECT_STATUSES = {400, 413, 414, 431, 501, 505}


def test_corpus_is_large_and_varied():
    # The figures docs/reliability.md quotes; a shrinking corpus is a regression.
    assert len(REJECTED) >= 150
    assert len(ACCEPTED) >= 10
    assert len(RESPONSES) >= 10
    assert {v.stage for v in REJECTED} == {"parser", "target", "authority"}
    assert {v.status for v in REJECTED} <= REJECT_STATUSES


@pytest.fixture
def proxy_to_recorder(start_forward, recorder):
    port, factory = start_forward(chooser=to_recorder(recorder))
    return port, factory


def split_responses(answer: bytes) -> list[tuple[int, bytes, bytes]]:
    """
    Split ``answer`` into (status, head, body) triples, each body framed by
    its Content-Length, failing if any byte is left over.
    """
    out = []
    while answer:
        head, sep, rest = answer.partition(b"\r\n\r\n")
        assert sep, f"no complete head in {answer[:200]!r}"
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        length = int(fields[b"Content-Length"])
        assert len(rest) >= length, f"truncated answer {answer[:200]!r}"
        out.append((status_of(head), head, rest[:length]))
        answer = rest[length:]
    return out


# Answered by the proxy itself (RFC 9110 7.6.2), so it never reaches the origin.
ANSWERED_LOCALLY = (
    b"OPTIONS http://x.test/ HTTP/1.1\r\nHost: x.test\r\nMax-Forwards: 0\r\n"
    b"Connection: close\r\n\r\n"
)


async def _replay(port: int, vectors, run_one) -> list[str]:
    """Run ``run_one(port, vector)`` for the vectors, a batch at a time; return the complaints."""
    complaints: list[str] = []

    async def one(vector):
        try:
            await run_one(port, vector)
        except AssertionError as e:
            complaints.append(f"{vector.name}: {e}")

    batch = 16
    for i in range(0, len(vectors), batch):
        await defer.gatherResults(
            [defer.ensureDeferred(one(v)) for v in vectors[i : i + batch]]
        )
    return complaints


@pytest_twisted.ensureDeferred
async def test_rejected_vectors_are_answered_and_never_forwarded(proxy_to_recorder, recorder,
                                                                  reporter):
    port, factory = proxy_to_recorder
    answers: dict[str, bytes] = {}

    async def run_one(port, vector):
        framing_intact = vector.stage != "parser"
        data = vector.data + (ANSWERED_LOCALLY if framing_intact else b"")
        answer = await raw_exchange(port, data, timeout=5)
        answers[vector.name] = answer
        if answer == b"":
            return  # a bare close is a refusal too
        responses = split_responses(answer)
        assert responses[0][0] == vector.status, (
            f"answered {responses[0][0]}, corpus says {vector.status}"
        )
        if framing_intact:
            # The message was well framed: the connection stays in step and
            # the next request on it is answered.
            assert [r[0] for r in responses] == [vector.status, 200]
            assert b"\r\nConnection: close" in responses[1][1]
        else:
            # The framing is unknown: one answer, then the connection closes.
            assert len(responses) == 1
            assert b"\r\nConnection: close" in responses[0][1]

    complaints = await _replay(port, REJECTED, run_one)
    assert not complaints, "\n".join(complaints)
    # Give a (wrong) upstream connection time to carry bytes before judging.
    await sleep(0.05)
    assert recorder.raw == b"", f"the origin received {recorder.raw[:300]!r}"
    # A vector whose head is valid but whose body is not may have made the
    # proxy start connecting upstream; such a connection is dropped unused.
    assert all(not c.raw and c.lost for c in recorder.connections)
    assert not factory.connections
    # Every vector was answered with a status (none needed a bare close) and logged.
    assert sum(1 for a in answers.values() if a) == len(REJECTED)
    refusals = sorted(r.status for r in reporter.records if r.target != "http://x.test/")
    assert refusals == sorted(v.status for v in REJECTED)


# Vectors the reader accepts but the forward proxy still refuses, and why.
PROXY_REFUSES = {
    # A percent-encoded "@" is a legal (odd) reg-name for the target parser;
    # host normalisation refuses "%" in a host name before any lookup.
    "target-userinfo-encoded": 400,
}


@pytest_twisted.ensureDeferred
async def test_accepted_vectors_reach_origin_once_as_valid_http(proxy_to_recorder, recorder):
    port, _ = proxy_to_recorder
    follow_up = b"GET http://x.test/follow-up HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n"
    complaints = []
    for vector in ACCEPTED:  # one at a time, so recorder requests line up with vectors
        before = len(recorder.requests)
        answer = await raw_exchange(port, vector.data + follow_up, timeout=5)
        got = recorder.requests[before:]
        try:
            statuses = [r[0] for r in split_responses(answer)]
            if vector.name in PROXY_REFUSES:
                assert statuses == [PROXY_REFUSES[vector.name], 200], statuses
                assert [r.target for r, _ in got] == [b"/follow-up"]
                continue
            assert statuses == [200, 200], statuses
            assert [r.target for r, _ in got] == [b"/", b"/follow-up"], got
            assert got[0][1] == (vector.body or b""), f"origin got body {got[0][1]!r}"
        except AssertionError as e:
            complaints.append(f"{vector.name}: {e}")
    assert not complaints, "\n".join(complaints)
    # h11, an independent strict reader, accepted everything the proxy sent.
    assert [c.h11_error for c in recorder.connections if c.h11_error] == []


@pytest_twisted.ensureDeferred
async def test_hostile_upstream_responses_become_502_or_truncation(forward):
    complaints = []
    truncated = []
    for vector in RESPONSES:
        port, received = listen_scripted(vector.data, close=False)
        try:
            answer = await raw_exchange(
                forward,
                b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                % port.getHost().port,
                timeout=5,
            )
        finally:
            await port.stopListening()
        try:
            assert len(received) == 1, "the request never reached the scripted origin"
            head, _, body = answer.partition(b"\r\n\r\n")
            if b"Transfer-Encoding: chunked" in head and status_of(answer) == 200:
                # The head was fine and already sent on; the body broke.  The
                # client must see truncation: no last chunk, then a close.
                assert not body.endswith(b"0\r\n\r\n"), answer
                assert b"x" not in body
                truncated.append(vector.name)
                continue
            [(status, head, body)] = split_responses(answer)
            assert status == 502, answer[:300]
            # Nothing of the hostile answer leaks through to the client.
            assert b"Set-Cookie" not in head and b"Transfer-Encoding" not in head
            assert body.startswith(b"502 Bad Gateway: invalid response from upstream"), body
        except AssertionError as e:
            complaints.append(f"{vector.name}: {e}")
    assert not complaints, "\n".join(complaints)
    # Only a body-level fault can come after the head went out.
    assert truncated == ["resp-chunk-overflow"]


@pytest_twisted.ensureDeferred
async def test_body_error_after_forwarding_began_aborts_upstream_connection(
    proxy_to_recorder, recorder
):
    """
    A chunked body that turns bad after the head has gone upstream: the
    client gets 400, and the origin's connection is cut with the message
    incomplete (h11 never sees an end of message), so nothing is smuggled.
    """
    from twisted.internet import protocol, reactor

    port, _ = proxy_to_recorder
    answer = bytearray()
    closed = []

    class Client(protocol.Protocol):
        def dataReceived(self, data):
            answer.extend(data)

        def connectionLost(self, reason):
            closed.append(True)

    client = await protocol.ClientCreator(reactor, Client).connectTCP("127.0.0.1", port)
    client.transport.write(
        b"POST http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    assert await wait_until(lambda: recorder.connections and b"hello" in recorder.raw)
    client.transport.write(b"1" + b"0" * 16 + b"\r\nGET http://origin.test/smuggled HTTP/1.1\r\n\r\n")
    assert await wait_until(lambda: closed and recorder.connections[0].lost)
    assert status_of(bytes(answer)) == 400
    assert recorder.requests == []
    assert b"smuggled" not in recorder.raw
    assert recorder.connections[0].partial is not None  # the head, never completed
