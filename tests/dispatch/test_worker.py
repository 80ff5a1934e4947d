"""The RQ side: the heartbeat job on a real worker, and `flask dispatch scheduler/worker`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskCliRunner
from redis import Redis
from rq import Queue, SimpleWorker
from rq.cron import CronScheduler
from rq.job import JobStatus

import dispatch.cli
from dispatch.jobs import HEARTBEAT_KEY, heartbeat
from gridmgmt.kernel.queue import DISPATCH_QUEUE, PERIODIC_QUEUE


def stamp(redis_conn: Redis) -> datetime:
    raw = redis_conn.get(HEARTBEAT_KEY)
    assert raw is not None, "the heartbeat key was not written"
    value = datetime.fromisoformat(raw.decode())
    assert value.tzinfo is not None
    return value


def assert_recent(value: datetime) -> None:
    now = datetime.now(UTC)
    assert now - timedelta(minutes=1) <= value <= now + timedelta(seconds=5)


def test_heartbeat_job_runs_on_a_worker(redis_conn: Redis) -> None:
    queue = Queue(PERIODIC_QUEUE, connection=redis_conn)
    job = queue.enqueue(heartbeat)
    assert redis_conn.get(HEARTBEAT_KEY) is None

    worked = SimpleWorker([queue], connection=redis_conn).work(burst=True)

    assert worked
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert_recent(stamp(redis_conn))
    assert job.return_value() == redis_conn.get(HEARTBEAT_KEY).decode()
    assert len(queue) == 0


def test_heartbeat_outside_a_worker_writes_nothing(redis_conn: Redis) -> None:
    value = datetime.fromisoformat(heartbeat())

    assert_recent(value)
    assert redis_conn.get(HEARTBEAT_KEY) is None


class OneShotScheduler(CronScheduler):
    """The real CronScheduler, except that `start` enqueues what is due once and returns."""

    instances: list[OneShotScheduler] = []

    def start(self) -> None:
        OneShotScheduler.instances.append(self)
        self.enqueue_jobs()


@pytest.fixture
def one_shot_scheduler(monkeypatch: pytest.MonkeyPatch) -> type[OneShotScheduler]:
    OneShotScheduler.instances = []
    monkeypatch.setattr(dispatch.cli, "CronScheduler", OneShotScheduler)
    return OneShotScheduler


def test_scheduler_registers_every_periodic_job(
    cli: FlaskCliRunner, redis_conn: Redis, one_shot_scheduler: type[OneShotScheduler]
) -> None:
    result = cli.invoke(args=["dispatch", "scheduler"])

    assert result.exit_code == 0, result.output
    assert f"9 periodic jobs on queue {PERIODIC_QUEUE}" in result.output
    [scheduler] = one_shot_scheduler.instances
    registered = [(job.func, job.interval, job.queue_name) for job in scheduler.get_jobs()]
    intervals = {
        "heartbeat": 60,
        "sweep_filed": 15,
        "watch_deadlines": 60,
        "find_hotspots": 300,
        "refresh_evaluation": 600,
        "remove_orphan_photos": 3600,
        "drain_notices": 60,  # the notification outbox (NOTICE_DRAIN_SECONDS)
        "maintain_partitions": 3600,
        "fold_key_uses": 60,  # the api keys' request counts, from Redis into the database
    }
    assert {func.__name__: interval for func, interval, _ in registered} == intervals
    # each package registers its own, by dotted path: the dispatcher's, the maps' rollup and
    # the cases' sweep of orphan photos, the kernel's event log partitions
    modules = {func.__name__: func.__module__ for func, _, _ in registered}
    assert modules["refresh_evaluation"] == "maps.jobs"
    assert modules["remove_orphan_photos"] == modules["drain_notices"] == "cases.jobs"
    assert modules["maintain_partitions"] == "gridmgmt.kernel.partitions"
    assert modules["fold_key_uses"] == "gridmgmt.kernel.key_uses"
    own = {"maps.jobs", "cases.jobs", "gridmgmt.kernel.partitions", "gridmgmt.kernel.key_uses"}
    others = {modules[name] for name in intervals} - own
    assert others == {"dispatch.jobs"}
    assert {queue for _, _, queue in registered} == {PERIODIC_QUEUE}
    # every interval job is due at once: one job each on the periodic queue of the app's Redis
    queued = Queue(PERIODIC_QUEUE, connection=redis_conn).get_jobs()
    assert sorted(job.func_name for job in queued) == sorted(
        f"{func.__module__}.{func.__name__}" for func, _, _ in registered
    )


def test_worker_command_processes_scheduled_job(
    cli: FlaskCliRunner, redis_conn: Redis, one_shot_scheduler: type[OneShotScheduler]
) -> None:
    assert cli.invoke(args=["dispatch", "scheduler"]).exit_code == 0
    periodic = Queue(PERIODIC_QUEUE, connection=redis_conn)
    jobs = periodic.get_jobs()
    assert len(jobs) == 9

    result = cli.invoke(args=["dispatch", "worker", "--burst", "--name", "test-burst"])

    assert result.exit_code == 0, result.output
    assert f"SimpleWorker on queues {DISPATCH_QUEUE}, {PERIODIC_QUEUE}" in result.output
    assert [job.get_status(refresh=True) for job in jobs] == [JobStatus.FINISHED] * len(jobs)
    assert len(periodic) == 0
    assert_recent(stamp(redis_conn))
