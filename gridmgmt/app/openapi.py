"""OpenAPI 3.1 description of the HTTP APIs: Open311 GeoReport v2 and the staff JSON API.

The objects' schemas are generated from `cases.schemas`, the definitions the APIs validate
and serialise with; this module adds what no object says: the paths, their parameters and
statuses, and Open311's XML element names (taken from `cases.open311`'s own tables).
`GET /openapi.json` serves the description (built in code, so it follows the app's settings);
`GET /openapi` is a small page listing every operation. The description is kept truthful by
`tests/open311/test_schemathesis.py`, which fuzzes every operation against it.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from markupsafe import Markup, escape
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

from cases import schemas
from cases.intake import IDEMPOTENCY_KEY
from cases.open311 import DEFAULT_DAYS, MAX_PAGE_SIZE, PLURALS
from gridmgmt.kernel.settings import city_settings

bp = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
JSON = "application/json"
XML = "text/xml"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
OPEN311_TAG = "Open311 GeoReport v2"
STAFF_TAG = "Staff JSON API"
REF = "#/components/schemas/{model}"
IDEMPOTENCY_PATTERN = rf"^({IDEMPOTENCY_KEY})?$"
# The element each Open311 record is written as (`respond(fmt, root, item, ...)`).
XML_NAMES = {
    "Open311ErrorEntry": "error",
    "DiscoveryEndpoint": "endpoint",
    "Discovery": "discovery",
    "Service": "service",
    "AttributeValue": "value",
    "ServiceAttribute": "attribute",
    "ServiceDefinition": "service_definition",
    "ServiceRequest": "request",
    "CreatedRequest": "request",
    "TokenResult": "request",
}
OPEN311_ERRORS = {
    400: "Invalid input (the description says which field and why), or a malformed request"
    " (text that is not UTF-8, a NUL character, an over-long value): any operation.",
    403: "api_key missing (POST), or an api_key given that is not valid or was revoked (any"
    " operation).",
    404: "Unknown service, request, token, format or jurisdiction.",
    413: "The upload is larger than the server accepts.",
    429: "Too many requests this second for this api_key or client address.",
}
STAFF_ERRORS = {
    400: "Invalid input (`invalid_input`, `invalid_photo`) or a missing/wrong CSRF token "
    "(`bad_request`).",
    403: "Not signed in, or the role may not do this (`forbidden`).",
    404: "No such case, or a case of another unit; no report with this submission_uuid "
    "(of yours) for its photos (`not_found`).",
    409: "The action is not allowed in the case's status, or the case changed since "
    "`version`; a submission_uuid (or photo_uuid, action_uuid) already sent with other "
    "content or by someone else (`conflict`).",
    413: "The upload is larger than the server accepts.",
    422: "The point lies in no unit grid cell of the city (`outside_territory`).",
}


# ---------------------------------------------------------------- small builders


def ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def string(description: str = "", **extra: Any) -> dict[str, Any]:
    """A string schema."""
    return {"type": "string", **({"description": description} if description else {}), **extra}


def open311_content(schema: dict[str, Any]) -> dict[str, Any]:
    """The same body as JSON (`.json`) or XML (`.xml`)."""
    return {JSON: {"schema": schema}, XML: {"schema": schema}}


def open311_errors(*statuses: int) -> dict[str, Any]:
    """The spec's error list for these statuses and the two any operation may answer (400 for
    a malformed request, 403 for a refused api_key); 429 also carries Retry-After."""
    responses: dict[str, Any] = {}
    for status in sorted({400, 403, *statuses}):
        response: dict[str, Any] = {
            "description": OPEN311_ERRORS[status],
            "content": open311_content(ref("Open311Errors")),
        }
        if status == 429:
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer", "minimum": 1},
                }
            }
        responses[str(status)] = response
    return responses


def staff_errors(*statuses: int) -> dict[str, Any]:
    """The staff API's error object for these statuses."""
    return {str(status): answer(STAFF_ERRORS[status], schemas.ApiError) for status in statuses}


# ---------------------------------------------------------------- parameters


