"""
An RFC 9111 conformance audit of the shared cache, modelled on the groups
of the http-tests cache-tests suite (freshness, storage, validation,
invalidation, headers on hits, stale responses).

Every test drives a real `ForwardProxy` with the cache on, over loopback,
with `http.client`, against `RawOrigin`: a raw-socket origin whose
responses carry exactly the fields the test gives (no Date or Server unless
asked) and which records every request it gets.  The cache's clock is
`ShiftedClock`, the real reactor with an offset the test advances, so ages
of hours take no time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import pytest_twisted
from hardening import no_tracebacks  # noqa: F401  (autouse: a logged traceback fails the test)
from loopback import http_client_request
from twisted.internet import protocol, reactor

from multiproxy.cache import CacheConfig
from multiproxy.cache._fetcher import caching_fetcher_factory
from multiproxy.http1._dates import format_http_date

# -- the harness ---------------------------------------------------------------


class ShiftedClock:
    """The real reactor, but ``seconds()`` runs ``offset`` seconds ahead."""

    def __init__(self) -> None:
        self.offset = 0.0

    def seconds(self) -> float:
        return reactor.seconds() + self.offset

    def __getattr__(self, name):
        return getattr(reactor, name)


@dataclass
class Seen:
    """One request as the origin received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


#: A response script: (status, [(field, value)], body).
Response = tuple[int, list[tuple[str, str]], bytes]


@dataclass
class RawOrigin:
    """
    The origin's behaviour: ``routes[path]`` is a function of the request
    (and the origin) giving (status, fields, body); fields are sent exactly
    as given, plus Content-Length (except for 1xx, 204 and 304, and when
    the fields set Transfer-Encoding: then the body is sent as given).  A
    route may also return raw bytes, sent as they are.
    """

    clock: ShiftedClock
    routes: dict[str, Callable[[Seen], Response]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    def date(self, offset: float = 0) -> str:
        return format_http_date(self.clock.seconds() + offset).decode()

    def count(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path == path)

    def last(self, path: str) -> Seen:
        return [s for s in self.seen if s.path == path][-1]

    def answer(self, request: Seen) -> bytes | None:
        self.seen.append(request)
        route = self.routes.get(request.path)
        if route is None:
            status, fields, body = 404, [], b"no such route"
        else:
            answer = route(request)
            if answer is None or isinstance(answer, bytes):
                return answer
            status, fields, body = answer
        lines = [b"HTTP/1.1 %d X" % status]
        lines += [f"{k}: {v}".encode("utf-8") for k, v in fields]
        framed = status >= 200 and status not in (204, 304)
        if framed and not any(k.lower() == "transfer-encoding" for k, _ in fields):
            lines.append(b"Content-Length: %d" % len(body))
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        if request.method == "HEAD" or not framed:
            return head
        return head + body


class _OriginProtocol(protocol.Protocol):
    def __init__(self, origin: RawOrigin) -> None:
        self.origin = origin
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
            length = 0
            for k, v in headers:
                if k.lower() == "content-length":
                    length = int(v)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            path = target.split("://", 1)[-1]
            path = "/" + path.split("/", 1)[1] if "://" in target else target
            answer = self.origin.answer(Seen(method, path, headers, body))
            if answer is None:
                self.transport.loseConnection()
                return
            self.transport.write(answer)


@pytest.fixture
def clock():
    return ShiftedClock()


@pytest.fixture
def raw_origin(clock):
    origin = RawOrigin(clock)
    factory = protocol.Factory.forProtocol(lambda: _OriginProtocol(origin))
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    origin.port = port.getHost().port
    yield origin
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def cache_config(request, tmp_path):
    """The memory store, or the disk store when parametrized (indirectly) with "disk"."""
    if getattr(request, "param", "memory") == "disk":
        return CacheConfig(directory=str(tmp_path / "cache"))
    return CacheConfig()


@pytest.fixture
def proxy(start_forward, clock, raw_origin, cache_config):
    """A forward proxy with the cache on, timed by ``clock``; returns its port."""
    port, factory = start_forward()
    factory.fetcher = caching_fetcher_factory(cache_config, clock)(factory.fetcher)
    yield port
    factory.fetcher.cache.store.close()


@dataclass
class Client:
    """http.client through the proxy to ``raw_origin``."""

    port: int
    origin: RawOrigin

    async def __call__(self, path: str, headers=None, method: str = "GET", body=None):
        url = f"http://127.0.0.1:{self.origin.port}{path}"
        status, fields, data = await http_client_request(
            self.port, method, url, body=body, headers=headers
        )
        return Reply(status, fields, data)


@dataclass
class Reply:
    status: int
    fields: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        for k, v in self.fields:
            if k.lower() == name.lower():
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k.lower() == name.lower()]

    @property
    def x_cache(self) -> str | None:
        return self.get("X-Cache")


