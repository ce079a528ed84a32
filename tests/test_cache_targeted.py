"""
Targeted cache-control fields (RFC 9213) in the shared cache: which field a
cache obeys, how an invalid one is ignored, what replaces Cache-Control and
Expires, and what is sent on.  A fake clock, no reactor.
"""

from __future__ import annotations

import pytest
from test_cache_core import Harness
from twisted.python import usage

from multiproxy._tablereader import TableReader
from multiproxy.cache import (
    GATEWAY_TARGETS,
    CacheConfig,
    cache_from_table,
    parse_response_directives,
)
from multiproxy.cache._directives import INVALID, targeted_directives
from multiproxy.cache._freshness import freshness_lifetime
from multiproxy.http1._headers import Headers
from multiproxy.pipeline._errors import ConfigError

CDN = CacheConfig(targets=GATEWAY_TARGETS)


def cc(*fields, targets=(b"cdn-cache-control",)):
    return parse_response_directives(Headers(list(fields)), targets)


# -- reading the directives -------------------------------------------------------------------


def test_targeted_field_replaces_cache_control():
    d = cc((b"Cache-Control", b"no-store"), (b"CDN-Cache-Control", b"max-age=60"))
    assert (d.max_age, d.no_store, d.target) == (60, False, b"cdn-cache-control")


def test_without_a_target_list_the_targeted_field_changes_nothing():
    d = cc((b"Cache-Control", b"no-store"), (b"CDN-Cache-Control", b"max-age=60"), targets=())
    assert (d.max_age, d.no_store, d.target) == (None, True, None)


@pytest.mark.parametrize(
    "value",
    [b"", b"max-age=60,", b"Max-Age=60", b"max-age = 60", b"max-age=60 no-store", b'private="x'],
)
def test_invalid_or_empty_targeted_field_is_ignored(value):
    d = cc((b"Cache-Control", b"max-age=5"), (b"CDN-Cache-Control", value))
    assert (d.max_age, d.target) == (5, None)


def test_first_valid_field_of_the_target_list_wins():
    targets = (b"examplecdn-cache-control", b"cdn-cache-control")
    both = cc((b"CDN-Cache-Control", b"max-age=60"), (b"ExampleCDN-Cache-Control", b"max-age=7"),
              targets=targets)
    assert (both.max_age, both.target) == (7, b"examplecdn-cache-control")
    broken_first = cc((b"CDN-Cache-Control", b"max-age=60"),
                      (b"ExampleCDN-Cache-Control", b"max-age=7,,"), targets=targets)
    assert (broken_first.max_age, broken_first.target) == (60, b"cdn-cache-control")


def test_field_lines_of_a_targeted_field_are_one_dictionary():
    d = cc((b"CDN-Cache-Control", b"max-age=60"), (b"CDN-Cache-Control", b"must-revalidate"))
    assert d.max_age == 60 and d.must_revalidate


def test_member_values_map_to_directive_arguments():
    d = targeted_directives([b'max-age=60, no-cache="set-cookie", private, x=tok;p=1'])
    assert d == {b"max-age": b"60", b"no-cache": b"set-cookie", b"private": None, b"x": b"tok"}


@pytest.mark.parametrize("value", [b"max-age=1.5", b"max-age=?0", b"max-age=:AA==:",
                                   b"max-age=(60)"])
def test_values_no_directive_can_have_are_malformed_not_coerced(value):
    assert targeted_directives([value]) == {b"max-age": INVALID}
    assert cc((b"CDN-Cache-Control", value)).max_age == 0  # stale, never fresher


def test_no_store_with_a_false_value_still_forbids_storing():
    assert cc((b"CDN-Cache-Control", b"no-store=?0")).no_store


def test_expires_is_ignored_with_a_targeted_field():
    date = 1_700_000_000.0
    headers = Headers([(b"CDN-Cache-Control", b"public"),
                       (b"Expires", b"Wed, 21 Oct 2099 07:28:00 GMT")])
    assert freshness_lifetime(200, headers, cc(*headers), date) == 0.0
    plain = cc(*headers, targets=())
    assert freshness_lifetime(200, headers, plain, date) > 0


# -- the cache obeying it ---------------------------------------------------------------------


def test_cdn_max_age_with_cache_control_no_store_is_stored_and_hit_until_it_expires():
    t = Harness(CDN)
    origin = t.origin((b"CDN-Cache-Control", b"max-age=60"), (b"Cache-Control", b"no-store"))
    first = t.request(respond=origin)
    assert first.forwarded and first["cache-control"] == b"no-store"
    t.advance(59)
    hit = t.request(respond=origin)
    assert not hit.forwarded and hit.body == b"body-1" and hit.x_cache == "HIT"
    # Sent on as it came: other caches still see no-store (RFC 9213 3).
    assert hit["cdn-cache-control"] == b"max-age=60" and hit["cache-control"] == b"no-store"
    t.advance(2)
    assert t.request(respond=origin).forwarded


def test_forward_cache_has_no_targets_by_default():
    t = Harness(CacheConfig())
    origin = t.origin((b"CDN-Cache-Control", b"max-age=60"), (b"Cache-Control", b"no-store"))
    t.request(respond=origin)
    assert t.request(respond=origin).forwarded
    assert t.served == 2


