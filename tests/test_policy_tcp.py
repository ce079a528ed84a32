"""
The access policy in the TCP relay, over loopback: a denied client network
is closed at once, a work-hours rule follows an injected clock, and the
per-client connection and connection-rate limits close what is over them;
each ending is in the access record with the rule that decided.  And the
client policy options of ``twistd multiproxy tcp``.
"""

from __future__ import annotations

import socket
import tomllib
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python import usage
from zope.interface import implementer

from multiproxy._config import make_services
from multiproxy._tablereader import TableReader
from multiproxy._tap import Options
from multiproxy.balancing import Backend, BackendPool, RoundRobin
from multiproxy.pipeline._interfaces import IPolicy
from multiproxy.policy import PolicyHolder, settings_from_table
from multiproxy.tcp import TCPRelayFactory

pytestmark = pytest.mark.integration

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def reactor():
    from twisted.internet import reactor

    return reactor


def holder(text: str, clock: Clock | None = None) -> PolicyHolder:
    settings = settings_from_table(TableReader(tomllib.loads(text)["policy"], "policy"))
    return PolicyHolder(settings, clock=(clock or Clock()).seconds)


class Records:
    """An `IReporter` keeping every record; `at_least` waits for some."""

    def __init__(self) -> None:
        self.records = []
        self._waiting = []

    def report(self, record) -> None:
        self.records.append(record)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(record)

    @defer.inlineCallbacks
    def at_least(self, count: int):
        """Wait until ``count`` records are in; the last of them."""
        while len(self.records) < count:
            d = defer.Deferred()
            self._waiting.append(d)
            yield d
        return self.records[count - 1]


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

    def readConnectionLost(self):
        self.transport.loseWriteConnection()

    def writeConnectionLost(self):
        self.transport.loseConnection()


class CountingFactory(Factory):
    """An echo server that counts the connections it accepted."""

    protocol = Echo

    def __init__(self) -> None:
        self.accepted = 0

    def buildProtocol(self, addr):
        self.accepted += 1
        return super().buildProtocol(addr)


class Client(Protocol):
    """Collects what it receives; ``done`` fires with it when the connection closes."""

    def __init__(self) -> None:
        self.chunks = []
        self.got_data = defer.Deferred()
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.chunks.append(data)
        if not self.got_data.called:
            self.got_data.callback(data)

    def connectionLost(self, reason):
        self.done.callback(b"".join(self.chunks))


@pytest.fixture
def relay(reactor):
    """``relay(policy) -> (port, backend factory, records)``: an echo backend behind a relay."""
    ports = []

    def start(policy):
        backend = CountingFactory()
        backend_port = reactor.listenTCP(0, backend, interface="127.0.0.1")
        ports.append(backend_port)
        pool = BackendPool("test", [Backend(host="127.0.0.1", port=backend_port.getHost().port)],
                           RoundRobin(), reactor)
        records = Records()
        factory = TCPRelayFactory(reactor, pool, name="db", policy=policy, reporters=[records])
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return port.getHost().port, backend, records

    yield start
    for port in ports:
        port.stopListening()


@defer.inlineCallbacks
def connect(reactor, port):
    client = Client()
    yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        Factory.forProtocol(lambda: client)
    )
    return client


@defer.inlineCallbacks
def echoed(reactor, port, data=b"ping"):
    """Connect, send ``data`` and return the open client once it is echoed."""
    client = yield connect(reactor, port)
    client.transport.write(data)
    assert (yield client.got_data) == data
    return client


@defer.inlineCallbacks
def closed_at_once(reactor, port, records):
    """Connect and send; the relay must close without a byte.  Returns the record."""
    count = len(records.records)
    client = yield connect(reactor, port)
    client.transport.write(b"let me in")
    assert (yield client.done) == b""
    return (yield records.at_least(count + 1))


