"""What supervisors and leaders see: maps, evaluation indicators, dashboard, open data."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Register the maps' pages and the evaluation rollup's periodic refresh."""
    from gridmgmt.kernel.queue import register_periodic
    from maps import evaluation, views
    from maps.jobs import PERIODIC_JOBS

    evaluation.check_settings(app.config)
    views.init_app(app)
    for job, interval in PERIODIC_JOBS.items():
        register_periodic(app, job, interval)
