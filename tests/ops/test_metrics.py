"""/metrics on the real gunicorn with two workers: counters add up across processes (the web
workers' and the RQ worker's), the state gauges say what the database and Redis hold, the
scrape is refused to other clients, and the alert rules name metrics that /metrics exposes
(checked by `promtool check rules` too, where it is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import requests
import yaml
from flask import Flask
from redis import Redis
from rq import Queue
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

from gridmgmt.app.demo import DEMO_API_KEY
from gridmgmt.kernel import metrics
from gridmgmt.kernel.queue import DISPATCH_QUEUE, PERIODIC_QUEUE
from tests.ops.conftest import DEAD_PID, WEB_WORKERS, Server, sample, sign_in
from tests.support import ROOT, real_app, require

RULES = ROOT / "deploy" / "prometheus" / "gridmgmt-alerts.yml"
GARBAGE = "E0102"  # exposed garbage: a class of the demo catalogue
OUTSIDE = (2.35, 48.85)  # Paris: far from the demo city
HISTOGRAM = "gridmgmt_http_request_duration_seconds"


def inside(engine: Engine) -> tuple[float, float]:
    """A point inside the demo city's first community."""
    with engine.connect() as connection:
        lon, lat = connection.execute(
            text(
                "SELECT ST_X(p), ST_Y(p) FROM areas, ST_PointOnSurface(geom) p "
                "WHERE level = 'community' ORDER BY code LIMIT 1"
            )
        ).one()
    return float(lon), float(lat)


def open311(server: Server, lon: float, lat: float, code: str = GARBAGE) -> requests.Response:
    """An Open311 report with the demo app's (untrusted) key."""
    fields = {"api_key": DEMO_API_KEY, "service_code": code, "long": lon, "lat": lat}
    return requests.post(f"{server.url}/open311/v2/requests.json", data=fields, timeout=30)


def test_request_counts_add_up_across_the_web_workers(server: Server) -> None:
    before = server.scrape()
    for _ in range(20):  # a new connection each: the kernel spreads them over the workers
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200

    scrapes = [server.scrape() for _ in range(6)]

    labels = {"endpoint": "health.healthz", "method": "GET"}
    counts = {sample(s, f"{HISTOGRAM}_count", **labels) for s in scrapes}
    assert counts == {sample(before, f"{HISTOGRAM}_count", **labels) + 20}
    infinite = {sample(s, f"{HISTOGRAM}_bucket", le="+Inf", **labels) for s in scrapes}
    assert infinite == counts
    responses = {
        sample(s, "gridmgmt_http_responses_total", status="200", **labels) for s in scrapes
    }
    assert responses == counts
    # Both workers counted some: each process writes its own file, a scrape adds them up.
    writers = {p.name.rsplit("_", 1)[-1] for p in server.metrics_dir.glob("histogram_*.db")}
    assert len(writers) >= WEB_WORKERS
    # The label is the endpoint, never the path: an unknown address is `unmatched`.
    requests.get(f"{server.url}/no/such/{uuid.uuid4().hex}", timeout=10)
    names = {dict(labels).get("endpoint") for (_, labels) in server.scrape()}
    assert "unmatched" in names and not any("/" in (name or "") for name in names)


def test_the_server_cleared_what_dead_processes_left(server: Server) -> None:
    assert not (server.metrics_dir / f"counter_{DEAD_PID}.db").exists()
    assert list(server.metrics_dir.glob("*.db"))  # its workers' own files


