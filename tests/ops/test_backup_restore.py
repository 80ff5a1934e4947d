"""Backups that restore (deploy/backup/gridmgmt-backup), run for real on a PostgreSQL of the
test's own (a temporary data folder, a free port, WAL archiving set up by the script).

The main test makes a base backup of a migrated, seeded city, writes a batch of cases with
photos, notes the server's time T, writes another batch (new cases, and events on the first
batch's cases), restores to T into a fresh data folder with the README's steps, starts it on
another port and checks that exactly what was committed before T is there (cases, events,
photo rows) with the photo files, and nothing written after. It prints the figures the README
quotes (base backup size, WAL archived, restore time).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from cases import intake, lifecycle
from cases.intake import ReportInput
from cases.lifecycle import ActionInput, CaseContext
from cases.models import CaseSource
from cases.photos import Upload
from gridmgmt.kernel.calendar_store import get_calendar
from gridmgmt.kernel.config import STACK_OWNER_ROLE, Config
from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import User
from tests.conftest import ROOT, seed_demo_city
from tests.support import free_port, jpeg, point_in, real_app, require

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "deploy" / "backup" / "gridmgmt-backup"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGIS_CONTROL = Path("/usr/share/postgresql/15/extension/postgis.control")
PG_USER = "postgres"
DB_NAME = "gridmgmt"
COMMUNITY = "990100006046"  # a demo community (tests/cases/test_lifecycle.py)
GARBAGE = "E0102"  # exposed garbage: a community class
METRES_PER_DEGREE_LAT = 111_000.0
WAL_SEGMENT = 16 * 1024 * 1024


def as_pg(*argv: str | Path) -> list[str]:
    """A PostgreSQL server program's command line, run as `postgres` when we are root
    (initdb and postgres refuse root), as scripts/stack.sh does."""
    prefix = ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []
    return [*prefix, *(str(a) for a in argv)]


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run a command; its stdout. A failure shows the command's stderr."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}"
    return done.stdout


def hand_to_postgres(*paths: Path) -> None:
    """Make folders the server's (its data folder must belong to the user it runs as)."""
    if os.geteuid() == 0:
        for path in paths:
            shutil.chown(path, PG_USER, PG_USER)