@pytest.fixture
def client(proxy, raw_origin):
    return Client(proxy, raw_origin)


def script(*responses: Response) -> Callable[[Seen], Response]:
    """A route answering with ``responses`` in turn (the last one repeats)."""
    queue = list(responses)

    def route(request: Seen) -> Response:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return route


# -- validation: freshening with a 304 (RFC 9111 4.3.4, RFC 9110 6.6.1) --------


@pytest_twisted.ensureDeferred
async def test_304_without_date_freshens_from_the_time_it_arrived(client, raw_origin, clock):
    """
    A 304 without Date counts as dated when received (RFC 9110 6.6.1: the
    recipient appends Date), so the stored Date it replaces no longer ages
    the freshened response (RFC 9111 4.3.4).
    """
    raw_origin.routes["/r"] = script(
        (200, [("Date", raw_origin.date()), ("Cache-Control", "max-age=10"), ("ETag", '"a"')], b"one"),
        (304, [("Cache-Control", "max-age=100"), ("ETag", '"a"')], b""),
    )
    await client("/r")
    clock.offset += 1000
    revalidated = await client("/r")
    assert revalidated.status == 200 and revalidated.body == b"one"
    assert revalidated.x_cache == "REVALIDATED"
    assert int(revalidated.get("Age")) < 5
    clock.offset += 5
    hit = await client("/r")
    assert hit.x_cache == "HIT" and raw_origin.count("/r") == 2
    assert 5 <= int(hit.get("Age")) < 10



@pytest.mark.parametrize("cache_config", ["memory", "disk"], indirect=True)
@pytest.mark.parametrize("directive", ["private", "no-store"])
@pytest_twisted.ensureDeferred
async def test_304_that_forbids_storing_removes_the_stored_response(
    client, raw_origin, clock, directive
):
    """
    A 304 whose fields make the updated response one a shared cache must
    not store (private, no-store: RFC 9111 3, 3.2, 4.3.4) answers the
    request that validated, and then the stored response is gone: it is
    not served from storage to anyone else.
    """
    raw_origin.routes["/p"] = script(
        (200, [("Date", raw_origin.date()), ("Cache-Control", "max-age=10"), ("ETag", '"a"')], b"one"),
        (304, [("Date", raw_origin.date()), ("Cache-Control", f"{directive}, max-age=100"), ("ETag", '"a"')], b""),
        (200, [("Cache-Control", f"{directive}, max-age=100"), ("ETag", '"a"')], b"two"),
    )
    await client("/p")
    clock.offset += 20
    revalidated = await client("/p")
    assert revalidated.status == 200 and revalidated.body == b"one"
    assert revalidated.get("Cache-Control") == f"{directive}, max-age=100"
    again = await client("/p")
    assert again.x_cache == "MISS" and again.body == b"two"
    assert raw_origin.count("/p") == 3 and raw_origin.last("/p").get("If-None-Match") is None


