"""Errors at the edge: domain and HTTP errors answered once, as JSON for the APIs (English),
in an API's own format where one is registered (Open311), else as a page in the reader's
language. The domain errors themselves (`gridmgmt.kernel.errors`) know nothing of HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response, current_app, jsonify, render_template, request
from flask_babel import gettext
from werkzeug.exceptions import BadRequest, HTTPException

from gridmgmt.kernel.errors import N_, DomainError, Message

API_PREFIXES = ("/api/", "/healthz", "/readyz")


def wants_json() -> bool:
    """True for the JSON API and health paths: errors there are JSON, elsewhere a page."""
    return request.path.startswith(API_PREFIXES) or request.accept_mimetypes.best == (
        "application/json"
    )


ERROR_FORMATS = "gridmgmt.error_formats"


def register_error_format(app: Flask, prefix: str, answer: Callable[[int, str], Any]) -> None:
    """Answer every error under the path `prefix` with `answer(status, message)`: an API with
    its own error format (Open311) gets it for unknown paths and refused requests too."""
    app.extensions.setdefault(ERROR_FORMATS, {})[prefix] = answer


def _respond(
    status: int, code: str, message: Message, details: dict[str, Any] | None = None
) -> Any:
    """The error in the format of the path: an API's own, JSON, or a page. APIs answer in
    English; a page renders the message from the catalogue in the reader's language."""
    english = message.render()
    for prefix, answer in current_app.extensions.get(ERROR_FORMATS, {}).items():
        if request.path.startswith(prefix):
            return answer(status, english)
    if wants_json():
        return jsonify(error={"code": code, "message": english, **(details or {})}), status
    shown = message.render(gettext)
    return render_template("error.html", status=status, code=code, message=shown), status


def _strings(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON value, keys included."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            pending += item


def register_error_handlers(app: Flask) -> None:
    """Turn domain and HTTP errors into JSON for API paths and a page elsewhere."""

    @app.errorhandler(DomainError)
    def _domain(err: DomainError) -> Response:
        return _respond(err.status, err.code, err.text, err.details)

    @app.before_request
    def _refuse_unstorable_input() -> None:
        """NUL cannot be stored in PostgreSQL text, and a multipart field without a name is
        no field: both are bad requests, answered before any view or CSRF check reads them."""
        values = [request.path, *request.args.values()]
        if request.method in ("POST", "PUT", "PATCH"):
            if None in request.form or None in request.files:
                raise BadRequest(N_("a form field has no name"))
            values += list(request.form.values())
            if request.is_json:  # "\u0000" in a JSON string is a NUL too
                values += list(_strings(request.get_json(silent=True)))
        if any("\x00" in v for v in values if isinstance(v, str)):
            raise BadRequest(N_("the request contains a NUL character"))

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException) -> Response:
        code = (err.name or "error").lower().replace(" ", "_")
        # A description of ours is a msgid (marked with N_); werkzeug's own stay English.
        return _respond(err.code or 500, code, Message(err.description or err.name))
