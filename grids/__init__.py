"""Territory: districts, streets and communities, and the unit grid cells inside them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Register the territory endpoints and `flask grids ...`."""
    from grids import admin, views
    from grids.cli import grids_cli

    views.init_app(app)
    admin.init_app(app)  # /admin/territory
    app.cli.add_command(grids_cli)
