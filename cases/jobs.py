"""The cases' RQ jobs: sweeping stored photo files that no case refers to. They run in the
worker's app context and let exceptions propagate (RQ records and retries them).

A report or action writes its photo files before its rows commit, and removes them if its
transaction rolls back; a process killed in between leaves files behind, as does a report
that lost an idempotency race. Those files, older than `PHOTO_ORPHAN_GRACE_SECONDS` (so that a
report being written is not raced) and with no `photos` row naming them, are removed here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from flask import current_app
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cases.models import Photo
from cases.photos import STORED_NAME
from gridmgmt.kernel.db import db

BATCH = 1000  # files looked up in one query
DEFAULT_GRACE_SECONDS = 3600
log = logging.getLogger(__name__)  # one INFO line when a sweep removed files, else DEBUG


def _old_files(root: Path, older_than: float) -> Iterator[tuple[str, Path]]:
    """(name relative to `root`, path) of stored photos and left-over temporary files whose
    modification time is before `older_than` (epoch seconds)."""
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            temporary = name.startswith(".") and name.endswith(".tmp")
            if not (temporary or STORED_NAME.fullmatch(relative)):
                continue  # not a file the photo store makes: not ours to remove
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < older_than:
                    yield relative, path


def _referenced(session: Session, names: list[str]) -> set[str]:
    """The names among `names` that a photo row refers to (as its file or its thumbnail)."""
    rows = session.execute(
        select(Photo.path, Photo.thumb_path).where(
            or_(Photo.path.in_(names), Photo.thumb_path.in_(names))
        )
    )
    return {name for row in rows for name in row} & set(names)


def sweep_orphan_photos(session: Session, root: Path, grace_seconds: float) -> int:
    """Remove the files under `root` older than `grace_seconds` that no photo row refers to;
    how many were removed."""
    if not root.is_dir():
        return 0
    older_than = time.time() - grace_seconds
    removed = 0
    batch: list[tuple[str, Path]] = []

    def flush() -> int:
        names = [name for name, _ in batch]
        keep = _referenced(session, names)
        count = 0
        for name, path in batch:
            if name in keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < older_than:  # not used again meanwhile
                    path.unlink()
                    count += 1
        batch.clear()
        return count

    for item in _old_files(root, older_than):
        batch.append(item)
        if len(batch) >= BATCH:
            removed += flush()
    if batch:
        removed += flush()
    return removed


def remove_orphan_photos() -> int:
    """Remove stored photo files no case refers to, older than the grace period."""
    config = current_app.config
    grace = float(config.get("PHOTO_ORPHAN_GRACE_SECONDS", DEFAULT_GRACE_SECONDS))
    with db.transaction() as session:
        removed = sweep_orphan_photos(session, Path(config["PHOTO_DIR"]), grace)
    db.session.remove()
    if removed:
        log.info("removed %d photo files no case refers to", removed)
    else:
        log.debug("no orphan photo file to remove")
    return removed


# The cases' periodic jobs (dotted path → seconds), run by `flask dispatch scheduler`.
PERIODIC_JOBS = {f"{__name__}.remove_orphan_photos": 3600}
