"""Cases: the category catalogue, what was reported, and its life until it is closed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Register the case pages, the staff JSON API, Open311 and `flask categories ...`."""
    from cases import api, open311, views
    from cases.cli import categories_cli

    views.init_app(app)
    api.init_app(app)
    open311.init_app(app)
    app.cli.add_command(categories_cli)
