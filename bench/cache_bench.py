#!/usr/bin/env python3
"""
Shared HTTP cache: memory per stored object, and hits versus misses through
the forward proxy (same run), against Squid's hits when Squid can be installed.

    python3 bench/cache_bench.py [--seconds 5] [--connections 20] [--objects 10000] [--src DIR]

1. Memory: stores ``--objects`` small responses (100-byte body, six typical
   header fields) in the in-memory store and reports the bytes each costs
   (tracemalloc), and how fast the pure core plans a hit.
2. Requests/s through a multiproxy forward proxy with the cache, from an
   nginx origin, 100-byte responses, wrk with ``--connections`` keep-alive
   connections:
   - hit: one URL, ``Cache-Control: max-age=3600``;
   - miss: a new URL every request (each response fetched and stored);
   - pass: one URL with ``Cache-Control: no-store`` (fetched every time).
3. Squid (``apt-get install squid`` is tried) as a memory-only cache on the
   same machine: hits on the same URL.

``--src`` runs the proxy from another copy of the source tree (default:
this checkout's ``src``), to compare two versions on the same machine.

Every server listens on 127.0.0.1 and every run is bounded in time.  Set
BENCH_NO_INSTALL=1 to skip peers that are not installed.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from contextlib import contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

from _harness import PYTHON, absolute_url_lua, cpu_seconds, ensure_apt, free_port, running, wrk

PROXY = """
import sys
from twisted.internet import reactor
from multiproxy.cache import CacheConfig
from multiproxy.cache._fetcher import caching_fetcher_factory
from multiproxy.forward import ForwardProxy
factory = ForwardProxy(reactor)
factory.fetcher = caching_fetcher_factory(CacheConfig(size=256 << 20), reactor)(factory.fetcher)
reactor.listenTCP(int(sys.argv[1]), factory, interface="127.0.0.1", backlog=1024)
reactor.run()
"""

# A wrk script: absolute-form requests, a new URL for every request.
UNIQUE_LUA = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "{base}?n=" .. counter .. "-" .. math.random(1, 1000000000))
end
wrk.headers["Host"] = "{host}"
"""


# -- 1. memory and core speed -------------------------------------------------


