"""Fixtures of the operations tests: the real gunicorn (gunicorn.conf.py, two workers) on a
clone of the demo city, counting its metrics in a folder of its own and writing its logs as
JSON lines to a file; RQ workers started the way `make run` starts them, on the same folder."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine

from gridmgmt.app.demo import DEMO_PASSWORD
from tests.conftest import demo_clone
from tests.support import VENV_BIN, app_environment, free_port, gunicorn, start_group, stop_group

WEB_WORKERS = 2
DEAD_PID = 4_194_303  # the highest pid Linux gives: no process has it here
NO_LIMITS = {f"RATE_{w}_PER_{s}": "10000" for w in ("REPORTS", "ACTIONS", "READS")
             for s in ("CLIENT", "ACCOUNT")}  # fmt: skip


@dataclass
class Server:
    """The served app: its URL, environment (for its RQ workers), metrics folder and log."""

    url: str
    env: dict[str, str]
    metrics_dir: Path
    log: Path
    process: subprocess.Popen[bytes]

    def scrape(self, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """GET /metrics on a new connection (any worker may answer): every sample, by name
        and sorted labels."""
        answer = requests.get(f"{self.url}/metrics", headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text[:300]
        assert answer.headers["Content-Type"].startswith("text/plain")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples
        }

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON lines the server (and the workers run by `run_worker`) logged so far."""
        lines = []
        for raw in self.log.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines

    def run_worker(self, log: Path, *args: str) -> list[dict[str, Any]]:
        """Run `flask dispatch worker --burst` on the server's settings; its JSON lines."""
        process = start_group([str(VENV_BIN / "flask"), "dispatch", "worker", "--burst", *args],
                              self.env, log)  # fmt: skip
        try:
            assert process.wait(timeout=120) == 0, log.read_text()[-2000:]
        except BaseException:
            stop_group(process, signal.SIGKILL)
            raise
        return [json.loads(raw) for raw in log.read_text().splitlines() if raw.startswith("{")]


def sample(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """One sample's value (0 when absent: a counter never counted)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="session")
def ops_db(demo_database_url: URL) -> Iterator[URL]:
    """A database of its own for the operations tests: a clone of the committed demo city."""
    with demo_clone("ops", demo_database_url) as url:
        yield url


@pytest.fixture(scope="session")
def ops_engine(ops_db: URL) -> Iterator[Engine]:
    """An engine on the operations tests' database, to compare what /metrics says."""
    engine = create_engine(ops_db)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def server(
    ops_db: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """gunicorn with two workers on a free port, JSON logs, one trusted proxy hop (so that a
    test can be a client from elsewhere with X-Forwarded-For), no abuse limits."""
    Redis.from_url(redis_url).flushdb()  # no doorbell flag or job left by other tests
    root = tmp_path_factory.mktemp("ops")
    metrics_dir = root / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / f"counter_{DEAD_PID}.db").write_bytes(b"")  # gunicorn removes it at start
    env = app_environment(ops_db, redis_url, root / "photos", LOG_FORMAT="json",
                          TRUSTED_PROXIES="1", **NO_LIMITS)  # fmt: skip
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    env.pop("GRIDMGMT_METRICS_TOKEN", None)
    port = free_port()
    log = root / "gunicorn.log"
    process = gunicorn(env, port, log, workers=WEB_WORKERS)
    try:
        yield Server(f"http://127.0.0.1:{port}", env, metrics_dir, log, process)
    finally:
        stop_group(process)


def sign_in(server: str, username: str) -> tuple[requests.Session, str]:
    """A requests session signed in as a demo login through the form; its CSRF token."""
    session = requests.Session()
    page = session.get(f"{server}/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    answer = session.post(
        f"{server}/login",
        data={"username": username, "password": DEMO_PASSWORD, "csrf_token": token.group(1)},
        allow_redirects=False,
    )
    assert answer.status_code in (302, 303), answer.text[:300]
    meta = re.search(r'<meta name="csrf-token" content="([^"]+)"', session.get(server).text)
    return session, (meta.group(1) if meta else token.group(1))
