"""
``--workers N``: one master process and N worker processes on one host.

The master binds every listening endpoint of the configuration (plain TCP,
TLS, unix) with the real reactor and never reads from those sockets; each
worker inherits one descriptor per listener (``spawnProcess`` ``childFDs``)
and serves it with ``reactor.adoptStreamPort``.  Workers never bind: the
reactor they build their services with (`AdoptingReactor`) turns every
``listenTCP``/``listenSSL``/``listenUNIX`` into the adoption of the
inherited socket for the same arguments.

Because every generation of workers shares the master's sockets, a reload
(``SIGHUP``) starts new workers on the same accept queues and only then
drains the old ones: nothing waiting in a queue is dropped, which closing a
``SO_REUSEPORT`` socket would do (docs/performance.md has the measurement).

Control channel: the master writes to a worker's stdin (EOF = the master is
gone, the worker stops) and reads one JSON object per line from the
worker's descriptor 3 (``{"ready": pid}`` once its services run).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import Logger
from zope.interface import directlyProvides, providedBy

from multiproxy.pipeline._errors import ConfigError

__all__ = ["AdoptingReactor", "WorkerMaster", "listen_descriptions", "parse_workers"]

EXIT_CONFIG = 78
"""A worker's exit status when its configuration is refused (sysexits EX_CONFIG)."""

_FIRST_CHILD_FD = 10
_log = Logger(namespace="multiproxy.workers")


def parse_workers(value: object, where: str = "--workers") -> int:
    """``auto`` (the number of cores) or a whole number from 1 to 1024."""
    if value == "auto":
        return os.cpu_count() or 1
    try:
        count = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        count = None
    if count is None or not 1 <= count <= 1024:
        raise ConfigError(f"{where}: expected a whole number from 1 to 1024 or \"auto\", "
                          f"got {value!r}")
    return count


def listen_descriptions(configuration: Any) -> list[str]:
    """Every server endpoint string of ``configuration``, each once, in order."""
    found: list[str] = []
    for _, config in configuration.proxies:
        for attribute in ("listen", "tls_listen", "status_listen"):
            for description in getattr(config, attribute, ()) or ():
                if description.startswith("haproxy:"):
                    description = description[len("haproxy:"):]
                if description not in found:
                    found.append(description)
    return found


class _Unserved(Factory):
    """The factory the master's sockets are bound with; it never builds a protocol."""

    noisy = False

    def logPrefix(self) -> str:  # noqa: N802 (Twisted's name): "Master socket starting on 8080"
        return "Master socket"


def check_worker_configuration(configuration: Any, count: int) -> None:
    """
    Refuse what several workers cannot share: a disk cache directory (the
    store keeps its index in memory and clears ``tmp/`` when it starts, so
    two processes on one directory would corrupt each other).
    """
    if count <= 1:
        return
    for _, config in configuration.proxies:
        cache = getattr(config, "cache", None)
        directory = getattr(cache, "directory", None)
        if directory:
            raise ConfigError(
                f"{getattr(config, 'name', 'proxy')}: cache.dir (--cache-dir) {directory!r} "
                f"cannot be shared by {count} worker processes (the disk store keeps its index "
                f"in memory); run with workers = 1 or use the memory cache")


def _tcp_key(port: int, interface: str) -> str:
    return json.dumps(["tcp", port, interface])


def _unix_key(address: Any) -> str:
    return json.dumps(["unix", os.fsdecode(address)])


class _BindingReactor:
    """
    A reactor whose listen calls bind with the real one and never accept.

    The master builds each endpoint from its string against this reactor, so
    the strings are parsed exactly as a single process parses them.
    """

    def __init__(self, reactor: Any, ports: dict[str, Any]) -> None:
        self._reactor = reactor
        self.ports = ports
        self.asked: list[str] = []
        directlyProvides(self, providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _keep(self, key: str, listen: Callable[[], Any]) -> Any:
        self.asked.append(key)
        if key not in self.ports:
            port = listen()
            port.stopReading()  # the master never serves traffic
            self.ports[key] = port
        return self.ports[key]

    def listenTCP(self, port, factory, backlog=50, interface=""):  # noqa: N802 (Twisted's name)
        return self._keep(_tcp_key(port, interface),
                          lambda: self._reactor.listenTCP(port, _Unserved(), backlog, interface))

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):  # noqa: N802,N803
        return self.listenTCP(port, factory, backlog, interface)

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):  # noqa: N802,N803
        return self._keep(_unix_key(address), lambda: self._reactor.listenUNIX(
            address, _Unserved(), backlog, mode, wantPID))

    def adoptStreamPort(self, *args, **kwargs):  # noqa: N802
        raise ConfigError("--workers needs listeners the master can bind (tcp, tcp6, ssl, unix)")


