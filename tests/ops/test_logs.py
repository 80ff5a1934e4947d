"""Logs of the real gunicorn and RQ worker: one JSON line a request with the request id the
response echoes, the case number on the lines of an action on a case, the job id on a job's
lines, and a periodic job with nothing to do says nothing at INFO."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis
from rq import Queue
from sqlalchemy import text
from sqlalchemy.engine import Engine

from gridmgmt.app.demo import DEMO_API_KEY
from gridmgmt.kernel import logs
from gridmgmt.kernel.queue import PERIODIC_QUEUE
from tests.ops.conftest import Server, sign_in

GARBAGE = "E0102"


def lines_of(server: Server, request_id: str, seconds: float = 5.0) -> list[dict[str, Any]]:
    """The server's log lines of one request (written when it ended: wait a little)."""
    deadline = time.monotonic() + seconds
    while True:
        found = [line for line in server.log_lines() if line.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_a_request_logs_one_json_line_with_the_echoed_id(server: Server) -> None:
    answer = requests.get(f"{server.url}/track", timeout=10)
    request_id = answer.headers["X-Request-Id"]

    [line] = lines_of(server, request_id)

    assert line["logger"] == "gridmgmt.request" and line["level"] == "INFO"
    assert line["method"] == "GET" and line["path"] == "/track"
    assert line["status"] == answer.status_code and line["endpoint"] == "cases.track"
    assert line["duration_ms"] >= 0 and line["time"].endswith("+00:00")
    assert "case" not in line


def test_a_valid_incoming_request_id_is_kept_an_invalid_one_replaced(server: Server) -> None:
    given = f"nginx-{uuid.uuid4().hex}"
    kept = requests.get(f"{server.url}/track", headers={"X-Request-Id": given}, timeout=10)
    assert kept.headers["X-Request-Id"] == given
    assert len(lines_of(server, given)) == 1

    bad = "<script>alert(1)</script>"
    replaced = requests.get(f"{server.url}/track", headers={"X-Request-Id": bad}, timeout=10)
    assert replaced.headers["X-Request-Id"] not in ("", bad)
    assert len(lines_of(server, replaced.headers["X-Request-Id"])) == 1


def test_a_query_string_never_reaches_the_log(server: Server) -> None:
    answer = requests.get(
        f"{server.url}/open311/v2/requests.json",
        params={"api_key": DEMO_API_KEY, "status": "open"},
        timeout=30,
    )
    [line] = lines_of(server, answer.headers["X-Request-Id"])
    assert DEMO_API_KEY not in str(line) and line["path"] == "/open311/v2/requests.json"


def report(server: Server, engine: Engine) -> requests.Response:
    """A new Open311 report (untrusted: reported, not filed) inside the demo city."""
    with engine.connect() as connection:
        lon, lat = connection.execute(
            text(
                "SELECT ST_X(p), ST_Y(p) FROM areas, ST_PointOnSurface(geom) p "
                "WHERE level = 'community' ORDER BY code LIMIT 1"
            )
        ).one()
    answer = requests.post(
        f"{server.url}/open311/v2/requests.json",
        data={"api_key": DEMO_API_KEY, "service_code": GARBAGE, "long": lon, "lat": lat},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text[:300]
    return answer


def test_an_action_on_a_case_logs_its_number(server: Server, ops_engine: Engine) -> None:
    reported_now = report(server, ops_engine)
    number = reported_now.json()[0]["service_request_id"]
    [reported] = lines_of(server, reported_now.headers["X-Request-Id"])
    assert reported["case"] == number  # a new case is named as soon as it exists
    with ops_engine.connect() as connection:
        case_id = connection.scalar(text("SELECT id FROM cases WHERE number = :n"), {"n": number})
    operator, token = sign_in(server.url, "operator")

    filed = operator.post(f"{server.url}/api/cases/{case_id}/actions/file", json={},
                          headers={"X-CSRFToken": token}, timeout=30)  # fmt: skip

    assert filed.status_code == 200, filed.text[:300]
    [line] = lines_of(server, filed.headers["X-Request-Id"])
    assert line["case"] == number and line["status"] == 200


def test_a_periodic_job_with_nothing_to_do_says_nothing_at_info(
    server: Server, redis_url: str, tmp_path: Path
) -> None:
    redis = Redis.from_url(redis_url)
    server.run_worker(tmp_path / "drain.log")  # nothing left queued by other tests
    job = Queue(PERIODIC_QUEUE, connection=redis).enqueue("dispatch.jobs.sweep_filed")

    lines = server.run_worker(tmp_path / "worker.log")

    assert job.get_status(refresh=True) == "finished" and job.return_value() == 0
    assert any(line["logger"] == "rq.worker" for line in lines)  # the worker did log
    about_job = [line for line in lines if job.id in str(line)]
    assert [line for line in about_job if line["level"] != "DEBUG"] == []


def test_a_job_that_did_something_logs_one_info_line_with_its_id(
    server: Server, ops_engine: Engine, redis_url: str, tmp_path: Path
) -> None:
    number = report(server, ops_engine).json()[0]["service_request_id"]
    with ops_engine.begin() as connection:  # filed long ago, never dispatched: the sweep rings
        connection.execute(
            text("""
                UPDATE cases SET status = 'filed', dispatch_state = 'queued',
                       filed_at = now() - interval '1 hour'
                WHERE number = :number"""),
            {"number": number},
        )
    job = Queue(PERIODIC_QUEUE, connection=Redis.from_url(redis_url)).enqueue(
        "dispatch.jobs.sweep_filed"
    )

    lines = server.run_worker(tmp_path / "worker.log")

    [said] = [line for line in lines if line.get("job_id") == job.id and line["level"] == "INFO"]
    assert said["logger"] == "dispatch.jobs" and "rang for 1 filed cases" in said["message"]
    dispatched = [line for line in lines if line["message"].startswith("dispatched ")]
    assert dispatched and dispatched[0]["job_id"] != job.id


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_formats(log_format: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        logs.configure(log_format, "INFO")
        with logs.job_logging("job-1", "dispatch"):
            logs.note_case("LA-2026-000042")
            logging.getLogger("gridmgmt.test").info("did %d things", 3)
        logging.getLogger("gridmgmt.test").debug("not shown")
    finally:
        logs.configure("json", "INFO")
        root.setLevel(saved[0])
        for handler in [h for h in root.handlers if h not in saved[1]]:
            root.removeHandler(handler)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    if log_format == "json":
        assert '"message": "did 3 things"' in err[0] and '"job_id": "job-1"' in err[0]
        assert '"case": "LA-2026-000042"' in err[0] and '"level": "INFO"' in err[0]
    else:
        assert err[0].endswith(
            "INFO    gridmgmt.test [case=LA-2026-000042 job_id=job-1]: did 3 things"
        )
