"""The shipped systemd units pass `systemd-analyze verify` (with the install paths pointed at
this checkout, so that the programs they start exist), and the shipped environment file names
every setting."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

from gridmgmt.kernel.config import Config
from tests.conftest import ROOT
from tests.support import require

UNITS = (ROOT / "deploy" / "systemd", ROOT / "deploy" / "backup")


def test_the_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    require("tools", analyze is not None, "no systemd-analyze (apt-get install systemd)")
    env_file = tmp_path / "gridmgmt.env"
    env_file.write_text((ROOT / "deploy" / "gridmgmt.env").read_text())
    names = []
    units = [u for folder in UNITS for u in sorted(folder.iterdir())
             if u.suffix in (".service", ".timer", ".target")]  # fmt: skip
    for unit in units:
        body = unit.read_text()
        assert "/opt/gridmgmt" in body or unit.suffix in (".target", ".timer")
        body = (
            body.replace("/opt/gridmgmt", str(ROOT))
            .replace("/etc/gridmgmt/gridmgmt.env", str(env_file))
            .replace("/etc/gridmgmt/backup.env", str(env_file))
        )
        (tmp_path / unit.name).write_text(body)
        names.append(unit.name.replace("@.service", "@1.service"))

    result = subprocess.run(
        [str(analyze), "verify", *names], cwd=tmp_path, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # not even a warning
    assert {"gridmgmt-web.service", "gridmgmt-worker@1.service", "gridmgmt-scheduler.service",
            "gridmgmt.target", "gridmgmt-backup-base.timer",
            "gridmgmt-backup-photos.service"} <= set(names)  # fmt: skip


def environment_file() -> dict[str, str]:
    """deploy/gridmgmt.env as a mapping (KEY=VALUE lines; comments and blanks skipped)."""
    values = {}
    for line in (ROOT / "deploy" / "gridmgmt.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_the_environment_file_has_every_setting() -> None:
    values = environment_file()
    internal = {"TESTING", "DEMO", "SQL_ECHO"}  # tests and `make run` only
    internal.add("MIGRATE_DATABASE_URL")  # the owner's: deploy/migrate.env, never the services'

    names = {f.name for f in fields(Config)} - internal
    missing = [name for name in names if f"GRIDMGMT_{name}" not in values]
    assert not missing
    config = Config.from_env(values)  # every value has its setting's type
    assert config.TRUSTED_PROXIES == 1 and config.SESSION_COOKIE_SECURE
    assert not config.DEMO and "gridmgmt_app" in config.DATABASE_URL
    assert "MIGRATE_DATABASE_URL" not in " ".join(values)  # web and workers never hold it
    assert "gridmgmt_owner" not in (ROOT / "deploy" / "gridmgmt.env").read_text()
