"""Domain errors with a machine code, mapped to HTTP once, at the edge."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException

if TYPE_CHECKING:
    from flask import Flask, Response


def _untranslated(text: str) -> str:
    return text


def N_(message: str) -> str:
    """Mark `message` for `pybabel extract` without translating it (gettext_noop)."""
    return message


def word(text: str) -> Message:
    """A word the code names at run time (a role, a status, an action) as a message's value:
    translated when the message is shown. The words are marked with `N_` where they are
    listed, so that extraction finds them."""
    return Message(text)


@dataclass(frozen=True)
class Message:
    """Words for people, kept apart from their values until they are shown.

    `text` is the English message id (the key of the gettext catalogue) with `%(name)s`
    fields; `params` fills them. Values that are Messages themselves (a status, a reason)
    are translated too. Nothing ever parses a finished message: the edge renders it in the
    reader's language with `render(gettext)`.
    """

    text: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def render(self, translate: Callable[[str], str] = _untranslated) -> str:
        """The message in the language of `translate` (English by default)."""
        # gettext("") is the catalogue's header, not an empty message.
        template = translate(self.text) if self.text else self.text
        if not self.params:
            return template
        values = {
            name: value.render(translate) if isinstance(value, Message) else value
            for name, value in self.params.items()
        }
        return template % values

    def __str__(self) -> str:
        return self.render()


class DomainError(Exception):
    """Base of the errors the domain raises on purpose: a stable machine `code` (and HTTP
    `status`) per class, and a Message with its parameters for people.

    Args:
        text: the English message id, with `%(name)s` fields (a string literal, so that
            `pybabel extract` finds it), or a ready Message.
        field: the input field at fault, if one is (given to API clients in `details`).
        details: further machine-readable facts for API clients.
        params: the values of the message's fields.
    """

    code = "domain_error"
    status = 400

    def __init__(
        self,
        text: str | Message,
        /,
        *,
        field: str | None = None,
        details: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> None:
        self.text = text if isinstance(text, Message) else Message(text, params)
        self.details: dict[str, Any] = {**({"field": field} if field else {}), **(details or {})}
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The message in English (APIs, logs, the command line)."""
        return self.text.render()

    def render(self, translate: Callable[[str], str]) -> str:
        """The message in the language of `translate` (pages)."""
        return self.text.render(translate)


class InvalidInput(DomainError):
    """A value that can never be right (bad code, malformed file, out-of-range coordinate)."""

    code = "invalid_input"
    status = 400


class NotFound(DomainError):
    """A referenced object does not exist."""

    code = "not_found"
    status = 404


class Conflict(DomainError):
    """The request clashes with the current state (duplicate code, stale transition)."""

    code = "conflict"
    status = 409


class Forbidden(DomainError):
    """The actor may not do this."""

    code = "forbidden"
    status = 403


class OutsideTerritory(DomainError):
    """A point lies in no unit grid cell of the city."""

    code = "outside_territory"
    status = 422


API_PREFIXES = ("/api/", "/healthz", "/readyz")


def wants_json() -> bool:
    """True for the JSON API and health paths: errors there are JSON, elsewhere a page."""
    from flask import request

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
    from flask import current_app, jsonify, render_template, request
    from flask_babel import gettext

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
        from flask import request
        from werkzeug.exceptions import BadRequest

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
