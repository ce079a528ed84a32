#!/usr/bin/env python3
"""
Policy decision throughput: does judging a request grow with the number of
host rules?

    python3 bench/policy_bench.py [--seconds 0.4]

A pure micro-benchmark of `RuleSet.decide` (no network): for 0, 10, 1,000
and 10,000 host rules (a mix of exact names, domain suffixes and
``*.domain`` globs, one host each, as a blocklist would be), it times
decisions over a fixed mix of request hosts (hits on the first and last
rules, subdomains, misses, IP literals), and the same rules tried one by one
without the index, for comparison.  A second table does the same with one
rule listing N hosts.  Each case runs for about ``--seconds``.

    python3 bench/policy_bench.py --proxy [--slices 15] [--hosts 1,10000] [--shadowed]

The end-to-end figure: requests/s and the proxy's CPU microseconds per
request through the real forward proxy (`ForwardProxy` with a
`PolicyHolder` built by `make_policy_holder`, as ``twistd multiproxy
forward --policy FILE`` builds it, one subprocess per configuration), from
wrk (20 keep-alive connections, absolute-form requests) to one nginx origin
serving 100 bytes, for three configurations in the same run:

- ``no policy``: the proxy's default allow-all `IPolicy`;
- ``0 rules``: a ``[policy]`` table with no rules (default allow);
- ``1000 rules``: a client-network deny rule, 1,000 host deny rules (exact
  names, ``.domain`` suffixes and ``*.domain`` globs, one each), and a
  time-window deny rule for a quarter-hour twelve hours away, so every
  request is judged against all three kinds and is allowed by the default.

With ``--shadowed``, a fourth configuration puts a rule that allows
everything before the same 1,000 rules: the process holds them all, but
every decision ends at the first rule, which tells the cost of their memory
from the cost of matching.

Request hosts are ``www.hN.bench.example`` (no rule matches them), sent to
the origin by a fixed chooser so that no name is looked up; ``--hosts 1``
repeats one host (the rule set's per-host memory answers), ``--hosts 10000``
cycles through more hosts than it remembers (4,096), so the index is
consulted for most requests.  The three proxies run side by side and take
turns in 1-second wrk runs (slices), so that all of them see the same load
from the rest of the machine; CPU time per request (user + system of the
proxy process, summed over its slices) is the steadier figure on a shared
machine, requests/s the one users see.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from multiproxy.pipeline._values import Intent  # noqa: E402
from multiproxy.policy import Rule, RuleSet, load_policy_file, normalise_host  # noqa: E402
from multiproxy.policy._rules import MatchContext  # noqa: E402

SIZES = (0, 10, 1_000, 10_000)


def host_patterns(count: int) -> list[str]:
    patterns = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            patterns.append(f"site{i}.example")
        elif kind == 1:
            patterns.append(f".site{i}.example")
        else:
            patterns.append(f"*.site{i}.example")
    return patterns


def request_intents(count: int) -> list[Intent]:
    last = max(count - 1, 0)
    hosts = [
        "site0.example", f"www.site{last}.example", "nothing.example.org",
        "a.b.c.d.e.example.net", "www.site1.example", "127.0.0.1", "2001:db8::1",
        f"deep.sub.site{count // 2 | 1}.example", "example.com", "www.google.com",
    ]
    return [
        Intent("http", "bench", "10.0.0.5", 40000, host=normalise_host(h), port=80,
               method="GET", scheme="http", target=f"http://{h}/")
        for h in hosts
    ]


def run_for(seconds: float, intents: list[Intent], decide, timer=time.perf_counter) -> float:
    """Decisions per second, measured for about ``seconds`` of ``timer``."""
    done = 0
    start = timer()
    deadline = start + seconds
    while True:
        for intent in intents:
            decide(intent)
        done += len(intents)
        now = timer()
        if now >= deadline:
            return done / (now - start)


def linear(rules: RuleSet):
    """The same decision without the index: every rule tried in order."""
    def decide(intent: Intent):
        context = MatchContext(intent, rules.clock)
        for rule in rules.rules:
            if rule.matches(context):
                return rule.decision
        return rules.default
    return decide


def decide_benchmark(args) -> None:
    """The pure `RuleSet.decide` tables."""
    clock = time.time

    print("Separate rules, one host pattern each (first match wins); microseconds per decision")
    print(f"{'rules':>8} {'dec/s':>11} {'us/dec':>8} {'vs 10':>6} {'cold us/dec':>12} "
          f"{'linear us/dec':>14}")
    baseline = None
    for size in SIZES:
        specs = [Rule.build(f"r{i}", "deny", hosts=[p])
                 for i, p in enumerate(host_patterns(size))]
        rules = RuleSet(specs, clock=clock)
        cold = RuleSet(specs, clock=clock, host_cache_size=0)
        intents = request_intents(size)
        indexed = run_for(args.seconds, intents, rules.decide)
        if size == 10:
            baseline = indexed
        uncached = run_for(args.seconds / 2, intents, cold.decide)
        plain = run_for(min(args.seconds, 0.2), intents, linear(rules))
        ratio = f"{indexed / baseline:6.2f}" if baseline else f"{'-':>6}"
        print(f"{size:>8} {indexed:>11,.0f} {1e6 / indexed:>8.2f} {ratio} "
              f"{1e6 / uncached:>12.2f} {1e6 / plain:>14.2f}")

    print("\nOne rule listing N host patterns, after a network rule, before a time-window rule:")
    print(f"{'hosts':>8} {'dec/s':>11} {'us/dec':>8} {'vs 10':>6}")
    baseline = None
    for size in SIZES:
        rules = [Rule.build("net", "allow", clients=["192.0.2.0/24"]),
                 Rule.build("work", "deny", hosts=[".social.example"], days="Mon-Fri",
                            hours="09:00-17:30", timezone="Europe/Berlin")]
        if size:
            rules.insert(1, Rule.build("blocklist", "deny", hosts=host_patterns(size)))
        rule_set = RuleSet(rules, clock=clock)
        intents = request_intents(size) + [request_intents(1)[0].__class__(
            "http", "bench", "10.0.0.5", 1, host="www.social.example", port=80)]
        rate = run_for(args.seconds, intents, rule_set.decide)
        if size == 10:
            baseline = rate
        ratio = f"{rate / baseline:6.2f}" if baseline else f"{'-':>6}"
        print(f"{size:>8} {rate:>11,.0f} {1e6 / rate:>8.2f} {ratio}")


# -- end to end: through the forward proxy ---------------------------------------------

def shadowed_toml(now: datetime.datetime) -> str:
    """The 1,000-rule table behind a first rule that allows everything: their memory, no matching."""
    return policy_toml(1000, now).replace(
        'timezone = "UTC"\n\n',
        'timezone = "UTC"\n\n[[policy.rules]]\nname = "allow-all"\naction = "allow"\n\n', 1)


def policy_toml(rule_count: int, now: datetime.datetime) -> str:
    """
    A ``[policy]`` table: with ``rule_count`` host rules, a client-network
    rule before them and a time-window rule after them (a quarter-hour
    twelve hours from ``now``, UTC, so it never matches during the run).
    """
    lines = ['[policy]', 'default = "allow"', 'timezone = "UTC"', '']
    if not rule_count:
        return "\n".join(lines) + "\n"
    lines += ['[[policy.rules]]', 'name = "blocked-networks"', 'action = "deny"',
              'clients = ["192.0.2.0/24", "2001:db8::/32"]', '']
    for i, pattern in enumerate(host_patterns(rule_count)):
        lines += ['[[policy.rules]]', f'name = "block-{i}"', 'action = "deny"',
                  f'hosts = ["{pattern}"]', '']
    start = (now + datetime.timedelta(hours=12)).replace(second=0, microsecond=0)
    end = start + datetime.timedelta(minutes=15)
    lines += ['[[policy.rules]]', 'name = "maintenance-window"', 'action = "deny"',
              'days = "*"', f'hours = "{start:%H:%M}-{end:%H:%M}"',
              'message = "The proxy is down for maintenance"', '']
    return "\n".join(lines)


def serve_proxy(args) -> None:
    """
    The proxy process: a `ForwardProxy` on 127.0.0.1:``--serve-proxy`` whose
    every request goes to the origin on ``--origin-port``, with the policy of
    ``--policy-file`` (none: allow all), built as twistd builds it.
    """
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.logger import LogLevel, formatEvent, globalLogBeginner
    from zope.interface import implementer

    from multiproxy.forward import ForwardProxy
    from multiproxy.forward._origin import Origin
    from multiproxy.pipeline._interfaces import IUpstreamChooser
    from multiproxy.policy import PolicySource, make_policy_holder

    def warnings_to_stderr(event: dict) -> None:
        level = event.get("log_level")
        if level is not None and level >= LogLevel.warn:
            sys.stderr.write(f"[{level.name}] {formatEvent(event)[:300]}\n")

    globalLogBeginner.beginLoggingTo([warnings_to_stderr], redirectStandardIO=False)

    @implementer(IUpstreamChooser)
    class OneOrigin:
        """Every host is served by the benchmark's origin: no name lookups."""

        def __init__(self, origin: Origin) -> None:
            self.origin = origin

        def choose(self, intent, excluded=frozenset()):
            return None if self.origin.key in excluded else self.origin

    policy = None
    if args.policy_file:
        policy = make_policy_holder(PolicySource.read(args.policy_file), reactor)
    proxy = ForwardProxy(reactor, policy=policy,
                         chooser=OneOrigin(Origin("http", "127.0.0.1", args.origin_port)))
    reactor.listenTCP(args.serve_proxy, proxy, backlog=256, interface="127.0.0.1")
    reactor.run()


