"""Cases: the category catalogue, what was reported, and its life until it is closed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Register the case pages, the staff JSON API, Open311, `flask categories ...` and the
    sweep of orphan photos; set the photo decoding slots; read the catalogue's urgent policy
    (a wrong one stops the start)."""
    from cases import admin, api, open311, photos, search_views, views
    from cases.catalogue import urgent_policy
    from cases.cli import categories_cli
    from cases.jobs import PERIODIC_JOBS
    from gridmgmt.kernel.queue import register_periodic

    views.init_app(app)
    search_views.init_app(app)  # the staff's case search
    admin.init_app(app)  # the administrators' catalogue pages
    api.init_app(app)
    open311.init_app(app)
    app.cli.add_command(categories_cli)
    photos.set_decode_slots(int(app.config.get("PHOTO_DECODE_SLOTS", photos.DEFAULT_DECODE_SLOTS)))
    urgent_policy()
    for job, interval in PERIODIC_JOBS.items():
        register_periodic(app, job, interval)
