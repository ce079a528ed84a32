#!/usr/bin/env python3
"""
The work-hours forward proxy of examples/work_hours.toml, assembled in Python
with a custom policy of our own on top of the configured rules.

    python3 examples/work_hours_proxy.py [--port 8080] [--config examples/work_hours.toml]
    curl -x http://127.0.0.1:8080 https://www.facebook.com/                    # 403, work hours
    curl -x http://127.0.0.1:8080 -U alice:wonderland https://www.facebook.com/  # allowed
    curl -x http://127.0.0.1:8080 http://example.com/setup.exe                 # 403, custom rule
    curl -x http://127.0.0.1:8080 -U bob:builder http://example.com/setup.exe  # allowed (IT)

- The rules, users and groups come from the ``[policy]`` table of the TOML
  file, read with `load_policy_file`; ``kill -HUP`` reloads them.
- `ExecutablesForITOnly` subclasses `PolicyHolder` (so it keeps the
  authenticator, limits and reloading) and adds one decision written in
  Python before the configured rules: program downloads are for the IT group.
"""

from __future__ import annotations

import argparse
import pathlib
import re

from multiproxy import Decision, Intent, IPolicy, check
from multiproxy.forward import ForwardProxy
from multiproxy.policy import PolicyHolder, PolicyService, load_policy_file

HERE = pathlib.Path(__file__).parent
CONFIG = HERE / "work_hours.toml"


class ExecutablesForITOnly(PolicyHolder):
    """The configured policy, plus: only the ``it`` group may download programs."""

    programs = re.compile(r"\.(exe|msi|dmg|pkg)(\?|$)", re.IGNORECASE)

    def decide(self, intent: Intent) -> Decision:
        if (intent.kind == "http" and self.programs.search(intent.target)
                and "it" not in intent.groups):
            return Decision("deny", rule="executables-for-it-only",
                            message="Program downloads are for the IT team.")
        return super().decide(intent)


def make_policy(reactor, config: str = str(CONFIG), clock=None) -> ExecutablesForITOnly:
    """The example's policy; ``clock`` defaults to ``reactor.seconds`` (tests inject one)."""
    clock = clock or reactor.seconds

    def load():
        return load_policy_file(config)

    policy = ExecutablesForITOnly(load(), clock=clock, load=load, source=config)
    return check(IPolicy, policy, "example policy")


def make_proxy(reactor, policy: PolicyHolder, chooser=None) -> ForwardProxy:
    """The example's forward proxy (tests pass a ``chooser`` that stays on loopback)."""
    from multiproxy import AccessLog

    return ForwardProxy(reactor, name="office", policy=policy, chooser=chooser,
                        reporters=[AccessLog(reactor, "-")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--config", default=str(CONFIG))
    args = parser.parse_args()
    from twisted.internet import reactor

    policy = make_policy(reactor, args.config)
    PolicyService(policy, reactor).startService()  # reload on SIGHUP
    reactor.listenTCP(args.port, make_proxy(reactor, policy), interface="127.0.0.1")
    print(f"work-hours forward proxy on 127.0.0.1:{args.port}")
    reactor.run()


if __name__ == "__main__":
    main()
