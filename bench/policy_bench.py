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
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from multiproxy._values import Intent  # noqa: E402
from multiproxy.policy import Rule, RuleSet, normalise_host  # noqa: E402
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


def run_for(seconds: float, intents: list[Intent], decide) -> float:
    """Decisions per second, measured for about ``seconds``."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for intent in intents:
            decide(intent)
        done += len(intents)
        now = time.perf_counter()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.4, help="time per case")
    args = parser.parse_args()
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

if __name__ == "__main__":
    main()