def parameters(jurisdiction: str) -> dict[str, Any]:
    """Reusable parameters."""
    return {
        "format": {
            "name": "format",
            "in": "path",
            "required": True,
            "description": "Response format: `json` (application/json) or `xml` (text/xml).",
            "schema": {"type": "string", "enum": ["json", "xml"]},
        },
        "jurisdiction_id": {
            "name": "jurisdiction_id",
            "in": "query",
            "required": False,
            "description": "Optional. Empty or this city's id is accepted; any other id is a 404.",
            "schema": string(example=jurisdiction),
        },
        "api_key": {
            "name": "api_key",
            "in": "query",
            "required": False,
            "description": "The client's Open311 key, when not sent as a form field "
            "(a form field wins). One of the two is required.",
            "schema": string(),
        },
        "service_code": {
            "name": "service_code",
            "in": "path",
            "required": True,
            "description": "A service code of `GET services` (a class of the catalogue).",
            "schema": string(minLength=1, example="C0101"),
        },
        "case_id": {
            "name": "case_id",
            "in": "path",
            "required": True,
            "description": "The case's internal id (`id` of a case).",
            "schema": {"type": "integer", "format": "int64", "minimum": 0},
        },
        "idempotency_header": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "A client-made key: a retry with the same key returns the first "
            "case (200) instead of a new one (201).",
            "schema": string(),
        },
        "staff_idempotency_header": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "A client-made key (8-128 letters, digits or . _ : -): a retry with "
            "the same key returns the first case (200) instead of a new one (201).",
            "schema": string(pattern=IDEMPOTENCY_PATTERN),
        },
    }


# ---------------------------------------------------------------- schemas


class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schema (2020-12, as OpenAPI 3.1 takes it), without the titles it makes
    up from field names."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        """Never: a property's name is its title."""
        return False


def generated(*types: type) -> dict[str, Any]:
    """The component schemas of these models and TypedDicts (and of what they refer to),
    named after the classes."""
    found: dict[str, Any] = {}
    for kind in types:
        schema = TypeAdapter(kind).json_schema(ref_template=REF, schema_generator=_Generator)
        found.update(schema.pop("$defs", {}))
        found[kind.__name__] = schema
    return found


def with_xml(found: dict[str, Any]) -> dict[str, Any]:
    """Open311's records with the element names `cases.open311.respond` writes: the record's
    own (`XML_NAMES`), and a wrapper per list holding one element per entry (`PLURALS`)."""
    for name, element in XML_NAMES.items():
        schema = found[name]
        schema["xml"] = {"name": element}
        for key, prop in schema["properties"].items():
            if prop.get("type") == "array":
                prop["xml"] = {"wrapped": True}
                if "$ref" not in prop["items"]:
                    prop["items"]["xml"] = {"name": PLURALS[key]}
    return found


def open311_form(name: str) -> dict[str, Any]:
    """`POST requests`: the declared fields, and `attribute[CODE]` answers besides them."""
    return {
        **OPEN311_COMPONENTS[name],
        "additionalProperties": {"type": "string"},
        "description": "Answers to the service's attributes go in free-form fields named "
        "`attribute[CODE]` (e.g. `attribute[cover_state]=missing`), checked against the "
        "service definition: an unknown attribute, a missing required one or a value outside "
        "its list is a 400. Other unknown fields are ignored.",
    }


def wrapped_list(item: str, xml_name: str, **extra: Any) -> dict[str, Any]:
    """An array of `item`; in XML an element `xml_name` holding one element per entry (named
    by the item schema's own `xml.name`)."""
    return {
        "type": "array",
        "items": ref(item),
        "xml": {"name": xml_name, "wrapped": True},
        **extra,
    }


OPEN311_COMPONENTS = with_xml(generated(*schemas.OPEN311_RECORDS))


def components() -> dict[str, Any]:
    """Component schemas of both APIs: generated from `cases.schemas`, plus Open311's lists."""
    one = {"minItems": 1, "maxItems": 1}
    return {
        **OPEN311_COMPONENTS,
        "Open311RequestForm": open311_form("Open311RequestForm"),
        "Open311Upload": open311_form("Open311Upload"),
        "Open311Errors": wrapped_list("Open311ErrorEntry", "errors", minItems=1),
        "Services": wrapped_list("Service", "services"),
        "ServiceRequests": wrapped_list("ServiceRequest", "service_requests"),
        "OneServiceRequest": wrapped_list("ServiceRequest", "service_requests", **one),
        "CreatedRequests": wrapped_list("CreatedRequest", "service_requests", **one),
        "TokenResults": wrapped_list("TokenResult", "service_requests", **one),
        **generated(*schemas.STAFF_MODELS),
    }


