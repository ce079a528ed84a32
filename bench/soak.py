"""
A bounded soak: mixed traffic through a forward proxy, a reverse proxy and
a TCP relay in one process of their own, then a check that it returns to
its baseline.

    python bench/soak.py [--seconds 60] [--workers 16]

Traffic (each worker picks at random, until the time is up): GET of random
sizes over kept-alive connections, POST bodies echoed back (checked by
SHA-256), cacheable GETs (cache hits), CONNECT tunnels carrying TLS to an
HTTPS origin and plain bytes to an echo server, pipelined requests, clients
that abort mid-download and mid-upload, and hostile bytes; through the
reverse proxy GETs, POSTs and aborted downloads; through the TCP relay
echoed bytes.  Every answer is
checked, so a response sent to the wrong client or corrupted counts as an
error.

Before: a warm-up round of the same traffic, then the baseline (after the
keep-alive timeouts have passed and a full collection).  After: the same
wait, then the proxy's RSS, open descriptors (/proc/PID/fd), client
connections, pooled upstream connections, pending timers, live objects of
its own classes and all objects the garbage collector tracks are compared
with the baseline.  Prints a JSON report;
exits 1 if anything leaked or a check failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _proxyproc import ProxyProcess

MIB = 1 << 20
KEEPALIVE = 3.0  # the proxy's client keep-alive and pool idle timeouts during the soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="soak duration (max 600)")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    args.seconds = min(args.seconds, 600.0)
    from twisted.internet import task

    result = {}
    task.react(lambda reactor: _soak(reactor, args, result))
    return result.get("exit", 1)


async def _soak(reactor, args, result: dict) -> None:
    import trustme
    from soak_traffic import Traffic, make_origin_site
    from twisted.internet import defer, protocol, ssl
    from twisted.web import server

    rng = random.Random(args.seed)
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    site = make_origin_site(reactor)
    plain = reactor.listenTCP(0, site, interface="127.0.0.1")
    tls_options = ssl.CertificateOptions(
        privateKey=ssl.PrivateCertificate.loadPEM(
            cert.private_key_and_cert_chain_pem.bytes()).privateKey.original,
        certificate=ssl.PrivateCertificate.loadPEM(
            cert.private_key_and_cert_chain_pem.bytes()).original,
    )
    tls = reactor.listenSSL(0, server.Site(site.resource), tls_options, interface="127.0.0.1")

    class Echo(protocol.Protocol):
        def dataReceived(self, data):
            self.transport.write(data)

    echo = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
    ports = {"plain": plain.getHost().port, "tls": tls.getHost().port, "echo": echo.getHost().port}
    proxy = ProxyProcess(
        "--cache", "--keepalive", str(KEEPALIVE), "--pool-keepalive", str(KEEPALIVE),
        "--connect-ports", f"{ports['tls']},{ports['echo']}",
        "--reverse-backend", str(ports["plain"]), "--tcp-backend", str(ports["echo"]),
    )
    traffic = Traffic(reactor, proxy.ports, ports, ca, rng)
    try:
        ask = lambda command="stats": _ask_async(proxy, command)
        _say(f"warm-up (5 s), then baseline; proxy pid {proxy.pid}")
        await traffic.run(args.workers, 5.0)
        warm_counts = dict(traffic.counts)
        baseline = await _settle(reactor, ask)
        _say(f"baseline: rss {baseline['rss'] / MIB:.1f} MiB, fds {baseline['fds']}, "
             f"objects {baseline['objects']}")
        traffic.reset()
        samples = []
        sampling = [True]

        async def sample():
            while sampling[0]:
                stats = await ask()
                samples.append({k: stats[k] for k in ("rss", "fds", "connections", "pool_idle",
                                                      "timers")} | {"t": reactor.seconds()})
                await task_sleep(reactor, 2.0)

        from twisted.internet import task as _task  # noqa: F401

        sampler = defer.ensureDeferred(sample())
        started = reactor.seconds()
        _say(f"soak: {args.seconds:g} s with {args.workers} workers")
        await traffic.run(args.workers, args.seconds)
        elapsed = reactor.seconds() - started
        sampling[0] = False
        await sampler
        final = await _settle(reactor, ask)
        holders = {}
        for name in final["objects"]:
            if final["objects"][name] > baseline["objects"].get(name, 0) and name != "DelayedCall":
                holders[name] = await ask(f"referrers:{name}")
        result["holders"] = holders
    finally:
        stderr = await _in_thread(proxy.stop)
        await plain.stopListening()
        await tls.stopListening()
        await echo.stopListening()

    peak = max(s["rss"] for s in samples) if samples else final["rss"]
    leaks = {}
    for key in ("fds", "connections", "pool_idle", "timers"):
        if final[key] > baseline[key]:
            leaks[key] = [baseline[key], final[key]]
    for name in set(final["objects"]) | set(baseline["objects"]):
        before, after = baseline["objects"].get(name, 0), final["objects"].get(name, 0)
        # Cancelled DelayedCalls wait in the reactor's heap until Twisted
        # compacts it (bounded); "timers" counts the live ones.
        if after > before and name not in ("Deferred", "DelayedCall"):
            leaks[f"objects.{name}"] = [before, after]
    # Every object the collector tracks: a leak of anything Python-level
    # (not only the classes counted above) shows here.
    object_growth = final["gc_objects"] - baseline["gc_objects"]
    if object_growth > max(2000, baseline["gc_objects"] // 50):
        leaks["gc_objects"] = [baseline["gc_objects"], final["gc_objects"]]
    rss_growth = final["rss"] - baseline["rss"]
    errors = {k: v for k, v in traffic.errors.items() if v}
    report = {
        "seconds": round(elapsed, 1),
        "workers": args.workers,
        "exchanges": dict(traffic.counts),
        "exchanges_total": sum(traffic.counts.values()),
        "warm_up_exchanges": sum(warm_counts.values()),
        "cache_hits": traffic.cache_hits,
        "keepalive_races_retried": traffic.keepalive_races,
        "errors": errors,
        "error_examples": traffic.error_examples,
        "baseline": _brief(baseline),
        "final": _brief(final),
        "rss_peak_mib": round(peak / MIB, 1),
        "rss_growth_mib": round(rss_growth / MIB, 1),
        "leaks": leaks,
        "leak_holders": result.get("holders", {}),
        "proxy_failures_logged": final["failure_count"],
        "proxy_failure_examples": final["failures"],
        "proxy_warnings": [line for line in stderr.splitlines() if line.startswith("[")][:10],
        "samples": len(samples),
        # RSS through the run: a leak keeps climbing, warm-up levels off.
        "rss_mib_by_quarter": [
            round(samples[min(len(samples) - 1, len(samples) * q // 4)]["rss"] / MIB, 1)
            for q in range(1, 5)
        ] if samples else [],
    }
    print(json.dumps(report, indent=2))
    ok = not leaks and not errors and final["failure_count"] == 0 and rss_growth < 32 * MIB
    _say("soak: " + ("no leaks, no errors" if ok else "PROBLEMS (see report)"))
    result["exit"] = 0 if ok else 1


def _brief(stats: dict) -> dict:
    return {
        "rss_mib": round(stats["rss"] / MIB, 1), "fds": stats["fds"],
        "connections": stats["connections"], "pool_idle": stats["pool_idle"],
        "timers": stats["timers"], "objects": stats["objects"],
        "gc_objects": stats["gc_objects"],
    }


async def _settle(reactor, ask) -> dict:
    """Wait out the keep-alive timeouts, then measure after a full collection."""
    deadline = reactor.seconds() + 4 * KEEPALIVE + 10
    while reactor.seconds() < deadline:
        stats = await ask()
        if stats["connections"] == 0 and stats["pool_idle"] == 0:
            break
        await task_sleep(reactor, 0.5)
    await task_sleep(reactor, 1.0)
    return await ask("gc")


def task_sleep(reactor, seconds: float):
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


def _in_thread(fn, *args):
    from twisted.internet import threads

    return threads.deferToThread(fn, *args)


def _ask_async(proxy: ProxyProcess, command: str):
    return _in_thread(proxy.ask, command)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    sys.exit(main())
