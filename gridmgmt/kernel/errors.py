"""Domain errors with a machine code, mapped to HTTP once, at the edge."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


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


class NotConfigured(DomainError):
    """The city's configuration lacks what this needs (its calendar, say): retrying will not
    help until an administrator fixes it (`flask setup check` says what)."""

    code = "not_configured"
    status = 503


class OutsideTerritory(DomainError):
    """A point lies in no unit grid cell of the city."""

    code = "outside_territory"
    status = 422
