"""The [policy] TOML section, command-line rules, and reloading."""

from __future__ import annotations

import tomllib
from datetime import datetime
from zoneinfo import ZoneInfo

import bcrypt
import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from zope.interface.verify import verifyObject

from multiproxy._tablereader import TableReader
from multiproxy.pipeline._errors import ConfigError
from multiproxy.pipeline._interfaces import IPolicy
from multiproxy.pipeline._values import Intent
from multiproxy.policy import (
    PolicyHolder,
    load_policy_file,
    normalise_host,
    policy_from_options,
    policy_from_table,
    rules_from_options,
    settings_from_table,
)
from multiproxy.policy._denypage import DEFAULT_DENY_TEMPLATE

ISSUE_EXAMPLE = """
[policy]
default = "allow"
[[policy.rules]]
name = "no-social-at-work"
action = "deny"
hosts = [".facebook.com", ".twitter.com"]
days = "Mon-Fri"
hours = "09:00-17:30"
timezone = "Europe/Berlin"
message = "Social media is blocked during work hours"
"""

MONDAY_10 = datetime(2026, 3, 2, 10, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()


def settings(text: str, clock: Clock | None = None):
    data = tomllib.loads(text)
    return settings_from_table(TableReader(data["policy"], "policy"),
                               clock=(clock or Clock()).seconds)


def intent(host: str = "example.com", **kw) -> Intent:
    return Intent("http", "fwd", kw.pop("client_host", "10.0.0.5"), 4000, host=host, port=80,
                  method="GET", target=f"http://{host}/", **kw)


def test_the_issue_example_blocks_social_sites_in_work_hours() -> None:
    clock = Clock()
    clock.advance(MONDAY_10)
    s = settings(ISSUE_EXAMPLE, clock)
    decision = s.rules.decide(intent("www.facebook.com"))
    assert (decision.action, decision.rule, decision.message) == (
        "deny", "no-social-at-work", "Social media is blocked during work hours")
    assert s.rules.decide(intent("example.com")).action == "allow"
    clock.advance(9 * 3600)
    assert s.rules.decide(intent("www.facebook.com")).action == "allow"


def test_policy_from_table_reads_only_rule_keys_and_leaves_finish_to_the_caller() -> None:
    data = tomllib.loads(ISSUE_EXAMPLE + '\n[policy.auth]\nrealm = "x"\n')
    reader = TableReader(data["policy"], "policy")
    rules = policy_from_table(reader, clock=Clock().seconds)
    assert [r.name for r in rules.rules] == ["no-social-at-work"]
    with pytest.raises(ConfigError, match="policy.auth: unknown key"):
        reader.finish()


def test_every_rule_field_is_read() -> None:
    s = settings("""
[policy]
default = "deny"
timezone = "Europe/Berlin"
[policy.auth]
users = { alice = "$5$abc$qsg6EHbUzHQzF1POlD7zUwBINSELQxypPaeDcZe6vH0" }
[[policy.rules]]
name = "full"
action = "allow"
message = "m"
hosts = ["example.com", ".example.org", "*.example.net", "10.0.0.0/8"]
url_regex = "^http://"
ports = [80, "8000-8080"]
methods = ["GET", "head"]
clients = ["10.0.0.0/8", "::1"]
users = ["alice"]
groups = ["staff"]
authenticated = true
days = ["Mon-Fri"]
hours = ["09:00-12:00", "13:00-17:00"]
kinds = ["http"]
proxies = ["fwd"]
[[policy.rules]]
action = "authenticate"
""")
    full, unnamed = s.rules.rules
    assert full.name == "full" and unnamed.name == "rules[1]"
    assert full.methods == frozenset({"GET", "HEAD"})
    assert 8080 in full.ports and 81 not in full.ports
    assert full.window is not None and full.window.zone.key == "Europe/Berlin"
    assert s.rules.default.action == "deny"


@pytest.mark.parametrize("rule, message", [
    ('action = "block"', r"policy\.rules\[0\]\.action: must be one of allow, deny, authenticate"),
    ('action = "deny"\nhours = "9-17"',
     r"policy\.rules\[0\]\.hours: '9' in '9-17' is not a time of day"),
    ('name = "work"\naction = "deny"\nhours = "25:00-26:00"',
     r"policy\.rules\[0\]\.hours: .* \(in rule 'work'\)"),
    ('action = "deny"\ndays = "Mon-Fryday"', r"policy\.rules\[0\]\.days: 'fryday'"),
    ('action = "deny"\ndays = "Mon"\ntimezone = "Mars/Olympus"',
     r"policy\.rules\[0\]\.timezone: unknown time zone 'Mars/Olympus'"),
    ('action = "deny"\ntimezone = "UTC"', r"policy\.rules\[0\]\.timezone: has no effect"),
    ('action = "deny"\nhosts = ["..x"]', r"policy\.rules\[0\]\.hosts: host pattern '\.\.x'"),
    ('action = "deny"\nhosts = []', r"policy\.rules\[0\]\.hosts: a host condition needs"),
    ('action = "deny"\nhosts = [1]', r"policy\.rules\[0\]\.hosts: expected a list of strings"),
    ('action = "deny"\nclients = ["10.0.0.1/8"]', r"policy\.rules\[0\]\.clients: .*host bits"),
    ('action = "deny"\nports = [0]', r"policy\.rules\[0\]\.ports: port 0 is outside"),
    ('action = "deny"\nmethods = ["GE T"]', r"policy\.rules\[0\]\.methods: 'GE T'"),
    ('action = "deny"\nurl_regex = "("', r"policy\.rules\[0\]\.url_regex: '\(' is not"),
    ('action = "deny"\nkinds = ["udp"]', r"policy\.rules\[0\]\.kinds: 'udp' is not a kind"),
    ('action = "deny"\nhostz = ["x"]', r"policy\.rules\[0\]\.hostz: unknown key"),
    ('action = "deny"\nauthenticated = "yes"', r"policy\.rules\[0\]\.authenticated: expected"),
    ('action = "deny"\nusers = [""]', r"policy\.rules\[0\]\.users: expected a non-empty"),
])
def test_bad_rules_are_refused_naming_the_rule_and_the_field(rule: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(f'[policy]\n[[policy.rules]]\n{rule}\n[policy.auth]\nusers = {{a = '
                 f'"$5$abc$qsg6EHbUzHQzF1POlD7zUwBINSELQxypPaeDcZe6vH0"}}\n')


def test_the_fourth_rule_is_named_by_index_in_messages() -> None:
    rules = '[[policy.rules]]\naction = "allow"\n' * 3 + '[[policy.rules]]\naction = "deny"\n' \
        'hours = "9:00-8:00:00"\n'
    with pytest.raises(ConfigError, match=r"^policy\.rules\[3\]\.hours: "):
        settings("[policy]\n" + rules)


def test_duplicate_rule_names_are_refused() -> None:
    text = '[policy]\n' + '[[policy.rules]]\nname = "x"\naction = "allow"\n' * 2
    with pytest.raises(ConfigError, match="policy.rules: two rules are called 'x'"):
        settings(text)


def test_policy_level_keys_are_checked() -> None:
    with pytest.raises(ConfigError, match="policy.default: must be one of allow, deny"):
        settings('[policy]\ndefault = "maybe"\n')
    with pytest.raises(ConfigError, match="policy.timezone: unknown time zone"):
        settings('[policy]\ntimezone = "Nowhere/Special"\n')
    with pytest.raises(ConfigError, match="policy.rulez: unknown key"):
        settings('[policy]\nrulez = []\n')


def test_rules_about_users_need_an_auth_table() -> None:
    with pytest.raises(ConfigError, match=r"policy\.auth: rules use authentication"):
        settings('[policy]\n[[policy.rules]]\naction = "authenticate"\n')


def test_policy_wide_timezone_is_the_default_for_rules() -> None:
    s = settings('[policy]\ntimezone = "Asia/Tokyo"\n[[policy.rules]]\naction = "deny"\n'
                 'days = "Mon"\n')
    assert s.rules.rules[0].window.zone.key == "Asia/Tokyo"


def test_auth_table_reads_htpasswd_group_file_and_inline_groups(tmp_path) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    (tmp_path / "htpasswd").write_text(f"alice:{hashed}\n")
    (tmp_path / "groups").write_text("staff: alice\n")
    s = settings(f"""
[policy]
[policy.auth]
realm = "Office"
htpasswd = "{tmp_path / 'htpasswd'}"
group_file = "{tmp_path / 'groups'}"
groups = {{ admins = ["alice"] }}
cache_seconds = 60
""")
    assert s.auth.passwords == {"alice": hashed}
    assert s.auth.groups == {"alice": frozenset({"staff", "admins"})}
    assert s.auth.realm == "Office" and s.auth.cache_seconds == 60


@pytest.mark.parametrize("table, message", [
    ('htpasswd = "/nonexistent/htpasswd"', r"policy\.auth\.htpasswd: cannot read"),
    ('users = { eve = "$apr1$x$y" }', r"policy\.auth\.users\.eve: .*Apache MD5"),
    ('realm = "x"', r"policy\.auth\.htpasswd: no users"),
    ('users = { a = "$5$abc$qsg6EHbUzHQzF1POlD7zUwBINSELQxypPaeDcZe6vH0" }\ncache_size = 0',
     r"policy\.auth\.cache_size: must be at least 1"),
    ('users = { a = "$5$abc$qsg6EHbUzHQzF1POlD7zUwBINSELQxypPaeDcZe6vH0" }\ngroups = {s = 1}',
     r"policy\.auth\.groups\.s: expected a list of strings"),
])
def test_bad_auth_tables_are_refused(table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(f"[policy]\n[policy.auth]\n{table}\n")


def test_anonymity_and_limits_tables() -> None:
    s = settings("""
[policy]
[policy.anonymity]
referer = "origin"
user_agent = "Mozilla/5.0"
cookies = "remove"
remove = ["X-Client-Id"]
[policy.limits]
connections_per_client = 10
requests_per_second = 5
burst = 20
exempt = ["127.0.0.1"]
""")
    assert s.anonymity.referer == "origin" and s.anonymity.remove == frozenset({b"x-client-id"})
    assert s.limits.connections_per_client == 10 and s.limits.burst == 20
    assert s.limits.connection_limit().per_client == 10
    assert s.limits.request_rate_limit(clock=Clock().seconds).rate == 5
    off = settings('[policy]\n[policy.anonymity]\nenabled = false\n[policy.limits]\n')
    assert off.anonymity is None
    assert off.limits.connection_limit() is None
    assert off.limits.request_rate_limit(clock=Clock().seconds) is None


@pytest.mark.parametrize("table, message", [
    ('[policy.anonymity]\nreferer = "strip"', r"policy\.anonymity\.referer: must be one of"),
    ('[policy.anonymity]\nuser_agent = "ü"', r"policy\.anonymity\.user_agent: .*printable ASCII"),
    ('[policy.anonymity]\nremove = ["bad name"]', r"policy\.anonymity\.remove: 'bad name'"),
    ('[policy.limits]\nburst = 5', r"policy\.limits\.burst: has no effect"),
    ('[policy.limits]\nrequests_per_second = 1\nburst = 0.5', r"policy\.limits\.burst: must"),
    ('[policy.limits]\nipv6_prefix = 129', r"policy\.limits\.ipv6_prefix: must be at most"),
    ('[policy.limits]\nexempt = ["nope"]', r"policy\.limits\.exempt: 'nope' is not a network"),
])
def test_bad_anonymity_and_limit_tables_are_refused(table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings("[policy]\n" + table + "\n")


def test_deny_page_template_is_loaded_and_checked(tmp_path) -> None:
    good = tmp_path / "deny.html"
    good.write_text("<p>$host blocked by $rule</p>")
    s = settings(f'[policy]\ndeny_page = "{good}"\n')
    assert s.deny_template == "<p>$host blocked by $rule</p>"
    bad = tmp_path / "bad.html"
    bad.write_text("<p>$hots</p>")
    with pytest.raises(ConfigError, match=r"policy\.deny_page: .*unknown placeholder \$hots"):
        settings(f'[policy]\ndeny_page = "{bad}"\n')
    assert settings("[policy]\n").deny_template == DEFAULT_DENY_TEMPLATE


def test_load_policy_file_prefixes_errors_with_the_path(tmp_path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(ISSUE_EXAMPLE)
    assert len(load_policy_file(str(path), clock=Clock().seconds).rules) == 1
    path.write_text("[policy\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid TOML"):
        load_policy_file(str(path), clock=Clock().seconds)
    path.write_text("[other]\n")
    with pytest.raises(ConfigError, match=f"{path}: no \\[policy\\] table"):
        load_policy_file(str(path), clock=Clock().seconds)
    with pytest.raises(ConfigError, match="cannot read the policy file"):
        load_policy_file(str(tmp_path / "missing.toml"), clock=Clock().seconds)


# Command-line options -------------------------------------------------------

def test_deny_host_options_block_those_hosts_and_allow_the_rest() -> None:
    rules = policy_from_options(deny_hosts=[".twitter.com", "facebook.com"],
                                clock=Clock().seconds)
    assert rules.decide(intent("www.twitter.com")).rule == "cli-deny-host"
    assert rules.decide(intent(normalise_host("FACEBOOK.com."))).rule == "cli-deny-host"
    assert rules.decide(intent("example.com")).action == "allow"


def test_allow_network_options_admit_only_those_clients() -> None:
    rules = policy_from_options(allow_networks=["10.0.0.0/8"], deny_hosts=[".bad.example"],
                                clock=Clock().seconds)
    assert rules.decide(intent(client_host="10.1.1.1")).rule == "cli-allow"
    assert rules.decide(intent(client_host="192.0.2.1")).action == "deny"
    assert rules.decide(intent("x.bad.example", client_host="10.1.1.1")).rule == "cli-deny-host"


def test_allow_host_and_network_together_must_both_hold() -> None:
    rules = policy_from_options(allow_hosts=[".intranet.example"], allow_networks=["10.0.0.0/8"],
                                clock=Clock().seconds)
    assert rules.decide(intent("wiki.intranet.example", client_host="10.1.1.1")).action == "allow"
    assert rules.decide(intent("example.com", client_host="10.1.1.1")).action == "deny"
    assert rules.decide(intent("wiki.intranet.example", client_host="1.1.1.1")).action == "deny"


def test_bad_option_values_name_the_option() -> None:
    with pytest.raises(ConfigError, match="--allow-network '10.0.0.1/8': .*host bits"):
        rules_from_options(allow_networks=["10.0.0.1/8"])
    with pytest.raises(ConfigError, match="--deny-host 'a..b'"):
        rules_from_options(deny_hosts=["a..b"])
    assert rules_from_options() == []


# Reload ---------------------------------------------------------------------

@pytest.fixture
def log_events():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def test_holder_reload_swaps_rules_and_a_bad_file_keeps_the_old_ones(tmp_path, log_events) -> None:
    from twisted.logger import formatEvent

    path = tmp_path / "policy.toml"
    path.write_text('[policy]\n[[policy.rules]]\nname = "a"\naction = "deny"\n'
                    'hosts = ["a.example"]\n')
    holder = PolicyHolder.from_file(str(path), clock=Clock().seconds)
    assert verifyObject(IPolicy, holder)
    assert holder.decide(intent("a.example")).rule == "a"

    path.write_text('[policy]\n[[policy.rules]]\nname = "b"\naction = "deny"\n'
                    'hosts = ["b.example"]\n')
    assert holder.reload() is True
    assert holder.decide(intent("a.example")).action == "allow"
    assert holder.decide(intent("b.example")).rule == "b"

    path.write_text('[policy]\n[[policy.rules]]\nname = "c"\naction = "deny"\n'
                    'hours = "25:00-26:00"\n')
    assert holder.reload() is False
    assert holder.decide(intent("b.example")).rule == "b"
    errors = [formatEvent(e) for e in log_events if e.get("log_level") == LogLevel.error]
    assert any("previous rules stay in force" in m and "policy.rules[0].hours" in m
               and str(path) in m for m in errors), errors


def test_holder_reload_rebuilds_the_authenticator_and_keeps_connection_counts(tmp_path) -> None:
    path = tmp_path / "policy.toml"
    base = ('[policy]\n[policy.auth]\nusers = { a = '
            '"$5$abc$qsg6EHbUzHQzF1POlD7zUwBINSELQxypPaeDcZe6vH0" }\n[policy.limits]\n')
    path.write_text(base + "connections_per_client = 2\n")
    holder = PolicyHolder.from_file(str(path), clock=Clock().seconds)
    first_auth = holder.authenticator
    limit = holder.connection_limit
    assert limit.acquire("10.0.0.1") and limit.acquire("10.0.0.1")
    path.write_text(base + "connections_per_client = 3\n")
    assert holder.reload()
    assert holder.authenticator is not first_auth
    assert holder.connection_limit is limit and limit.count("10.0.0.1") == 2
    assert holder.connection_limit.acquire("10.0.0.1") is not None
    assert holder.connection_limit.acquire("10.0.0.1") is None


def test_holder_without_a_loader_refuses_to_reload(log_events) -> None:
    holder = PolicyHolder(settings("[policy]\n"), clock=Clock().seconds)
    assert holder.reload() is False
    assert holder.settings.auth is None and holder.authenticator is None