@dataclass
class Server:
    """A PostgreSQL of the test's own: data folder, port, log."""

    data: Path
    port: int
    log: Path
    started: bool = False

    def start(self) -> None:
        """Start it on its port (and wait until it accepts connections): the README's
        `pg_ctl -D DIR -l LOG -w start`, on a port of its own."""
        run(as_pg(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "120",
                  "-o", f"-p {self.port}", "start"))  # fmt: skip
        self.started = True

    def stop(self, mode: str = "fast") -> None:
        """Stop it, if it runs."""
        if self.started:
            run(as_pg(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"))
            self.started = False

    def url(self, user: str = PG_USER, database: str = DB_NAME) -> URL:
        """A URL on it (trusted on loopback: no password)."""
        return URL.create(
            "postgresql+psycopg2", username=user, host="127.0.0.1", port=self.port,
            database=database,
        )  # fmt: skip

    def sql(self, query: str, database: str = DB_NAME, user: str = PG_USER) -> list[tuple]:
        """Run one statement in autocommit as `user`; its rows (none for commands)."""
        engine = create_engine(
            self.url(user, database), isolation_level="AUTOCOMMIT", poolclass=NullPool
        )
        try:
            with engine.connect() as conn:
                result = conn.execute(text(query))
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def log_text(self) -> str:
        """The server's log so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Site:
    """The test's machine: the source server, its photo folder, the backup root."""

    work: Path
    server: Server
    photos: Path
    backup_root: Path
    owner: str
    app_role: str
    others: list[Server] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment the backup script runs with (the README's settings)."""
        return {
            **os.environ,
            "GRIDMGMT_BACKUP_ROOT": str(self.backup_root),
            "GRIDMGMT_PHOTO_DIR": str(self.photos),
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.server.port),
            "PGUSER": PG_USER,
            **extra,
        }

    def backup(self, *args: str) -> str:
        """Run `gridmgmt-backup ARGS...`; its stdout."""
        return run([str(SCRIPT), *args], env=self.env(), timeout=600)


def require_tools() -> None:
    """Fail (not skip) when a program the backups need is missing."""
    for program in ("initdb", "pg_ctl", "postgres", "pg_basebackup", "pg_verifybackup",
                    "pg_archivecleanup", "psql"):  # fmt: skip
        require("postgres", (PG_BIN / program).exists(),
                f"no {PG_BIN / program} (apt-get install postgresql-15)")  # fmt: skip
    require("postgres", POSTGIS_CONTROL.exists(),
            "no PostGIS for PostgreSQL 15 (apt-get install postgresql-15-postgis-3)")  # fmt: skip
    programs = ["gzip", "numfmt", "flock"] + (["runuser"] if os.geteuid() == 0 else [])
    for program in programs:  # coreutils, gzip, util-linux: on every Debian
        require("tools", shutil.which(program) is not None, f"no {program} on PATH")


def migrate(url: URL) -> None:
    """The real migrations (alembic upgrade head) as the tables' owner, then the app role's
    grants (migrations/env.py), as tests/conftest.py's alembic_config does."""
    cfg = AlembicConfig(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False))
    cfg.attributes["skip_logging"] = True
    command.upgrade(cfg, "head")


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """A fresh PostgreSQL 15 with archiving set up by `gridmgmt-backup setup --apply`, the
    gridmgmt database (PostGIS, migrated, the demo city seeded), a photo folder and a backup
    root; everything removed afterwards."""
    require_tools()
    # Not under pytest's tmp_path: the server's user must reach the folders (root's is 0700).
    work = Path(tempfile.mkdtemp(prefix="gridmgmt-backup-test-"))
    work.chmod(0o755)
    (work / "pg").mkdir()
    hand_to_postgres(work / "pg")
    server = Server(work / "pg" / "data", free_port(), work / "pg" / "server.log")
    owner, app_role = STACK_OWNER_ROLE, Config.from_env().APP_ROLE
    here = Site(work, server, work / "photos", work / "backup", owner, app_role)
    try:
        run(as_pg(PG_BIN / "initdb", "-D", server.data, "-U", PG_USER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8"))  # fmt: skip
        with open(server.data / "postgresql.conf", "a") as conf:
            conf.write(
                "# gridmgmt backup test\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{work / 'pg'}'\nfsync = off\njit = off\n"
            )
        server.start()
        here.backup("setup", "--apply")
        server.stop()
        server.start()
        assert server.sql("SHOW archive_mode", "postgres") == [("on",)]
        assert server.sql("SHOW wal_level", "postgres") == [("replica",)]

        for role in (owner, app_role):
            server.sql(f'CREATE ROLE "{role}" LOGIN', "postgres")
        server.sql(f'CREATE DATABASE {DB_NAME} OWNER "{owner}"', "postgres")
        server.sql("CREATE EXTENSION postgis")  # as the superuser, in the new database
        migrate(server.url(owner))
        seed_demo_city(server.url(owner))
        here.photos.mkdir()
        yield here
    finally:
        for other in here.others:
            with contextlib.suppress(AssertionError):
                other.stop("immediate")
        with contextlib.suppress(AssertionError):
            server.stop("immediate")
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- writing cases


@dataclass(frozen=True)
class Written:
    """What one batch committed."""

    case_ids: list[int]
    photo_files: list[str]  # relative to the photo folder: the photos and their thumbnails


def write_batch(
    site: Site, redis_url: str, label: str, cases: int, verify: list[int], shade: int
) -> Written:
    """Report `cases` cases (one photo each) as the demo citizen through cases.intake, and
    verify the cases `verify` as the demo inspector through cases.lifecycle: each in a
    transaction of its own, committed, as the app's role."""
    with (
        real_app(site.server.url(site.app_role), redis_url, site.photos) as app,
        app.app_context(),
    ):
        session = db.session()
        users = {u.username: u for u in session.scalars(select(User))}
        context = CaseContext(get_calendar(session, "us_la"), site.photos)
        lon, lat = point_in(session, COMMUNITY)
        made, files = [], []
        for n in range(cases):
            photo = Upload(f"{label}-{n}.jpg", jpeg((shade, 40 + 20 * n, 90), (64, 48)))
            data = ReportInput(
                category_code=GARBAGE,
                lon=lon,
                lat=lat + (n + 1) * 3 / METRES_PER_DEGREE_LAT,
                description=f"backup test, batch {label}, case {n}",
                photos=[photo],
            )
            case = intake.report_case(
                session, data, users["citizen"], CaseSource.CITIZEN, site.photos
            ).case
            made.append(case.id)
            files += [p for row in case.photos for p in (row.path, row.thumb_path)]
            session.commit()
        for case_id in verify:
            lifecycle.act(session, case_id, "verify", users["inspector"], ActionInput(), context)
            session.commit()
        db.session.remove()
    return Written(made, files)


@dataclass(frozen=True)
class Snapshot:
    """What the database holds: the ids of its cases, events and photo rows."""

    cases: set[int]
    events: set[int]
    photos: dict[int, tuple[str, str, str]]  # id → (sha256, path, thumb_path)


def snapshot(server: Server) -> Snapshot:
    """Read what the database holds (as the superuser, who sees everything)."""
    return Snapshot(
        {r[0] for r in server.sql("SELECT id FROM cases")},
        {r[0] for r in server.sql("SELECT id FROM case_events")},
        {r[0]: (r[1], r[2], r[3])
         for r in server.sql("SELECT id, sha256, path, thumb_path FROM photos")},
    )  # fmt: skip


def switch_and_archive(server: Server) -> str:
    """Close the current WAL segment and wait until the archive has it (what
    archive_timeout does by itself within a minute); the segment's name."""
    segment = server.sql("SELECT pg_walfile_name(pg_switch_wal())", "postgres")[0][0]
    deadline = time.monotonic() + 60
    while True:
        archived = server.sql("SELECT last_archived_wal FROM pg_stat_archiver", "postgres")[0][0]
        if archived is not None and archived >= segment:
            return segment
        assert time.monotonic() < deadline, f"{segment} not archived:\n{server.log_text()}"
        time.sleep(0.1)


def wait_until_promoted(server: Server, seconds: float = 300) -> None:
    """Wait until the restored server has replayed the WAL and opened for writes."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(Exception):
            if server.sql("SELECT pg_is_in_recovery()", "postgres") == [(False,)]:
                return
        assert time.monotonic() < deadline, f"still recovering:\n{server.log_text()}"
        time.sleep(0.1)


def folder_bytes(folder: Path, pattern: str = "**/*") -> tuple[int, int]:
    """How many files match under `folder`, and their bytes."""
    files = [p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith(".")]
    return len(files), sum(p.stat().st_size for p in files)


def backup_info(folder: Path) -> dict[str, str]:
    """A base backup's backup.info (KEY=VALUE lines)."""
    lines = (folder / "backup.info").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def mb(size: int) -> str:
    """Bytes as MB (kB under one MB), one decimal."""
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


# ---------------------------------------------------------------- the tests


def test_restore_to_a_point_in_time(
    site: Site, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server = site.server
    batch_0 = write_batch(site, redis_url, "0", cases=3, verify=[], shade=120)
    site.backup("photos")
    seeded = snapshot(server)

    started = time.monotonic()
    base_dir = Path(site.backup("base").strip().splitlines()[-1])
    base_seconds = time.monotonic() - started
    assert (base_dir / "data" / "backup_manifest").is_file()
    info = backup_info(base_dir)
    assert info["verified"] == "pg_verifybackup"

    lsn_sql = "SELECT pg_current_wal_lsn()::text"
    lsn_before = server.sql(lsn_sql, "postgres")[0][0]

    # Batch A: new cases with photos, and events on cases of the base backup and of batch A.
    batch_a = write_batch(site, redis_url, "A", cases=5, verify=[], shade=200)
    assert len(batch_a.photo_files) == 10  # a photo and its thumbnail for each case
    verified = [batch_0.case_ids[0], *batch_a.case_ids[:2]]
    write_batch(site, redis_url, "A2", cases=0, verify=verified, shade=0)
    site.backup("photos")
    before = snapshot(server)
    target = server.sql(
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
        "postgres",
    )[0][0]
    time.sleep(0.2)  # the restore point lies between the batches, as an operator's would

    # Batch B, after T: more cases and photos, and events on older cases.
    verified = [batch_0.case_ids[1], *batch_a.case_ids[2:]]
    batch_b = write_batch(site, redis_url, "B", cases=4, verify=verified, shade=60)
    site.backup("photos")
    after = snapshot(server)
    written_wal = server.sql(
        f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn_before}')::bigint", "postgres"
    )[0][0]
    assert set(batch_b.case_ids) <= after.cases and after.events > before.events
    switch_and_archive(server)

    # The README's restore steps.
    restored_dir = site.work / "restored"
    restored_photos = site.work / "restored-photos"
    started = time.monotonic()
    run([str(SCRIPT), "restore", "--to", target, "--into", str(restored_dir),
         "--photos-into", str(restored_photos)], env=site.env())  # fmt: skip
    restored = Server(restored_dir, free_port(), restored_dir / "restore.log")
    site.others.append(restored)
    restored.start()
    wait_until_promoted(restored)
    restore_seconds = time.monotonic() - started

    log = restored.log_text()
    assert re.search(r"recovery stopping before commit of transaction \d+, time", log), log
    got = snapshot(restored)
    assert got.cases == before.cases, "cases: not exactly those committed before T"
    assert got.events == before.events, "events: not exactly those committed before T"
    assert got.photos == before.photos, "photo rows: not exactly those committed before T"
    assert not got.cases & set(batch_b.case_ids)
    assert seeded.cases <= got.cases and set(batch_a.case_ids) <= got.cases
    assert set(batch_0.case_ids) <= seeded.cases
    for sha256, path, thumb in got.photos.values():
        assert hashlib.sha256((restored_photos / path).read_bytes()).hexdigest() == sha256
        assert (restored_photos / thumb).is_file()
    assert all((restored_photos / name).is_file() for name in batch_a.photo_files)

    # The restored database is the app's again: it takes a new report.
    written = write_batch(
        Site(site.work, restored, restored_photos, site.backup_root, site.owner, site.app_role),
        redis_url, "C", cases=1, verify=[], shade=10,
    )  # fmt: skip
    assert len(written.case_ids) == 1 and written.case_ids[0] not in before.cases

    wal_files, wal_bytes = folder_bytes(site.backup_root / "wal", "*.gz")
    segments = [p for p in (site.backup_root / "wal").glob("*.gz")
                if re.fullmatch(r"[0-9A-F]{24}\.gz", p.name)]  # fmt: skip
    photo_files, photo_bytes = folder_bytes(site.backup_root / "photos")
    with capsys.disabled():
        print(
            "\n[backup figures]"
            f" base backup: {mb(int(info['bytes']))} in {base_seconds:.1f} s (verified);"
            f" WAL written by batches A and B: {mb(written_wal)};"
            f" WAL archive: {wal_files} files, {mb(wal_bytes)} gzipped"
            f" ({len(segments)} segments, {mb(len(segments) * WAL_SEGMENT)} uncompressed,"
            f" the smallest {mb(min(p.stat().st_size for p in segments))} gzipped);"
            f" photos: {photo_files} files, {mb(photo_bytes)};"
            f" restore to T (script + replay until promoted): {restore_seconds:.1f} s;"
            f" cases: {len(seeded.cases)} in the base backup,"
            f" +{len(batch_a.case_ids)} before T (kept), +{len(batch_b.case_ids)} after T (gone);"
            f" events kept {len(got.events)},"
            f" gone {len(after.events - before.events)}"
        )


def test_prune_keeps_what_a_restore_needs(site: Site) -> None:
    """After the point-in-time restore (whose server archived nothing): two more base
    backups, `prune --keep 1`, and a restore of everything (`--to latest`) from what is left
    still gives the city's server as it is."""
    site.backup("base")
    time.sleep(1.1)  # backups are named by the second
    newest = Path(site.backup("base").strip().splitlines()[-1])

    listing = site.backup("list")
    assert newest.name in listing and "WAL archive:" in listing and "photos:" in listing
    site.backup("prune", "--keep", "1")

    kept = [p.name for p in (site.backup_root / "base").iterdir() if not p.name.startswith(".")]
    assert kept == [newest.name]
    first = backup_info(newest)["first_wal"]
    left = sorted(p.name[:24] for p in (site.backup_root / "wal").glob("*.gz")
                  if re.fullmatch(r"[0-9A-F]{24}\.gz", p.name))  # fmt: skip
    assert left[0] == first, (first, left)  # the older WAL is gone, what the backup needs is not
    assert not any(p.name.startswith("00000002") for p in (site.backup_root / "wal").iterdir())

    now = snapshot(site.server)
    switch_and_archive(site.server)
    latest_dir = site.work / "latest"
    site.backup("restore", "--to", "latest", "--into", str(latest_dir),
                "--photos-into", str(site.work / "latest-photos"))  # fmt: skip
    latest = Server(latest_dir, free_port(), latest_dir / "restore.log")
    site.others.append(latest)
    latest.start()
    wait_until_promoted(latest)
    assert snapshot(latest) == now, latest.log_text()


def test_the_archive_never_overwrites(tmp_path: Path) -> None:
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(os.urandom(4096))
    archive = tmp_path / "wal"
    archive.mkdir()
    argv = [str(SCRIPT), "archive-wal", str(segment), segment.name, str(archive)]

    run(argv)
    run(argv)  # asked again after a crash: the same contents are success
    assert gzip.decompress((archive / f"{segment.name}.gz").read_bytes()) == segment.read_bytes()
    segment.write_bytes(b"other contents")
    refused = subprocess.run(argv, capture_output=True, text=True)
    assert refused.returncode != 0 and "refusing to overwrite" in refused.stderr

    fetched = tmp_path / "fetched"
    run([str(SCRIPT), "fetch-wal", str(archive), segment.name, str(fetched)])
    assert fetched.read_bytes() != segment.read_bytes()  # the archived one, not the new one
    missing = subprocess.run([str(SCRIPT), "fetch-wal", str(archive), "00000002.history",
                              str(tmp_path / "h")])  # fmt: skip
    assert missing.returncode == 1
