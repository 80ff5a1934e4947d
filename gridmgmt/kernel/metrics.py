"""Metrics in the Prometheus text format at `/metrics`.

Events are counted with prometheus-client's counters and histograms: requests, reports
accepted and refused, dispatch batches, sign-in failures. With `PROMETHEUS_MULTIPROC_DIR` set
before prometheus_client is first imported (gunicorn.conf.py and wsgi.py set it: every web,
worker and scheduler process of a machine shares one folder) each process writes its values
to files there and a scrape adds them up, whichever process answers it.

State is read when scraped, by probes: the cases waiting for dispatch, overdue cases, queue
depths, failed jobs, the worker's heartbeat, whether the database answers. Each package
registers the probes of what it owns (`register_probe`), as it registers its periodic jobs;
being read from PostgreSQL and Redis, they are right across processes by construction.

Who may scrape: with `METRICS_TOKEN` set, a client sending `Authorization: Bearer <token>`
(others get 403); without one, loopback clients only (others get 404).
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from rq import Worker
from rq.registry import FailedJobRegistry
from sqlalchemy import text

from gridmgmt.kernel.db import db
from gridmgmt.kernel.queue import DISPATCH_QUEUE, PERIODIC_QUEUE, queues

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PROBES = "gridmgmt.metrics.probes"
PROBE_TIMEOUT_MS = 2000  # a probe's query longer than this fails the probe, not the scrape
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
log = logging.getLogger(__name__)

# ---------------------------------------------------------------- events

REQUEST_SECONDS = Histogram(
    "gridmgmt_http_request_duration_seconds",
    "Time to answer a request, by Flask endpoint (`unmatched`: no route) and method.",
    ["endpoint", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RESPONSES = Counter(
    "gridmgmt_http_responses",
    "Responses, by Flask endpoint, method and status code.",
    ["endpoint", "method", "status"],
)
REPORTS_ACCEPTED = Counter(
    "gridmgmt_reports_accepted",
    "Reports that made a new case, by channel (the case's source).",
    ["channel"],
)
REPORTS_REFUSED = Counter(
    "gridmgmt_reports_refused",
    "Reports refused by the intake, by channel and reason (the domain error's code).",
    ["channel", "reason"],
)
DISPATCH_BATCH_SECONDS = Histogram(
    "gridmgmt_dispatch_batch_duration_seconds",
    "Time of a dispatch batch that took cases (routing and its transaction).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DISPATCH_CASES = Counter(
    "gridmgmt_dispatch_cases",
    "Cases the dispatcher's batches routed to a unit (dispatched) or left to a person "
    "(unroutable).",
    ["outcome"],
)
SIGN_IN_FAILURES = Counter(
    "gridmgmt_sign_in_failures",
    "Failed sign-ins, by reason.",
    ["reason"],
)


def count_report_accepted(channel: str) -> None:
    """Count a report that made a new case through `channel` (a CaseSource value)."""
    REPORTS_ACCEPTED.labels(channel=channel).inc()


def count_report_refused(channel: str, reason: str) -> None:
    """Count a report refused through `channel` for `reason` (a DomainError's code)."""
    REPORTS_REFUSED.labels(channel=channel, reason=reason).inc()


def observe_dispatch_batch(seconds: float, dispatched: int, unroutable: int) -> None:
    """Record a dispatch batch: how long it took and what it did with its cases."""
    DISPATCH_BATCH_SECONDS.observe(seconds)
    DISPATCH_CASES.labels(outcome="dispatched").inc(dispatched)
    DISPATCH_CASES.labels(outcome="unroutable").inc(unroutable)


def count_sign_in_failure(reason: str) -> None:
    """Count a failed sign-in; `reason` is one of a few fixed words (e.g. `wrong_password`,
    `unknown_user`, `inactive_user`, `wrong_code`, `throttled`), never what was typed."""
    SIGN_IN_FAILURES.labels(reason=reason).inc()


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe_request(response: Response) -> Response:
    """Count the request and its time under its endpoint's name (never the raw path)."""
    started = g.get("metrics_started")
    if started is None:
        return response
    endpoint = request.endpoint or "unmatched"
    method = request.method if request.method in METHODS else "other"
    REQUEST_SECONDS.labels(endpoint=endpoint, method=method).observe(time.perf_counter() - started)
    RESPONSES.labels(endpoint=endpoint, method=method, status=str(response.status_code)).inc()
    return response


# ---------------------------------------------------------------- state, read when scraped

Probe = Callable[[], Iterable[Metric]]


def register_probe(app: Flask, name: str, probe: Probe) -> None:
    """Have each scrape call `probe` (in the app context) for the metric families it reads.

    A probe that raises is left out of that scrape (`gridmgmt_metrics_probe_success` 0 for
    `name`, and a warning logged); the others still answer."""
    app.extensions.setdefault(PROBES, {})[name] = probe


def gauge(name: str, documentation: str, value: float | None = None, **labels: str) -> Metric:
    """A gauge family; with `value`, one sample (labelled with `labels`)."""
    family = GaugeMetricFamily(name, documentation, labels=list(labels) or None)
    if value is not None:
        family.add_metric(list(labels.values()), value)
    return family


def rows(sql: str, params: dict[str, Any] | None = None) -> list[Any]:
    """The rows of a probe's read-only query, given `PROBE_TIMEOUT_MS` at most."""
    with db.engine.connect() as connection:
        connection.execute(text(f"SET LOCAL statement_timeout = {PROBE_TIMEOUT_MS}"))
        return list(connection.execute(text(sql), params or {}))


def age_seconds(moment: datetime | None, now: datetime) -> float:
    """Seconds from `moment` (naive: UTC) to `now`; +Inf when there is no moment."""
    if moment is None:
        return float("inf")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max((now - moment).total_seconds(), 0.0)


def database_probe() -> Iterator[Metric]:
    """Whether PostgreSQL answers (what /readyz asks)."""
    try:
        rows("SELECT 1")
        ready = 1.0
    except Exception as exc:  # any failure means "not ready"
        log.warning("metrics: the database does not answer: %s", type(exc).__name__)
        ready = 0.0
    yield gauge("gridmgmt_database_ready", "1 when PostgreSQL answers, else 0.", ready)


def redis_probe() -> Iterator[Metric]:
    """Whether Redis answers; then the queues' depths, their failed jobs and the workers."""
    try:
        queues.redis.ping()
        ready = 1.0
    except Exception as exc:
        log.warning("metrics: Redis does not answer: %s", type(exc).__name__)
        ready = 0.0
    yield gauge("gridmgmt_redis_ready", "1 when Redis answers, else 0.", ready)
    if not ready:
        return
    depth = gauge("gridmgmt_queue_jobs", "Jobs waiting in an RQ queue.", queue="")
    failed = gauge("gridmgmt_queue_failed_jobs", "Jobs in an RQ queue's failed registry.", queue="")
    for name in (DISPATCH_QUEUE, PERIODIC_QUEUE):
        queue = queues.get(name)
        depth.add_metric([name], queue.count)
        registry = FailedJobRegistry(queue=queue)
        failed.add_metric([name], registry.get_job_count(cleanup=False))
    yield depth
    yield failed
    workers = Worker.all(connection=queues.redis)
    yield gauge("gridmgmt_rq_workers", "RQ workers registered in Redis.", len(workers))


def _scrape_families(app: Flask) -> Iterator[Metric]:
    """Every family of a scrape: the counted events (of every process, in multiprocess
    mode), then each probe's state."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        yield from registry.collect()
    else:
        yield from REGISTRY.collect()
    success = gauge(
        "gridmgmt_metrics_probe_success", "1 when a probe read its state, else 0.", probe=""
    )
    for name, probe in app.extensions.get(PROBES, {}).items():
        try:
            families = list(probe())
        except Exception:
            log.warning("metrics: the probe %s failed", name, exc_info=True)
            success.add_metric([name], 0.0)
            continue
        success.add_metric([name], 1.0)
        yield from families
    yield success


class _Scrape:
    """One scrape's collector (what `generate_latest` reads)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        """The families of this scrape."""
        return _scrape_families(self.app)


# ---------------------------------------------------------------- the endpoint

bp = Blueprint("metrics", __name__)


def check_scraper() -> None:
    """Let a scrape through: with `METRICS_TOKEN`, one bearing it; without, a loopback client.

    Raises:
        HTTPException: 403 for a wrong or missing token, 404 for another client without one.
    """
    token = str(current_app.config.get("METRICS_TOKEN") or "")
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return
        abort(403)
    try:
        if ip_address(request.remote_addr or "").is_loopback:
            return
    except ValueError:
        pass
    abort(404)


@bp.get("/metrics")
def scrape() -> Response:
    """The metrics of every process of this machine and the state probes, as text."""
    check_scraper()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    body = generate_latest(_Scrape(app))  # type: ignore[arg-type]
    return Response(
        body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, "Cache-Control": "no-store"}
    )


def init_app(app: Flask) -> None:
    """Time every request, serve /metrics and register the kernel's probes."""
    app.before_request(_start_timer)
    app.after_request(_observe_request)
    app.register_blueprint(bp)
    register_probe(app, "database", database_probe)
    register_probe(app, "redis", redis_probe)
