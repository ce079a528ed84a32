#!/usr/bin/env python3
"""
A forward proxy customised two ways: a subclassed protocol and a plug-in policy.

    python3 examples/custom_forward_proxy.py [--port 8080]
    curl -x http://127.0.0.1:8080 http://example.com/          # allowed, tagged
    curl -x http://127.0.0.1:8080 http://ads.example.net/      # 403 from the policy

- `TaggingProtocol` subclasses `ForwardProxyProtocol` and overrides
  `request_headers` to add a header to every request it forwards.
- `NoAdsPolicy` is a policy of our own: any object providing `IPolicy`
  (one method, `decide(intent) -> Decision`).  The proxy checks it with
  zope.interface when it is assembled, so a misspelt method fails at start-up.
"""

from __future__ import annotations

import argparse

from zope.interface import implementer

from multiproxy import ALLOW, Decision, Intent, IPolicy, check
from multiproxy.forward import ForwardProxy, ForwardProxyProtocol
from multiproxy.http import Headers


@implementer(IPolicy)
class NoAdsPolicy:
    """Refuses any destination whose first label is 'ads' or 'tracker'."""

    blocked_labels = frozenset({"ads", "tracker"})

    def decide(self, intent: Intent) -> Decision:
        if intent.host.split(".", 1)[0] in self.blocked_labels:
            return Decision("deny", rule="no-ads", message=f"{intent.host} serves ads")
        return ALLOW


class TaggingProtocol(ForwardProxyProtocol):
    """Adds ``X-Proxied-By`` to every request sent upstream."""

    def request_headers(self, exchange, intent, authority) -> Headers:
        headers = super().request_headers(exchange, intent, authority)
        headers.add(b"X-Proxied-By", b"custom-forward-proxy-example")
        return headers


class TaggingForwardProxy(ForwardProxy):
    protocol = TaggingProtocol


def make_proxy(reactor) -> TaggingForwardProxy:
    """The example's proxy factory (the tests use this too)."""
    from multiproxy import AccessLog

    policy = check(IPolicy, NoAdsPolicy(), "example policy")
    return TaggingForwardProxy(reactor, policy=policy, reporters=[AccessLog(reactor, "-")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    from twisted.internet import reactor

    reactor.listenTCP(args.port, make_proxy(reactor), interface="127.0.0.1")
    print(f"custom forward proxy on 127.0.0.1:{args.port}")
    reactor.run()


if __name__ == "__main__":
    main()
