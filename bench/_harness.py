"""
Shared pieces of the benchmark scripts: free ports, starting and stopping
processes, an nginx origin, wrk runs and RSS sampling.

Every server listens on 127.0.0.1 only, and every run is bounded in time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited early with {process.returncode}: {process.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout} s")


@contextmanager
def running(argv: list[str], port: int, env: dict | None = None, cwd: str | None = None):
    """Run ``argv`` until the block ends; waits until ``port`` accepts connections."""
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd,
        start_new_session=True,
    )
    try:
        wait_listening(port, process)
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def ensure_apt(package: str, binary: str) -> str | None:
    """The path of ``binary``, installing Debian's ``package`` if needed (None if impossible)."""
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path or os.environ.get("BENCH_NO_INSTALL"):
        return path
    subprocess.run(["apt-get", "install", "-y", "-q", package], capture_output=True, timeout=600)
    return shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)


def ensure_pip(module: str, package: str) -> bool:
    """Whether ``module`` imports, installing ``package`` from PyPI if needed."""
    probe = [PYTHON, "-c", f"import {module}"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        return True
    if os.environ.get("BENCH_NO_INSTALL"):
        return False
    subprocess.run([PYTHON, "-m", "pip", "install", "-q", package], capture_output=True, timeout=600)
    return subprocess.run(probe, capture_output=True).returncode == 0


@contextmanager
def nginx_origin(files: dict[str, bytes | int], port: int | None = None):
    """
    An nginx origin on 127.0.0.1 serving ``files`` (name -> content, or a size
    for a sparse file of zeros).  Yields its port.
    """
    nginx = ensure_apt("nginx", "nginx")
    if nginx is None:
        raise RuntimeError("nginx is not available")
    port = port or free_port()
    root = tempfile.mkdtemp(prefix="bench-nginx-")
    os.chmod(root, 0o755)  # nginx workers run as an unprivileged user
    www = os.path.join(root, "www")
    os.makedirs(www, mode=0o755)
    for name, content in files.items():
        path = os.path.join(www, name)
        with open(path, "wb") as f:
            if isinstance(content, int):
                f.truncate(content)
            else:
                f.write(content)
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
error_log {root}/error.log;
pid {root}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        root {www};
    }}
}}
""")
    with running([nginx, "-c", conf, "-p", root], port):
        yield port
    shutil.rmtree(root, ignore_errors=True)


def wrk(url: str, lua: str | None, seconds: float, connections: int, threads: int = 1) -> dict:
    """Run wrk; returns requests/s, latency text and error counts."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--latency"]
    script = None
    if lua:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(lua)
        script.close()
        argv += ["-s", script.name]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    if script:
        os.unlink(script.name)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": int(total.group(1)) if total else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": errors.group(1) if errors else "",
        "p50": p50.group(1) if p50 else "?",
        "raw": out,
    }


def absolute_url_lua(url: str) -> str:
    """A wrk script that sends absolute-form requests (as clients of a forward proxy do)."""
    return f'wrk.path = "{url}"\nwrk.headers["Host"] = "{url.split("/")[2]}"\n'


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` and its children, in KiB."""
    total = 0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in children.split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by ``pid`` and its children (seconds)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in children.split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except OSError:
            pass
    return total


def twistd_argv(*args: str) -> list[str]:
    return [PYTHON, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
            *args]