@pytest_twisted.ensureDeferred
async def test_head_200_that_forbids_storing_removes_the_stored_get(client, raw_origin, clock):
    """The same for a 200 to HEAD that would freshen a stored GET (RFC 9111 4.3.5, 3)."""
    raw_origin.routes["/h"] = script(
        (200, [("Date", raw_origin.date()), ("Cache-Control", "max-age=10"), ("ETag", '"a"')], b"one"),
        (200, [("Cache-Control", "private, max-age=100"), ("ETag", '"a"')], b"one"),
        (200, [("Cache-Control", "private, max-age=100"), ("ETag", '"a"')], b"two"),
    )
    await client("/h")
    clock.offset += 20
    head = await client("/h", method="HEAD")
    assert head.status == 200 and raw_origin.last("/h").method == "HEAD"
    again = await client("/h")
    assert again.x_cache == "MISS" and again.body == b"two"
    assert raw_origin.last("/h").get("If-None-Match") is None


@pytest.mark.parametrize(
    "request_fields", [{"Cache-Control": "no-store"}, {"Authorization": "FOO"}], ids=["no-store", "authorization"]
)
@pytest_twisted.ensureDeferred
async def test_304_to_a_no_store_or_authorized_request_does_not_update_the_stored_response(
    client, raw_origin, clock, request_fields
):
    """
    Nothing of a response to a request with ``Cache-Control: no-store``
    (RFC 9111 5.2.1.5), or with ``Authorization`` when the response does not
    allow shared caching (3.5), is kept: the 304 answers that request but
    the stored response stays stale, and the next request revalidates it.
    """
    raw_origin.routes["/n"] = script(
        (200, [("Date", raw_origin.date()), ("Cache-Control", "max-age=10"), ("ETag", '"a"')], b"one"),
        (304, [("Date", raw_origin.date(20)), ("Cache-Control", "max-age=100"), ("ETag", '"a"')], b""),
    )
    await client("/n")
    clock.offset += 20
    answered = await client("/n", headers=request_fields)
    assert answered.status == 200 and answered.body == b"one"
    assert answered.get("Cache-Control") == "max-age=100"
    again = await client("/n")
    assert again.x_cache == "REVALIDATED" and raw_origin.count("/n") == 3
    assert raw_origin.last("/n").get("If-None-Match") == '"a"'


@pytest_twisted.ensureDeferred
async def test_304_with_a_strong_etag_freshens_every_stored_response_with_it(
    client, raw_origin, clock
):
    """
    RFC 9111 4.3.4: all the stored responses with the 304's strong
    validator are updated, not only the variant that was validated.
    """
    fresh = [("Date", raw_origin.date()), ("Cache-Control", "max-age=10"), ("ETag", '"same"'), ("Vary", "Foo")]
    raw_origin.routes["/v"] = script(
        (200, fresh, b"one"),
        (200, fresh, b"two"),
        (304, [("Cache-Control", "max-age=100"), ("ETag", '"same"'), ("X-Updated", "yes")], b""),
    )
    await client("/v", headers={"Foo": "1"})
    await client("/v", headers={"Foo": "2"})
    clock.offset += 20
    validated = await client("/v", headers={"Foo": "1"})
    assert validated.x_cache == "REVALIDATED" and validated.body == b"one"
    other = await client("/v", headers={"Foo": "2"})
    assert other.x_cache == "HIT" and other.body == b"two" and other.get("X-Updated") == "yes"
    assert raw_origin.count("/v") == 3

# -- cache-tests-style scenarios ----------------------------------------------


@dataclass
class Step:
    """
    One request of a scenario, cache-tests style.  Integer field values in
    ``response`` are HTTP-dates that many seconds from the time the origin
    answers.  ``expect``: "cached" (the origin saw nothing), "not_cached",
    "etag_validated" / "lm_validated" (the origin got If-None-Match /
    If-Modified-Since and answered 304).  ``pause``: seconds the clock
    moves on afterwards.  ``disconnect``: the origin closes without answering.
    """

    response: list = field(default_factory=list)
    request: list = field(default_factory=list)
    status: int = 200
    body: bytes | None = None
    method: str = "GET"
    expect: str | None = None
    pause: float = 0
    disconnect: bool = False
    expect_status: int | None = None
    expect_headers: list = field(default_factory=list)
    expect_missing: list = field(default_factory=list)