# ---------------------------------------------------------------- paths


def p(name: str) -> dict[str, str]:
    """A reference to a component parameter."""
    return {"$ref": f"#/components/parameters/{name}"}


def ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A 200/201 Open311 body in both formats."""
    return {"description": description, "content": open311_content(schema)}


def open311_paths() -> dict[str, Any]:
    """The six Open311 methods (and the singular service path some clients use)."""
    definition = {
        "tags": [OPEN311_TAG],
        "summary": "A service's definition: the attributes a client must or may send",
        "parameters": [p("service_code"), p("format")],
        "responses": {
            "200": ok("The definition.", ref("ServiceDefinition")),
            **open311_errors(404),
        },
    }
    prefix = "/open311/v2"
    return {
        f"{prefix}/discovery.{{format}}": {
            "get": {
                "tags": [OPEN311_TAG],
                "operationId": "open311Discovery",
                "summary": "Where this endpoint is and what it speaks",
                "parameters": [p("format")],
                "responses": {"200": ok("Discovery.", ref("Discovery")), **open311_errors(404)},
            }
        },
        f"{prefix}/services.{{format}}": {
            "get": {
                "tags": [OPEN311_TAG],
                "operationId": "open311ListServices",
                "summary": "Every active class of the catalogue",
                "parameters": [p("format"), p("jurisdiction_id")],
                "responses": {"200": ok("The services.", ref("Services")), **open311_errors(404)},
            }
        },
        f"{prefix}/services/{{service_code}}.{{format}}": {
            "get": {**definition, "operationId": "open311ServiceDefinition"}
        },
        f"{prefix}/service/{{service_code}}.{{format}}": {
            "get": {
                **definition,
                "operationId": "open311ServiceDefinitionSingular",
                "summary": "The same definition at the singular path",
            }
        },
        f"{prefix}/requests.{{format}}": {
            "get": {
                "tags": [OPEN311_TAG],
                "operationId": "open311ListRequests",
                "summary": "Service requests by id list, or by service, period and status",
                "description": "Newest first. Without `service_request_id`, the last "
                f"{DEFAULT_DAYS} days before `end_date` (default: now) unless `start_date` is "
                "given.",
                "parameters": [
                    p("format"),
                    p("jurisdiction_id"),
                    {
                        "name": "service_request_id",
                        "in": "query",
                        "description": "Comma-separated ids; when given, the other filters "
                        "are ignored.",
                        "schema": string(),
                    },
                    {
                        "name": "service_code",
                        "in": "query",
                        "description": "Comma-separated service codes.",
                        "schema": string(),
                    },
                    {
                        "name": "start_date",
                        "in": "query",
                        "description": "W3C date-time (UTC when no offset is given).",
                        "schema": string(format="date-time"),
                    },
                    {
                        "name": "end_date",
                        "in": "query",
                        "description": "W3C date-time, not before start_date.",
                        "schema": string(format="date-time"),
                    },
                    {
                        "name": "status",
                        "in": "query",
                        "schema": string(enum=["open", "closed"]),
                    },
                    {
                        "name": "page",
                        "in": "query",
                        "description": "From 1 (smaller values read as 1).",
                        "schema": {"type": "integer", "minimum": 1, "default": 1},
                    },
                    {
                        "name": "page_size",
                        "in": "query",
                        "description": f"1 to {MAX_PAGE_SIZE} (values outside are clamped).",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                    },
                ],
                "responses": {
                    "200": ok("The matching requests.", ref("ServiceRequests")),
                    **open311_errors(400, 404),
                },
            },
            "post": {
                "tags": [OPEN311_TAG],
                "operationId": "open311CreateRequest",
                "summary": "File a service request: the case exists from the first moment",
                "description": "A normal key's report waits for the operator (`reported`); "
                "a trusted key's is filed and queued for dispatch at once. A retry with the "
                "same `Idempotency-Key` (and `device_id`) returns the first request with 200.",
                "parameters": [
                    p("format"),
                    p("api_key"),
                    p("jurisdiction_id"),
                    p("idempotency_header"),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        FORM: {"schema": ref("Open311RequestForm")},
                        MULTIPART: {
                            "schema": ref("Open311Upload"),
                            "encoding": {
                                "media": {"contentType": "image/jpeg, image/png, image/webp"}
                            },
                        },
                    },
                },
                "responses": {
                    "201": ok("Created.", ref("CreatedRequests")),
                    "200": ok("A retry: the first request.", ref("CreatedRequests")),
                    **open311_errors(400, 403, 404, 413, 429),
                },
            },
        },
        f"{prefix}/requests/{{service_request_id}}.{{format}}": {
            "get": {
                "tags": [OPEN311_TAG],
                "operationId": "open311GetRequest",
                "summary": "One service request, as a one-element list",
                "parameters": [
                    {
                        "name": "service_request_id",
                        "in": "path",
                        "required": True,
                        "schema": string(minLength=1, example="20261123000001"),
                    },
                    p("format"),
                ],
                "responses": {
                    "200": ok("The request, as a one-element list.", ref("OneServiceRequest")),
                    **open311_errors(404),
                },
            }
        },
        f"{prefix}/tokens/{{token}}.{{format}}": {
            "get": {
                "tags": [OPEN311_TAG],
                "operationId": "open311GetToken",
                "summary": "The service request id a token stands for",
                "parameters": [
                    {
                        "name": "token",
                        "in": "path",
                        "required": True,
                        "schema": string(minLength=1),
                    },
                    p("format"),
                ],
                "responses": {
                    "200": ok("The id.", ref("TokenResults")),
                    **open311_errors(404),
                },
            }
        },
    }


def answer(description: str, model: type) -> dict[str, Any]:
    """A staff API answer: the model's JSON."""
    return {"description": description, "content": {JSON: {"schema": ref(model.__name__)}}}


