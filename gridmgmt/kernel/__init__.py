"""The kernel: what every domain package stands on. It imports nothing above it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Bind the kernel's extensions: logs and metrics (first: they time and name each
    request), database, Redis, errors, languages, sign-in, commands."""
    from gridmgmt.kernel import cli, i18n, logs, metrics, security, settings, web
    from gridmgmt.kernel.db import db
    from gridmgmt.kernel.http_errors import register_error_handlers
    from gridmgmt.kernel.queue import queues

    logs.init_app(app)
    metrics.init_app(app)
    db.init_app(app)
    queues.init_app(app)
    register_error_handlers(app)
    i18n.init_app(app)
    web.init_app(app)
    security.init_app(app)
    settings.init_app(app)
    cli.init_app(app)
