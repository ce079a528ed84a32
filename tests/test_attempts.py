"""`Attempts`: which upstream a request or connection tries next (pure, no reactor)."""

from __future__ import annotations

import pytest

from multiproxy.pipeline._attempts import Attempts


class _Upstream:
    def __init__(self, key):
        self.key = self.name = key


class _Chooser:
    """Offers its upstreams in order, skipping the excluded ones (and those down)."""

    def __init__(self, *keys, down=()):
        self.upstreams = [_Upstream(k) for k in keys]
        self.down = set(down)

    def choose(self, intent, excluded=frozenset()):
        for u in self.upstreams:
            if u.key not in excluded and u.key not in self.down:
                return u
        return None


def _run(attempts):
    """Fail every connect; the keys tried, in order."""
    out = []
    upstream = attempts.first()
    while upstream is not None:
        attempts.begin(upstream)
        out.append(upstream.key)
        upstream = attempts.after_failure()
    return out


def test_each_upstream_is_tried_once_while_attempts_are_left():
    assert _run(Attempts(_Chooser("a", "b", "c"), None, limit=2)) == ["a", "b"]
    assert _run(Attempts(_Chooser("a", "b", "c"), None)) == ["a", "b", "c"]
    assert _run(Attempts(_Chooser("a", "b", down={"a"}), None)) == ["b"]
    assert _run(Attempts(None, None)) == []


def test_a_stale_keep_alive_connection_does_not_use_up_an_attempt():
    attempts = Attempts(_Chooser("a", "b"), None, limit=1)
    a = attempts.first()
    attempts.begin(a)
    attempts.uncount()  # the pooled connection was already closed: try a fresh one
    attempts.begin(a)
    assert attempts.after_failure() is None  # that one counted


def test_a_lost_request_is_replayed_once_elsewhere_or_on_the_same_upstream():
    attempts = Attempts(_Chooser("a", "b"), None, limit=3, replayable=True)
    a = attempts.first()
    attempts.begin(a)
    assert attempts.replay(a, 502).key == "b"
    assert attempts.replay(a, 502) is None  # never twice
    alone = Attempts(_Chooser("a"), None, replayable=True)
    only = alone.first()
    alone.begin(only)
    assert alone.replay(only, 502).key == "a"


@pytest.mark.parametrize(("replayable", "status"), [(False, 502), (True, 504)])
def test_no_replay_of_an_unsafe_request_or_after_a_timeout(replayable, status):
    attempts = Attempts(_Chooser("a", "b"), None, replayable=replayable)
    a = attempts.first()
    attempts.begin(a)
    assert attempts.replay(a, status) is None


def test_an_attempt_limit_below_one_is_refused():
    with pytest.raises(ValueError):
        Attempts(None, None, limit=0)