@pytest_twisted.inlineCallbacks
def test_denied_client_network_is_closed_at_once_and_logged_with_the_rule(reactor, relay):
    policy = holder("""
[policy]
[[policy.rules]]
name = "no-loopback"
action = "deny"
clients = ["10.0.0.0/8", "127.0.0.0/8"]
kinds = ["tcp"]
""")
    port, backend, records = relay(policy)
    record = yield closed_at_once(reactor, port, records)
    assert (record.ended, record.rule, record.client_host) == ("denied", "no-loopback",
                                                              "127.0.0.1")
    assert record.upstream is None and record.bytes_to_client == 0
    assert backend.accepted == 0


@pytest_twisted.inlineCallbacks
def test_allowed_connection_is_relayed_and_logged_with_the_deciding_rule(reactor, relay):
    policy = holder("""
[policy]
default = "deny"
[[policy.rules]]
name = "loopback-may"
action = "allow"
clients = ["127.0.0.1"]
ports = ["1-65535"]
""")
    port, backend, records = relay(policy)
    client = yield echoed(reactor, port)
    client.transport.loseConnection()
    record = yield records.at_least(1)
    assert (record.ended, record.rule) == ("done", "loopback-may")
    assert backend.accepted == 1


WORK_HOURS = """
[policy]
timezone = "Europe/Berlin"
[[policy.rules]]
name = "db-closed-after-work"
action = "deny"
days = "Mon-Fri"
hours = "18:00-24:00"
message = "The reporting database is closed in the evening"
"""


@pytest_twisted.inlineCallbacks
def test_time_window_rule_follows_the_injected_clock(reactor, relay):
    clock = Clock()
    wednesday_afternoon = datetime(2026, 11, 25, 17, 59, 30, tzinfo=BERLIN)
    assert wednesday_afternoon.strftime("%a") == "Wed"
    clock.advance(wednesday_afternoon.timestamp())
    port, backend, records = relay(holder(WORK_HOURS, clock))

    client = yield echoed(reactor, port)  # 17:59:30: open
    client.transport.loseConnection()
    yield client.done

    clock.advance(30)  # 18:00:00: closed, for new connections
    record = yield closed_at_once(reactor, port, records)
    assert (record.ended, record.rule) == ("denied", "db-closed-after-work")

    saturday = datetime(2026, 11, 28, 19, 0, tzinfo=BERLIN)
    clock.advance(saturday.timestamp() - clock.seconds())
    client = yield echoed(reactor, port)  # the rule is for weekdays only
    client.transport.loseConnection()
    assert (yield records.at_least(3)).rule == "default"
    assert backend.accepted == 2


@pytest_twisted.inlineCallbacks
def test_connection_over_the_per_client_limit_is_closed_and_the_slot_comes_back(
    reactor, relay,
):
    policy = holder("""
[policy]
[policy.limits]
connections_per_client = 2
""")
    port, backend, records = relay(policy)
    first = yield echoed(reactor, port, b"one")
    second = yield echoed(reactor, port, b"two")
    assert policy.connection_limit.count("127.0.0.1") == 2

    record = yield closed_at_once(reactor, port, records)
    assert record.ended == "connection-limit" and record.rule is None
    assert backend.accepted == 2
    assert policy.connection_limit.count("127.0.0.1") == 2  # the refused one took no slot

    first.transport.loseConnection()
    yield records.at_least(2)
    assert policy.connection_limit.count("127.0.0.1") == 1
    third = yield echoed(reactor, port, b"three")
    for client in (second, third):
        client.transport.loseConnection()
    yield records.at_least(4)
    assert policy.connection_limit.count("127.0.0.1") == 0
    assert [r.ended for r in records.records].count("done") == 3


