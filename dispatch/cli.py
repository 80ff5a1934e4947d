"""`flask dispatch ...`: the RQ worker and the periodic scheduler, with the app's config."""

from __future__ import annotations

import logging
import re
import time

import click
from flask import current_app
from flask.cli import AppGroup
from redis.exceptions import RedisError
from rq import SimpleWorker, Worker
from rq.cron import CronScheduler
from werkzeug.utils import import_string

from gridmgmt.kernel import doorbell
from gridmgmt.kernel.logs import JobLogging
from gridmgmt.kernel.queue import DISPATCH_QUEUE, PERIODIC_QUEUE, periodic_jobs, queues

dispatch_cli = AppGroup("dispatch", help="The dispatch worker and the periodic scheduler.")
log = logging.getLogger(__name__)
RECONNECT_SECONDS = 2.0


class LoggingSimpleWorker(JobLogging, SimpleWorker):
    """RQ's SimpleWorker, each job's log lines naming it (`gridmgmt.kernel.logs`)."""


class LoggingWorker(JobLogging, Worker):
    """RQ's forking Worker, each job's log lines naming it."""


def _keep_running(what: str, run: object, once: bool) -> None:
    """Run `run()`; when Redis goes away, wait and start again instead of dying."""
    while True:
        try:
            run()  # type: ignore[operator]
            return
        except RedisError as exc:
            if once:
                raise
            click.echo(f"{what}: Redis unavailable ({exc}); retrying in {RECONNECT_SECONDS:g} s")
            time.sleep(RECONNECT_SECONDS)


@dispatch_cli.command("worker")
@click.option("--fork", is_flag=True, help="Fork a child per job (isolation; ~3x slower).")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--name", help="Worker name (default: random).")
def worker_command(fork: bool, burst: bool, name: str | None) -> None:
    """Run an RQ worker on the dispatch and periodic queues (non-forking by default)."""
    worker_class = LoggingWorker if fork else LoggingSimpleWorker
    kind = Worker if fork else SimpleWorker
    names = [DISPATCH_QUEUE, PERIODIC_QUEUE]
    where = redacted_url(current_app.config["REDIS_URL"])  # the line goes to the logs
    click.echo(f"{kind.__name__} on queues {', '.join(names)} ({where})")

    def run() -> None:
        worker = worker_class([queues.get(n) for n in names], connection=queues.redis, name=name)
        worker.work(burst=burst, logging_level="INFO", with_scheduler=True)

    _keep_running("worker", run, once=burst)


@dispatch_cli.command("scheduler")
def scheduler_command() -> None:
    """Run RQ's cron scheduler, enqueueing the periodic jobs on their intervals."""

    def run() -> None:
        scheduler = CronScheduler(connection=queues.redis, logging_level=logging.INFO)
        jobs = periodic_jobs(current_app)  # each package registered its own
        for path, interval in jobs.items():
            scheduler.register(import_string(path), queue_name=PERIODIC_QUEUE, interval=interval)
        click.echo(f"scheduler: {len(jobs)} periodic jobs on queue {PERIODIC_QUEUE}")
        scheduler.start()

    _keep_running("scheduler", run, once=False)


@dispatch_cli.command("ring")
def ring_command() -> None:
    """Enqueue a dispatch of every filed case now (what the sweep does)."""
    doorbell.ring(force=True)
    click.echo("dispatch job enqueued")


def redacted_url(url: str) -> str:
    """A connection URL without its password."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)