def bind_listeners(reactor: Any, configuration: Any, ports: dict[str, Any]) -> dict[str, Any]:
    """
    Bind every listener of ``configuration`` not yet in ``ports`` (keyed by
    its listen arguments); return the ports it uses.  Raise `ConfigError`.
    """
    binder = _BindingReactor(reactor, ports)
    for description in listen_descriptions(configuration):
        try:
            endpoint = serverFromString(binder, description)
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"bad listen endpoint {description!r}: {e}") from None
        failures: list = []
        endpoint.listen(_Unserved()).addErrback(failures.append)
        if failures:
            reason = failures[0].value
            if isinstance(reason, ConfigError):
                raise reason
            raise ConfigError(f"cannot listen on {description}: {reason}")
    return {key: ports[key] for key in binder.asked}


class AdoptingReactor:
    """
    A reactor for a worker: listening adopts the inherited socket.

    ``listeners`` maps the key of a listen call (as the master built it) to
    ``(descriptor, address family)``.  A listen call with no inherited
    socket fails: workers never bind.
    """

    accepts_per_wakeup = 1
    """
    How many connections a worker accepts each time the shared socket is
    readable (0: Twisted's adaptive default, up to 100 and more).  Every
    worker wakes for a connection; with one accept each, a burst is spread
    over the workers instead of being swallowed by the first one awake
    (docs/performance.md, "Workers").
    """

    def __init__(self, reactor: Any, listeners: dict[str, tuple[int, int]]) -> None:
        self._reactor = reactor
        self._listeners = listeners
        self.connections = 0
        self.served = 0
        directlyProvides(self, providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _adopt(self, key: str, factory: Any) -> Any:
        if key not in self._listeners:
            raise error.CannotListenError(None, key, "the master holds no socket for it")
        fd, family = self._listeners[key]
        port = self._reactor.adoptStreamPort(fd, family, _CountingFactory(factory, self))
        if self.accepts_per_wakeup:
            _cap_accepts(port, self.accepts_per_wakeup)
        if family == socket.AF_UNIX:
            # The socket file belongs to the master: a draining worker must not unlink it.
            port._bindPath = b"\0"
        return port

    def listenTCP(self, port, factory, backlog=50, interface=""):  # noqa: N802
        return self._adopt(_tcp_key(port, interface), factory)

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):  # noqa: N802,N803
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return self._adopt(_tcp_key(port, interface),
                           TLSMemoryBIOFactory(contextFactory, False, factory))

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):  # noqa: N802,N803
        return self._adopt(_unix_key(address), factory)


def _cap_accepts(port: Any, limit: int) -> None:
    """Make ``port`` accept at most ``limit`` connections per readiness event."""
    read = port.doRead

    def do_read():
        port.numberAccepts = limit  # Twisted raises it after every full batch
        return read()

    port.doRead = do_read


class _CountingFactory:
    """Delegates to a factory, counting the connections it builds that are still open."""

    def __init__(self, factory: Any, counter: AdoptingReactor) -> None:
        self._factory = factory
        self._counter = counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._factory, name)

    def buildProtocol(self, addr):  # noqa: N802
        protocol = self._factory.buildProtocol(addr)
        if protocol is None:
            return None
        counter = self._counter
        counter.connections += 1
        counter.served += 1
        lost = protocol.connectionLost

        def connection_lost(reason):
            counter.connections -= 1
            return lost(reason)

        protocol.connectionLost = connection_lost
        return protocol


# -- the master -----------------------------------------------------------------------------


