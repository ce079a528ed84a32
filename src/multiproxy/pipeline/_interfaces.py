"""
The contract every multiproxy proxy is built from.

A proxy at any layer (forward HTTP, reverse HTTP, TCP relay) is a Twisted
protocol factory that provides `IProxy`: it learns what the client wants (an
`Intent`), asks its `IPolicy`, asks its `IUpstreamChooser` for an `IUpstream`,
connects through that upstream's Twisted client endpoint, relays with
backpressure, and hands an `AccessRecord` to each `IReporter`.  The proxies
differ only where their protocols really differ.

Implementations are checked with `zope.interface.verify.verifyObject` when a
proxy is assembled (see `multiproxy.pipeline._contract.check`), so a plug-in that does
not fit fails loudly at start-up, not on the first request.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IPolicy(Interface):
    """Decides whether a client may have what it asked for."""

    def decide(intent):
        """
        Judge an `Intent`.

        @return: a `multiproxy.Decision`.  Must not block: anything slow
            (credential checks) happens before the policy is asked, and its
            outcome is in ``intent.user`` / ``intent.groups``.
        """


class IUpstream(Interface):
    """A place a proxy can connect to: an origin server, or a backend in a pool."""

    name = Attribute("A short label for logs and the status page (str).")
    key = Attribute(
        "A hashable identity: connections to upstreams with equal keys are "
        "interchangeable, so idle ones may be pooled and reused."
    )

    def endpoint(reactor):
        """
        @return: an C{IStreamClientEndpoint} that connects to this upstream
            (with TLS and connect timeout already applied, if any).
        """

    def started():
        """A connection or request to this upstream has begun (for least-connections)."""

    def finished(ok, elapsed):
        """
        The connection or request begun with `started` is over.

        @param ok: False when it failed in a way that speaks against the
            upstream's health (refused, reset, timed out, unusable answer).
        @param elapsed: seconds it took.
        """


class IUpstreamChooser(Interface):
    """Chooses the upstream for an `Intent`."""

    def choose(intent, excluded=frozenset()):
        """
        @param excluded: keys of upstreams already tried for this intent.
        @return: an `IUpstream`, or None when none is available (the proxy
            answers 503 or closes the connection).
        """


class IBalancer(Interface):
    """A load-balancing algorithm: picks one of several healthy upstreams."""

    def pick(candidates, intent):
        """
        @param candidates: a non-empty sequence of healthy `IUpstream`s, in
            configuration order.
        @return: one of C{candidates}.
        """


class IReporter(Interface):
    """Receives one `AccessRecord` per finished request, tunnel or connection."""

    def report(record):
        """Record a finished exchange.  Must not raise and must not block."""


class IProxy(Interface):
    """
    A proxy: a Twisted server protocol factory wired to the shared pipeline.
    """

    name = Attribute("The proxy's name in logs and configuration (str).")
    reactor = Attribute("The reactor it runs on (injected, never imported).")
    policy = Attribute("Its `IPolicy`.")
    chooser = Attribute("Its `IUpstreamChooser`.")
    reporters = Attribute("A sequence of `IReporter`s.")

    def buildProtocol(addr):
        """Build the server-side protocol for a new client connection."""