# RFC 9211 / RFC 8941: a list member is a token with parameters; keys are
# lower-case, values a token, an integer or a string; this cache adds the last.
_SF_KEY = r"[a-z*][a-z0-9_.*-]*"
_SF_VALUE = r'(?:[A-Za-z*][A-Za-z0-9!#$%&\'*+.^_`|~:/-]*|-?\d{1,15}|"(?:[^"\\]|\\["\\])*")'
_CACHE_STATUS_MEMBER = re.compile(rf"^multiproxy(?:;[ ]?{_SF_KEY}(?:={_SF_VALUE})?)*$")
_CACHE_STATUS_PARAMS = {"hit", "fwd", "fwd-status", "ttl", "stored", "collapsed", "key", "detail"}


def check_cache_status(reply: Reply) -> None:
    """This cache's Cache-Status member is there, last, well formed, with RFC 9211 parameters."""
    values = reply.get_all("Cache-Status")
    assert values, reply.fields
    last = values[-1].split(",")[-1].strip()
    assert _CACHE_STATUS_MEMBER.match(last), last
    params = dict(p.strip().partition("=")[::2] for p in last.split(";")[1:])
    assert set(params) <= _CACHE_STATUS_PARAMS, last
    assert ("hit" in params) != ("fwd" in params) or "detail" in params, last
    if "fwd" in params:
        assert params["fwd"] in (
            "bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale", "partial"
        ), last


def _validators(fields) -> tuple[str | None, str | None]:
    etag = lm = None
    for k, v in fields:
        if k.lower() == "etag":
            etag = v
        elif k.lower() == "last-modified":
            lm = v
    return etag, lm


async def run_scenario(client: Client, origin: RawOrigin, clock: ShiftedClock, steps, path="/t"):
    """Play ``steps`` against the proxy; fail with the step number on the first surprise."""
    validators: list[tuple[str | None, str | None]] = []
    for n, step in enumerate(steps, 1):

        def route(request: Seen, step=step):
            if step.disconnect:
                return None
            fields = [
                (k, origin.date(v) if isinstance(v, int) else v) for k, v in step.response
            ]
            inm, ims = request.get("If-None-Match"), request.get("If-Modified-Since")
            for etag, lm in validators + [_validators(fields)]:
                if (inm is not None and etag is not None and etag in inm) or (
                    inm is None and ims is not None and lm is not None and ims == lm
                ):
                    return 304, fields, b""
            body = step.body if step.body is not None else b"body %d" % n
            return step.status, fields, body

        origin.routes[path] = route
        before = len(origin.seen)
        reply = await client(path, headers=dict(step.request), method=step.method,
                             body=b"abc" if step.method not in ("GET", "HEAD") else None)
        went = origin.seen[before:]
        where = f"step {n}: {reply.status} {reply.fields} origin saw {[(s.method, s.headers) for s in went]}"
        if step.disconnect and reply.status >= 500:
            pass  # the proxy's own error answer
        else:
            check_cache_status(reply)
        if step.expect == "cached":
            assert not went, where
            assert (reply.get("Age") or "").isdigit(), where  # RFC 9111 4, 5.1
        elif step.expect == "not_cached":
            assert went or reply.status >= 500, where
            if step.disconnect:
                assert reply.status >= 500, where
        elif step.expect in ("etag_validated", "lm_validated"):
            name = "If-None-Match" if step.expect == "etag_validated" else "If-Modified-Since"
            assert len(went) == 1 and went[0].get(name) is not None, where
        if step.expect_status is not None:
            assert reply.status == step.expect_status, where
        for k, v in step.expect_headers:
            want = origin.date(v) if isinstance(v, int) else v
            assert reply.get(k) == want, where
        for k in step.expect_missing:
            assert reply.get(k) is None, where
        fields = [(k, origin.date(v) if isinstance(v, int) else v) for k, v in step.response]
        validators.append(_validators(fields))
        clock.offset += step.pause


