"""Logs: one line a record on standard error, as JSON (`LOG_FORMAT=json`, the default) or as
readable text (`LOG_FORMAT=text`, what `make run` shows).

Each line names what it happened in, when it did: the request (`request_id`: a valid incoming
`X-Request-Id`, as nginx sends, else a new one; echoed in the response's header), the case
(`case`: its number, once the request or job looked one up or made one: `note_case`) and the
RQ job (`job_id`). Every request is logged once when it ends (logger `gridmgmt.request`; the
probes, /metrics and static files at DEBUG). RQ's own lines about each job of the periodic
queue (taken, OK, result kept...) and the scheduler's "enqueued" lines are DEBUG: a periodic
job says at INFO only what it did, when it did something.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from flask import Flask, g, request
from flask.logging import default_handler
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from gridmgmt.kernel.queue import PERIODIC_QUEUE

REQUEST_ID_HEADER = "X-Request-Id"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Requests logged at DEBUG: the machine's probes, the scraper and static files.
QUIET_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "metrics.scrape", "static"})
QUIET_QUEUES = frozenset({PERIODIC_QUEUE})
request_log = logging.getLogger("gridmgmt.request")


@dataclass(frozen=True)
class JobRef:
    """The RQ job a worker is running: its id and its queue."""

    id: str
    queue: str


_request_id: ContextVar[str | None] = ContextVar("gridmgmt_request_id", default=None)
_case: ContextVar[str | None] = ContextVar("gridmgmt_case", default=None)
_job: ContextVar[JobRef | None] = ContextVar("gridmgmt_job", default=None)


def note_case(number: str) -> None:
    """Name the case the current request or job is about in its further log lines."""
    _case.set(number)


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return _request_id.get()


@contextmanager
def job_logging(job_id: str, queue: str) -> Iterator[None]:
    """Name the RQ job `job_id` (of `queue`) in the log lines written while it runs."""
    job_token = _job.set(JobRef(job_id, queue))
    case_token = _case.set(None)
    try:
        yield
    finally:
        _case.reset(case_token)
        _job.reset(job_token)


class JobLogging:
    """Mixin for RQ worker classes: each job runs in `job_logging` (job id on its lines, RQ's
    chatter about periodic jobs demoted to DEBUG)."""

    def execute_job(self, job: Any, queue: Any) -> Any:
        """RQ's execution of the job, inside `job_logging`."""
        with job_logging(job.id, queue.name):
            return super().execute_job(job, queue)  # type: ignore[misc]


class ContextFilter(logging.Filter):
    """Adds what a line happened in: `request_id`, `case` and `job_id` when there is one
    (JSON), and all of them as `context` (text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Put the current request id, case number and job id on the record."""
        parts = []
        for name, value in (
            ("request_id", _request_id.get()),
            ("case", _case.get()),
            ("job_id", job.id if (job := _job.get()) else None),
        ):
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
            if getattr(record, name, None) is not None:  # ours, or the logger's own (RQ's)
                parts.append(f"{name}={getattr(record, name)}")
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return True


class QuietPeriodicJobs(logging.Filter):
    """On RQ's loggers: the INFO lines about a job of a quiet queue (the periodic jobs: taken,
    OK, result kept, completed) and the scheduler's "enqueued" lines become DEBUG lines, kept
    only when DEBUG is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Demote RQ's per-job line of a periodic job; keep any other line."""
        if record.levelno != logging.INFO or not self._about_periodic_job(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger().isEnabledFor(logging.DEBUG)

    @staticmethod
    def _about_periodic_job(record: logging.LogRecord) -> bool:
        job = _job.get()
        if job is not None:
            return job.queue in QUIET_QUEUES
        if record.name == "rq.cron":
            return str(record.msg).startswith("Enqueued job ")
        # The worker's "Worker <name>: <queue>: <job>" line, before the job runs.
        args = record.args if isinstance(record.args, tuple) else ()
        return len(args) >= 3 and _ANSI.sub("", str(args[1])) in QUIET_QUEUES


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` puts on the root logger (replaced when called again)."""


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of `LOG_FORMAT`: `json` (one object a line) or `text`.

    Raises:
        ValueError: another format.
    """
    if log_format == "json":
        return JsonFormatter(
            "{message}{levelname}{name}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
            timestamp="time",
            reserved_attrs=[*RESERVED_ATTRS, "context"],  # the text format's
            json_ensure_ascii=False,
        )
    if log_format == "text":
        return logging.Formatter("%(asctime)s %(levelname)-7s %(name)s%(context)s: %(message)s")
    raise ValueError(f"LOG_FORMAT is json or text, not {log_format!r}")


def configure(log_format: str = "json", level: str = "INFO") -> None:
    """Send every logger's lines to standard error in `log_format`, from `level` up (once a
    process: called again, it replaces its handler)."""
    root = logging.getLogger()
    handler = _Handler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(ContextFilter())
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("rq.worker", "rq.cron"):
        rq_logger = logging.getLogger(name)
        if not any(isinstance(f, QuietPeriodicJobs) for f in rq_logger.filters):
            rq_logger.addFilter(QuietPeriodicJobs())


def _begin_request() -> None:
    """Take the request's id (a valid `X-Request-Id`, else a new one); no case yet."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = given if _VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    _request_id.set(request_id)
    _case.set(None)
    g.log_started = time.perf_counter()


def _log_request(response: Any) -> Any:
    """Echo the request id and log the request in one line."""
    request_id = _request_id.get()
    if request_id is None:  # a response made before `_begin_request` ran
        return response
    response.headers[REQUEST_ID_HEADER] = request_id
    took = (time.perf_counter() - g.get("log_started", time.perf_counter())) * 1000
    level = logging.DEBUG if request.endpoint in QUIET_ENDPOINTS else logging.INFO
    request_log.log(
        level,
        "%s %s %s %.1f ms",
        request.method,
        request.path,
        response.status_code,
        took,
        extra={
            "method": request.method,
            "path": request.path,  # never the query string: it may hold a key
            "endpoint": request.endpoint,
            "status": response.status_code,
            "duration_ms": round(took, 1),
        },
    )
    return response


def _end_request(_error: BaseException | None) -> None:
    """Forget the request's id and case: the thread serves another request next."""
    _request_id.set(None)
    _case.set(None)


def init_app(app: Flask) -> None:
    """Configure the process's logging from `LOG_FORMAT` and `LOG_LEVEL`, and give every
    request an id and its log line."""
    configure(app.config.get("LOG_FORMAT", "json"), app.config.get("LOG_LEVEL", "INFO"))
    app.logger.removeHandler(default_handler)  # the root's handler writes its lines
    app.before_request(_begin_request)
    app.after_request(_log_request)
    app.teardown_request(_end_request)
