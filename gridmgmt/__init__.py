"""gridmgmt: grid-based urban management case dispatch."""

from __future__ import annotations

from typing import Any

from flask import Flask

from gridmgmt.config import Config


def create_app(config: Config | dict[str, Any] | None = None) -> Flask:
    """Build the Flask app from `config` (a Config, overrides as a dict, or the environment)."""
    from cases import api as cases_api
    from cases import open311
    from cases import views as cases_views
    from dispatch import views as dispatch_views
    from gridmgmt import health, home, i18n, openapi, registry, web
    from gridmgmt.db import db
    from gridmgmt.errors import register_error_handlers
    from gridmgmt.queue import queues
    from grids import views as grids_views
    from maps import views as maps_views

    app = Flask(__name__)
    settings = config if isinstance(config, Config) else Config.from_env()
    app.config.update(settings.as_flask())
    if isinstance(config, dict):
        app.config.update(config)  # overrides, including Flask's and extensions' own keys

    registry.load_models()
    db.init_app(app)
    queues.init_app(app)
    register_error_handlers(app)
    health.init_app(app)
    i18n.init_app(app)
    web.init_app(app)
    home.init_app(app)
    grids_views.init_app(app)
    cases_views.init_app(app)
    cases_api.init_app(app)
    open311.init_app(app)
    openapi.init_app(app)
    dispatch_views.init_app(app)
    maps_views.init_app(app)
    registry.init_cli(app)
    return app
