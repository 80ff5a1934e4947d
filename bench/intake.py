"""Benchmark Open311 intake: POST requests.json against gunicorn, with wrk, on this machine.

    .venv/bin/python bench/intake.py [--seconds 20] [--connections 32] [--workers N] [--threads N]

Builds `gridmgmt_bench_intake` (the demo city), creates a trusted api key (its reports are
filed at once and dispatched), starts gunicorn with the shipped gunicorn.conf.py and one
dispatch worker, then, after a 2-second warm-up (each worker's first requests connect, prepare
and import), drives in one run, for the same time and concurrency:

1. POST /open311/v2/requests.json with real positions inside the demo city (wrk + Lua);
2. GET /healthz, a no-op endpoint of the same app (the ceiling of the stack itself).

Then it checks that every accepted report (2xx) is stored and dispatched. The per-key and
per-IP rate limits are raised for the run (everything comes from 127.0.0.1). Last line:
    intake: X req/s, p99 Y ms, noop Z req/s, ratio R
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from redis import Redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, bench_redis_url, fresh_database

from gridmgmt.app.demo import seed_demo
from gridmgmt.kernel.auth import create_api_key

BENCH_DB = "gridmgmt_bench_intake"
PORT = 8711
LUA = """
local points = {POINTS}
local key = "{KEY}"
local n = 0
request = function()
  n = n + 1
  local p = points[(n % #points) + 1]
  local body = "api_key=" .. key .. "&service_code=E0102&lat=" .. p[2] .. "&long=" .. p[1]
    .. "&description=bench%20" .. n .. "&device_id=wrk"
  return wrk.format("POST", "/open311/v2/requests.json",
    {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
"""


def redis_url() -> str:
    """Database 3 of the Redis the app uses: this benchmark flushes it."""
    return bench_redis_url(3)


def demo_points(session: Session, count: int = 500) -> list[tuple[float, float]]:
    """Points spread over the demo city's cells."""
    rows = session.execute(
        text("""SELECT ST_X(p), ST_Y(p) FROM grid_cells, ST_PointOnSurface(geom) AS p
                ORDER BY id LIMIT :n"""),
        {"n": count},
    )
    return [(round(x, 6), round(y, 6)) for x, y in rows]


def wrk(
    url: str, seconds: int, connections: int, script: str | None = None, quiet: bool = False
) -> dict[str, float]:
    """Run wrk; requests/s, p99 latency (ms), requests, non-2xx responses."""
    args = ["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        args += ["-s", script]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    spread = re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M)
    if not quiet:
        print(
            f"{url.rsplit('/', 1)[1]} latency: " + ", ".join(f"p{p} {v}" for p, v in spread),
            file=sys.stderr,
        )
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rate": rate,
        "p99": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
        "requests": total,
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",  # type: ignore[dict-item]
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The direct children of a process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


class CpuMeter:
    """CPU time per part of the stack (web, dispatch worker, PostgreSQL, Redis) over a phase."""

    def __init__(self, parts: dict[str, Callable[[], list[int]]]) -> None:
        self.parts = parts
        self.start: dict[str, dict[int, float]] = {}

    def _sample(self) -> dict[str, dict[int, float]]:
        return {
            name: {pid: cpu_seconds(pid) for pid in pids()} for name, pids in self.parts.items()
        }

    def __enter__(self) -> CpuMeter:
        self.start = self._sample()
        return self

    def __exit__(self, *_exc: object) -> None:
        now = self._sample()
        self.by_pid = {
            name: sorted((cpu - self.start[name].get(pid, 0.0) for pid, cpu in pids.items()),
                         reverse=True)
            for name, pids in now.items()
        }  # fmt: skip
        self.used = {name: sum(used) for name, used in self.by_pid.items()}

    def per_request(self, requests: int) -> str:
        """'web 1.2 ms, dispatch 0.3 ms, ...' of CPU per request."""
        return ", ".join(
            f"{name} {1000 * cpu / requests:.2f} ms" for name, cpu in self.used.items()
        )


def wait_dispatched(engine: Engine, seconds: float = 120) -> tuple[int, int]:
    """Wait until every stored report is dispatched (or `seconds` pass): (stored, dispatched)."""
    deadline = time.time() + seconds
    with engine.connect() as conn:
        while True:
            stored, dispatched = conn.execute(
                text("""SELECT count(*), count(*) FILTER (WHERE status = 'dispatched')
                        FROM cases WHERE source = 'hotline'""")
            ).one()
            conn.commit()
            if dispatched >= stored or time.time() > deadline:
                return stored, dispatched
            time.sleep(0.2)


def main() -> None:
    """Build, run, check, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, help="gunicorn processes (gunicorn.conf.py)")
    parser.add_argument("--threads", type=int, help="threads per process (gunicorn.conf.py)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: scripts/stack.sh deps installs it")

    url = fresh_database(BENCH_DB)
    engine = create_engine(url)
    with Session(engine) as session, session.begin():
        seed_demo(session, say=lambda _line: None)
        secret = create_api_key(session, "bench-hotline", trusted=True).secret
        points = demo_points(session)
    Redis.from_url(redis_url()).flushdb()

    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": redis_url(),
        "FLASK_APP": "wsgi",
        "GRIDMGMT_OPEN311_RATE_PER_KEY": "1000000",
        "GRIDMGMT_OPEN311_RATE_PER_IP": "1000000",
        "GRIDMGMT_SECRET_KEY": "bench",
        "GRIDMGMT_PHOTO_DIR": tempfile.mkdtemp(prefix="gridmgmt-bench-"),
    }
    bin_dir = ROOT / ".venv" / "bin"
    sizes = {"GRIDMGMT_WEB_WORKERS": args.workers, "GRIDMGMT_WEB_THREADS": args.threads}
    env.update({name: str(value) for name, value in sizes.items() if value is not None})
    # The shipped gunicorn.conf.py, as `make run` uses it.
    web = subprocess.Popen(
        [str(bin_dir / "gunicorn"), "--bind", f"127.0.0.1:{PORT}", "--log-level", "warning",
         "wsgi:app"],
        cwd=ROOT,
        env=env,
    )  # fmt: skip
    worker = subprocess.Popen(
        [str(bin_dir / "flask"), "dispatch", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{PORT}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit(f"gunicorn did not get ready at {base} in 20 s")
        lua = LUA.replace("{KEY}", secret).replace(
            "{POINTS}", "{" + ",".join(f"{{{x},{y}}}" for x, y in points) + "}"
        )
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
            fh.write(lua)
        redis_pid = int(Redis.from_url(redis_url()).info("server")["process_id"])

        def backends() -> list[int]:
            sql = "SELECT pid FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
            with engine.connect() as conn:  # a new snapshot of the activity each time
                return list(conn.scalars(text(sql), {"db": BENCH_DB}))

        parts: dict[str, Callable[[], list[int]]] = {
            "web": lambda: children(web.pid),
            "dispatch": lambda: [worker.pid, *children(worker.pid)],
            "postgres": backends,
            "redis": lambda: [redis_pid],
        }
        # Warm up: each worker's first requests connect, prepare and import (30 ms each).
        warm = wrk(f"{base}/open311/v2/requests.json", 2, args.connections, fh.name, quiet=True)
        with CpuMeter(parts) as post_cpu:  # the reports, until the last one is dispatched
            post = wrk(f"{base}/open311/v2/requests.json", args.seconds, args.connections, fh.name)
            stored, dispatched = wait_dispatched(engine)
        with CpuMeter(parts) as noop_cpu:
            noop = wrk(f"{base}/healthz", args.seconds, args.connections)
        accepted = post["requests"] - post["non2xx"]
        warm_accepted = warm["requests"] - warm["non2xx"]
    finally:
        for process in (web, worker):
            process.send_signal(signal.SIGTERM)
        for process in (web, worker):
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
    engine.dispose()
    print(
        f"POST requests.json: {post['requests']:,} requests, {post['non2xx']} non-2xx "
        f"{post['socket_errors']}; accepted {accepted:,} (+{warm_accepted:,} warming up), "
        f"stored {stored:,}, dispatched {dispatched:,}",
        file=sys.stderr,
    )
    print(f"CPU per report: {post_cpu.per_request(max(accepted, 1))}", file=sys.stderr)
    shares = ", ".join(f"{cpu:.1f}" for cpu in post_cpu.by_pid["web"])
    print(f"CPU seconds of each web process (reports): {shares}", file=sys.stderr)
    print(f"CPU per no-op: {noop_cpu.per_request(max(noop['requests'], 1))}", file=sys.stderr)
    if stored < accepted + warm_accepted or dispatched < stored:
        print("NOT every accepted report was stored and dispatched", file=sys.stderr)
    print(
        f"intake: {post['rate']:,.0f} req/s, p99 {post['p99']:.0f} ms, noop "
        f"{noop['rate']:,.0f} req/s, ratio {post['rate'] / noop['rate']:.2f}"
    )


if __name__ == "__main__":
    main()