S = Step
P = 3  # cache-tests pauses three seconds where a test says pause_after

SCENARIOS = {
    # cc-freshness / cc-parse
    "freshness-max-age-0": [S([("Cache-Control", "max-age=0")], pause=P), S(expect="not_cached")],
    "freshness-max-age-negative": [S([("Cache-Control", "max-age=-100")], pause=P), S(expect="not_cached")],
    "freshness-max-age-a100": [S([("Cache-Control", "max-age=a100")], pause=P), S(expect="not_cached")],
    "freshness-max-age-100a": [S([("Cache-Control", "max-age=100a")], pause=P), S(expect="not_cached")],
    "freshness-max-age-single-quoted": [S([("Cache-Control", "max-age='3600'")], pause=P), S(expect="not_cached")],
    "freshness-max-age-space-before-equals": [S([("Cache-Control", "max-age =100")], pause=P), S(expect="not_cached")],
    "freshness-max-age-space-after-equals": [S([("Cache-Control", "max-age= 100")], pause=P), S(expect="not_cached")],
    "freshness-max-age-ignore-quoted": [S([("Cache-Control", 'extension="max-age=100", max-age=1')], pause=P), S(expect="not_cached")],
    "freshness-max-age-ignore-quoted-rev": [S([("Cache-Control", 'max-age=1, extension="max-age=100"')], pause=P), S(expect="not_cached")],
    "freshness-max-age-ignore-quoted-all": [S([("Cache-Control", 'extension="max-age=100", max-age="1"')], pause=P), S(expect="not_cached")],
    "freshness-max-age-ignore-quoted-all-rev": [S([("Cache-Control", 'max-age="1", extension="max-age=100"')], pause=P), S(expect="not_cached")],
    "freshness-max-age-age": [S([("Date", 0), ("Cache-Control", "max-age=10"), ("Age", "15")], pause=P), S(expect="not_cached")],
    "freshness-max-age-0-expires": [S([("Expires", 10000), ("Cache-Control", "max-age=0"), ("Date", 0)], pause=P), S(expect="not_cached")],
    "freshness-max-age-s-maxage-shared-longer": [S([("Cache-Control", "max-age=3600, s-maxage=1")], pause=P), S(expect="not_cached")],
    "freshness-max-age-s-maxage-shared-longer-reversed": [S([("Cache-Control", "s-maxage=1, max-age=3600")], pause=P), S(expect="not_cached")],
    "freshness-max-age-s-maxage-shared-longer-multiple": [S([("Cache-Control", "max-age=3600"), ("Cache-Control", "s-maxage=1")], pause=P), S(expect="not_cached")],
    "freshness-max-age-two-fresh-stale-sepline": [S([("Cache-Control", "max-age=1800"), ("Cache-Control", "max-age=1")], pause=P), S(expect="cached")],
    "freshness-max-age-leading-zero": [S([("Cache-Control", "max-age=003600")], pause=P), S(expect="cached")],
    "freshness-max-age-max-plus": [S([("Cache-Control", "max-age=99999999999")], pause=P), S(expect="cached")],
    "freshness-max-age-case-insensitive": [S([("Cache-Control", "MaX-aGe=3600")], pause=P), S(expect="cached")],
    # expires
    "freshness-expires-past": [S([("Expires", -30 * 86400), ("Date", 0)], pause=P), S(expect="not_cached")],
    "freshness-expires-present": [S([("Expires", 0), ("Date", 0)]), S(expect="not_cached")],
    "freshness-expires-old-date": [S([("Expires", 300), ("Date", 400)], pause=P), S(expect="not_cached")],
    "freshness-expires-invalid": [S([("Expires", "0"), ("Date", 0)], pause=P), S(expect="not_cached")],
    "freshness-expires-age-slow-date": [S([("Date", -10), ("Expires", 10), ("Age", "25")]), S(expect="not_cached")],
    "freshness-expires-age-fast-date": [S([("Date", 10), ("Expires", 20), ("Age", "15")]), S(expect="not_cached")],
    "freshness-expires-invalid-date": [S([("Date", "foo"), ("Expires", 10)]), S(expect="cached")],
    # cc-response
    "cc-resp-private-shared": [S([("Cache-Control", "private, max-age=3600")]), S(expect="not_cached")],
    "cc-resp-no-store": [S([("Cache-Control", "no-store")]), S(expect="not_cached")],
    "cc-resp-no-store-case-insensitive": [S([("Cache-Control", "No-StOrE")]), S(expect="not_cached")],
    "cc-resp-no-store-fresh": [S([("Cache-Control", "max-age=10000, no-store"), ("Expires", 10000), ("Date", 0)]), S(expect="not_cached")],
    "cc-resp-no-cache": [S([("Cache-Control", "max-age=10000, no-cache"), ("Expires", 10000), ("Date", 0)]), S(expect="not_cached")],
    "cc-resp-no-cache-case-insensitive": [S([("Cache-Control", "max-age=10000, No-CaChE"), ("Expires", 10000), ("Date", 0)]), S(expect="not_cached")],
    "cc-resp-no-cache-revalidate": [S([("Cache-Control", "no-cache"), ("ETag", '"abcd"')]), S(expect="etag_validated")],
    "cc-resp-must-revalidate-stale": [
        S([("Cache-Control", "max-age=2, must-revalidate"), ("ETag", '"abcd"')]),
        S([("Cache-Control", "max-age=2, must-revalidate"), ("ETag", '"abcd"')], expect="cached", pause=P),
        S(expect="etag_validated"),
    ],
    "headers-omit-headers-listed-in-Cache-Control-no-cache": [
        S([("Cache-Control", 'no-cache="a, b"'), ("a", "1"), ("b", "2"), ("c", "3"), ("Cache-Control", "max-age=3600"), ("Date", 0)], pause=P),
        S(expect="cached", expect_headers=[("c", "3")], expect_missing=["a", "b"]),
    ],
    "headers-omit-headers-listed-in-Connection": [
        S([("Connection", "a, b"), ("a", "1"), ("b", "2"), ("c", "3"), ("Cache-Control", "max-age=3600"), ("Date", 0)], pause=P),
        S(expect="cached", expect_headers=[("c", "3")], expect_missing=["Connection", "a", "b"]),
    ],
    # other
    "other-age-gen": [S([("Expires", 30 * 86400), ("Date", 0)], pause=P), S(expect="cached")],
    "other-age-update-max-age": [S([("Cache-Control", "max-age=600"), ("Date", 0), ("Age", "30")], pause=P), S(expect="cached", expect_headers=[("Age", "33")])],
    "other-date-update": [S([("Expires", 30 * 86400), ("Date", 0)], pause=P), S(expect="cached", expect_headers=[("Date", -P)])],
    # authorization
    "other-authorization": [S([("Expires", 30 * 86400), ("Date", 0)], request=[("Authorization", "FOO")], pause=P), S(expect="not_cached")],
    "other-authorization-public": [S([("Cache-Control", "max-age=3600, public"), ("Date", 0)], request=[("Authorization", "FOO")], pause=P), S(expect="cached")],
    "other-authorization-must-revalidate": [S([("Cache-Control", "max-age=3600, must-revalidate"), ("Date", 0)], request=[("Authorization", "FOO")], pause=P), S(expect="cached")],
    "other-authorization-smaxage": [S([("Cache-Control", "s-maxage=3600"), ("Date", 0)], request=[("Authorization", "FOO")], pause=P), S(expect="cached")],
    # heuristic freshness: not for these statuses
    **{
        f"heuristic-{code}-not_cached": [S([("Last-Modified", -86400), ("Date", 0)], status=code), S(expect="not_cached")]
        for code in (201, 202, 403, 502, 503, 504, 599)
    },
    **{
        f"heuristic-{code}-cached": [S([("Last-Modified", -86400), ("Date", 0)], status=code), S(expect="cached", expect_status=code)]
        for code in (200, 203, 204, 404, 405, 410, 414, 501)
    },
    "heuristic-599-public": [S([("Last-Modified", -86400), ("Date", 0), ("Cache-Control", "public")], status=599), S(expect="cached")],
    # status: a stale stored response is not reused
    **{
        f"status-{code}-stale": [S([("Expires", -5000), ("Last-Modified", -100000), ("Date", 0)], status=code), S(expect="not_cached")]
        for code in (200, 204, 299, 301, 302, 303, 307, 308, 400, 404, 410, 499, 500, 502, 503, 504, 599)
    },
    **{
        f"status-{code}-fresh": [S([("Expires", 100000), ("Cache-Control", "max-age=100000"), ("Last-Modified", 0), ("Date", 0)], status=code), S(expect="cached", expect_status=code)]
        for code in (200, 203, 204, 299, 301, 302, 303, 307, 308, 400, 404, 410, 499, 500, 502, 503, 504, 599)
    },
    # stale: never served when forbidden, even with the origin gone
    **{
        f"stale-close-{cc}": [S([("Cache-Control", f"max-age=2, {cc}")], pause=P), S(disconnect=True, expect="not_cached")]
        for cc in ("must-revalidate", "proxy-revalidate", "no-cache", "s-maxage=2")
    },
    # vary
    "vary-omit": [S([("Expires", 5000), ("Last-Modified", -3000), ("Date", 0), ("Vary", "Foo")], request=[("Foo", "1")]), S(expect="not_cached")],
    "vary-2-no-match": [S([("Expires", 5000), ("Date", 0), ("Vary", "Foo, Bar")], request=[("Foo", "1"), ("Bar", "abc")]), S(request=[("Foo", "2"), ("Bar", "abc")], expect="not_cached")],
    "vary-3-order": [S([("Expires", 5000), ("Date", 0), ("Vary", "Foo, Bar, Baz")], request=[("Foo", "1"), ("Bar", "abc4"), ("Baz", "789")]), S(request=[("Foo", "1"), ("Bar", "abc"), ("Baz", "789")], expect="not_cached")],
    **{
        f"vary-syntax-{name}": [S([("Expires", 5000), ("Date", 0)] + [("Vary", v) for v in values], request=[("Foo", "1"), ("Baz", "789")]), S(request=[("Foo", "1"), ("Baz", "789")], expect="not_cached")]
        for name, values in {
            "star": ["*"], "star-star": ["*, *"], "star-star-lines": ["*", "*"], "empty-star": [", *"],
            "empty-star-lines": ["", "*"], "star-foo": ["*, Foo"], "foo-star": ["Foo, *"],
        }.items()
    },
    "vary-normalise-combine": [S([("Expires", 5000), ("Date", 0), ("Vary", "Foo")], request=[("Foo", "1, 2")]), S(request=[("Foo", "1,2")], expect="cached")],
    "conditional-etag-vary-headers": [
        S([("Expires", 1), ("ETag", '"abcdef"'), ("Date", 0), ("Vary", "Abc")], request=[("Abc", "123")], pause=P),
        S(request=[("Abc", "123")], expect="etag_validated"),
    ],
    # conditional
    "conditional-304-etag": [
        S([("Expires", 100000), ("Cache-Control", "max-age=100000"), ("Date", 0), ("ETag", '"abcdef"')]),
        S(request=[("If-None-Match", '"abcdef"')], expect="cached", expect_status=304, expect_headers=[("ETag", '"abcdef"')]),
    ],
    "conditional-etag-precedence": [
        S([("Expires", 100000), ("Cache-Control", "max-age=100000"), ("Date", 0), ("Last-Modified", -5000), ("ETag", '"abcdef"')]),
        S(request=[("If-None-Match", '"abcdef"'), ("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")], expect="cached", expect_status=304),
    ],
    # invalidation
    **{
        f"invalidate-{m}": [S([("Expires", 100000), ("Cache-Control", "max-age=100000"), ("Date", 0)]), S(method=m), S(expect="not_cached")]
        for m in ("POST", "PUT", "DELETE", "M-SEARCH")
    },
    **{
        f"invalidate-{m}-failed": [S([("Expires", 100000), ("Cache-Control", "max-age=100000"), ("Date", 0)]), S(method=m, status=500), S(expect="cached")]
        for m in ("POST", "PUT", "DELETE", "M-SEARCH")
    },
    "304-lm-use-stored-Test-Header": [
        S([("Cache-Control", "max-age=1"), ("Last-Modified", -86400), ("Date", 0), ("Test-Header", "A")], pause=P),
        S([("Cache-Control", "max-age=3600"), ("Last-Modified", -86400 - P), ("Date", 0)], expect="lm_validated", expect_headers=[("Test-Header", "A")]),
    ],
}


