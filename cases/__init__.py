"""Cases: the category catalogue, what was reported, and its life until it is closed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Register the case pages, the staff JSON API, Open311, `flask categories ...` and the
    sweep of orphan photos; set the photo decoding slots; read the catalogue's urgent policy
    (a wrong one stops the start)."""
    from cases import (
        admin,
        api,
        notices,
        offline_views,
        open311,
        participation_views,
        photos,
        public_views,
        search_views,
        views,
    )
    from cases.catalogue import urgent_policy
    from cases.cli import categories_cli
    from cases.jobs import PERIODIC_JOBS
    from gridmgmt.kernel.queue import register_periodic

    views.init_app(app)
    search_views.init_app(app)  # the staff's case search
    participation_views.init_app(app)  # reports near me, support, re-handling review
    admin.init_app(app)  # the administrators' catalogue pages
    api.init_app(app)
    offline_views.init_app(app)  # the phone app: service worker, manifest, outbox
    open311.init_app(app)
    public_views.init_app(app)  # following, unsubscribing, the follow-up, the demo's mailbox
    app.cli.add_command(categories_cli)
    photos.set_decode_slots(int(app.config.get("PHOTO_DECODE_SLOTS", photos.DEFAULT_DECODE_SLOTS)))
    urgent_policy()
    for job, interval in PERIODIC_JOBS.items():
        register_periodic(app, job, interval)
    # the outbox is drained after each commit that queued a message, and every so often
    # anyway: a lost job or a server that was down only delays messages
    register_periodic(app, notices.DRAIN_JOB, int(app.config.get("NOTICE_DRAIN_SECONDS") or 60))
