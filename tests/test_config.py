"""Configuration: twistd options, TOML files, and refusing bad ones with a readable message."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from twisted.python import usage

from multiproxy._config import load_configuration, read_configuration
from multiproxy._tap import Options
from multiproxy.forward._config import DEFAULT_LISTEN
from multiproxy.pipeline._errors import ConfigError


def _options(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_no_arguments_is_a_forward_proxy_on_loopback_8080():
    options = _options()
    [(kind, config)] = options.configuration.proxies
    assert kind.name == "forward"
    assert config.listen == (DEFAULT_LISTEN,) == ("tcp:8080:interface=127.0.0.1",)


def test_forward_options_are_applied():
    options = _options(
        "forward", "--listen", "tcp:9001:interface=127.0.0.1", "--listen", "tcp:9002",
        "--no-via", "--x-forwarded-for", "delete", "--connect-ports", "443,8443",
        "--max-body-size", "1000", "--connect-timeout", "2.5",
    )
    [(_, config)] = options.configuration.proxies
    assert config.listen == ("tcp:9001:interface=127.0.0.1", "tcp:9002")
    assert config.settings.via is None
    assert config.settings.x_forwarded_for == "delete"
    assert config.settings.connect_ports == {443, 8443}
    assert config.limits.max_body == 1000
    assert config.timeouts.connect == 2.5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["forward", "--connect-ports", "443,https"], "--connect-ports: 'https' is not a port"),
        (["forward", "--x-forwarded-for", "maybe"], "--x-forwarded-for must be one of"),
        (["forward", "--connect-timeout", "0"], "--connect-timeout must be more than 0"),
        (["forward", "--header-timeout", "-1"], "--header-timeout must not be negative"),
    ],
)
def test_bad_options_are_refused_with_a_sentence(argv, message):
    with pytest.raises(usage.UsageError, match=message):
        _options(*argv)


def test_config_file_with_two_forward_proxies(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text(
        """
        [log]
        access = false

        [[forward]]
        name = "office"
        listen = ["tcp:9001:interface=127.0.0.1"]
        via = "gateway"
        connect_ports = [443, 563]
        header_timeout = 5

        [[forward]]
        name = "lab"
        listen = "tcp:9002:interface=127.0.0.1"
        x_forwarded_for = "leave"
        """
    )
    configuration = load_configuration(str(path))
    assert configuration.access_log is None
    (_, office), (_, lab) = configuration.proxies
    assert office.settings.via == b"gateway"
    assert office.settings.connect_ports == {443, 563}
    assert office.timeouts.header == 5.0
    assert lab.listen == ("tcp:9002:interface=127.0.0.1",)
    assert lab.settings.x_forwarded_for == "leave"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[forward]]\nlisten = 8080\n", "forward[0].listen: expected a list of strings"),
        ("[[forward]]\nconect_timeout = 3\n", "forward[0].conect_timeout: unknown key"),
        ("[[forward]]\nx_forwarded_for = 'sometimes'\n", "forward[0].x_forwarded_for: must be one of"),
        ("[[forward]]\nconnect_ports = [443, 70000]\n", "forward[0].connect_ports: expected a list of port"),
        ("[[forward]]\nheader_timeout = 'soon'\n", "forward[0].header_timeout: expected a number"),
        ("[[forwrd]]\n", "forwrd: unknown key"),
        ("[log]\naccess = 3\n[[forward]]\n", "log.access"),
        ("", "no proxy defined"),
        ("[[forward]]\n[[forward]]\n", "two proxies are named 'forward'"),
        ("[[forward]\n", "not valid TOML"),
    ],
)
def test_bad_config_files_are_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_configuration(str(path))


def test_missing_config_file_is_refused():
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_configuration("/nonexistent/proxy.toml")


def test_read_configuration_takes_a_parsed_document():
    configuration = read_configuration({"forward": [{"name": "a"}]})
    assert [config.name for _, config in configuration.proxies] == ["a"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _twistd(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "twisted", "multiproxy", *args],
        capture_output=True, text=True, timeout=timeout,
    )


def test_twistd_plugin_refuses_bad_config_before_listening(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[[forward]]\nlisten = ['tcp:%d:interface=127.0.0.1']\nbogus = 1\n"
                    % _free_port())
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "multiproxy", "--config", str(path)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert "forward[0].bogus: unknown key" in result.stdout + result.stderr


def test_twistd_runs_the_forward_proxy_end_to_end(tmp_path):
    """``twistd -n multiproxy forward --listen ...`` serves a real request."""
    port = _free_port()
    log = tmp_path / "access.log"
    process = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "multiproxy", "--access-log", str(log),
         "forward", "--listen", f"tcp:{port}:interface=127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    answer = b""
                    while chunk := s.recv(4096):
                        answer += chunk
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        assert answer.startswith(b"HTTP/1.1 400 ")
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert "Traceback" not in output
    assert '"GET / HTTP/1.1" 400' in log.read_text()


def test_one_file_runs_a_forward_proxy_and_a_tcp_relay(tmp_path):
    from twisted.internet.task import Clock

    from multiproxy._config import make_services

    path = tmp_path / "both.toml"
    path.write_text(
        """
        [log]
        access = false

        [[forward]]
        listen = ["tcp:0:interface=127.0.0.1"]

        [[tcp]]
        name = "db"
        listen = ["tcp:0:interface=127.0.0.1"]
        backends = ["tcp:host=127.0.0.1:port=5432"]
        """
    )
    configuration = load_configuration(str(path))
    assert [kind.name for kind, _ in configuration.proxies] == ["forward", "tcp"]
    services = make_services(configuration, Clock())
    assert {service.name for service in services if service.name} == {"forward", "db"}


def test_tcp_subcommand_is_registered():
    options = _options("tcp", "--listen", "tcp:9000:interface=127.0.0.1",
                       "--backend", "tcp:host=127.0.0.1:port=9001")
    [(kind, config)] = options.configuration.proxies
    assert kind.name == "tcp"


def test_the_readme_configuration_example_is_valid():
    import pathlib
    import re
    import tomllib

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    block = re.search(r"```toml\n(.*?)```", readme, re.S).group(1)
    configuration = read_configuration(tomllib.loads(block))
    [(kind, config)] = configuration.proxies
    assert kind.name == "forward" and config.name == "office"
    assert configuration.policy is not None


def test_every_client_listener_is_guarded_against_running_out_of_descriptors(tmp_path):
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet.task import Clock

    from multiproxy._config import make_services
    from multiproxy.transport._accept import GuardedEndpoint

    path = tmp_path / "both.toml"
    path.write_text(
        """
        [log]
        access = false
        [[forward]]
        listen = ["tcp:0:interface=127.0.0.1"]
        [[tcp]]
        listen = ["tcp:0:interface=127.0.0.1"]
        backends = ["tcp:host=127.0.0.1:port=5432"]
        """
    )
    services = make_services(load_configuration(str(path)), Clock())
    listeners = [
        child for service in services for child in getattr(service, "services", ())
        if isinstance(child, StreamServerEndpointService)
    ]
    assert len(listeners) == 2
    assert all(isinstance(listener.endpoint, GuardedEndpoint) for listener in listeners)
    guards = {listener.endpoint.guard for listener in listeners}
    assert len(guards) == 1, "one guard per process"
