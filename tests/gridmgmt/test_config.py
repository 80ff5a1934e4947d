"""gridmgmt.kernel.config: settings from GRIDMGMT_* variables."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from gridmgmt.kernel.config import Config


def test_every_documented_variable_is_read_with_its_type() -> None:
    config = Config.from_env(
        {
            "GRIDMGMT_TILE_URL": "https://tiles.example/{z}/{x}/{y}.png",
            "GRIDMGMT_TILE_ATTRIBUTION": "City GIS",
            "GRIDMGMT_DISPATCH_GATHER_MS": "0",
            "GRIDMGMT_DEADLINE_WARNING_HOURS": "1.5",
            "GRIDMGMT_SQL_ECHO": "yes",
            "DATABASE_URL": "postgresql+psycopg2://x@h:1/d",
        }
    )

    assert config.TILE_URL == "https://tiles.example/{z}/{x}/{y}.png"
    assert config.TILE_ATTRIBUTION == "City GIS"
    assert config.DISPATCH_GATHER_MS == 0
    assert config.DEADLINE_WARNING_HOURS == 1.5
    assert config.SQL_ECHO is True
    assert config.DATABASE_URL == "postgresql+psycopg2://x@h:1/d"


def test_every_readme_setting_is_a_config_field() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"GRIDMGMT_([A-Z0-9_]+)", readme))
    known = {f.name for f in fields(Config)}
    # Settings of the tools around the app, not of the app's config.
    tools = {"PG_PORT", "REDIS_PORT", "WEB_WORKERS", "WEB_THREADS", "FUZZ_EXAMPLES", "SHARED_DATA"}
    tools |= {"WEB_BIND"}  # gunicorn.conf.py's address
    tools |= {"ALLOW_MISSING", "CHROMIUM"}  # the tests' own settings
    tools |= {"BACKUP_ROOT", "BACKUP_KEEP"}  # deploy/backup/gridmgmt-backup
    tools |= {"STANDBY_DIR", "STANDBY_PORT"}  # `scripts/stack.sh standby`
    assert named - known - tools == set()