def _update304(name: str, a: str, b: str, kind: str) -> list[Step]:
    validator = ("ETag", '"v1"') if kind == "etag" else ("Last-Modified", -86400)

    def fields(value, lifetime, shift=0):
        v = validator if kind == "etag" else ("Last-Modified", -86400 - shift)
        cc = [("a", "b")] if name == "Cache-Control" else [("Cache-Control", f"max-age={lifetime}")]
        return cc + [("Date", 0), v, (name, value)]

    return [
        S(fields(a, 1), pause=P),
        S(fields(b, 3600, P), expect=f"{kind}_validated", expect_headers=[(name, b)], pause=P),
        S(expect="cached", expect_headers=[(name, b)]),
    ]


for _name, _a, _b in [
    ("Test-Header", "A", "B"),
    ("Content-Foo", "A", "B"),
    ("Content-Type", "text/plain", "text/plain;charset=utf-8"),
    ("Content-MD5", "rL0Y20zC+Fzt72VPzMSk2A==", "N7UdGUp1E+RbVvZSTy1R8g=="),
    ("Content-Location", "/foo", "/bar"),
    ("Content-Security-Policy", "default-src 'self'", "default-src 'self' cdn.example.com"),
    ("X-Frame-Options", "deny", "sameorigin"),
    ("Cache-Control", "max-age=1", "max-age=3600"),
    ("Set-Cookie", "a=b", "a=c"),
    ("Clear-Site-Data", "cache", "cookies"),
]:
    for _kind in ("etag", "lm"):
        SCENARIOS[f"304-{_kind}-update-{_name}"] = _update304(_name, _a, _b, _kind)