@dataclass(eq=False)
class _Worker(ProcessProtocol):
    """One worker process as the master sees it."""

    master: WorkerMaster
    index: int
    generation: int
    started: float
    ready: defer.Deferred = field(default_factory=defer.Deferred)
    ended: defer.Deferred = field(default_factory=defer.Deferred)
    retiring: bool = False
    pid: int | None = None
    _buffer: bytes = b""

    def connectionMade(self) -> None:  # noqa: N802
        self.pid = self.transport.pid

    def childDataReceived(self, childFD: int, data: bytes) -> None:  # noqa: N802,N803
        if childFD != 3:
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and "ready" in message and not self.ready.called:
                self.ready.callback(self)

    def processEnded(self, reason) -> None:  # noqa: N802
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        if not self.ready.called:
            self.ready.errback(WorkerFailed(self, code, sig))
        self.ended.callback((code, sig))
        self.master._worker_ended(self, code, sig)

    def signal(self, sig: int) -> None:
        """Send ``sig`` unless the process has gone."""
        try:
            self.transport.signalProcess(sig)
        except (error.ProcessExitedAlready, OSError):
            pass


class WorkerFailed(Exception):
    """A worker ended before it was ready."""

    def __init__(self, worker: _Worker, code: int | None, sig: int | None) -> None:
        super().__init__(describe_exit(worker.pid, code, sig))
        self.code = code


def describe_exit(pid: int | None, code: int | None, sig: int | None) -> str:
    """``pid 12 exited with status 1`` or ``pid 12 was killed by signal 9 (SIGKILL)``."""
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "?"
        return f"pid {pid} was killed by signal {sig} ({name})"
    return f"pid {pid} exited with status {code}"


