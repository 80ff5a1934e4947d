"""Many processes, one truth: two web servers and two dispatch workers as separate process
groups (and the scheduler) on one PostgreSQL and one Redis. A burst of Open311 reports goes
through both web servers; in the middle one web server and one worker are killed (SIGKILL).
Every report answered 2xx must be stored and dispatched exactly once, and the survivors must
keep serving."""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from gridmgmt.kernel.auth import create_api_key
from tests.conftest import demo_clone
from tests.support import (
    VENV_BIN,
    app_environment,
    free_port,
    gunicorn,
    start_group,
    stop_group,
)

GARBAGE = "E0102"
REPORTS = 240
KILL_AFTER = 80  # answers before one web server and one worker die


@dataclass
class Burst:
    """What the clients saw: the numbers answered 2xx, the failures, per server."""

    accepted: list[str] = field(default_factory=list)
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture(scope="module")
def scale_db(demo_database_url: URL) -> Iterator[URL]:
    """A clone of the demo city for this module."""
    with demo_clone("scale", demo_database_url) as url:
        yield url


@pytest.fixture(scope="module")
def engine(scale_db: URL) -> Iterator[Engine]:
    engine = create_engine(scale_db)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def trusted_key(engine: Engine) -> str:
    """A trusted Open311 key: its reports are filed at once, so the dispatcher takes them."""
    with Session(engine) as session, session.begin():
        return create_api_key(session, "scale-test", trusted=True).secret


def inside(engine: Engine) -> tuple[float, float]:
    with engine.connect() as conn:
        lon, lat = conn.execute(
            text(
                "SELECT ST_X(p), ST_Y(p) FROM areas, ST_PointOnSurface(geom) p"
                " WHERE level = 'community' ORDER BY code LIMIT 1"
            )
        ).one()
    return float(lon), float(lat)


def dispatched_state(engine: Engine, numbers: list[str]) -> tuple[int, int, dict[str, int]]:
    """(stored cases, cases dispatched, dispatch events per case) for these numbers."""
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT count(*) FROM cases WHERE number = ANY(:n)"), {"n": numbers}
        ).scalar_one()
        done = conn.execute(
            text("SELECT count(*) FROM cases WHERE number = ANY(:n) AND status = 'dispatched'"),
            {"n": numbers},
        ).scalar_one()
        events = dict(
            conn.execute(
                text(
                    "SELECT c.number, count(e.id) FROM cases c LEFT JOIN case_events e"
                    " ON e.case_id = c.id AND e.action = 'dispatch'"
                    " WHERE c.number = ANY(:n) GROUP BY c.number"
                ),
                {"n": numbers},
            ).all()
        )
    return stored, done, events


@pytest.mark.slow
def test_two_webs_two_workers_one_truth(
    scale_db: URL, redis_url: str, engine: Engine, trusted_key: str, tmp_path: Path
) -> None:
    env = app_environment(
        scale_db,
        redis_url,
        tmp_path / "photos",
        DISPATCH_GRACE_SECONDS="2",
        OPEN311_RATE_PER_KEY="10000",
        OPEN311_RATE_PER_IP="10000",
    )
    ports = [free_port(), free_port()]
    webs = [gunicorn(env, port, tmp_path / f"web{i}.log") for i, port in enumerate(ports)]
    flask = str(VENV_BIN / "flask")
    workers = [
        start_group([flask, "dispatch", "worker", "--name", f"scale-{i}-{time.time_ns()}"],
                    env, tmp_path / f"worker{i}.log")
        for i in range(2)
    ]  # fmt: skip
    scheduler = start_group([flask, "dispatch", "scheduler"], env, tmp_path / "scheduler.log")
    lon, lat = inside(engine)
    burst = Burst()
    killed = threading.Event()
    counter = itertools.count()

    def report(i: int) -> None:
        port = ports[i % 2]
        if killed.is_set() and port == ports[0]:
            port = ports[1]  # a client whose server died tries the other, like a balancer
        try:
            answer = requests.post(
                f"http://127.0.0.1:{port}/open311/v2/requests.json",
                data={"api_key": trusted_key, "service_code": GARBAGE, "lat": lat,
                      "long": lon, "description": f"burst {i}"},
                timeout=30,
            )  # fmt: skip
        except requests.RequestException:
            with burst.lock:
                burst.failed += 1
            return
        with burst.lock:
            if 200 <= answer.status_code < 300:
                burst.accepted.append(answer.json()[0]["service_request_id"])
            else:
                burst.failed += 1
        if next(counter) == KILL_AFTER:
            stop_group(webs[0], signal.SIGKILL)
            stop_group(workers[0], signal.SIGKILL)
            killed.set()

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(report, range(REPORTS)))
        assert killed.is_set()
        survivor = requests.get(f"http://127.0.0.1:{ports[1]}/readyz", timeout=10)
        assert survivor.status_code == 200

        deadline = time.monotonic() + 90  # a job lost with the worker waits for the sweep
        while True:
            stored, done, events = dispatched_state(engine, burst.accepted)
            if done == len(burst.accepted) or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        for process in (webs[1], workers[1], scheduler):
            stop_group(process)

    assert len(burst.accepted) >= REPORTS - 40, burst.failed  # most got through
    assert len(set(burst.accepted)) == len(burst.accepted)  # no number given twice
    assert stored == len(burst.accepted)  # every 2xx is stored...
    assert done == len(burst.accepted)  # ...and dispatched...
    assert set(events.values()) == {1}  # ...exactly once
