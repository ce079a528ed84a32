"""Tests for the reverse proxy's route table (pure: no reactor)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from multiproxy.reverse._routing import (
    Route,
    RouteTable,
    normalise_host,
    normalise_path,
)


def table() -> RouteTable:
    return RouteTable([
        Route("api", hosts=("example.com",), path="/api", strip_prefix=True),
        Route("api-v2", hosts=("example.com",), path="/api/v2", replace_prefix="/v2"),
        Route("www", hosts=("example.com", "www.example.com")),
        Route("tenants", hosts=("*.example.com",)),
        Route("deep", hosts=("*.eu.example.com",)),
        Route("static", path="/static/", host_header="backend"),
        Route("fallback"),
    ])


@pytest.mark.parametrize("host,target,pool,forwarded", [
    ("example.com", b"/", "www", b"/"),
    ("example.com", b"/api", "api", b"/"),
    ("example.com", b"/api/", "api", b"/"),
    ("example.com", b"/api/users?id=1", "api", b"/users?id=1"),
    ("example.com", b"/api/v2/users", "api-v2", b"/v2/users"),
    ("example.com", b"/api/v2", "api-v2", b"/v2"),
    ("example.com", b"/apix", "www", b"/apix"),
    ("www.example.com", b"/api", "www", b"/api"),
    ("a.example.com", b"/x", "tenants", b"/x"),
    ("a.eu.example.com", b"/x", "deep", b"/x"),
    ("eu.example.com", b"/x", "tenants", b"/x"),
    ("other.test", b"/static/app.js", "static", b"/static/app.js"),
    ("other.test", b"/static", "static", b"/static"),
    ("other.test", b"/staticx", "fallback", b"/staticx"),
    ("", b"/", "fallback", b"/"),
])
def test_host_and_longest_prefix_choose_the_pool(host, target, pool, forwarded) -> None:
    match = table().match(host, target)
    assert match is not None
    assert (match.pool, match.target) == (pool, forwarded)


def test_host_matching_ignores_case_port_and_trailing_dot() -> None:
    for host in ("EXAMPLE.COM", "example.com.", "example.com:8443", b"Example.Com:80"):
        match = table().match(host, b"/api/x")
        assert match is not None and match.pool == "api", host


def test_wildcard_does_not_match_the_bare_domain() -> None:
    t = RouteTable([Route("w", hosts=("*.example.com",))])
    assert t.match("example.com", b"/") is None
    assert t.match("a.example.com", b"/") is not None


def test_a_host_falls_back_to_less_specific_routes_for_unknown_paths() -> None:
    t = RouteTable([Route("api", hosts=("example.com",), path="/api"), Route("web")])
    assert t.match("example.com", b"/index.html").pool == "web"


def test_no_route_gives_none() -> None:
    t = RouteTable([Route("api", hosts=("example.com",), path="/api")])
    assert t.match("other.test", b"/api") is None
    assert t.match("example.com", b"/") is None


def test_non_origin_form_targets_are_not_routed() -> None:
    assert table().match("example.com", b"*") is None
    assert table().match("example.com", b"example.com:443") is None


def test_invalid_host_values_are_not_routed() -> None:
    for host in ("exa mple.com", "example.com:port", "[::1", "a/b", "user@host"):
        assert table().match(host, b"/") is None, host


def test_dot_segments_and_escapes_cannot_dodge_a_route() -> None:
    t = RouteTable([Route("admin", path="/admin"), Route("public")])
    for target in (b"/x/../admin", b"/%61dmin", b"/./admin/", b"/public/../admin/secret"):
        assert t.match("h", target).pool == "admin", target
    # An encoded slash is data, not a separator.
    assert t.match("h", b"/x%2F..%2Fadmin").pool == "public"


def test_rewrite_uses_normalised_path_and_keeps_query() -> None:
    t = RouteTable([Route("a", path="/app", replace_prefix="/internal/")])
    assert t.match("h", b"/%61pp/./x?q=%20").target == b"/internal/x?q=%20"
    assert t.match("h", b"/app?").target == b"/internal/?"


def test_unrewritten_target_is_forwarded_byte_for_byte() -> None:
    t = RouteTable([Route("a")])
    assert t.match("h", b"/a/%7e/../b?x=1").target == b"/a/%7e/../b?x=1"


def test_knows_host_excludes_the_default_virtual_host() -> None:
    t = table()
    assert t.knows_host("example.com:80")
    assert t.knows_host("Z.example.com")
    assert not t.knows_host("evil.test")
    assert not RouteTable([Route("x")]).knows_host("anything.test")


def test_host_header_mode_and_cache_flag_travel_with_the_route() -> None:
    match = table().match("x", b"/static/a")
    assert match.route.host_header == "backend"
    assert not match.route.cache


@pytest.mark.parametrize("kwargs,message", [
    ({"path": "api"}, "must start with '/'"),
    ({"path": "/a?b"}, "must not contain"),
    ({"strip_prefix": True, "replace_prefix": "/x"}, "either strip_prefix or replace_prefix"),
    ({"replace_prefix": "x"}, "replace_prefix must start"),
    ({"host_header": "rewrite"}, "'keep' or 'backend'"),
    ({"hosts": ("*",)}, "leave 'hosts' empty"),
    ({"hosts": ("bad host",)}, "must be a name"),
    ({"hosts": ("a.*.com",)}, "must be a name"),
])
def test_bad_routes_are_refused_with_a_reason(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        Route("p", **kwargs)


def test_duplicate_host_and_path_is_refused() -> None:
    with pytest.raises(ValueError, match="both claim path '/api' on example.com"):
        RouteTable([Route("a", hosts=("example.com",), path="/api"),
                    Route("b", hosts=("EXAMPLE.com",), path="/api/")])
    with pytest.raises(ValueError, match="default virtual host"):
        RouteTable([Route("a"), Route("b", path="/")])


def test_pools_and_default_are_reported() -> None:
    assert table().pools == {"api", "api-v2", "www", "tenants", "deep", "static", "fallback"}
    assert table().has_default
    assert not RouteTable([Route("a", hosts=("a.test",))]).has_default


def test_normalise_host_forms() -> None:
    assert normalise_host("[2001:DB8::1]:443") == "2001:db8::1"
    assert normalise_host("Bücher.example") == "xn--bcher-kva.example"
    assert normalise_host("") == ""
    assert normalise_host("[zz]") is None


# ---- properties -------------------------------------------------------------------------------

segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_~", min_size=1, max_size=6)
paths = st.lists(segment, min_size=0, max_size=5).map(lambda s: "/" + "/".join(s))
label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
names = st.lists(label, min_size=2, max_size=4).map(".".join)


@given(prefixes=st.lists(paths, min_size=1, max_size=8, unique=True), request=paths)
def test_property_longest_matching_prefix_wins(prefixes, request) -> None:
    routes = [Route(f"p{i}", path=p) for i, p in enumerate(prefixes)]
    try:
        t = RouteTable(routes)
    except ValueError:
        assume(False)
    match = t.match("h", request.encode())

    def covers(prefix: str) -> bool:
        return prefix == "/" or request == prefix or request.startswith(prefix + "/")

    covering = [r for r in routes if covers(r.path)]
    if not covering:
        assert match is None
    else:
        best = max(covering, key=lambda r: 0 if r.path == "/" else len(r.path))
        assert match is not None and match.route == best


@given(host=names, request=paths)
def test_property_exact_host_beats_wildcard_beats_default(host, request) -> None:
    parent = host.split(".", 1)[1]
    t = RouteTable([Route("exact", hosts=(host,)), Route("wild", hosts=("*." + parent,)),
                    Route("default")])
    assert t.match(host, request.encode()).pool == "exact"
    assert t.match("zz-" + host, request.encode()).pool in ("default", "wild")
    assert t.match("q." + parent, request.encode()).pool == ("exact" if "q." + parent == host
                                                            else "wild")
    assert t.match(parent, request.encode()).pool == "default"


@given(prefix=paths, rest=paths, query=st.none() | st.text(alphabet="a=&1", max_size=6))
def test_property_strip_prefix_round_trips(prefix, rest, query) -> None:
    t = RouteTable([Route("p", path=prefix, strip_prefix=True)])
    target = (prefix.rstrip("/") + rest).encode() or b"/"
    if query is not None:
        target += b"?" + query.encode()
    match = t.match("h", target)
    assert match is not None
    expected = rest.encode()
    if query is not None:
        expected += b"?" + query.encode()
    assert match.target == expected


@given(st.binary(max_size=40))
def test_property_normalised_path_is_stable_and_rooted(raw) -> None:
    path = b"/" + raw.replace(b"?", b"").replace(b"#", b"")
    once = normalise_path(path)
    assert once.startswith(b"/")
    assert normalise_path(once) == once
    assert b"/../" not in once and not once.endswith(b"/..")


@given(st.text(max_size=30), paths)
def test_property_match_never_raises_on_any_host(host, request) -> None:
    result = table().match(host, request.encode())
    assert result is None or result.target.startswith(b"/")