class WorkerMaster(Service):
    """
    Keeps ``count`` worker processes serving the master's sockets.

    ``load`` returns a fresh, checked configuration (raising `ConfigError`)
    and the number of workers it asks for; it runs again on ``SIGHUP``.
    """

    restart_delays = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    """Backoff before replacing a worker that died, by consecutive quick deaths."""
    stable_after = 10.0
    """A worker that lived this long resets its slot's backoff."""
    ready_timeout = 30.0

    def __init__(self, reactor: Any, argv: list[str], load: Callable[[], tuple[Any, int]],
                 configuration: Any, count: int) -> None:
        self.reactor = reactor
        self.argv = list(argv)
        self.load = load
        self.count = count
        check_worker_configuration(configuration, count)
        self.ports: dict[str, Any] = {}
        self.used = bind_listeners(reactor, configuration, self.ports)
        self.shutdown_timeout = _shutdown_timeout(configuration)
        self.generation = 0
        self.workers: list[_Worker] = []
        self._failures: dict[int, int] = {}
        self._pending: dict[int, Any] = {}
        self._reloading = False
        self._stopping = False
        self._stop_sighup: Callable[[], None] = lambda: None
        self._stop_sigusr1: Callable[[], None] = lambda: None
        self.shared_redis: Any = None
        """The `LocalRedis` the workers share limits and health checks through."""
        self._share_state()

    # -- starting and replacing

    def startService(self) -> None:  # noqa: N802
        super().startService()
        from multiproxy._signals import SIGHUP, SIGUSR1, on_signal

        self._stop_sighup = on_signal(SIGHUP, self.reactor, self.reload)
        self._stop_sigusr1 = on_signal(SIGUSR1, self.reactor, self.reopen_logs)
        if self.shared_redis is not None:
            self.shared_redis.startService()
        for index in range(self.count):
            self._spawn(index, self.generation)
        _log.info("master {pid} started {count} workers", pid=os.getpid(), count=self.count)
        d = defer.DeferredList([w.ready for w in self.workers], fireOnOneErrback=True,
                               consumeErrors=True)
        d.addErrback(self._first_generation_failed)

    def _first_generation_failed(self, failure) -> None:
        reason = failure.value.subFailure.value
        if isinstance(reason, WorkerFailed) and reason.code == EXIT_CONFIG and not self._stopping:
            _log.error("a worker refused the configuration ({reason}); stopping", reason=reason)
            self.reactor.stop()

    def _spawn(self, index: int, generation: int) -> _Worker:
        listeners = []
        child_fds: dict[int, Any] = {0: "w", 1: 1, 2: 2, 3: "r"}
        for offset, (key, port) in enumerate(sorted(self.used.items())):
            fd = _FIRST_CHILD_FD + offset
            child_fds[fd] = port.fileno()
            listeners.append([key, fd, port.socket.family])
        spec = {"argv": self.argv, "listeners": listeners, "index": index,
                "generation": generation,
                "shared_redis": self.shared_redis.url if self.shared_redis else None}
        worker = _Worker(self, index, generation, self.reactor.seconds())
        self.reactor.spawnProcess(
            worker, sys.executable,
            [sys.executable, "-m", "multiproxy._workers", json.dumps(spec)],
            env=dict(os.environ), childFDs=child_fds)
        self.workers.append(worker)
        return worker

    def _worker_ended(self, worker: _Worker, code: int | None, sig: int | None) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        if worker.retiring or self._stopping:
            return
        if worker.generation != self.generation:
            return  # a new generation that failed to start: the reload reports it
        lived = self.reactor.seconds() - worker.started
        failures = 0 if lived >= self.stable_after else self._failures.get(worker.index, 0)
        delay = self.restart_delays[min(failures, len(self.restart_delays) - 1)]
        self._failures[worker.index] = failures + 1
        _log.warn("worker {index} ({exit}); starting another in {delay} s",
                  index=worker.index, exit=describe_exit(worker.pid, code, sig), delay=delay)
        self._pending[worker.index] = self.reactor.callLater(
            delay, self._replace, worker.index, worker.generation)

    def _replace(self, index: int, generation: int) -> None:
        self._pending.pop(index, None)
        if not self._stopping and generation == self.generation:
            self._spawn(index, generation)

    # -- reloading

    def _share_state(self) -> None:
        """
        Several workers share what one process would keep alone: per-client
        limits are one count, and one worker at a time probes each pool.
        They do it in a ``redis-server`` the master runs (`multiproxy._localredis`).
        """
        if self.count <= 1:
            return
        from multiproxy._localredis import LocalRedis, redis_server_binary

        binary = redis_server_binary()
        if binary is None:
            _log.warn("redis-server is not installed: each of the {count} workers counts the "
                      "per-client limits (a client gets up to {count} times as much) and runs "
                      "the health checks alone; install it, or give [policy.limits] redis "
                      "(--limits-redis) to share the limits", count=self.count)
            return
        self.shared_redis = LocalRedis(self.reactor, binary)

    def reopen_logs(self) -> None:
        """SIGUSR1 (logrotate moved the files): every worker reopens its access log."""
        for worker in self.workers:
            worker.signal(signal.SIGUSR1)

    def reload(self) -> defer.Deferred | None:
        """Re-read the configuration; on success swap generations, else keep serving."""
        if self._stopping:
            return None
        if self._reloading:
            _log.warn("SIGHUP ignored: a reload is still in progress")
            return None
        before = set(self.ports)
        try:
            configuration, count = self.load()
            check_worker_configuration(configuration, count)
            used = bind_listeners(self.reactor, configuration, self.ports)
        except ConfigError as e:
            for key in set(self.ports) - before:
                self.ports.pop(key).stopListening()
            _log.error("reload refused, the running workers keep serving: {error}", error=e)
            return None
        fresh = set(self.ports) - before
        self._reloading = True
        old = [w for w in self.workers]
        previous = (self.used, self.count, self.shutdown_timeout)
        self.used, self.count = used, count
        if self.shared_redis is None:  # the reload brought a second worker
            self._share_state()
            if self.shared_redis is not None:
                self.shared_redis.startService()
        self.shutdown_timeout = _shutdown_timeout(configuration)
        self.generation += 1
        for pending in self._pending.values():
            pending.cancel()
        self._pending.clear()
        self._failures.clear()
        new = [self._spawn(index, self.generation) for index in range(count)]
        ready = defer.DeferredList([w.ready for w in new], fireOnOneErrback=True,
                                   consumeErrors=True)
        timeout = self.reactor.callLater(self.ready_timeout, ready.cancel)

        def swapped(_):
            _log.info("reload: {count} new workers serving; draining {old} old ones",
                      count=len(new), old=len(old))
            d = self._retire(old)
            d.addCallback(lambda _: self._close_unused())
            return d

        def refused(failure):
            reason = failure.value.subFailure.value if hasattr(failure.value, "subFailure") \
                else failure.value
            _log.error("reload refused, the running workers keep serving: new worker {reason}",
                       reason=reason)
            self.generation -= 1
            self.used, self.count, self.shutdown_timeout = previous
            d = self._retire(new)
            d.addCallback(lambda _: [self.ports.pop(key).stopListening() for key in fresh])
            return d

        def done(result):
            if timeout.active():
                timeout.cancel()
            self._reloading = False
            return result

        ready.addCallbacks(swapped, refused)
        ready.addBoth(done)
        return ready

    def _close_unused(self) -> None:
        for key in [k for k in self.ports if k not in self.used]:
            self.ports.pop(key).stopListening()

    def _retire(self, workers: list[_Worker]) -> defer.Deferred:
        """SIGTERM ``workers`` (they drain); SIGKILL those left after the shutdown timeout."""
        for worker in workers:
            worker.retiring = True
            worker.signal(signal.SIGTERM)
        ended = defer.DeferredList([w.ended for w in workers])
        kill = self.reactor.callLater(self.shutdown_timeout + 5.0, self._kill, workers)
        ended.addCallback(lambda _: kill.cancel() if kill.active() else None)
        return ended

    def _kill(self, workers: list[_Worker]) -> None:
        for worker in workers:
            if not worker.ended.called:
                _log.warn("worker {index} (pid {pid}) did not drain in time; killing it",
                          index=worker.index, pid=worker.pid)
                worker.signal(signal.SIGKILL)

    # -- stopping

    def stopService(self):  # noqa: N802
        super().stopService()
        self._stopping = True
        self._stop_sighup()
        self._stop_sigusr1()
        for pending in self._pending.values():
            pending.cancel()
        self._pending.clear()
        d = self._retire(list(self.workers))

        def close(_):
            closing = [defer.maybeDeferred(port.stopListening) for port in self.ports.values()]
            self.ports.clear()
            if self.shared_redis is not None and self.shared_redis.running:
                closing.append(self.shared_redis.stopService())  # the workers are gone
            return defer.DeferredList(closing)

        return d.addCallback(close)


