"""Errors at the edge: domain and HTTP errors answered once, as JSON for the APIs (English),
in an API's own format where one is registered (Open311), else as a page in the reader's
language. The domain errors themselves (`gridmgmt.kernel.errors`) know nothing of HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

from flask import Flask, Response, current_app, jsonify, render_template, request
from flask_babel import gettext
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest, HTTPException

from gridmgmt.kernel.errors import N_, DomainError, InvalidInput, Message

API_PREFIXES = ("/api/", "/healthz", "/readyz")
MAX_JSON_DEPTH = 32  # our bodies nest 2 levels; anything deeper is an attack on a parser
MAX_FIELD_CHARS = 10_000  # any one text value (the longest field, a description, is 4,000)


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


# A client that shows an API's refusals to people as they are (the outbox of the phone app)
# sends this header with "1": the error then also carries `localized`, in the reader's language.
LOCALIZED_HEADER = "X-Localized-Errors"


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
        body = {"code": code, "message": english, **(details or {})}
        if request.headers.get(LOCALIZED_HEADER) == "1":  # a phone's outbox shows it as is
            body["localized"] = message.render(gettext)
        return jsonify(error=body), status
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


def _every(fields: MultiDict[str, str]) -> list[str]:
    """Every name and every value of a form or query string (not only each name's first)."""
    return [*fields.keys(), *(value for values in fields.listvalues() for value in values)]


def _utf8_urlencoded(raw: bytes) -> bool:
    """Whether every name and value of a query string or urlencoded body decodes as UTF-8
    (werkzeug would keep the undecodable bytes as `%FF` text instead)."""
    try:
        unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in a decoded JSON value (iteratively)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if deepest > MAX_JSON_DEPTH:
                break
            pending += [(child, level + 1) for child in item]
    return deepest


def _json_body() -> Any:
    """The JSON body, parsed once (Flask keeps it for the view).

    Raises:
        BadRequest: a body that is not UTF-8 JSON, or nests deeper than MAX_JSON_DEPTH (the
            parser itself fails with a RecursionError, not a ValueError, near 1,000 levels).
    """
    try:
        body = request.get_json()
    except RecursionError:
        raise BadRequest(N_("the JSON body nests too deeply")) from None
    except BadRequest:
        raise BadRequest(N_("the body is not valid JSON")) from None
    if _depth(body) > MAX_JSON_DEPTH:
        raise BadRequest(N_("the JSON body nests too deeply"))
    return body


def register_error_handlers(app: Flask) -> None:
    """Turn domain and HTTP errors into JSON for API paths and a page elsewhere."""

    @app.errorhandler(DomainError)
    def _domain(err: DomainError) -> Response:
        return _respond(err.status, err.code, err.text, err.details)

    @app.before_request
    def _refuse_unstorable_input() -> None:
        """Bodies no view should see, answered 400 before any view or CSRF check reads them:
        NUL (PostgreSQL text cannot store it), a multipart field without a name, text that is
        not UTF-8, JSON that does not parse or nests deeper than any body of ours, and a text
        value longer than MAX_FIELD_CHARS (every free text field has a limit; the schemas
        give most fields a shorter one)."""
        values = [request.path, *_every(request.args)]
        raw, form = [request.query_string], list[str]()
        if request.method in ("POST", "PUT", "PATCH"):
            if request.mimetype == "application/x-www-form-urlencoded":
                raw.append(request.get_data(cache=True))  # the form is parsed from this copy
            if None in request.form or None in request.files:
                raise BadRequest(N_("a form field has no name"))
            form = _every(request.form)
            values += form
            if request.is_json:  # "\u0000" in a JSON string is a NUL too
                values += list(_strings(_json_body()))
        # In a multipart field werkzeug puts U+FFFD for bytes that are not UTF-8.
        if not all(_utf8_urlencoded(part) for part in raw) or any("\ufffd" in v for v in form):
            raise BadRequest(N_("the request is not valid UTF-8"))
        if any("\x00" in v for v in values if isinstance(v, str)):
            raise BadRequest(N_("the request contains a NUL character"))
        if any(len(v) > MAX_FIELD_CHARS for v in values if isinstance(v, str)):
            raise InvalidInput("a text value has at most %(most)s characters", most=MAX_FIELD_CHARS)

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException) -> Response:
        code = (err.name or "error").lower().replace(" ", "_")
        # A description of ours is a msgid (marked with N_); werkzeug's own stay English.
        return _respond(err.code or 500, code, Message(err.description or err.name))
