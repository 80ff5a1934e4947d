"""The app shell: the factory. It stands on top and may import every package."""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from gridmgmt.kernel.config import Config


def create_app(config: Config | dict[str, Any] | None = None) -> Flask:
    """Build the Flask app from `config` (a Config, overrides as a dict, or the environment)."""
    import cases
    import dispatch
    import grids
    import maps
    from gridmgmt import kernel
    from gridmgmt.app import admin, calendars, cli, health, home, openapi, registry, security
    from gridmgmt.kernel import key_uses, partitions, ratelimit

    app = Flask("gridmgmt")  # templates and static files of the shell live in gridmgmt/
    settings = config if isinstance(config, Config) else Config.from_env()
    app.config.update(settings.as_flask())
    if isinstance(config, dict):
        app.config.update(config)  # overrides, including Flask's and extensions' own keys

    registry.load_models()
    kernel.init_app(app)
    partitions.init_app(app)  # the event logs' monthly partitions: settings, periodic job
    key_uses.init_app(app)  # the api keys' use counts, folded from Redis every minute
    health.init_app(app)
    home.init_app(app)
    security.init_app(app)  # the administrators' audit trail
    admin.init_app(app)  # setup check, people, api keys, the audit log of their changes
    calendars.init_app(app)  # the business calendars: year view, holidays, uploads
    # Each domain package wires its own pages, APIs, commands and periodic jobs.
    for package in (grids, cases, dispatch, maps):
        package.init_app(app)
    openapi.init_app(app)
    cli.init_app(app)
    ratelimit.init_app(app)
    if app.config["TRUSTED_PROXIES"] > 0:  # else X-Forwarded-* from anyone are ignored
        hops = int(app.config["TRUSTED_PROXIES"])
        proxied = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
        app.wsgi_app = proxied  # type: ignore[method-assign]
    return app
