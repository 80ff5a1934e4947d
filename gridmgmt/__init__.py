"""gridmgmt: grid-based urban management case dispatch."""

from __future__ import annotations

from typing import Any

from flask import Flask

from gridmgmt.config import Config


def create_app(config: Config | dict[str, Any] | None = None) -> Flask:
    """Build the Flask app from `config` (a Config, overrides as a dict, or the environment)."""
    from gridmgmt import health, home, registry
    from gridmgmt.db import db
    from gridmgmt.errors import register_error_handlers
    from gridmgmt.queue import queues

    app = Flask(__name__)
    settings = Config.from_env()
    if isinstance(config, Config):
        settings = config
    elif config:
        for key, value in config.items():
            setattr(settings, key, value)
    app.config.update(settings.as_flask())

    registry.load_models()
    db.init_app(app)
    queues.init_app(app)
    register_error_handlers(app)
    health.init_app(app)
    home.init_app(app)
    registry.init_cli(app)
    return app
