"""The README's "Set up your own city", followed literally: its bash block runs line by line on
an empty database with a small real territory (the 8 Los Angeles neighborhood councils of the
demo as communities, their union as one street and one district), ends with `setup check`
green, and a report filed through Open311 with the key it made is dispatched by the worker it
started."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from shapely.geometry import mapping, shape
from shapely.ops import unary_union
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from tests.conftest import as_owner, clone_database, drop_database
from tests.support import (
    VENV_BIN,
    app_environment,
    free_port,
    start_group,
    stop_group,
)

ROOT = Path(__file__).resolve().parents[2]
COMMUNITIES = ROOT / "grids" / "data" / "demo_la_central.geojson"
SECTION = "## Set up your own city"
PASSWORD = "first-city-password-9"
REDIS_DB = 13  # a Redis database of its own: the check reads its workers and failed jobs

pytestmark = pytest.mark.slow


def readme_block() -> str:
    """The bash block of the README's section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```bash\n(.*?)```", section, re.S)
    assert found, "the section has no bash block"
    return found.group(1)


def parents(tmp: Path) -> tuple[Path, Path]:
    """A district and a street: the union of the communities, as a city's own files would be."""
    layer = json.loads(COMMUNITIES.read_text(encoding="utf-8"))
    whole = mapping(unary_union([shape(f["geometry"]) for f in layer["features"]]))
    files = []
    for name, code, title in (
        ("districts", "990100", "Los Angeles"),
        ("streets", "006", "Central 2"),
    ):
        feature = {
            "type": "Feature",
            "properties": {"code": code, "name": title},
            "geometry": whole,
        }
        path = tmp / f"{name}.geojson"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
        files.append(path)
    return files[0], files[1]


@pytest.fixture
def empty_city(database_url: URL) -> Iterator[URL]:
    """An empty database with PostGIS and nothing else: a new city's."""
    name = f"gridmgmt_test_new_city_{os.getpid()}"
    url = clone_database(name, "gridmgmt_postgis")
    yield url
    drop_database(name)


def test_the_readme_takes_a_new_city_to_its_first_dispatched_report(
    empty_city: URL, redis_url: str, tmp_path: Path
) -> None:
    redis_of_city = re.sub(r"/\d+$", f"/{REDIS_DB}", redis_url)
    Redis.from_url(redis_of_city).flushdb()
    districts, streets = parents(tmp_path)
    env = app_environment(empty_city, redis_of_city, tmp_path / "photos")
    env.update(
        MIGRATE_DATABASE_URL=as_owner(empty_city).render_as_string(hide_password=False),
        PATH=f"{VENV_BIN}:{env['PATH']}",
        DISTRICTS=str(districts),
        STREETS=str(streets),
        COMMUNITIES=str(COMMUNITIES),
        PASSWORD=PASSWORD,
        GRIDMGMT_LOG_FORMAT="text",
    )
    port = free_port()
    env["GRIDMGMT_WEB_BIND"] = f"127.0.0.1:{port}"  # the block's web server (step 11)
    script = tmp_path / "setup.sh"
    script.write_text("set -euo pipefail\n" + readme_block())
    log = tmp_path / "setup.log"
    # The block leaves the worker, the scheduler and the web server running: a process group
    # of their own.
    run = start_group(["bash", str(script)], env, log)
    try:
        assert run.wait(timeout=600) == 0, log.read_text()[-3000:]
        output = log.read_text()
        checks = re.findall(r"^(ok|PROBLEM|warning) +(\w+)", output, re.M)
        assert len(checks) > 10 and {state for state, _name in checks} == {"ok"}, checks
        assert "nothing blocks dispatch" in output
        assert "department DEPT-WATER (water) added" in output
        assert "C0101 -> DEPT-WATER everywhere, priority 100" in output
        engine = create_engine(as_owner(empty_city))
        with engine.connect() as conn:
            status, kind, unit = conn.execute(
                text(
                    "SELECT c.status, u.kind, u.name FROM cases c JOIN units u"
                    " ON u.id = c.unit_id ORDER BY c.id DESC LIMIT 1"
                )
            ).one()
            water = conn.execute(
                text(
                    "SELECT u.code FROM routing_rules r JOIN units u ON u.id = r.unit_id"
                    " JOIN categories k ON k.id = r.category_id WHERE k.code = 'C0101'"
                )
            ).scalar_one()
        engine.dispose()
        assert (status, kind) == ("dispatched", "community"), output[-2000:]
        assert f'"agency_responsible":"{unit}"' in output.replace('": "', '":"'), output[-2000:]
        assert water == "DEPT-WATER"
    finally:
        stop_group(run)  # the worker, the scheduler and the web server the block left running
