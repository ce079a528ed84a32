"""
The policy options and the [policy] table through twistd: a real process
reloading its rules on SIGHUP, and bad rules refused before it listens.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest
from twisted.python import usage

from multiproxy._config import load_configuration
from multiproxy._tap import Options
from multiproxy.policy import PolicySource

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
          "--pidfile="]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_through(proxy_port: int, url: str) -> str:
    result = subprocess.run(
        ["curl", "--silent", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
         "-x", f"http://127.0.0.1:{proxy_port}", url],
        capture_output=True, text=True, timeout=20,
    )
    return result.stdout


def wait_until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


DENY_BLOCKED = """
[policy]
[[policy.rules]]
name = "blocked"
action = "deny"
hosts = [".blocked.example"]
"""

DENY_ALSO_OTHER = DENY_BLOCKED + """
[[policy.rules]]
name = "other"
action = "deny"
hosts = ["other.example"]
"""


@pytest.mark.integration
def test_sighup_reloads_the_rules_and_a_bad_file_keeps_them(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(DENY_BLOCKED)
    port = free_port()
    output = tmp_path / "twistd.out"
    with output.open("w") as out:
        process = subprocess.Popen(
            [*TWISTD, "multiproxy", "--access-log", "none", "forward",
             "--listen", f"tcp:{port}:interface=127.0.0.1", "--policy", str(policy),
             "--deny-host", "cli.example"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: listening(port) or process.poll() is not None)
        assert process.poll() is None, output.read_text()
        # Denied hosts are refused before any name lookup, so these need no DNS.
        assert status_through(port, "http://www.blocked.example/") == "403"
        assert status_through(port, "http://cli.example/") == "403"
        assert status_through(port, "http://other.example/") == "502"  # allowed; unresolvable

        policy.write_text(DENY_ALSO_OTHER)
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: status_through(port, "http://other.example/") == "403")
        assert status_through(port, "http://cli.example/") == "403"

        policy.write_text(DENY_BLOCKED + '\n[[policy.rules]]\nname = "bad"\naction = "deny"\n'
                                         'days = "Mon-Fryday"\n')
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: "Policy reload refused" in output.read_text())
        assert process.poll() is None
        assert status_through(port, "http://other.example/") == "403"
    finally:
        process.terminate()
        process.wait(timeout=20)
    log = output.read_text()
    assert f"Policy reloaded from {policy}: 3 rules" in log
    assert "policy.rules[1].days: 'fryday'" in log and "(in rule 'bad')" in log
    assert "Traceback" not in log


@pytest.mark.integration
def test_twistd_refuses_a_bad_policy_file_before_listening(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('[policy]\n[[policy.rules]]\nname = "work"\naction = "deny"\n'
                      'hours = "09:00-25:00"\n')
    port = free_port()
    result = subprocess.run(
        [*TWISTD, "multiproxy", "forward", "--listen", f"tcp:{port}:interface=127.0.0.1",
         "--policy", str(policy)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert f"{policy}: policy.rules[0].hours: '25:00' in '09:00-25:00' is not a time of day" \
        in result.stdout + result.stderr
    assert not listening(port)


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_command_line_rules_become_the_policy():
    options = parse("forward", "--deny-host", ".twitter.com", "--deny-host", "facebook.com",
                    "--allow-network", "10.0.0.0/8", "--max-client-rate", "5", "--anonymous")
    source = options.configuration.policy
    assert isinstance(source, PolicySource) and source.path is None
    rules = source.settings.rules
    assert [r.name for r in rules.rules] == ["cli-deny-host", "cli-allow"]
    assert rules.default.action == "deny"
    assert source.settings.limits.requests_per_second == 5
    assert source.settings.anonymity is not None


def test_no_policy_options_means_no_policy():
    assert parse("forward").configuration.policy is None


def test_htpasswd_option_requires_authentication(tmp_path):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:$5$abc$qsg6EHbUzHQzF1POlD7zUwBINSELQxypPaeDcZe6vH0\n")
    source = parse("forward", "--htpasswd", str(htpasswd)).configuration.policy
    assert [r.name for r in source.settings.rules.rules] == ["cli-authenticate"]
    assert set(source.settings.auth.passwords) == {"alice"}


@pytest.mark.parametrize("argv, message", [
    (["--deny-host", "a..b"], "--deny-host 'a..b': host 'a..b' has an empty label"),
    (["--allow-network", "10.0.0.1/8"], "--allow-network '10.0.0.1/8'"),
    (["--policy", "/nonexistent.toml"], "cannot read the policy file"),
    (["--policy", "/nonexistent.toml", "--allow-host", "x"],
     "--allow-host cannot be combined with --policy"),
    (["--max-client-rate", "-1"], "must not be negative"),
    (["--htpasswd", "/nonexistent"], "--htpasswd: cannot read the password file"),
])
def test_bad_policy_options_are_refused_with_a_sentence(argv, message):
    with pytest.raises(usage.UsageError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse("forward", *argv)


def test_config_file_policy_table_is_shared_and_reloadable(tmp_path):
    path = tmp_path / "multiproxy.toml"
    path.write_text(f"[[forward]]\nlisten = ['tcp:{free_port()}:interface=127.0.0.1']\n"
                    + DENY_BLOCKED)
    configuration = load_configuration(str(path))
    assert configuration.policy.path == str(path)
    assert [r.name for r in configuration.policy.load().rules.rules] == ["blocked"]


def test_config_file_with_a_bad_rule_is_refused_naming_the_rule(tmp_path):
    path = tmp_path / "multiproxy.toml"
    path.write_text("[[forward]]\n" + DENY_BLOCKED + "ports = [70000]\n")
    with pytest.raises(usage.UsageError, match=r"policy\.rules\[0\]\.ports: port 70000 is "
                                                r"outside 1-65535 \(in rule 'blocked'\)"):
        parse("--config", str(path))