def body(fields: type, upload: type, required: bool) -> dict[str, Any]:
    """A staff API body: JSON or form fields, or multipart with the photos."""
    return {
        "required": required,
        "content": {
            JSON: {"schema": ref(fields.__name__)},
            FORM: {"schema": ref(fields.__name__)},
            MULTIPART: {"schema": ref(upload.__name__)},
        },
    }


def staff_paths() -> dict[str, Any]:
    """The staff and reporters' JSON API."""
    signed_in = [{"sessionCookie": []}]
    with_csrf = [{"sessionCookie": [], "csrfToken": []}]
    reported = schemas.ReportedCase
    action = {"name": "action", "in": "path", "required": True, "schema": ref("Action")}
    return {
        "/api/reports": {
            "post": {
                "tags": [STAFF_TAG],
                "operationId": "apiCreateReport",
                "summary": "Report a problem (signed in or anonymous)",
                "description": "Anonymous visitors report as citizens; they still need the "
                "session cookie that holds their CSRF token.",
                "security": with_csrf,
                "parameters": [
                    p("staff_idempotency_header"),
                    {
                        "name": "X-Flash",
                        "in": "header",
                        "required": False,
                        "description": "`1`: the next page of this session says the case was "
                        "reported (the report page sets it, as it goes to the case next); "
                        "without it, nothing is kept for the next page.",
                        "schema": string(enum=["1"]),
                    },
                ],
                "requestBody": body(schemas.ReportBody, schemas.ReportUpload, required=True),
                "responses": {
                    "201": answer("The new case.", reported),
                    "200": answer("A retry with the same key: the first case.", reported),
                    **staff_errors(400, 403, 409, 413, 422),
                },
            }
        },
        "/api/reports/{submission_uuid}/photos": {
            "post": {
                "tags": [STAFF_TAG],
                "operationId": "apiAddPhoto",
                "summary": "One photo of a report sent before with its submission_uuid",
                "description": "A phone's outbox sends a report first, then each photo in a "
                "request of its own, so that a weak signal restarts one photo, not all. Only "
                "the report's reporter (the same account; anonymous: whoever holds the "
                "submission_uuid) adds photos, at most 6 in all.",
                "security": with_csrf,
                "parameters": [
                    {
                        "name": "submission_uuid",
                        "in": "path",
                        "required": True,
                        "description": "The `submission_uuid` the report was sent with.",
                        "schema": string(format="uuid"),
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        MULTIPART: {
                            "schema": ref(schemas.PhotoUpload.__name__),
                            "encoding": {
                                "photo": {"contentType": "image/jpeg, image/png, image/webp"}
                            },
                        }
                    },
                },
                "responses": {
                    "201": answer("Stored.", schemas.AttachedPhoto),
                    "200": answer(
                        "A repeat of a photo_uuid this report has: nothing stored.",
                        schemas.AttachedPhoto,
                    ),
                    **staff_errors(400, 404, 409, 413),
                },
            }
        },
        "/api/cases/{case_id}": {
            "get": {
                "tags": [STAFF_TAG],
                "operationId": "apiGetCase",
                "summary": "One case the signed-in user may see, with its events",
                "security": signed_in,
                "parameters": [p("case_id")],
                "responses": {
                    "200": answer("The case.", schemas.CaseDetail),
                    **staff_errors(403, 404),
                },
            }
        },
        "/api/cases/{case_id}/actions/{action}": {
            "post": {
                "tags": [STAFF_TAG],
                "operationId": "apiAct",
                "summary": "Apply an action of the lifecycle to a case (others are a 400)",
                "security": with_csrf,
                "parameters": [p("case_id"), action],
                "requestBody": body(schemas.ActionBody, schemas.ActionUpload, required=False),
                "responses": {
                    "200": answer(
                        "The case after the action, with its events.", schemas.CaseDetail
                    ),
                    **staff_errors(400, 403, 404, 409, 413),
                },
            }
        },
    }


