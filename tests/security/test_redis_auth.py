"""The private Redis requires its password: without it (or with a wrong one) nobody on this
machine can write a key (a cached map page, a rate-limit counter) or enqueue a job for the
workers; with it, both work."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis import Redis
from redis.exceptions import AuthenticationError
from rq import Queue

from gridmgmt.kernel.queue import DISPATCH_QUEUE, PERIODIC_QUEUE
from tests.support import ROOT, VENV_BIN

JOB = "cases.jobs.remove_orphan_photos"  # any job path: it is only enqueued, never run


def without_password(url: str, password: str | None = None) -> str:
    """`url` with no password (or with `password` instead of its own)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = host if password is None else f":{password}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="module", params=["no password", "a wrong password"])
def stranger(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Redis]:
    """A client of the private Redis that lacks its password."""
    assert urlsplit(redis_url).password, f"the tests' Redis has no password: {redis_url!r}"
    wrong = None if request.param == "no password" else "guessed-" + "0" * 40
    client = Redis.from_url(without_password(redis_url, wrong))
    yield client
    client.close()


def test_a_key_cannot_be_written_without_the_password(stranger: Redis) -> None:
    with pytest.raises(AuthenticationError):
        stranger.set("gridmgmt:map:page", b"<script>defaced</script>")


def test_a_job_cannot_be_enqueued_without_the_password(stranger: Redis) -> None:
    with pytest.raises(AuthenticationError):
        Queue(DISPATCH_QUEUE, connection=stranger).enqueue(JOB)


def test_with_the_password_both_work(redis_conn: Redis) -> None:
    redis_conn.set("gridmgmt:map:page", b"page", ex=60)
    assert redis_conn.get("gridmgmt:map:page") == b"page"
    queue = Queue(DISPATCH_QUEUE, connection=redis_conn)
    job = queue.enqueue(JOB)
    assert job.id in queue.job_ids


def test_the_workers_first_line_hides_the_redis_password(
    redis_url: str, database_url: object
) -> None:
    password = urlsplit(redis_url).password
    assert password, "the private Redis has a password"
    env = {**os.environ, "REDIS_URL": redis_url, "GRIDMGMT_SECRET_KEY": "x", "FLASK_APP": "wsgi"}
    env["DATABASE_URL"] = database_url.render_as_string(hide_password=False)  # type: ignore[attr-defined]
    redis_conn = Redis.from_url(redis_url)
    for name in (DISPATCH_QUEUE, PERIODIC_QUEUE):  # earlier tests' jobs: not this test's work
        Queue(name, connection=redis_conn).empty()

    run = subprocess.run(
        [str(VENV_BIN / "flask"), "dispatch", "worker", "--burst"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr[-1000:]
    assert "on queues" in run.stdout
    assert password not in run.stdout + run.stderr