@pytest_twisted.inlineCallbacks
def test_connections_over_the_rate_are_closed_until_the_bucket_refills(reactor, relay):
    clock = Clock()
    clock.advance(1_000_000)
    policy = holder("""
[policy]
[policy.limits]
requests_per_second = 1
burst = 2
""", clock)
    port, backend, records = relay(policy)
    clients = [(yield echoed(reactor, port)), (yield echoed(reactor, port))]
    record = yield closed_at_once(reactor, port, records)
    assert record.ended == "rate-limited" and record.rule is None

    clock.advance(1)  # one token back
    clients.append((yield echoed(reactor, port)))
    record = yield closed_at_once(reactor, port, records)
    assert record.ended == "rate-limited"
    assert backend.accepted == 3
    for client in clients:
        client.transport.loseConnection()
        yield client.done


# -- twistd multiproxy tcp: the client policy options --------------------------------


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TCP_ARGS = ("tcp", "--listen", "tcp:9000:interface=127.0.0.1",
            "--backend", "tcp:host=127.0.0.1:port=5432")


def test_tcp_subcommand_turns_client_options_into_the_policy():
    options = parse(*TCP_ARGS, "--deny-network", "192.0.2.0/24", "--allow-network",
                    "127.0.0.0/8", "--max-client-connections", "3", "--max-client-rate", "2")
    source = options.configuration.policy
    assert [r.name for r in source.settings.rules.rules] == ["cli-deny-network", "cli-allow"]
    assert source.settings.rules.default.action == "deny"
    limits = source.settings.limits
    assert (limits.connections_per_client, limits.requests_per_second) == (3, 2)
    assert parse(*TCP_ARGS).configuration.policy is None


@pytest.mark.parametrize("option", [("--deny-host", "example.com"), ("--allow-host", "x"),
                                    ("--htpasswd", "/etc/passwd"), ("--anonymous",)])
def test_tcp_subcommand_has_no_destination_credential_or_anonymity_options(option):
    # A byte stream names no host, carries no proxy credentials and no headers.
    with pytest.raises(usage.UsageError, match=option[0].lstrip("-")):
        parse(*TCP_ARGS, *option)


def test_tcp_subcommand_refuses_a_bad_network_with_the_option_named():
    with pytest.raises(usage.UsageError, match=r"--deny-network '10\.0\.0\.1/8'"):
        parse(*TCP_ARGS, "--deny-network", "10.0.0.1/8")


@pytest_twisted.inlineCallbacks
def test_twistd_tcp_with_deny_network_closes_the_client_and_logs_the_rule(reactor, tmp_path):
    backend = CountingFactory()
    backend_port = reactor.listenTCP(0, backend, interface="127.0.0.1")
    port = free_port()
    log = tmp_path / "access.log"
    options = parse("--access-log", str(log), "tcp", "--name", "db",
                    "--listen", f"tcp:{port}:interface=127.0.0.1",
                    "--backend", f"tcp:host=127.0.0.1:port={backend_port.getHost().port}",
                    "--no-health", "--deny-network", "127.0.0.0/8")
    service = make_services(options.configuration, reactor)
    service.startService()
    try:
        client = yield connect(reactor, port)
        client.transport.write(b"let me in")
        assert (yield client.done) == b""
    finally:
        yield service.stopService()
        yield backend_port.stopListening()
    assert backend.accepted == 0
    line = log.read_text().strip()
    assert '"TCP 127.0.0.1:' in line and "rule=cli-deny-network end=denied" in line


@pytest_twisted.inlineCallbacks
def test_failing_policy_plugin_closes_the_connection_at_once_and_is_logged(reactor, relay):
    @implementer(IPolicy)
    class Broken:
        def decide(self, intent):
            raise RuntimeError("plug-in bug")

    failures = []

    def observe(event):
        if "log_failure" in event:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    try:
        port, backend, records = relay(Broken())
        record = yield closed_at_once(reactor, port, records)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert record.ended == "error" and record.rule is None
    assert backend.accepted == 0
    assert [f.getErrorMessage() for f in failures] == ["plug-in bug"]
