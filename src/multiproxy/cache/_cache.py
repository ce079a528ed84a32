"""
The shared cache's decisions, tied to a store: `SharedCache`.

`SharedCache` holds no connections and needs no reactor.  The HTTP layer
asks it three questions and does the I/O itself:

1. `SharedCache.plan` -- a request arrived: answer it from storage
   (`Action.ANSWER`), revalidate a stored response (`Action.VALIDATE`, with
   the conditional request fields to send), fetch it (`Action.FORWARD`, a
   miss whose response may be stored) or just pass it through
   (`Action.PASS`, e.g. unsafe methods).
2. `SharedCache.on_response` -- the upstream response head arrived: relay it
   (teeing the body into `Reply.writer` when it is being stored) or answer
   from storage instead (after a 304, or stale-if-error after a 5xx).
3. `SharedCache.on_error` -- the upstream could not be reached: a stale
   answer if one is allowed, else None.

Concurrent misses are collapsed with `CollapsedForwarding`; a request that
waits on another's fetch gets its response head from `answer_waiter`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from zope.interface import implementer

from multiproxy import _memo as memo
from multiproxy.cache._config import CacheConfig
from multiproxy.cache._directives import (
    RequestDirectives,
    parse_request_directives,
    parse_response_directives,
)
from multiproxy.cache._freshness import Reuse, current_age, judge, usable_on_error
from multiproxy.cache._interfaces import IBodyReader, ICacheEntry, ICacheStore, IEntryWriter
from multiproxy.cache._invalidation import invalidated_keys
from multiproxy.cache._keys import cache_key, vary_matches
from multiproxy.cache._status import CacheOutcome
from multiproxy.cache._storable import refusal, update_refusal
from multiproxy.cache._store import StoredResponse, describe_response, unpack_fields
from multiproxy.cache._validation import (
    CONDITIONAL_FIELDS,
    UNSATISFIABLE,
    byte_range,
    freshen,
    has_validator,
    if_range_holds,
    not_modified,
    not_modified_fields,
    parse_etag,
    refresh_from_head,
    stored_etag,
    validation_headers,
)
from multiproxy.http1._dates import format_http_date
from multiproxy.http1._headers import Headers
from multiproxy.pipeline._errors import STATUS_REASONS

_AGE_MAX = 2**31
_NO_DIRECTIVES = RequestDirectives()


#: Fields and their lower-case names, ready to be joined into a `Headers`
#: (memoised: the lists are shared and never changed).
_Marks = tuple[list[tuple[bytes, bytes]], list[bytes]]


# The memos below keep the work a hit repeats out of the hit path: a hot
# response's stored head is unpacked (and its names lower-cased) once, and
# the fields saying what the cache did are formatted once per outcome.  They
# are bounded, so many cold responses cost no more memory than before.


@memo.cached("cache.stored-fields", 2048)
def _stored_fields(head: bytes, drop: frozenset[bytes]) -> _Marks:
    """
    The fields of a stored ``head`` as an answer carries them, with their
    lower-case names; without the fields named in ``drop`` (the X-Cache it
    was stored with, as this cache adds its own; targeted fields it strips).
    """
    pairs = list(unpack_fields(head))
    lower = [n.lower() for n, _ in pairs]
    if drop and not drop.isdisjoint(lower):
        keep = [i for i, n in enumerate(lower) if n not in drop]
        pairs = [pairs[i] for i in keep]
        lower = [lower[i] for i in keep]
    return pairs, lower


@memo.cached("cache.marks", 1024)
def _marks(outcome: CacheOutcome, name: str, x_cache: bool) -> _Marks:
    """The Cache-Status (and X-Cache) fields for ``outcome``."""
    pairs = [(b"Cache-Status", outcome.cache_status(name))]
    if x_cache:
        pairs.append((b"X-Cache", outcome.x_cache.encode("ascii")))
    return pairs, [n.lower() for n, _ in pairs]


@memo.cached("cache.hit", 4096)
def _hit(ttl: int, stale: bool, swr: bool, name: str, x_cache: bool) -> tuple[CacheOutcome, _Marks]:
    """The outcome of answering from storage, and the fields that say so."""
    outcome = CacheOutcome(
        hit=True, ttl=ttl, stale=stale, detail="stale-while-revalidate" if swr else None
    )
    return outcome, _marks(outcome, name, x_cache)


def _answer_headers(
    meta: StoredResponse,
    drop: frozenset[bytes],
    extra: list[tuple[bytes, bytes]],
    extra_lower: list[bytes],
    marks: _Marks,
) -> Headers:
    """
    A fresh `Headers` for an answer from ``meta``: its stored fields but
    those in ``drop``, then ``extra`` (whose lower-case names are
    ``extra_lower``), then ``marks``.
    """
    pairs, lower = _stored_fields(meta.head, drop)
    mark_pairs, mark_lower = marks
    return Headers(pairs + extra + mark_pairs, lower + extra_lower + mark_lower)


_RETRYABLE_ERRORS = frozenset({500, 502, 503, 504})


class Action(enum.Enum):
    """What the HTTP layer does with a request, per `SharedCache.plan`."""

    ANSWER = "answer"
    """Send `Plan.answer`; nothing goes upstream (unless `Plan.revalidate`)."""
    VALIDATE = "validate"
    """Send the request upstream with `Plan.upstream_headers` (conditional)."""
    FORWARD = "forward"
    """A miss: send the request upstream as it is; its response may be stored."""
    PASS = "pass"
    """Not for the cache: send it upstream as it is, never store the response."""


# Answer and Plan are made for every hit, so they are NamedTuples rather
# than frozen dataclasses: as immutable, but a frozen dataclass's __init__
# makes one object.__setattr__ call per field (a Plan has twelve: 2.2 us
# against 0.66 us, built with keywords as here).


class Answer(NamedTuple):
    """
    A response the cache makes: status, fields (Age, Cache-Status and framing
    already set) and which bytes of which stored entry form the body.

    ``body_length`` is 0 for no body.  ``from_flight`` marks a collapsed
    waiter's answer, whose body comes from the leader's stream rather than
    from an entry (``body_length`` is then -1 when the length is unknown).
    """

    status: int
    reason: bytes
    headers: Headers
    outcome: CacheOutcome
    entry: ICacheEntry | None = None
    body_start: int = 0
    body_length: int = 0
    from_flight: bool = False

    def open_body(self) -> IBodyReader | None:
        """A reader for the body, or None when there is none to read from storage."""
        if self.entry is None or self.body_length <= 0:
            return None
        return self.entry.open_body(self.body_start, self.body_length)


class Plan(NamedTuple):
    """
    What to do with one request (from `SharedCache.plan`).

    ``url`` is the request's absolute target URI and ``key`` its cache key.
    ``upstream_headers`` are the request fields to send upstream (VALIDATE,
    FORWARD, PASS).  ``entry`` is the stored response chosen (answered,
    validated, or kept as a stale fallback).  ``revalidate``: the answer is
    stale-while-revalidate, so also start `SharedCache.background_plan`.
    ``collapsible``: the request may lead or join a collapsed fetch.
    """

    action: Action
    method: bytes
    url: bytes
    key: bytes
    request_headers: Headers
    request_cc: RequestDirectives
    outcome: CacheOutcome
    upstream_headers: Headers | None = None
    entry: ICacheEntry | None = None
    answer: Answer | None = None
    revalidate: bool = False
    collapsible: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class Reply:
    """
    What to do with an upstream response (from `SharedCache.on_response`).

    When ``answer`` is set it goes to the client instead of the upstream
    response, whose body then only feeds ``writer`` (if any) or is
    discarded.  Otherwise the upstream response is relayed with ``headers``
    (its own fields plus Cache-Status / X-Cache).  ``writer``, when set,
    receives every body chunk and is committed at the end (abandoned if the
    body is cut short).  ``shared`` is the response being stored, for
    collapsed waiters (`Flight.head`); ``refetch`` says the 304 could not be
    used and the request must be sent again, unconditionally (`refetch_plan`).
    """

    outcome: CacheOutcome
    headers: Headers | None = None
    answer: Answer | None = None
    writer: IEntryWriter | None = None
    shared: StoredResponse | None = None
    refetch: bool = False


# Looked up once for the hit path: an Enum member read from its class costs
# about 0.1 us in Python 3.11.
_ANSWER = Action.ANSWER
_FRESH = Reuse.FRESH
_STALE_WHILE_REVALIDATE = Reuse.STALE_WHILE_REVALIDATE
_VALIDATE = Reuse.VALIDATE


@implementer(ICacheEntry)
class _Rebased:
    """An entry seen with newer metadata (when the store lost it mid-update)."""

    def __init__(self, entry: ICacheEntry, meta: StoredResponse) -> None:
        self._entry = entry
        self.meta = meta

    def open_body(self, start: int = 0, length: int | None = None) -> IBodyReader:
        return self._entry.open_body(start, length)


@implementer(ICacheEntry)
class _Departing:
    """
    An entry that leaves the store once its body is opened (a disk entry's
    file may be deleted then: the open reader keeps it readable).
    """

    def __init__(self, entry: ICacheEntry, stored: ICacheEntry, store: ICacheStore) -> None:
        self._entry = entry
        self._stored = stored
        self._store = store
        self.meta = entry.meta

    def open_body(self, start: int = 0, length: int | None = None) -> IBodyReader:
        try:
            return self._entry.open_body(start, length)
        finally:
            self._store.remove_entry(self._stored)


def _content_length(headers: Headers) -> int | None:
    values = headers.get_all(b"content-length")
    if not values:
        return None
    first = values[0].strip(b" \t")
    if not first.isdigit() or any(v.strip(b" \t") != first for v in values):
        return None
    return int(first)


_DIRECTIVE_FIELDS = frozenset({b"cache-control", b"pragma"})
# RFC 9111 4.3.2: preconditions for the origin alone.
_ORIGIN_PRECONDITIONS = frozenset({b"if-match", b"if-unmodified-since"})


@dataclass(slots=True)
class SharedCache:
    """
    A shared HTTP cache (RFC 9111) over an `ICacheStore`.

    ``clock`` returns the current time in seconds since the epoch (the
    reactor's ``seconds`` in production, a fake in tests).
    """

    store: ICacheStore
    config: CacheConfig = field(default_factory=CacheConfig)
    clock: Callable[[], float] = time.time
    #: The target list as lower-case field names (RFC 9213 2.2).
    targets: tuple[bytes, ...] = field(init=False, default=())
    #: Fields left out of answers from storage.
    _drop: frozenset[bytes] = field(init=False, default=frozenset())
    #: Fields removed from every response sent on (strip_targets).
    _strip: tuple[bytes, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        cfg = self.config
        self.targets = tuple(t.lower().encode("ascii") for t in cfg.targets)
        self._strip = self.targets if cfg.strip_targets else ()
        self._drop = frozenset(([b"x-cache"] if cfg.x_cache else []) + list(self._strip))

    # -- 1. a request arrives -------------------------------------------------

    def plan(self, method: bytes, url: bytes, request_headers: Headers) -> Plan:
        """Decide how to handle a request for absolute URI ``url``."""
        key = cache_key(url)
        rcc = (
            parse_request_directives(request_headers)
            if request_headers.has_any(_DIRECTIVE_FIELDS)
            else _NO_DIRECTIVES
        )
        if method not in (b"GET", b"HEAD"):
            return Plan(
                action=Action.PASS,
                method=method,
                url=url,
                key=key,
                request_headers=request_headers,
                request_cc=rcc,
                outcome=CacheOutcome(fwd="method"),
                upstream_headers=request_headers,
            )
        if request_headers.has_any(_ORIGIN_PRECONDITIONS):
            # RFC 9111 4.3.2: these preconditions are for the origin alone.
            return Plan(
                action=Action.PASS,
                method=method,
                url=url,
                key=key,
                request_headers=request_headers,
                request_cc=rcc,
                outcome=CacheOutcome(fwd="request"),
                upstream_headers=request_headers,
            )
        now = self.clock()
        entries = self.store.lookup(key)
        if len(entries) == 1:
            entry = entries[0]
            if entry.meta.vary and not vary_matches(entry.meta.vary, request_headers):
                entry = None
        else:
            matching = [e for e in entries if vary_matches(e.meta.vary, request_headers)]
            # RFC 9111 4: the most recent matching response (by Date).
            entry = (
                max(matching, key=lambda e: (e.meta.date_value, e.meta.response_time))
                if matching
                else None
            )
        if entry is None:
            fwd = "vary-miss" if entries else "uri-miss"
            if rcc.only_if_cached:
                return self._only_if_cached(method, url, key, request_headers, rcc, now, fwd)
            collapsible = (
                method == b"GET"
                and not rcc.no_store
                and not request_headers.has_any(CONDITIONAL_FIELDS)
            )
            return Plan(
                action=Action.FORWARD,
                method=method,
                url=url,
                key=key,
                request_headers=request_headers,
                request_cc=rcc,
                outcome=CacheOutcome(fwd=fwd),
                upstream_headers=request_headers,
                collapsible=collapsible,
            )
        j = judge(entry.meta, rcc, now)
        reuse = j.reuse
        if reuse is not _VALIDATE:
            swr = reuse is _STALE_WHILE_REVALIDATE
            cfg = self.config
            outcome, marks = _hit(int(j.ttl), reuse is not _FRESH, swr, cfg.name, cfg.x_cache)
            answer = self._answer(entry, method, request_headers, j.age, outcome, now, marks)
            return Plan(
                action=_ANSWER,
                method=method,
                url=url,
                key=key,
                request_headers=request_headers,
                request_cc=rcc,
                outcome=outcome,
                entry=entry,
                answer=answer,
                revalidate=swr,
            )
        fwd = "request" if j.reason == "request" else "stale"
        if rcc.only_if_cached:
            return self._only_if_cached(method, url, key, request_headers, rcc, now, fwd)
        if not has_validator(entry.meta):
            return Plan(
                action=Action.FORWARD,
                method=method,
                url=url,
                key=key,
                request_headers=request_headers,
                request_cc=rcc,
                outcome=CacheOutcome(fwd=fwd),
                upstream_headers=request_headers,
                entry=entry,
            )
        return Plan(
            action=Action.VALIDATE,
            method=method,
            url=url,
            key=key,
            request_headers=request_headers,
            request_cc=rcc,
            outcome=CacheOutcome(fwd=fwd),
            upstream_headers=validation_headers(request_headers, entry.meta),
            entry=entry,
            collapsible=method == b"GET",
        )

    def _only_if_cached(self, method, url, key, request_headers, rcc, now, fwd) -> Plan:
        outcome = CacheOutcome(detail="only-if-cached")
        headers = Headers([(b"Date", format_http_date(now)), (b"Content-Length", b"0")])
        self._mark(headers, outcome)
        answer = Answer(504, STATUS_REASONS[504], headers, outcome)
        return Plan(
            action=Action.ANSWER, method=method, url=url, key=key,
            request_headers=request_headers, request_cc=rcc, outcome=outcome, answer=answer,
        )

    def background_plan(self, plan: Plan) -> Plan:
        """The GET that revalidates ``plan.entry`` in the background (stale-while-revalidate)."""
        entry = plan.entry
        assert entry is not None
        if has_validator(entry.meta):
            return Plan(
                action=Action.VALIDATE,
                method=b"GET",
                url=plan.url,
                key=plan.key,
                request_headers=plan.request_headers,
                request_cc=RequestDirectives(),
                outcome=CacheOutcome(fwd="stale"),
                upstream_headers=validation_headers(plan.request_headers, entry.meta),
                entry=entry,
            )
        headers = plan.request_headers.copy()
        headers.remove_all(CONDITIONAL_FIELDS)
        return Plan(
            action=Action.FORWARD,
            method=b"GET",
            url=plan.url,
            key=plan.key,
            request_headers=headers,
            request_cc=RequestDirectives(),
            outcome=CacheOutcome(fwd="stale"),
            upstream_headers=headers,
            entry=entry,
        )

    def refetch_plan(self, plan: Plan) -> Plan:
        """The unconditional request to send when a 304 could not be used (`Reply.refetch`)."""
        headers = plan.request_headers.copy()
        headers.remove_all(CONDITIONAL_FIELDS)
        return Plan(
            action=Action.FORWARD,
            method=plan.method,
            url=plan.url,
            key=plan.key,
            request_headers=plan.request_headers,
            request_cc=plan.request_cc,
            outcome=CacheOutcome(fwd=plan.outcome.fwd),
            upstream_headers=headers,
        )

    # -- 2. the upstream response head arrives --------------------------------

    def on_response(
        self,
        plan: Plan,
        status: int,
        reason: bytes,
        headers: Headers,
        request_time: float,
        response_time: float,
    ) -> Reply:
        """
        Decide what to do with a final (non-1xx) upstream response to
        ``plan``'s request, sent at ``request_time`` and received at
        ``response_time``.
        """
        cfg = self.config
        if plan.action is Action.PASS:
            for key in invalidated_keys(plan.method, plan.url, status, headers):
                self.store.remove(key)
            outcome = plan.outcome.answered(status)
            return Reply(outcome, headers=self._marked(headers, outcome))
        entry = plan.entry
        if plan.action is Action.VALIDATE and status == 304 and entry is not None:
            meta = freshen(
                entry.meta,
                headers,
                request_time,
                response_time,
                cfg.heuristic_fraction,
                cfg.heuristic_max,
                self.targets,
            )
            if meta is None:
                return Reply(replace(plan.outcome, fwd_status=304), refetch=True)
            updated, drop = self._update(entry, meta, plan)
            self._freshen_others(plan, entry, headers, request_time, response_time)
            age = current_age(
                meta.age_value,
                meta.date_value,
                meta.request_time,
                meta.response_time,
                response_time,
            )
            outcome = replace(plan.outcome, fwd_status=304, ttl=int(meta.lifetime - age))
            answer = self._answer(
                updated, plan.method, plan.request_headers, age, outcome, response_time
            )
            if drop:
                if answer.entry is not None and answer.body_length > 0:
                    answer = answer._replace(entry=_Departing(updated, entry, self.store))
                else:
                    self.store.remove_entry(entry)
            return Reply(outcome, answer=answer)
        if (
            entry is not None
            and status in _RETRYABLE_ERRORS
            and usable_on_error(entry.meta, plan.request_cc, response_time, disconnected=False)
        ):
            return Reply(
                plan.outcome, answer=self._stale_answer(plan, entry, response_time, status)
            )
        if plan.method == b"HEAD":
            if status == 200:
                self._refresh_from_head(plan, headers, request_time, response_time)
            outcome = replace(plan.outcome, fwd_status=status)
            return Reply(outcome, headers=self._marked(headers, outcome))
        response_cc = parse_response_directives(headers, self.targets)
        why = refusal(
            plan.method, status, plan.request_headers, plan.request_cc, headers, response_cc
        )
        checks_validators = plan.action is Action.VALIDATE and status == 200
        if why is not None and not checks_validators:
            # Not storable (no-store, private, ...): nothing more to work out.
            outcome = plan.outcome.answered(status)
            return Reply(outcome, headers=self._marked(headers, outcome))
        meta = describe_response(
            plan.key,
            status,
            reason,
            headers,
            response_cc,
            plan.request_headers,
            request_time,
            response_time,
            cfg.heuristic_fraction,
            cfg.heuristic_max,
        )
        writer = None
        if why is None and (
            meta.lifetime > 0
            or has_validator(meta)
            or meta.stale_if_error
            or meta.stale_while_revalidate
        ):
            # A response that is stale at once and cannot be revalidated is
            # not worth the space (RFC 9111 3 allows not storing it).
            writer = self.store.begin(meta, _content_length(headers))
        outcome = plan.outcome.answered(status, stored=writer is not None)
        shared = meta if writer is not None else None
        if checks_validators and not_modified(plan.method, plan.request_headers, meta):
            # The client's own validators match the new response.
            answer = self._not_modified(
                meta,
                current_age(
                    meta.age_value, meta.date_value, request_time, response_time, response_time
                ),
                outcome,
            )
            return Reply(outcome, answer=answer, writer=writer, shared=shared)
        return Reply(outcome, headers=self._marked(headers, outcome), writer=writer, shared=shared)

    def _refresh_from_head(
        self, plan: Plan, headers: Headers, request_time: float, response_time: float
    ) -> None:
        cfg = self.config
        for entry in self.store.lookup(plan.key):
            if not vary_matches(entry.meta.vary, plan.request_headers):
                continue
            meta = refresh_from_head(
                entry.meta,
                headers,
                request_time,
                response_time,
                cfg.heuristic_fraction,
                cfg.heuristic_max,
                self.targets,
            )
            if meta is None or self._update(entry, meta, plan)[1]:
                self.store.remove_entry(entry)

    def _freshen_others(
        self,
        plan: Plan,
        validated: ICacheEntry,
        headers: Headers,
        request_time: float,
        response_time: float,
    ) -> None:
        """
        A 304 with a strong entity-tag also updates the other stored
        responses (variants) of the URL with that strong tag (RFC 9111 4.3.4).
        """
        tag = parse_etag(headers.get(b"etag"))
        if tag is None or tag.weak:
            return
        entries = self.store.lookup(plan.key)
        if len(entries) < 2:
            return
        cfg = self.config
        for other in entries:
            if other.meta.variant == validated.meta.variant:
                continue
            mine = stored_etag(other.meta)
            if mine is None or not tag.strong_match(mine):
                continue
            meta = freshen(
                other.meta,
                headers,
                request_time,
                response_time,
                cfg.heuristic_fraction,
                cfg.heuristic_max,
                self.targets,
            )
            if meta is not None and self._update(other, meta, plan)[1]:
                self.store.remove_entry(other)

    def _update(
        self, entry: ICacheEntry, meta: StoredResponse, plan: Plan
    ) -> tuple[ICacheEntry, bool]:
        """
        Store ``meta``, the update of ``entry`` by the response to ``plan``'s
        request, when it may be kept (`update_refusal`).  Returns the entry
        as updated, and True when it must leave the store instead (the
        caller removes it, after opening the body it still answers with).
        """
        why = update_refusal(
            meta.status,
            plan.request_headers,
            plan.request_cc,
            parse_response_directives(Headers(meta.headers), self.targets),
        )
        if why is None:
            return self.store.update(entry, meta) or _Rebased(entry, meta), False
        return _Rebased(entry, meta), why == "response"

    # -- 3. the upstream could not be reached ----------------------------------

    def on_error(self, plan: Plan) -> Answer | None:
        """
        A stale answer for a request whose upstream could not be reached, when
        stale-if-error or ``stale_if_unreachable`` allows it; else None.
        """
        entry = plan.entry
        if entry is None or plan.action is Action.PASS:
            return None
        now = self.clock()
        if not usable_on_error(
            entry.meta,
            plan.request_cc,
            now,
            disconnected=True,
            grace=self.config.stale_if_unreachable,
        ):
            return None
        return self._stale_answer(plan, entry, now, None)

    def unreachable_status(self, plan: Plan, default: int) -> int:
        """
        The error status for an unreachable upstream: 504 when the stored
        response demands revalidation (RFC 9111 5.2.2.2), else ``default``.
        """
        if plan.entry is not None and plan.entry.meta.forbids_stale:
            return 504
        return default

    def _stale_answer(
        self, plan: Plan, entry: ICacheEntry, now: float, status: int | None
    ) -> Answer:
        meta = entry.meta
        age = current_age(
            meta.age_value, meta.date_value, meta.request_time, meta.response_time, now
        )
        outcome = CacheOutcome(
            fwd=plan.outcome.fwd,
            fwd_status=status,
            ttl=int(meta.lifetime - age),
            stale=True,
            detail="stale-if-error",
        )
        return self._answer(entry, plan.method, plan.request_headers, age, outcome, now)

    # -- collapsed waiters ---------------------------------------------------

    def answer_waiter(
        self,
        plan: Plan,
        shared: StoredResponse,
        expected_length: int | None,
    ) -> Answer | None:
        """
        The response head for a request that waited on another request's
        fetch of ``shared``, or None if that response cannot be reused for it
        (Vary, Authorization, its own Cache-Control): then it looks up again.
        """
        if plan.method not in (b"GET", b"HEAD") or not vary_matches(
            shared.vary, plan.request_headers
        ):
            return None
        if b"authorization" in plan.request_headers:
            cc = parse_response_directives(Headers(shared.headers), self.targets)
            if not (cc.public or cc.must_revalidate or cc.s_maxage is not None):
                return None
        now = self.clock()
        j = judge(shared, plan.request_cc, now)
        if j.reuse not in (Reuse.FRESH, Reuse.STALE_ALLOWED):
            return None
        outcome = replace(
            plan.outcome, collapsed=True, ttl=int(j.ttl), stale=j.reuse is not Reuse.FRESH
        )
        if shared.status == 200 and not_modified(plan.method, plan.request_headers, shared):
            return self._not_modified(shared, j.age, outcome)._replace(from_flight=True)
        has_body = plan.method == b"GET" and shared.status not in (204, 304)
        extra = [(b"Age", b"%d" % min(int(j.age), _AGE_MAX))]
        extra_lower = [b"age"]
        if expected_length is not None and shared.status != 204:
            extra.insert(0, (b"Content-Length", b"%d" % expected_length))
            extra_lower.insert(0, b"content-length")
        headers = _answer_headers(shared, self._drop, extra, extra_lower, self._marks(outcome))
        length = (-1 if expected_length is None else expected_length) if has_body else 0
        return Answer(
            shared.status, shared.reason, headers, outcome, body_length=length, from_flight=True
        )

    # -- building answers ----------------------------------------------------

    def _answer(
        self,
        entry: ICacheEntry,
        method: bytes,
        request_headers: Headers,
        age: float,
        outcome: CacheOutcome,
        now: float,
        marks: _Marks | None = None,
    ) -> Answer:
        meta = entry.meta
        if (
            meta.status == 200
            and (b"if-none-match" in request_headers or b"if-modified-since" in request_headers)
            and not_modified(method, request_headers, meta)
        ):
            return self._not_modified(meta, age, outcome, entry)
        status, reason = meta.status, meta.reason
        start, length = 0, meta.body_length
        extra: list[tuple[bytes, bytes]] = []
        extra_lower: list[bytes] = []
        range_value = request_headers.get(b"range")
        if (
            range_value is not None
            and method == b"GET"
            and status == 200
            and (
                b"if-range" not in request_headers
                or if_range_holds(request_headers.get(b"if-range") or b"", meta)
            )
        ):
            wanted = byte_range(range_value, meta.body_length)
            if wanted is UNSATISFIABLE:
                headers = Headers(
                    [
                        (b"Date", format_http_date(now)),
                        (b"Content-Range", b"bytes */%d" % meta.body_length),
                        (b"Content-Length", b"0"),
                    ]
                )
                self._mark(headers, outcome)
                return Answer(416, STATUS_REASONS[416], headers, outcome)
            if wanted is not None:
                first, last = wanted  # type: ignore[misc]
                start, length = first, last - first + 1
                status, reason = 206, STATUS_REASONS[206]
                extra.append(
                    (b"Content-Range", b"bytes %d-%d/%d" % (first, last, meta.body_length))
                )
                extra_lower.append(b"content-range")
        if status != 204:
            extra.append((b"Content-Length", b"%d" % length))
            extra_lower.append(b"content-length")
        extra.append((b"Age", b"%d" % min(int(age), _AGE_MAX)))
        extra_lower.append(b"age")
        if marks is None:
            marks = self._marks(outcome)
        headers = _answer_headers(meta, self._drop, extra, extra_lower, marks)
        if method != b"GET" or status == 204:
            length = 0
        return Answer(status, reason, headers, outcome,
                      entry=entry, body_start=start, body_length=length)

    def _not_modified(
        self,
        meta: StoredResponse,
        age: float,
        outcome: CacheOutcome,
        entry: ICacheEntry | None = None,
    ) -> Answer:
        headers = not_modified_fields(meta)
        headers.add(b"Age", b"%d" % min(int(age), _AGE_MAX))
        self._mark(headers, outcome)
        return Answer(304, STATUS_REASONS[304], headers, outcome, entry=entry)

    def _marks(self, outcome: CacheOutcome) -> _Marks:
        return _marks(outcome, self.config.name, self.config.x_cache)

    def _mark(self, headers: Headers, outcome: CacheOutcome) -> None:
        """Add Cache-Status (and X-Cache, replacing any already there) to ``headers``."""
        if self.config.x_cache:
            headers.remove(b"x-cache")
        for name, value in self._marks(outcome)[0]:
            headers.add(name, value)

    def _marked(self, headers: Headers, outcome: CacheOutcome) -> Headers:
        out = headers.copy()
        if self._strip:
            # RFC 9213 3: configured to, because nothing downstream uses them.
            out.remove_all(self._strip)
        self._mark(out, outcome)
        return out