def memory_per_object(count: int) -> None:
    from multiproxy.cache import CacheConfig, MemoryStore, SharedCache
    from multiproxy.http1._dates import format_http_date
    from multiproxy.http1._headers import Headers

    now = [1_700_000_000.0]
    store = MemoryStore(max_size=1 << 34)
    cache = SharedCache(store, CacheConfig(), clock=lambda: now[0])
    body = b"x" * 100
    date = format_http_date(now[0])
    request = Headers(
        [(b"Host", b"origin.example"), (b"User-Agent", b"bench/1.0"), (b"Accept", b"*/*")]
    )
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        url = b"http://origin.example/objects/%08d" % i
        plan = cache.plan(b"GET", url, request)
        headers = Headers(
            [
                (b"Server", b"nginx"),
                (b"Date", date),
                (b"Content-Type", b"text/plain"),
                (b"Content-Length", b"100"),
                (b"Last-Modified", date),
                (b"ETag", b'"%08x-64"' % i),
                (b"Cache-Control", b"max-age=3600"),
            ]
        )
        reply = cache.on_response(plan, 200, b"OK", headers, now[0], now[0])
        reply.writer.write(body)
        reply.writer.commit()
        del plan, reply, headers
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(
        f"memory: {count} stored responses (100-byte bodies, 7 header fields) use "
        f"{used / 1048576:.1f} MiB: {used / count:.0f} bytes per object "
        f"({(used - 100 * count) / count:.0f} bytes of overhead beyond the body)"
    )
    url = b"http://origin.example/objects/%08d" % (count // 2)
    n = 20000
    started = time.process_time()
    for _ in range(n):
        plan = cache.plan(b"GET", url, request)
        plan.answer.open_body().read(65536)
    elapsed = time.process_time() - started
    print(
        f"core: planning and reading a hit takes {elapsed / n * 1e6:.1f} CPU-us "
        f"({n / elapsed:.0f} per CPU-second, no I/O)"
    )


# -- 2. through the proxy ---------------------------------------------------------


@contextmanager
def origin():
    """nginx on 127.0.0.1 with /hit (max-age=3600), /miss (max-age=3600) and /pass (no-store)."""
    nginx = ensure_apt("nginx", "nginx")
    if nginx is None:
        raise RuntimeError("nginx is not available")
    port = free_port()
    root = tempfile.mkdtemp(prefix="bench-cache-nginx-")
    os.chmod(root, 0o755)
    www = os.path.join(root, "www")
    os.makedirs(www, mode=0o755)
    for name in ("hit", "miss", "pass"):
        with open(os.path.join(www, name), "wb") as f:
            f.write(b"x" * 100)
    with open(os.path.join(root, "nginx.conf"), "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
error_log {root}/error.log;
pid {root}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location = /hit  {{ add_header Cache-Control "max-age=3600"; }}
        location = /miss {{ add_header Cache-Control "max-age=3600"; }}
        location = /pass {{ add_header Cache-Control "no-store"; }}
    }}
}}
""")
    with running([nginx, "-c", os.path.join(root, "nginx.conf"), "-p", root], port):
        yield port
    shutil.rmtree(root, ignore_errors=True)


def measure(name: str, proxy_port: int, pid: int | None, lua: str, args) -> float:
    proxy = f"http://127.0.0.1:{proxy_port}"
    wrk(proxy, lua, 1, args.connections)  # warm up (and, for hits, store the object)
    cpu_before = cpu_seconds(pid) if pid else 0.0
    result = wrk(proxy, lua, args.seconds, args.connections)
    cpu = (cpu_seconds(pid) - cpu_before) if pid else 0.0
    per = f"{cpu / max(result['requests'], 1) * 1e6:6.0f} CPU-us/req" if pid else ""
    print(
        f"  {name:28s} {result['rps']:9.0f} req/s  p50 {result['p50']:>8s}  {per}  "
        f"non-2xx {result['non2xx']}  {result['errors']}"
    )
    return result["rps"]


def through_proxy(args) -> dict[str, float]:
    results: dict[str, float] = {}
    with origin() as origin_port:
        base = f"http://127.0.0.1:{origin_port}"
        port = free_port()
        with running(
            [PYTHON, "-c", PROXY, str(port)],
            port,
            env=dict(os.environ, PYTHONPATH=args.src),
        ) as p:
            print(
                f"multiproxy forward proxy with the in-memory cache "
                f"({args.connections} connections, {args.seconds:g} s each):"
            )
            results["hit"] = measure(
                "hit (one URL, fresh)", port, p.pid, absolute_url_lua(f"{base}/hit"), args
            )
            unique = UNIQUE_LUA.replace("{base}", f"{base}/miss").replace(
                "{host}", f"127.0.0.1:{origin_port}"
            )
            results["miss"] = measure("miss (new URL, stored)", port, p.pid, unique, args)
            results["pass"] = measure(
                "pass (no-store)", port, p.pid, absolute_url_lua(f"{base}/pass"), args
            )
        squid = squid_hits(base, args)
        if squid is not None:
            results["squid-hit"] = squid
    hit, miss = results["hit"], results["miss"]
    print(f"\nhit / miss: {hit / miss:.2f}x   hit / pass: {hit / results['pass']:.2f}x")
    if "squid-hit" in results:
        print(f"multiproxy hit / Squid hit: {hit / results['squid-hit']:.2f}x")
    return results


# -- 3. Squid ------------------------------------------------------------------------


def squid_hits(base: str, args) -> float | None:
    squid = ensure_apt("squid", "squid")
    if squid is None:
        print("Squid: not installed and could not be installed; skipped")
        return None
    port = free_port()
    root = tempfile.mkdtemp(prefix="bench-squid-")
    os.chmod(root, 0o777)
    conf = os.path.join(root, "squid.conf")
    with open(conf, "w") as f:
        f.write(f"""
http_port 127.0.0.1:{port}
acl localnet src 127.0.0.1/32
http_access allow localnet
http_access deny all
cache_mem 64 MB
maximum_object_size_in_memory 1 MB
memory_cache_mode always
cache deny !all
pid_filename {root}/squid.pid
access_log none
cache_store_log none
cache_log {root}/cache.log
coredump_dir {root}
workers 1
shutdown_lifetime 1 seconds
""")
    version = subprocess.run(
        [squid, "-v"], check=False, capture_output=True, text=True
    ).stdout.split("\n")[0]
    try:
        with running([squid, "-N", "-f", conf], port) as p:
            print(f"\nSquid ({version.strip()}), memory cache, same origin and client:")
            rps = measure(
                "Squid hit (one URL, fresh)", port, p.pid, absolute_url_lua(f"{base}/hit"), args
            )
    except RuntimeError as e:
        print(f"Squid did not start ({e}); skipped")
        return None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--objects", type=int, default=10000)
    parser.add_argument("--skip-proxy", action="store_true", help="only the in-process figures")
    parser.add_argument(
        "--src",
        default=os.path.join(os.path.dirname(HERE), "src"),
        help="the source tree the proxy runs from (default: this checkout's src)",
    )
    args = parser.parse_args()
    sys.path.insert(0, args.src)
    memory_per_object(args.objects)
    if not args.skip_proxy:
        print()
        through_proxy(args)


if __name__ == "__main__":
    main()
