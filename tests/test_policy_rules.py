"""Rule matching, first-match-wins order, the host index and time windows."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from multiproxy.pipeline._interfaces import IPolicy
from multiproxy.pipeline._values import Intent
from multiproxy.policy import NetworkSet, Rule, RuleSet, TimeWindow, parse_network
from multiproxy.policy._networks import client_address
from multiproxy.policy._rules import MatchContext, parse_ports
from multiproxy.policy._timewindow import parse_days, parse_hours, parse_zone

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, zone: ZoneInfo = BERLIN) -> float:
    """Epoch seconds of a wall-clock time ``YYYY-MM-DD HH:MM`` in ``zone``."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=zone).timestamp()


def intent(**kw) -> Intent:
    values = dict(kind="http", proxy="fwd", client_host="10.0.0.5", client_port=4000,
                  host="example.com", port=80, method="GET", scheme="http",
                  target="http://example.com/")
    values.update(kw)
    return Intent(**values)


def ruleset(*rules: Rule, default: str = "allow", clock: Clock | None = None) -> RuleSet:
    return RuleSet(rules, default=default, clock=(clock or Clock()).seconds)


def test_ruleset_provides_ipolicy() -> None:
    assert verifyObject(IPolicy, ruleset())


def test_empty_ruleset_returns_the_default_decision_named_default() -> None:
    decision = ruleset(default="deny").decide(intent())
    assert (decision.action, decision.rule) == ("deny", "default")


def test_first_matching_rule_wins_and_names_itself_in_the_decision() -> None:
    rules = ruleset(
        Rule.build("allow-admin", "allow", clients=["10.0.0.5"]),
        Rule.build("deny-all-example", "deny", hosts=[".example.com"], message="no"),
        default="allow",
    )
    assert rules.decide(intent()).rule == "allow-admin"
    decision = rules.decide(intent(client_host="10.0.0.6"))
    assert (decision.action, decision.rule, decision.message) == ("deny", "deny-all-example", "no")


def test_an_indexed_host_rule_after_an_unindexed_rule_does_not_jump_the_queue() -> None:
    rules = ruleset(
        Rule.build("any-connect", "deny", methods=["CONNECT"]),
        Rule.build("site", "allow", hosts=["example.com"]),
        default="deny",
    )
    assert rules.decide(intent(method="CONNECT", kind="connect")).rule == "any-connect"
    assert rules.decide(intent()).rule == "site"


def test_every_condition_must_hold() -> None:
    rule = Rule.build("r", "deny", hosts=[".example.com"], ports=[443], methods=["CONNECT"])
    rules = ruleset(rule)
    assert rules.decide(intent(port=443, method="CONNECT")).rule == "r"
    assert rules.decide(intent(port=80, method="CONNECT")).rule == "default"
    assert rules.decide(intent(port=443, method="GET")).rule == "default"
    assert rules.decide(intent(port=443, method="CONNECT", host="example.org")).rule == "default"


def test_methods_match_regardless_of_case_so_case_cannot_dodge_a_rule() -> None:
    rules = ruleset(Rule.build("no-delete", "deny", methods=["delete"]))
    assert rules.decide(intent(method="DELETE")).rule == "no-delete"
    assert rules.decide(intent(method="dElEtE")).rule == "no-delete"
    assert rules.decide(intent(method="GET")).rule == "default"


def test_ports_match_single_ports_and_inclusive_ranges() -> None:
    ports = parse_ports([443, "8000-8999"])
    assert 443 in ports and 8000 in ports and 8999 in ports
    assert 80 not in ports and 9000 not in ports


