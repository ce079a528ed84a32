"""
``twistd multiproxy``: command-line options and the service they build.

``twistd -n multiproxy`` with no options runs a forward proxy on
127.0.0.1:8080.  ``forward``, ``reverse`` and ``tcp`` are subcommands with
their own options; ``--config FILE.toml`` builds any number of proxies from
a file instead.  Every option and file is checked before anything listens.
"""

from __future__ import annotations

import gc
import sys
from dataclasses import replace
from typing import NoReturn

from twisted.python import usage

from multiproxy import __version__
from multiproxy._accesslog import AccessLogOptions
from multiproxy._config import (
    Configuration,
    load_configuration,
    make_services,
    proxy_kinds,
)
from multiproxy.forward._config import ForwardOptions
from multiproxy.pipeline._errors import ConfigError
from multiproxy.reverse import ReverseOptions
from multiproxy.socks._config import SocksOptions
from multiproxy.tcp._config import TCPOptions


class Options(AccessLogOptions, usage.Options):
    """Options of ``twistd multiproxy``."""

    synopsis = ("[--workers N|auto] [--check] [--config FILE.toml] "
                "[forward|reverse|tcp|socks [options]]")
    longdesc = (
        "A multi-protocol proxy. With no arguments: a forward HTTP proxy on "
        "127.0.0.1:8080. Use a subcommand for one proxy with command-line "
        "options, or --config for any number of proxies from a TOML file."
    )
    optFlags = [
        ["check", None, "Check the options or the --config file completely (certificates, "
         "endpoints, log paths) without listening; exit 0 if valid, 1 if not."],
    ]
    optParameters = [
        ["config", "c", None, "TOML configuration file (instead of a subcommand)."],
        ["workers", None, None, "Worker processes serving the listeners ('auto' = one per "
         "core; default 1, or the file's top-level workers)."],
    ]
    subCommands = [
        ["forward", None, ForwardOptions, "Forward HTTP proxy (the default)."],
        ["reverse", None, ReverseOptions, "Reverse HTTP proxy in front of backends."],
        ["tcp", None, TCPOptions, "TCP relay: a layer-4 port forwarder and balancer."],
        ["socks", None, SocksOptions, "SOCKS5 / SOCKS4a proxy (CONNECT)."],
    ]
    defaultSubCommand = "forward"

    def opt_version(self) -> None:
        """Print multiproxy's version (and Twisted's) and exit."""
        print(version_text())
        sys.exit(0)

    def parseOptions(self, options=None) -> None:
        argv = sys.argv[1:] if options is None else list(options)
        self.argv = argv
        names = {sub[0] for sub in self.subCommands}
        self._explicit_subcommand = any(arg in names for arg in argv)
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise  # a program parsing options itself handles the error
            # Under twistd: one line, not twistd's help text before it.
            exit_with_error(str(e))

    def postOptions(self) -> None:
        self.check_access_log_format()
        self._read_configuration()
        if self["workers"] is not None:
            from multiproxy._workers import parse_workers

            try:
                self.workers = parse_workers(self["workers"])
            except ConfigError as e:
                raise usage.UsageError(str(e)) from None
        else:
            self.workers = self.configuration.workers
        from multiproxy._workers import check_worker_configuration

        try:
            check_worker_configuration(self.configuration, self.workers)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if self["check"]:
            self._check_and_exit()

    def _read_configuration(self) -> None:
        if self["config"] is not None:
            if self._explicit_subcommand:
                raise usage.UsageError(
                    "use either --config FILE or a subcommand with options, not both"
                )
            try:
                configuration = load_configuration(self["config"])
            except ConfigError as e:
                raise usage.UsageError(str(e)) from None
        else:
            kind = proxy_kinds()[self.subCommand]
            policy = getattr(self.subOptions, "policy_source", None)  # multiproxy.policy options
            configuration = Configuration(((kind, self.subOptions.config),), "-", policy)
        # On the command line, before or after the subcommand, beats the file.
        log, log_format = self._log_option("access-log"), self._log_option("access-log-format")
        if log is not None:
            configuration = replace(configuration, access_log=None if log == "none" else log)
        if log_format is not None:
            configuration = replace(configuration, access_log_format=log_format)
        self.configuration = configuration

    def _log_option(self, key: str) -> str | None:
        sub = getattr(self, "subOptions", None)
        if sub is not None and sub[key] is not None:
            return sub[key]
        return self[key]

    def _check_and_exit(self) -> None:
        """``--check``: build everything (nothing listens), say what was found, exit."""
        from twisted.internet.testing import MemoryReactorClock

        try:
            make_services(self.configuration, MemoryReactorClock())
        except ConfigError as e:
            exit_with_error(str(e))
        where = self["config"] or f"the {self.subCommand} options"
        proxies = ", ".join(f"{kind.name} {getattr(config, 'name', kind.name)!r}"
                            for kind, config in self.configuration.proxies)
        print(f"multiproxy: {where}: valid ({proxies})")
        sys.exit(0)


def version_text() -> str:
    """What ``--version`` prints: multiproxy's version and Twisted's."""
    import twisted

    return f"multiproxy {__version__} (Twisted {twisted.__version__})"


def exit_with_error(message: str) -> NoReturn:
    """End the process with one line on stderr naming what is wrong, and status 1."""
    sys.stderr.write(f"twistd multiproxy: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(1)


def makeService(options: Options):
    """Build the service ``twistd`` runs (the reactor is imported only here)."""
    from twisted.internet import reactor

    if options.workers > 1:
        return make_worker_master(options, reactor)
    try:
        service = make_services(options.configuration, reactor)
    except ConfigError as e:
        exit_with_error(str(e))
    tune_garbage_collector()
    return service


def make_worker_master(options: Options, reactor):
    """The master of ``--workers N``: binds every listener now, serves none."""
    from multiproxy._workers import WorkerMaster

    def load():
        fresh = Options()
        try:
            fresh.parseOptions(options.argv)
        except usage.UsageError as e:
            raise ConfigError(str(e)) from None
        return fresh.configuration, fresh.workers

    try:
        return WorkerMaster(reactor, options.argv, load, options.configuration, options.workers)
    except ConfigError as e:
        exit_with_error(str(e))


def tune_garbage_collector() -> None:
    """
    Make the cyclic garbage collector cheaper for a long-running proxy.

    Everything built so far (modules, configuration, services) lives as long
    as the process: ``gc.freeze`` takes it out of every future collection.
    A proxy allocates a few dozen short-lived containers per request, all
    freed by reference counting (tests/test_garbage.py checks that requests
    leave no cycles), yet each allocation counts towards the next pass; with
    the default threshold (700) the youngest generation is scanned every
    few requests.  Scanning it ten times less often still collects the
    cycles connections leave (Twisted's transport and protocol point at
    each other), a little later.
    """
    gen0, gen1, gen2 = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(gen0, 7000), gen1, gen2)