def test_reports_are_counted_by_channel_and_reason(server: Server, ops_engine: Engine) -> None:
    lon, lat = inside(ops_engine)
    with ops_engine.connect() as connection:
        newest = connection.scalar(text("SELECT coalesce(max(id), 0) FROM cases"))
    before = server.scrape()

    accepted = [open311(server, lon, lat) for _ in range(3)]
    outside = [open311(server, *OUTSIDE) for _ in range(2)]
    unknown = open311(server, lon, lat, code="NO-SUCH-CLASS")

    assert [r.status_code for r in accepted] == [201] * 3, accepted[0].text
    assert {r.status_code for r in outside} == {400} and unknown.status_code == 400
    after = server.scrape()
    with ops_engine.connect() as connection:
        made = Counter(
            connection.scalars(text("SELECT source FROM cases WHERE id > :id"), {"id": newest})
        )
    assert made == {"open311": 3}

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("gridmgmt_reports_accepted_total", channel="open311") == 3
    refused = "gridmgmt_reports_refused_total"
    assert grew(refused, channel="open311", reason="outside_territory") == 2
    assert grew(refused, channel="open311", reason="invalid_input") == 1


def test_state_gauges_match_the_database_and_redis(
    server: Server, ops_engine: Engine, redis_url: str, tmp_path: Path
) -> None:
    # Three reports, filed by the operator: they wait for dispatch (no worker runs yet).
    lon, lat = inside(ops_engine)
    numbers = [open311(server, lon, lat).json()[0]["service_request_id"] for _ in range(3)]
    with ops_engine.connect() as connection:
        ids = connection.scalars(
            text("SELECT id FROM cases WHERE number = ANY(:n)"), {"n": numbers}
        ).all()
    operator, token = sign_in(server.url, "operator")
    for case_id in ids:
        filed = operator.post(f"{server.url}/api/cases/{case_id}/actions/file", json={},
                              headers={"X-CSRFToken": token}, timeout=30)  # fmt: skip
        assert filed.status_code == 200, filed.text[:300]

    scraped = server.scrape()

    waiting_sql = text("""
        SELECT count(*), extract(epoch FROM now() - min(filed_at)) FROM cases
        WHERE status = 'filed' AND dispatch_state = 'queued'""")
    with ops_engine.connect() as connection:
        waiting, oldest = connection.execute(waiting_sql).one()
        overdue = dict(connection.execute(text("""
            SELECT u.code, count(c.id) FROM units u
            LEFT JOIN cases c ON c.unit_id = u.id AND c.deadline < now()
                 AND c.status IN ('dispatched', 'in_progress')
            WHERE u.active GROUP BY u.code""")).tuples().all())  # fmt: skip
    assert waiting >= 3
    assert sample(scraped, "gridmgmt_cases_waiting_for_dispatch", state="queued") == waiting
    age = sample(scraped, "gridmgmt_cases_waiting_oldest_age_seconds", state="queued")
    assert 0 < age <= float(oldest) + 1
    assert overdue and all(
        sample(scraped, "gridmgmt_cases_overdue", unit=code) == n for code, n in overdue.items()
    )
    redis = Redis.from_url(redis_url)
    for name in (DISPATCH_QUEUE, PERIODIC_QUEUE):
        assert (
            sample(scraped, "gridmgmt_queue_jobs", queue=name)
            == Queue(name, connection=redis).count
        )
        assert sample(scraped, "gridmgmt_queue_failed_jobs", queue=name) == 0
    assert sample(scraped, "gridmgmt_queue_jobs", queue=DISPATCH_QUEUE) >= 1  # the doorbell
    assert sample(scraped, "gridmgmt_database_ready") == 1
    assert sample(scraped, "gridmgmt_redis_ready") == 1
    assert {labels for (name, labels) in scraped if name == "gridmgmt_metrics_probe_success"}
    assert all(v == 1 for (name, _), v in scraped.items() if name.endswith("probe_success"))

    # A worker (another process, the same metrics folder) dispatches them in a batch, and
    # runs the heartbeat: the web's scrape sees its counts and the state they left.
    Queue(PERIODIC_QUEUE, connection=redis).enqueue("dispatch.jobs.heartbeat")
    server.run_worker(tmp_path / "worker.log")
    after = server.scrape()

    routed = sum(
        sample(after, "gridmgmt_dispatch_cases_total", outcome=o)
        - sample(scraped, "gridmgmt_dispatch_cases_total", outcome=o)
        for o in ("dispatched", "unroutable")
    )
    assert routed == waiting
    batches = "gridmgmt_dispatch_batch_duration_seconds_count"
    assert sample(after, batches) - sample(scraped, batches) >= 1
    assert sample(after, "gridmgmt_dispatch_batch_duration_seconds_sum") > 0
    assert sample(after, "gridmgmt_cases_waiting_for_dispatch", state="queued") == 0
    assert sample(after, "gridmgmt_cases_waiting_oldest_age_seconds", state="queued") == 0
    assert sample(after, "gridmgmt_queue_jobs", queue=DISPATCH_QUEUE) == 0
    assert 0 <= sample(after, "gridmgmt_worker_heartbeat_age_seconds") < 60
    assert sample(after, "gridmgmt_rq_workers") == 0  # a burst worker leaves