def hosts_lua(count: int) -> str:
    """A wrk script sending absolute-form requests cycling through ``count`` hosts."""
    return f"""
local hosts = {{}}
for i = 0, {count - 1} do hosts[i + 1] = "www.h" .. i .. ".bench.example" end
local n = 0
request = function()
  n = n % {count} + 1
  local host = hosts[n]
  return wrk.format("GET", "http://" .. host .. "/100b", {{["Host"] = host}})
end
"""


def check_denied(port: int, rule: str) -> None:
    """One request for a blocked host must get 403 naming ``rule``: the rules are in force."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "http://www.site1.example/100b", headers={"Host": "www.site1.example"})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    if response.status != 403 or rule.encode() not in body:
        raise SystemExit(f"expected 403 from rule {rule}, got {response.status}: {body[:200]!r}")


def proxy_benchmark(args, extra: dict[str, str] | None = None) -> None:
    """
    Requests/s and CPU per request through the forward proxy, per
    configuration; ``extra`` adds configurations (name -> ``[policy]`` text).
    """
    from contextlib import ExitStack

    from _harness import PYTHON, cpu_seconds, free_port, nginx_origin, running, wrk

    workdir = tempfile.mkdtemp(prefix="policy-bench-")
    now = datetime.datetime.now(datetime.UTC)
    texts = {"0 rules": policy_toml(0, now), "1000 rules": policy_toml(1000, now),
             **(extra or {})}
    configurations = ("no policy", *texts)
    files = {}
    for number, (name, text) in enumerate(texts.items()):
        files[name] = os.path.join(workdir, f"policy{number}.toml")
        with open(files[name], "w") as f:
            f.write(text)
    host_counts = [int(h) for h in args.hosts.split(",")]
    print("decide() alone for these rule sets, in this process (CPU microseconds per "
          "decision):")
    for name, path in files.items():
        rules = load_policy_file(path).rules
        costs = []
        for host_count in host_counts:
            intents = [Intent("http", "forward", "127.0.0.1", 40000,
                              host=f"www.h{i}.bench.example", port=80, method="GET",
                              scheme="http", target=f"http://www.h{i}.bench.example/100b")
                       for i in range(host_count)]
            intents *= max(1, 1000 // host_count)  # few timer calls per decision
            rate = run_for(0.5, intents, rules.decide, timer=time.process_time)
            costs.append(f"{host_count} hosts {1e6 / rate:.2f}")
        print(f"  {name:<12} " + ", ".join(costs))
    print()
    print(f"End to end through the forward proxy: wrk -t1 -c{args.connections}, 100-byte "
          f"responses from nginx; {args.slices} slices of 1 s per configuration, the "
          f"configurations taking turns slice by slice.\nTarget: 1000 rules under 10% slower "
          f"than 0 rules (req/s ratio above 0.90, CPU-us/req ratio below 1.11)\n")
    with nginx_origin({"100b": b"x" * 100}) as origin, ExitStack() as stack:
        pids, urls = {}, {}
        for name in configurations:
            port = free_port()
            argv = [PYTHON, os.path.abspath(__file__), "--serve-proxy", str(port),
                    "--origin-port", str(origin)]
            if name in files:
                argv += ["--policy-file", files[name]]
            pids[name] = stack.enter_context(running(argv, port)).pid
            urls[name] = f"http://127.0.0.1:{port}"
        check_denied(int(urls["1000 rules"].rsplit(":", 1)[1]), "block-1")
        for host_count in host_counts:
            lua = hosts_lua(host_count)
            for name in configurations:
                wrk(urls[name], lua, 1, args.connections)  # warm up: pools, index memory
            # name -> [(requests, cpu seconds, req/s)] per slice
            slices: dict[str, list[tuple[int, float, float]]] = {c: [] for c in configurations}
            for number in range(args.slices):
                shift = number % len(configurations)
                turn = configurations[shift:] + configurations[:shift]
                for name in turn:
                    before = cpu_seconds(pids[name])
                    result = wrk(urls[name], lua, 1, args.connections)
                    cpu = cpu_seconds(pids[name]) - before
                    if result["non2xx"] or result["errors"] or not result["requests"]:
                        raise SystemExit(f"{name}: bad run: {result['raw']}")
                    slices[name].append((result["requests"], cpu, result["rps"]))
            print(f"{host_count} request host{'s' if host_count > 1 else ''}:")
            print(f"  {'configuration':<13} {'requests':>9} {'req/s':>7} {'CPU-us/req':>11} "
                  f"{'req/s slices (min-median-max)':>31}")
            totals = {}
            for name in configurations:
                requests = sum(r for r, _, _ in slices[name])
                cpu = sum(c for _, c, _ in slices[name])
                rates = sorted(rps for _, _, rps in slices[name])
                totals[name] = (requests / args.slices, cpu / requests * 1e6)
                print(f"  {name:<13} {requests:>9} {totals[name][0]:>7.0f} "
                      f"{totals[name][1]:>11.1f} "
                      f"{rates[0]:>11.0f} {statistics.median(rates):>9.0f} {rates[-1]:>9.0f}")
            for base in ("0 rules", "no policy"):
                paired = [r[2] / b[2] for b, r in zip(slices[base], slices["1000 rules"])]
                print(f"  1000 rules / {base}: req/s {totals['1000 rules'][0] / totals[base][0]:.3f}"
                      f" (slice pairs: median {statistics.median(paired):.3f}), "
                      f"CPU-us/req {totals['1000 rules'][1] / totals[base][1]:.3f}")
            print()
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.4, help="time per decide() case")
    parser.add_argument("--proxy", action="store_true",
                        help="measure end to end through the forward proxy instead")
    parser.add_argument("--slices", type=int, default=15,
                        help="--proxy: 1-second runs per configuration and host count")
    parser.add_argument("--connections", type=int, default=20, help="--proxy: wrk connections")
    parser.add_argument("--hosts", default="1,10000",
                        help="--proxy: numbers of distinct request hosts, comma-separated")
    parser.add_argument("--shadowed", action="store_true",
                        help="--proxy: also run the 1,000 rules behind an allow-all rule "
                             "(what their memory alone costs)")
    parser.add_argument("--serve-proxy", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--origin-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--policy-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_proxy:
        serve_proxy(args)
    elif args.proxy:
        now = datetime.datetime.now(datetime.UTC)
        proxy_benchmark(args, {"1000 shadowed": shadowed_toml(now)} if args.shadowed else None)
    else:
        decide_benchmark(args)


if __name__ == "__main__":
    main()
