"""Dispatch: who must handle a case (routing rules), the RQ dispatcher and its watch."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Register the dispatcher's pages and API, `flask dispatch ...`, the periodic jobs and
    the state /metrics reads."""
    from dispatch import admin, api, metrics, views
    from dispatch.admin_cli import routing_cli, units_cli
    from dispatch.cli import dispatch_cli
    from dispatch.jobs import PERIODIC_JOBS
    from gridmgmt.kernel.metrics import register_probe
    from gridmgmt.kernel.queue import register_periodic

    views.init_app(app)
    admin.init_app(app)
    api.init_app(app)
    app.cli.add_command(dispatch_cli)
    app.cli.add_command(units_cli)  # departments and routing rules, as /admin/units and /routing
    app.cli.add_command(routing_cli)
    for job, interval in PERIODIC_JOBS.items():
        register_periodic(app, job, interval)
    register_probe(app, "dispatch", metrics.probe)  # its state, read by each /metrics scrape
