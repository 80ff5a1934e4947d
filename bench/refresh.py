"""Time the rollups' refresh side by side with the ways it replaced, on a loaded database.

    .venv/bin/python bench/refresh.py [--database gridmgmt_bench_pages_10m] [--rounds 2]

Run it after `bench/pages.py` (whose changes after the last refresh leave days to recount).
Each measure runs in a transaction that is rolled back, so both ways see the same database,
alternating, `--rounds` times:

1. the daily rollups (`refresh_evaluation_rollup`): migration 0039's, which writes only the
   rows whose counts changed, against migration 0026's (with 0032's 400 days), which deleted
   and inserted every touched day; each followed by the map's sums, which read what it wrote;
2. the map's sums on a month's first refresh: migration 0040's, which carries every place on
   into the new month, against writing them all again (none kept), as migration 0037 did on
   every new month. The new month is made by taking away the last month's rows of the places
   that have an older one.

Connects as the tables' owner (the refresh functions' owner; the old one is created for the
session in pg_temp).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import owner_of

from gridmgmt.kernel.config import Config
from migrations.siblings import migration

WRITTEN = """SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables
             WHERE relname IN ('evaluation_days', 'map_cell_days', 'map_cell_months',
                               'case_days', 'map_sums_changes') ORDER BY 1"""
NEW_MONTH = """DELETE FROM map_cell_sums s
               WHERE month = (SELECT max(month) FROM map_cell_sums) AND EXISTS (
                   SELECT FROM map_cell_sums o WHERE o.month < s.month AND o.cell_id = s.cell_id
                   AND o.community_id IS NOT DISTINCT FROM s.community_id)"""


def timed(connection: Connection, sql: str) -> float:
    started = time.perf_counter()
    connection.execute(text(sql))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="gridmgmt_bench_pages_10m")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    url = owner_of(Config.from_env().DATABASE_URL.rsplit("/", 1)[0] + f"/{args.database}")
    engine = create_engine(url)
    before = migration("0026_incremental_rollups.py")
    daily_0026 = before.REFRESH.replace(
        f"today - {before.DAYS_KEPT}", f"today - {migration('0032_map_days_kept_a_year.py').AFTER}"
    ).replace("public.refresh_evaluation_rollup(", "pg_temp.refresh_0026(")
    with engine.connect() as connection:
        cases = connection.scalar(text("SELECT count(*) FROM cases"))
        days = connection.scalar(text("SELECT count(DISTINCT day) FROM rollup_dirty"))
    print(f"{cases} cases, {days} days to recount", file=sys.stderr)

    for _ in range(args.rounds):
        for name, call in (
            ("0039 changed rows", "public.refresh_evaluation_rollup(true)"),
            ("0026 whole days", "pg_temp.refresh_0026(true)"),
        ):
            with engine.connect() as connection, connection.begin() as transaction:
                connection.execute(text(daily_0026))
                daily = timed(connection, f"SELECT {call}")
                sums = timed(connection, "SELECT public.refresh_map_sums()")
                written = {name: n for name, n in connection.execute(text(WRITTEN))}
                transaction.rollback()
            print(f"daily rollups, {name:<18} {daily:5.2f} s, then map sums {sums:5.2f} s;"
                  f" rows written {written}")  # fmt: skip
    for _ in range(args.rounds):
        for name, prepare in (
            ("0040 carried on", NEW_MONTH),
            ("all written again", "DELETE FROM map_cell_sums"),
        ):
            with engine.connect() as connection, connection.begin() as transaction:
                taken = connection.execute(text(prepare)).rowcount
                sums = timed(connection, "SELECT public.refresh_map_sums()")
                transaction.rollback()
            print(f"map sums on a new month, {name:<18} {sums:5.2f} s ({taken} rows taken away)")
    engine.dispose()


if __name__ == "__main__":
    main()