def test_targeted_no_store_and_private_override_a_generous_cache_control():
    for value in (b"no-store", b"private"):
        t = Harness(CDN)
        origin = t.origin((b"CDN-Cache-Control", value), (b"Cache-Control", b"max-age=600"))
        t.request(respond=origin)
        assert t.request(respond=origin).forwarded


def test_invalid_targeted_field_falls_back_to_cache_control():
    t = Harness(CDN)
    origin = t.origin((b"CDN-Cache-Control", b"max-age=600,"), (b"Cache-Control", b"max-age=5"))
    t.request(respond=origin)
    t.advance(4)
    assert not t.request(respond=origin).forwarded
    t.advance(2)
    assert t.request(respond=origin).forwarded


def test_targeted_field_without_lifetime_ignores_expires():
    t = Harness(CDN)
    origin = t.origin((b"CDN-Cache-Control", b"public"), (b"Expires", t.date(600)))
    t.request(respond=origin)
    assert t.request(respond=origin).forwarded


def test_targeted_must_revalidate_forbids_serving_stale_on_error():
    from test_cache_core import Unreachable

    t = Harness(CacheConfig(targets=GATEWAY_TARGETS, stale_if_unreachable=600))
    origin = t.origin((b"CDN-Cache-Control", b"max-age=10, must-revalidate"),
                      (b"Cache-Control", b"max-age=10"), (b"ETag", b'"v1"'))
    t.request(respond=origin)
    t.advance(20)

    def down(method, upstream):
        raise Unreachable()

    assert t.request(respond=down).status == 504


def test_revalidation_takes_the_new_targeted_lifetime_from_the_304():
    t = Harness(CDN)
    t.request(respond=t.origin((b"CDN-Cache-Control", b"max-age=10"), (b"ETag", b'"v1"')))
    t.advance(11)
    not_modified = t.origin((b"CDN-Cache-Control", b"max-age=100"), (b"ETag", b'"v1"'),
                            status=304, body=b"")
    revalidated = t.request(respond=not_modified)
    assert revalidated.upstream.get(b"if-none-match") == b'"v1"'
    assert revalidated.status == 200 and revalidated.body == b"body-1"
    t.advance(90)
    assert not t.request(respond=not_modified).forwarded


def test_strip_targets_removes_only_the_cache_own_targeted_fields():
    t = Harness(CacheConfig(targets=GATEWAY_TARGETS, strip_targets=True))
    origin = t.origin((b"CDN-Cache-Control", b"max-age=60"), (b"Cache-Control", b"no-store"),
                      (b"Other-Cache-Control", b"max-age=5"))
    relayed = t.request(respond=origin)
    hit = t.request(respond=origin)
    for r in (relayed, hit):
        assert r["cdn-cache-control"] is None
        assert r["other-cache-control"] == b"max-age=5"  # not on the list: passed through
        assert r["cache-control"] == b"no-store"
    assert not hit.forwarded


# -- configuration ----------------------------------------------------------------------------


def table(values: dict, targets=()) -> CacheConfig:
    return cache_from_table(TableReader(values, "reverse[0].cache"), targets)


def test_targets_from_the_table():
    assert table({}).targets == ()
    assert table({}, GATEWAY_TARGETS).targets == ("CDN-Cache-Control",)
    assert table({"targets": []}, GATEWAY_TARGETS).targets == ()
    config = table({"targets": ["ExampleCDN-Cache-Control", "CDN-Cache-Control"],
                    "strip_targets": True})
    assert config.targets == ("ExampleCDN-Cache-Control", "CDN-Cache-Control")
    assert config.strip_targets


@pytest.mark.parametrize(
    "value, message",
    [
        ("CDN-Cache-Control", "expected a list"),
        (["bad name"], "not a field name"),
        (["Cache-Control"], "not a target"),
        (["CDN-Cache-Control", "cdn-cache-control"], "given twice"),
        ([1], "not a field name"),
    ],
)
def test_bad_targets_name_the_key(value, message):
    with pytest.raises(ConfigError, match=f"reverse\\[0\\].cache.targets.*{message}"):
        table({"targets": value})


def test_reverse_proxy_cache_answers_to_cdn_cache_control_by_default():
    from multiproxy.reverse import reverse_config_from_table

    base = {"backends": ["http://127.0.0.1:9001"]}
    config = reverse_config_from_table(TableReader({**base, "cache": {"size": "1MiB"}},
                                                   "reverse[0]"))
    assert config.cache.targets == GATEWAY_TARGETS
    off = reverse_config_from_table(TableReader({**base, "cache": {"targets": []}}, "reverse[0]"))
    assert off.cache.targets == ()


def test_forward_command_line_targets():
    from multiproxy.forward._config import ForwardOptions

    o = ForwardOptions()
    o.parseOptions([])
    assert o.config.cache.targets == () and not o.config.cache.strip_targets
    o = ForwardOptions()
    o.parseOptions(["--cache-target", "ExampleCDN-Cache-Control", "--cache-target",
                    "CDN-Cache-Control", "--cache-strip-targets"])
    assert o.config.cache.targets == ("ExampleCDN-Cache-Control", "CDN-Cache-Control")
    assert o.config.cache.strip_targets
    with pytest.raises(usage.UsageError, match="--cache-target: 'a b' is not a field name"):
        ForwardOptions().parseOptions(["--cache-target", "a b"])
