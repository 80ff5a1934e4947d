"""Benchmark `locate` on the real Los Angeles territory and check it against the city's record.

    .venv/bin/python bench/locate.py [--size 250] [--shared ../shared/data]

Builds the database `gridmgmt_bench_la` (99 neighborhood councils as communities, square cells
of --size metres), locates every geocoded case of la311_requests_2020-01.csv one call at a
time, and prints as its last line:
    locate: N points, X points/s, p95 Y ms, outside O, council agreement A %
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, STREET, fresh_database, la_311_cases, load_la_territory

from gridmgmt.kernel.errors import OutsideTerritory
from grids import services

BENCH_DB = "gridmgmt_bench_la"


def main() -> None:
    """Build, locate, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=250.0, help="cell side in metres")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    engine = create_engine(fresh_database(BENCH_DB))
    with Session(engine) as session, session.begin():
        load_la_territory(session, args.size, args.shared)

    points = la_311_cases(args.shared)
    timings: list[float] = []
    outside = agree = 0
    with Session(engine) as session:
        started = time.perf_counter()
        for lon, lat, nc in points:
            t0 = time.perf_counter()
            try:
                where = services.locate(session, lon, lat)
                agree += where.community_code == STREET + nc.zfill(3)
            except OutsideTerritory:
                outside += 1
            timings.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    engine.dispose()
    p95 = statistics.quantiles(timings, n=20)[-1] * 1000
    inside = len(points) - outside
    print(
        f"locate: {len(points)} points, {len(points) / elapsed:,.0f} points/s, p95 {p95:.2f} ms, "
        f"outside {outside}, council agreement {100 * agree / inside:.1f} % ({agree}/{inside})"
    )


if __name__ == "__main__":
    main()
