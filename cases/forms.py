"""What a request brings, parsed once for every channel: the web forms, the JSON API's JSON
body and its multipart body all go through the same schemas (`cases.schemas`) into the
services' inputs (`ReportInput`, `ActionInput`).

A field that is absent, empty or null is not given. A value the schema refuses is an
InvalidInput naming the field, in the API's error format (400).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TypeVar

from flask import request, session
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from werkzeug.datastructures import MultiDict

from cases.intake import ReportInput
from cases.lifecycle import ActionInput
from cases.photos import Upload
from cases.schemas import ActionUpload, ReportUpload
from gridmgmt.kernel.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)


def uploads(files: MultiDict[str, Any], name: str = "photos") -> list[Upload]:
    """The non-empty files of a multipart field."""
    return [Upload(f.filename or "photo", f.read()) for f in files.getlist(name) if f.filename]


def request_fields() -> Mapping[str, Any]:
    """The body's fields: a JSON object's members, else the form (urlencoded or multipart).

    Raises:
        InvalidInput: a JSON body that is not an object.
    """
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise InvalidInput("the body must be a JSON object")
        return body
    return request.form


def given(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that carry a value (a form's first value of each name)."""
    return {k: v for k, v in fields.items() if v is not None and v != ""}


def invalid(error: ErrorDetails) -> InvalidInput:
    """A schema's refusal as an InvalidInput naming the field, in words a person reads."""
    name = str(error["loc"][0]) if error["loc"] else "body"
    kind, ctx = error["type"], error.get("ctx", {})
    match kind:
        case "missing":
            return InvalidInput("%(name)s is required", field=name, name=name)
        case "int_parsing" | "int_type" | "int_from_float" | "int_parsing_size":
            return InvalidInput("%(name)s must be a whole number", field=name, name=name)
        case "float_parsing" | "float_type" | "finite_number":
            return InvalidInput("%(name)s must be a number", field=name, name=name)
        case "bool_parsing" | "bool_type":
            return InvalidInput("%(name)s must be true or false", field=name, name=name)
        case "string_type":
            return InvalidInput("%(name)s must be text", field=name, name=name)
        case "greater_than_equal":
            limit = ctx["ge"]
            return InvalidInput(
                "%(name)s must be at least %(limit)s", field=name, name=name, limit=limit
            )
        case "less_than_equal":
            limit = ctx["le"]
            return InvalidInput(
                "%(name)s must be at most %(limit)s", field=name, name=name, limit=limit
            )
        case "string_too_long":
            return InvalidInput(
                "%(name)s has at most %(limit)s characters",
                field=name,
                name=name,
                limit=ctx["max_length"],
            )
        case "string_pattern_mismatch":
            return InvalidInput(
                "%(name)s must match %(pattern)s", field=name, name=name, pattern=ctx["pattern"]
            )
        case "too_long":
            return InvalidInput(
                "at most %(limit)s %(name)s at a time, not %(count)s",
                field=name,
                name=name,
                limit=ctx["max_length"],
                count=ctx["actual_length"],
            )
    return InvalidInput("%(name)s is not valid", field=name, name=name)


def parse(schema: type[M], fields: Mapping[str, Any]) -> M:
    """The fields validated by `schema`.

    Raises:
        InvalidInput: the first field the schema refuses.
    """
    try:
        return schema.model_validate(given(fields))
    except ValidationError as err:
        raise invalid(err.errors(include_url=False)[0]) from None


def report_input(fields: Mapping[str, Any], files: MultiDict[str, Any]) -> ReportInput:
    """A report from the web form, the API's JSON body or its multipart body."""
    body = parse(ReportUpload, {**fields, "photos": uploads(files)})
    data = body.to_input(body.photos, request.headers.get("Idempotency-Key"))
    return replace(data, client_scope=client_scope())


def client_scope() -> str:
    """Who an anonymous reporter is, to scope their idempotency keys (`intake.scoped_key`):
    their browser session (the CSRF secret it holds), else their address."""
    token = session.get("csrf_token")
    return f"s:{token}" if isinstance(token, str) and token else f"ip:{request.remote_addr}"


def action_input(fields: Mapping[str, Any], files: MultiDict[str, Any]) -> ActionInput:
    """What an action's form, JSON body or multipart body supplies."""
    body = parse(ActionUpload, {**fields, "photos": uploads(files)})
    return body.to_input(body.photos)