@pytest.mark.parametrize("value, fragment", [
    (0, "outside"), (70000, "outside"), ("9-1", "backwards"), ("http", "not a port"),
    ([], "no ports"), (True, "port number"), (1.5, "port number or a range"),
])
def test_bad_ports_are_refused(value, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_ports(value)


def test_url_regex_is_searched_in_the_target() -> None:
    rules = ruleset(Rule.build("no-admin", "deny", url_regex=[r"^https?://[^/]+/admin(/|$)"]))
    assert rules.decide(intent(target="http://example.com/admin/x")).rule == "no-admin"
    assert rules.decide(intent(target="http://example.com/administrator")).rule == "default"


def test_bad_url_regex_is_refused_with_the_pattern_named() -> None:
    with pytest.raises(ValueError, match=r"'\(unclosed' is not a valid regular expression"):
        Rule.build("r", "deny", url_regex=["(unclosed"])


def test_kind_and_proxy_conditions_let_one_list_serve_every_proxy() -> None:
    rules = ruleset(
        Rule.build("relay-only-office", "deny", kinds=["tcp"], proxies=["db-relay"]),
        Rule.build("no-tunnels", "deny", kinds=["connect"]),
    )
    tcp = Intent("tcp", "db-relay", "10.0.0.5", 1, port=5432)
    assert rules.decide(tcp).rule == "relay-only-office"
    assert rules.decide(Intent("tcp", "other", "10.0.0.5", 1, port=5432)).rule == "default"
    assert rules.decide(intent(kind="connect", method="CONNECT")).rule == "no-tunnels"


def test_rules_with_host_conditions_never_match_a_tcp_intent_without_host() -> None:
    rules = ruleset(Rule.build("r", "deny", hosts=["*"]))
    assert rules.decide(Intent("tcp", "relay", "10.0.0.5", 1, port=22)).rule == "default"


def test_client_networks_match_ipv4_ipv6_and_ipv4_mapped_clients() -> None:
    rules = ruleset(Rule.build("office", "allow", clients=["10.0.0.0/8", "2001:db8::/32"]),
                    default="deny")
    assert rules.decide(intent(client_host="10.200.1.1")).rule == "office"
    assert rules.decide(intent(client_host="::ffff:10.1.2.3")).rule == "office"
    assert rules.decide(intent(client_host="2001:db8:1::7")).rule == "office"
    assert rules.decide(intent(client_host="192.168.1.1")).rule == "default"
    assert rules.decide(intent(client_host="/tmp/socket")).rule == "default"


def test_users_groups_and_authenticated_conditions() -> None:
    rules = ruleset(
        Rule.build("boss", "allow", users=["alice"]),
        Rule.build("interns-no", "deny", groups=["interns"]),
        Rule.build("staff", "allow", authenticated=True),
        Rule.build("anon", "deny", authenticated=False),
    )
    assert rules.decide(intent(user="alice", groups=frozenset({"interns"}))).rule == "boss"
    assert rules.decide(intent(user="bob", groups=frozenset({"interns"}))).rule == "interns-no"
    assert rules.decide(intent(user="carol")).rule == "staff"
    assert rules.decide(intent()).rule == "anon"


def test_an_authenticate_rule_asks_anonymous_clients_and_lets_known_users_pass_on() -> None:
    rules = ruleset(
        Rule.build("login", "authenticate", hosts=[".example.com"]),
        Rule.build("interns-no", "deny", groups=["interns"]),
        default="allow",
    )
    assert rules.decide(intent()).action == "authenticate"
    assert rules.decide(intent(user="bob")).rule == "default"
    assert rules.decide(intent(user="eve", groups=frozenset({"interns"}))).rule == "interns-no"


def test_rule_names_must_differ_and_default_is_reserved() -> None:
    with pytest.raises(ValueError, match="two rules are called 'a'"):
        ruleset(Rule.build("a", "deny"), Rule.build("a", "allow"))
    with pytest.raises(ValueError, match="reserved"):
        ruleset(Rule.build("default", "deny"))
    with pytest.raises(ValueError, match="allow or deny"):
        ruleset(default="authenticate")
    with pytest.raises(ValueError, match="action must be one of"):
        Rule.build("a", "block")  # type: ignore[arg-type]


def test_a_large_rule_set_is_indexed_and_still_first_match_wins() -> None:
    rules = [Rule.build(f"site-{i}", "deny", hosts=[f".site{i}.example"]) for i in range(2000)]
    rules.insert(1000, Rule.build("early", "allow", hosts=["www.site1500.example"]))
    rs = ruleset(*rules)
    assert rs.decide(intent(host="www.site1500.example")).rule == "early"
    assert rs.decide(intent(host="a.site1500.example")).rule == "site-1500"
    assert rs.decide(intent(host="a.site5.example")).rule == "site-5"
    assert rs.decide(intent(host="nothing.example")).rule == "default"


def test_a_rule_listing_many_hosts_checks_them_by_lookup() -> None:
    hosts = [f"site{i}.example" for i in range(5000)]
    rs = ruleset(Rule.build("many", "deny", hosts=hosts))
    assert rs.decide(intent(host="site4999.example")).rule == "many"
    assert rs.decide(intent(host="site5000.example")).rule == "default"


class CountingClock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


def test_the_clock_is_only_read_when_a_time_window_is_checked_and_once_per_decision() -> None:
    clock = CountingClock(at("2026-03-02 10:00"))
    rs = RuleSet([
        Rule.build("w1", "deny", hosts=["a.example"], days="Sat"),
        Rule.build("w2", "deny", days="Sun"),
        Rule.build("plain", "allow", hosts=["b.example"]),
    ], clock=clock)
    rs.decide(intent(host="b.example"))
    assert clock.calls == 1
    rs.decide(intent(host="a.example"))
    assert clock.calls == 2
    rs.decide(intent(host="c.example", method="POST"))
    assert clock.calls == 3


# Reference: the index must give exactly what trying each rule in turn gives.

_names = st.sampled_from(["a.example", "b.example", "x.a.example", "y.x.a.example",
                          "example", "c.test", "127.0.0.1", "::1", "10.1.2.3"])
_patterns = st.one_of(
    _names, _names.map(lambda n: n if ":" in n or n[0].isdigit() else "." + n),
    st.sampled_from(["*.example", "*.a.example", "x*", "*", "?.example", "10.0.0.0/8",
                     "::/0", "*.test"]),
)
_rule_specs = st.lists(
    st.fixed_dictionaries({
        "action": st.sampled_from(["allow", "deny", "authenticate"]),
        "hosts": st.one_of(st.none(), st.lists(_patterns, min_size=1, max_size=3)),
        "methods": st.one_of(st.none(), st.just(["CONNECT"])),
        "clients": st.one_of(st.none(), st.just(["10.0.0.0/24"])),
    }),
    max_size=12,
)


@settings(max_examples=120, deadline=None)
@given(_rule_specs, _names, st.sampled_from(["GET", "CONNECT"]),
       st.sampled_from(["10.0.0.5", "192.0.2.1"]), st.sampled_from([None, "alice"]))
def test_property_indexed_decision_equals_trying_every_rule_in_order(
    specs: list[dict], host: str, method: str, client: str, user: str | None,
) -> None:
    rules = [Rule.build(f"r{i}", spec.pop("action"), **{k: v for k, v in spec.items()
                                                          if v is not None})
             for i, spec in enumerate(specs)]
    rs = RuleSet(rules, default="deny", clock=lambda: 0.0)
    it = intent(host=host, method=method, client_host=client, user=user)
    context = MatchContext(it, lambda: 0.0)
    expected = next((r.name for r in rules if r.matches(context)), "default")
    assert rs.decide(it).rule == expected


# Networks -------------------------------------------------------------------

def test_network_set_membership_for_many_prefix_lengths() -> None:
    nets = NetworkSet(parse_network(n) for n in ["10.0.0.0/8", "192.168.1.0/24", "1.2.3.4",
                                                  "2001:db8::/32", "::1"])
    for address, expected in [("10.9.9.9", True), ("192.168.1.200", True), ("192.168.2.1", False),
                              ("1.2.3.4", True), ("1.2.3.5", False), ("2001:db8:ffff::1", True),
                              ("::1", True), ("::2", False)]:
        assert (ipaddress.ip_address(address) in nets) is expected, address
    assert None not in nets


@given(st.integers(0, 2**32 - 1), st.integers(0, 32), st.integers(0, 2**32 - 1))
def test_property_network_set_agrees_with_ipaddress(base: int, prefix: int, probe: int) -> None:
    network = ipaddress.ip_network((base, prefix), strict=False)
    address = ipaddress.IPv4Address(probe)
    assert (address in NetworkSet([network])) is (address in network)


def test_parse_network_refuses_host_bits_and_maps_ipv4_mapped_networks() -> None:
    with pytest.raises(ValueError, match="host bits"):
        parse_network("10.0.0.1/8")
    with pytest.raises(ValueError, match="not a network"):
        parse_network("ten")
    assert str(parse_network("::ffff:10.0.0.0/104")) == "10.0.0.0/8"
    assert str(parse_network("[2001:db8::]/32")) == "2001:db8::/32"


def test_client_address_unwraps_ipv4_mapped_and_rejects_non_addresses() -> None:
    assert str(client_address("::ffff:192.0.2.1")) == "192.0.2.1"
    assert str(client_address("fe80::1%eth0")) == "fe80::1"
    assert client_address("unix-socket") is None


# Time windows ---------------------------------------------------------------

@pytest.mark.parametrize("spec, days", [
    ("Mon-Fri", {0, 1, 2, 3, 4}), ("sat,SUN", {5, 6}), ("Fri-Mon", {4, 5, 6, 0}),
    ("Mon,Wed-Thu", {0, 2, 3}), ("*", set(range(7))), (["Tuesday", "thu"], {1, 3}),
])
def test_days_of_the_week_parse(spec, days) -> None:
    assert parse_days(spec) == frozenset(days)


@pytest.mark.parametrize("spec, fragment", [
    ("Mon-Fryday", "not a day of the week"), ("", "not a day"), ([], "no days"),
])
def test_bad_days_are_refused(spec, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_days(spec)


@pytest.mark.parametrize("spec, fragment", [
    ("9-17", "not a time of day"), ("09:00", "not a range"), ("25:00-26:00", "00:00-24:00"),
    ("09:60-10:00", "00:00-24:00"), ("24:00-01:00", "00:00-24:00"), ("09:00-09:00", "empty"),
])
def test_bad_hours_are_refused(spec, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_hours(spec)


def test_unknown_time_zone_is_refused_with_advice() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Europe/Berln'"):
        parse_zone("Europe/Berln")


def test_work_hours_window_is_half_open_and_on_the_zones_wall_clock() -> None:
    window = TimeWindow.parse("Mon-Fri", "09:00-17:30", "Europe/Berlin")
    # 2026-03-02 is a Monday.
    assert not window.contains(at("2026-03-02 08:59"))
    assert window.contains(at("2026-03-02 09:00"))
    assert window.contains(at("2026-03-02 17:29"))
    assert not window.contains(at("2026-03-02 17:30"))
    assert window.contains(at("2026-03-06 12:00"))      # Friday
    assert not window.contains(at("2026-03-07 12:00"))  # Saturday
    # 08:30 UTC is 09:30 in Berlin in winter, 10:30 in summer: both inside.
    assert window.contains(at("2026-03-02 08:30", ZoneInfo("UTC")))
    assert not window.contains(at("2026-03-02 16:45", ZoneInfo("UTC")))
    assert window.contains(at("2026-07-06 15:15", ZoneInfo("UTC")))
    assert not window.contains(at("2026-07-06 15:45", ZoneInfo("UTC")))


def test_window_answers_from_the_last_second_only_within_that_second() -> None:
    window = TimeWindow.parse("Mon-Fri", "09:00-17:30", "Europe/Berlin")
    end = at("2026-03-02 17:30")
    assert window.contains(end - 0.5) and window.contains(end - 0.001)  # 17:29:59.x
    assert not window.contains(end)
    assert not window.contains(end + 0.999)
    assert window.contains(end - 0.25)  # back in 17:29:59: asked again, not remembered
    assert window == TimeWindow.parse("Mon-Fri", "09:00-17:30", "Europe/Berlin")
    assert hash(window) == hash(TimeWindow.parse("Mon-Fri", "09:00-17:30", "Europe/Berlin"))


@given(st.floats(0, 4e9), st.floats(0, 4e9))
def test_property_a_remembered_answer_equals_a_fresh_one(first: float, second: float) -> None:
    window = TimeWindow.parse("Mon-Fri", ["09:00-12:00", "22:00-06:00"], "Europe/Berlin")
    window.contains(first)
    fresh = TimeWindow.parse("Mon-Fri", ["09:00-12:00", "22:00-06:00"], "Europe/Berlin")
    assert window.contains(second) is fresh.contains(second)
    assert window.contains(first) is fresh.contains(first)


def test_window_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    window = TimeWindow.parse("Fri", "22:00-06:00", "Europe/Berlin")
    assert window.contains(at("2026-03-06 23:00"))      # Friday night
    assert window.contains(at("2026-03-07 05:59"))      # early Saturday
    assert not window.contains(at("2026-03-07 06:00"))
    assert not window.contains(at("2026-03-06 03:00"))  # Friday early: Thursday's night
    assert not window.contains(at("2026-03-07 23:00"))  # Saturday night


def test_window_follows_daylight_saving_changes() -> None:
    window = TimeWindow.parse("Sun", "02:00-04:00", "Europe/Berlin")
    # 2026-03-29: clocks jump from 02:00 to 03:00 CET->CEST; 01:30 UTC is 03:30 CEST.
    assert window.contains(datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo("UTC")).timestamp())
    assert not window.contains(datetime(2026, 3, 29, 2, 30, tzinfo=ZoneInfo("UTC")).timestamp())


def test_window_with_several_hour_ranges_and_whole_day_ranges() -> None:
    window = TimeWindow.parse("Mon", ["08:00-12:00", "13:00-17:00"], "UTC")
    utc = ZoneInfo("UTC")
    assert window.contains(at("2026-03-02 11:00", utc))
    assert not window.contains(at("2026-03-02 12:30", utc))
    assert window.contains(at("2026-03-02 16:00", utc))
    whole = TimeWindow.parse("Sat", "00:00-24:00", "UTC")
    assert whole.contains(at("2026-03-07 23:59", utc))
    assert not whole.contains(at("2026-03-08 00:00", utc))
    assert str(window) == "Mon 08:00-12:00,13:00-17:00 UTC"


def test_work_hours_rule_follows_the_injected_clock() -> None:
    clock = Clock()
    rules = ruleset(
        Rule.build("no-social-at-work", "deny", hosts=[".facebook.com", ".twitter.com"],
                   days="Mon-Fri", hours="09:00-17:30", timezone="Europe/Berlin"),
        clock=clock,
    )
    social = intent(host="www.twitter.com")
    clock.advance(at("2026-03-02 10:00"))
    assert rules.decide(social).rule == "no-social-at-work"
    clock.advance(8 * 3600)  # 18:00
    assert rules.decide(social).rule == "default"
    clock.advance(5 * 24 * 3600 - 8 * 3600)  # Saturday 10:00
    assert rules.decide(social).rule == "default"


@given(st.floats(0, 4e9), st.sets(st.integers(0, 6), min_size=1),
       st.integers(1, 95), st.integers(0, 95))
def test_property_a_window_crossing_midnight_is_its_evening_plus_the_next_mornings(
    epoch: float, days: set[int], start_q: int, end_q: int,
) -> None:
    start, end = start_q * 900, min(end_q, start_q - 1) * 900
    crossing = TimeWindow(frozenset(days), ((start, end),), BERLIN)
    evening = TimeWindow(frozenset(days), ((start, 86400),), BERLIN)
    next_days = frozenset((d + 1) % 7 for d in days)
    morning = TimeWindow(next_days, ((0, end),), BERLIN) if end else None
    expected = evening.contains(epoch) or (morning is not None and morning.contains(epoch))
    assert crossing.contains(epoch) is expected
