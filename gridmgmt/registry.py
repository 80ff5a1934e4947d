"""The list of domain packages: their models (for metadata) and their CLI groups."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def load_models() -> None:
    """Import every models module so `Base.metadata` knows all tables."""
    import cases.models  # noqa: F401
    import dispatch.models  # noqa: F401
    import gridmgmt.models  # noqa: F401
    import grids.models  # noqa: F401
    import maps.models  # noqa: F401


def init_cli(app: Flask) -> None:
    """Attach each package's command group to the app's `flask` CLI."""
    from cases.cli import categories_cli
    from dispatch.cli import dispatch_cli
    from gridmgmt.cli import apikey_cli, calendar_cli, demo_cli, users_cli
    from grids.cli import grids_cli

    for group in (
        grids_cli,
        categories_cli,
        dispatch_cli,
        users_cli,
        apikey_cli,
        calendar_cli,
        demo_cli,
    ):
        app.cli.add_command(group)