# Families of many similar scenarios run on one proxy (one path each), to
# keep the file fast; the rest run one proxy each.
_FAMILIES = {
    "status-stale": r"status-\d+-stale$",
    "status-fresh": r"status-\d+-fresh$",
    "heuristic": r"heuristic-",
    "vary-syntax": r"vary-syntax-",
    "stale-close": r"stale-close-",
    "invalidate": r"invalidate-",
    "304-update": r"304-(etag|lm)-update-",
}
FAMILIES: dict[str, dict[str, list[Step]]] = {name: {} for name in _FAMILIES}
SINGLES: dict[str, list[Step]] = {}
for _id, _steps in SCENARIOS.items():
    _family = next((f for f, pattern in _FAMILIES.items() if re.match(pattern, _id)), None)
    (FAMILIES[_family] if _family else SINGLES)[_id] = _steps


@pytest.mark.parametrize("steps", SINGLES.values(), ids=SINGLES.keys())
@pytest_twisted.ensureDeferred
async def test_cache_tests_scenario(client, raw_origin, clock, steps):
    await run_scenario(client, raw_origin, clock, steps)


@pytest.mark.parametrize("family", FAMILIES.values(), ids=FAMILIES.keys())
@pytest_twisted.ensureDeferred
async def test_cache_tests_family(client, raw_origin, clock, family):
    for name, steps in family.items():
        try:
            await run_scenario(client, raw_origin, clock, steps, path=f"/{name}")
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None