def test_a_wrong_password_is_counted(server: Server) -> None:
    before = server.scrape()
    page = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get(f"{server.url}/login").text)
    assert token is not None
    wrong = page.post(f"{server.url}/login", data={"username": "operator", "password": "nope",
                      "csrf_token": token.group(1)}, timeout=30)  # fmt: skip
    assert wrong.status_code == 401
    name = "gridmgmt_sign_in_failures_total"
    assert sample(server.scrape(), name, reason="wrong_password") == (
        sample(before, name, reason="wrong_password") + 1
    )


def test_sign_in_failures_counter() -> None:
    name, labels = "gridmgmt_sign_in_failures_total", {"reason": "test_reason"}
    before = metrics.REGISTRY.get_sample_value(name, labels) or 0.0
    metrics.count_sign_in_failure("test_reason")
    assert metrics.REGISTRY.get_sample_value(name, labels) == before + 1


def test_a_client_from_elsewhere_may_not_scrape(server: Server) -> None:
    # gunicorn trusts one proxy hop here: this is a client at 203.0.113.7 behind nginx.
    elsewhere = {"X-Forwarded-For": "203.0.113.7"}
    answer = requests.get(f"{server.url}/metrics", headers=elsewhere, timeout=10)
    assert answer.status_code == 404
    assert "gridmgmt_" not in answer.text
    assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 200  # loopback


def test_with_a_token_only_its_bearer_may_scrape(
    ops_db: URL, redis_url: str, tmp_path: Path
) -> None:
    with real_app(ops_db, redis_url, tmp_path) as app:
        app.config["METRICS_TOKEN"] = "s3cret-token"
        client = app.test_client()
        elsewhere = {"REMOTE_ADDR": "203.0.113.7"}

        def scrape(authorization: str | None) -> int:
            headers = {"Authorization": authorization} if authorization else {}
            return client.get("/metrics", headers=headers, environ_base=elsewhere).status_code

        assert scrape(None) == 403
        assert scrape("Bearer wrong") == 403
        assert scrape("Basic s3cret-token") == 403
        assert scrape("Bearer s3cret-token") == 200
        loopback = client.get("/metrics")  # loopback alone is not enough with a token
        assert loopback.status_code == 403


def metric_names(expr: str) -> set[str]:
    """The gridmgmt metric names an expression reads."""
    return set(re.findall(r"\bgridmgmt_[a-z0-9_]+", expr))


def test_alert_rules_name_exposed_metrics(server: Server) -> None:
    document = yaml.safe_load(RULES.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    alerts = {rule["alert"] for rule in rules}
    assert {"DispatchLag", "FailedJobs", "WorkerHeartbeatMissing", "OverdueSurge",
            "DatabaseNotReady"} <= alerts  # fmt: skip
    exposed = {name for (name, _) in server.scrape()}
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        names = metric_names(rule["expr"])
        assert names, rule["expr"]
        assert names <= exposed, f"{rule['alert']}: {names - exposed} not in /metrics"


def test_promtool_checks_the_rules() -> None:
    promtool = shutil.which("promtool")
    require("tools", promtool is not None, "no promtool (Debian: apt-get install prometheus)")
    assert promtool is not None
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_in_process_scrape_without_multiprocess(app: Flask) -> None:
    client = app.test_client()
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert b"gridmgmt_database_ready 1.0" in answer.data
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 404