def build_spec(
    server_url: str = "/", jurisdiction: str = "", city: str = "", cookie: str = "session"
) -> dict[str, Any]:
    """The whole OpenAPI document (`cookie`: the name of Flask's session cookie)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"gridmgmt API{f' ({city})' if city else ''}",
            "version": API_VERSION,
            "description": "Open311 GeoReport v2 at `/open311/v2/` (JSON or XML by the path's "
            "extension; errors are the spec's list of `{code, description}`) and the staff "
            "JSON API at `/api/` (session cookie plus the `X-CSRFToken` header; errors are "
            '`{"error": {"code", "message"}}`). Reporters\' contact details are never '
            "returned.",
        },
        "servers": [{"url": server_url}],
        "tags": [
            {"name": OPEN311_TAG, "description": "Apps and other systems, with an api_key."},
            {"name": STAFF_TAG, "description": "The city's own pages and phones."},
        ],
        "paths": {**open311_paths(), **staff_paths()},
        "components": {
            "schemas": components(),
            "parameters": parameters(jurisdiction),
            "securitySchemes": {
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": cookie,
                    "description": "Sign in at `/login`.",
                },
                "csrfToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-CSRFToken",
                    "description": 'From the page\'s `<meta name="csrf-token">`.',
                },
            },
        },
    }


@cache
def _built_spec(*args: str) -> dict[str, Any]:
    """The description for these settings, built once per process (it only changes with them)."""
    return build_spec(*args)


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI description."""
    return jsonify(
        _built_spec(
            request.script_root or "/",
            current_app.config.get("OPEN311_JURISDICTION", ""),
            city_settings().name,
            current_app.config.get("SESSION_COOKIE_NAME", "session"),
        )
    )


def _markdown_code(text: str) -> Markup:
    """Escape `text`, with its `backticked` parts as <code>."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


@bp.get("/openapi")
def openapi_page() -> Response:
    """A plain page listing every operation, with a link to the description."""
    spec = _built_spec("/", "", city_settings().name)
    rows = [
        f"<tr><td><code>{escape(method.upper())}</code></td>"
        f"<td><code>{escape(path)}</code></td>"
        f"<td>{escape(operation.get('summary', ''))}</td>"
        f"<td>{escape(', '.join(operation.get('tags', [])))}</td></tr>"
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]
    title = escape(spec["info"]["title"])
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "th,td{text-align:left;padding:.2em .8em}</style></head><body>"
        f"<h1>{title}</h1><p>{_markdown_code(spec['info']['description'])}</p>"
        '<p>OpenAPI 3.0.3 description: <a href="openapi.json">openapi.json</a></p>'
        "<table><thead><tr><th>method</th><th>path</th><th>what</th><th>API</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></body></html>"
    )
    return Response(html, mimetype="text/html")


def init_app(app: Flask) -> None:
    """Register the description and its page."""
    app.register_blueprint(bp)