def _shutdown_timeout(configuration: Any) -> float:
    timeouts = [getattr(config, "shutdown_timeout", 10.0) for _, config in configuration.proxies]
    return max(timeouts, default=10.0)


# -- a worker --------------------------------------------------------------------------------


class _ControlChannel(Protocol):
    """The worker's end of its pipes to the master: EOF on stdin stops the worker."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.stopping = False
        reactor.addSystemEventTrigger("before", "shutdown", self._stopping)

    def _stopping(self) -> None:
        self.stopping = True

    def connectionLost(self, reason) -> None:  # noqa: N802
        if not self.stopping:
            self.stopping = True
            self.reactor.stop()


def worker_main(spec_text: str) -> int:
    """Run one worker described by ``spec_text`` (JSON from the master); return its status."""
    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from twisted.python import usage

    from multiproxy._config import make_services
    from multiproxy._tap import Options, tune_garbage_collector
    from multiproxy.status._page import WorkerStatus

    spec = json.loads(spec_text)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)],
                                     redirectStandardIO=False)
    log = Logger(namespace="multiproxy.worker")
    listeners = {key: (fd, family) for key, fd, family in spec["listeners"]}
    adopting = AdoptingReactor(reactor, listeners)
    try:
        options = Options()
        options.parseOptions(spec["argv"])
        configuration = options.configuration
        shared = spec.get("shared_redis")
        if shared and configuration.policy is not None:
            configuration = replace(configuration, policy=configuration.policy.with_limits_redis(
                shared))
        worker = WorkerStatus(index=spec["index"], pid=os.getpid(),
                              generation=spec["generation"])
        top = make_services(configuration, adopting, shared_redis=shared, worker=worker)
        top.startService()
    except (usage.UsageError, ConfigError, error.CannotListenError) as e:
        print(f"worker {os.getpid()}: configuration refused: {e}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    for fd in listeners.values():
        os.close(fd[0])  # adoptStreamPort holds its own duplicate
    tune_garbage_collector()
    control = StandardIO(_ControlChannel(reactor), stdin=0, stdout=3, reactor=reactor)
    control.write(json.dumps({"ready": os.getpid()}).encode() + b"\n")
    log.info("worker {index} (pid {pid}) serving", index=spec["index"], pid=os.getpid())
    timeout = _shutdown_timeout(options.configuration)

    def drain():
        d = defer.maybeDeferred(top.stopService)
        deadline = reactor.seconds() + timeout

        def wait(_=None):
            if adopting.connections <= 0 or reactor.seconds() >= deadline:
                log.info("worker {index} (pid {pid}) stopped after {served} connections",
                         index=spec["index"], pid=os.getpid(),
                         served=adopting.served)
                return None
            from twisted.internet.task import deferLater

            return deferLater(reactor, 0.05, wait)

        return d.addBoth(wait)

    reactor.addSystemEventTrigger("before", "shutdown", drain)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
