"""`flask dispatch ...`: the RQ worker and the periodic scheduler, with the app's config."""

from __future__ import annotations

import logging

import click
from flask import current_app
from flask.cli import AppGroup
from rq import SimpleWorker, Worker
from rq.cron import CronScheduler

from dispatch.jobs import PERIODIC_JOBS
from gridmgmt.queue import DISPATCH_QUEUE, PERIODIC_QUEUE, queues

dispatch_cli = AppGroup("dispatch", help="The dispatch worker and the periodic scheduler.")


@dispatch_cli.command("worker")
@click.option("--fork", is_flag=True, help="Fork a child per job (isolation; ~3x slower).")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--name", help="Worker name (default: host:pid).")
def worker_command(fork: bool, burst: bool, name: str | None) -> None:
    """Run an RQ worker on the dispatch and periodic queues."""
    worker_class = Worker if fork else SimpleWorker
    names = [DISPATCH_QUEUE, PERIODIC_QUEUE]
    worker = worker_class([queues.get(n) for n in names], connection=queues.redis, name=name)
    click.echo(
        f"{worker_class.__name__} on queues {', '.join(names)} ({current_app.config['REDIS_URL']})"
    )
    with current_app.app_context():
        worker.work(burst=burst, logging_level="INFO", with_scheduler=False)


@dispatch_cli.command("scheduler")
def scheduler_command() -> None:
    """Run RQ's cron scheduler, enqueueing the periodic jobs on their intervals."""
    scheduler = CronScheduler(connection=queues.redis, logging_level=logging.INFO)
    for func, interval in PERIODIC_JOBS:
        scheduler.register(func, queue_name=PERIODIC_QUEUE, interval=interval)
    click.echo(f"scheduler: {len(PERIODIC_JOBS)} periodic jobs on queue {PERIODIC_QUEUE}")
    scheduler.start()
