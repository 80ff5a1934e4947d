"""OpenAPI 3.0.3 description of the HTTP APIs: Open311 GeoReport v2 and the staff JSON API.

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

from cases.intake import IDEMPOTENCY_KEY, MAX_DESCRIPTION
from cases.lifecycle import MAX_PHOTOS, Action
from cases.models import CaseStatus
from cases.open311 import DEFAULT_DAYS, MAX_PAGE_SIZE

bp = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.0.0"
JSON = "application/json"
XML = "text/xml"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
OPEN311_TAG = "Open311 GeoReport v2"
STAFF_TAG = "Staff JSON API"
CASE_NUMBER_PATTERN = r"^[0-9]{14,24}$"
IDEMPOTENCY_PATTERN = rf"^({IDEMPOTENCY_KEY})?$"
OPEN311_ERRORS = {
    400: "Invalid input: the description says which field and why.",
    403: "api_key missing or not valid.",
    404: "Unknown service, request, token, format or jurisdiction.",
    413: "The upload is larger than the server accepts.",
    429: "Too many requests this second for this api_key or client address.",
}
STAFF_ERRORS = {
    400: "Invalid input (`invalid_input`, `invalid_photo`) or a missing/wrong CSRF token "
    "(`bad_request`).",
    403: "Not signed in, or the role may not do this (`forbidden`).",
    404: "No such case, or a case of another unit (`not_found`).",
    409: "The action is not allowed in the case's status, or the case changed since "
    "`version` (`conflict`).",
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


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema, or null."""
    return {**schema, "nullable": True}


def obj(properties: dict[str, Any], xml_name: str | None = None, **extra: Any) -> dict[str, Any]:
    """A closed object whose properties are all required."""
    schema: dict[str, Any] = {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
        **extra,
    }
    if xml_name:
        schema["xml"] = {"name": xml_name}
    return schema


def wrapped_list(item: str, xml_name: str, **extra: Any) -> dict[str, Any]:
    """An array of `item`; in XML an element `xml_name` holding one element per entry (named
    by the item schema's own `xml.name`)."""
    return {
        "type": "array",
        "items": ref(item),
        "xml": {"name": xml_name, "wrapped": True},
        **extra,
    }


def open311_content(schema: dict[str, Any]) -> dict[str, Any]:
    """The same body as JSON (`.json`) or XML (`.xml`)."""
    return {JSON: {"schema": schema}, XML: {"schema": schema}}


def open311_errors(*statuses: int) -> dict[str, Any]:
    """The spec's error list for these statuses (429 also carries Retry-After)."""
    responses: dict[str, Any] = {}
    for status in statuses:
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
    return {
        str(status): {
            "description": STAFF_ERRORS[status],
            "content": {JSON: {"schema": ref("ApiError")}},
        }
        for status in statuses
    }


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


def schemas() -> dict[str, Any]:
    """Component schemas of both APIs."""
    statuses = [s.value for s in CaseStatus]
    date_time = string(format="date-time")
    return {
        # --- Open311
        "Open311Error": obj(
            {
                "code": {
                    "type": "integer",
                    "minimum": 400,
                    "maximum": 499,
                    "description": "The HTTP status.",
                },
                "description": string("What is wrong, for people."),
            },
            xml_name="error",
        ),
        "Open311Errors": wrapped_list("Open311Error", "errors", minItems=1),
        "DiscoveryEndpoint": obj(
            {
                "specification": string(format="uri"),
                "url": string("Base URL of this endpoint.", format="uri"),
                "changeset": date_time,
                "type": string(enum=["production", "test"]),
                "formats": {
                    "type": "array",
                    "items": string(enum=[JSON, XML], xml={"name": "format"}),
                    "xml": {"wrapped": True},
                },
            },
            xml_name="endpoint",
        ),
        "Discovery": obj(
            {
                "changeset": date_time,
                "contact": string(),
                "key_service": string("Where to ask for an api_key."),
                "endpoints": {
                    "type": "array",
                    "items": ref("DiscoveryEndpoint"),
                    "xml": {"wrapped": True},
                },
            },
            xml_name="discovery",
        ),
        "Service": obj(
            {
                "service_code": string("Class code: kind letter + major + minor.", example="C0101"),
                "service_name": string(),
                "description": string(),
                "metadata": {
                    "type": "boolean",
                    "description": "True when the service has attributes (see its definition).",
                },
                "type": string(enum=["realtime", "batch", "blackbox"]),
                "keywords": string("Comma-separated keywords."),
                "group": string(example="Component: Public facilities"),
            },
            xml_name="service",
        ),
        "Services": wrapped_list("Service", "services"),
        "AttributeValue": obj({"key": string(), "name": string()}, xml_name="value"),
        "ServiceAttribute": obj(
            {
                "variable": {"type": "boolean"},
                "code": string("Send the answer as the form field `attribute[CODE]`."),
                "datatype": string(
                    enum=[
                        "string",
                        "number",
                        "datetime",
                        "text",
                        "singlevaluelist",
                        "multivaluelist",
                    ]
                ),
                "required": {"type": "boolean"},
                "datatype_description": string(),
                "order": {"type": "integer", "minimum": 1},
                "description": string(),
                "values": {
                    "type": "array",
                    "items": ref("AttributeValue"),
                    "xml": {"wrapped": True},
                    "description": "The allowed keys of a (single|multi)valuelist; else empty.",
                },
            },
            xml_name="attribute",
        ),
        "ServiceDefinition": obj(
            {
                "service_code": string(),
                "attributes": {
                    "type": "array",
                    "items": ref("ServiceAttribute"),
                    "xml": {"wrapped": True},
                },
            },
            xml_name="service_definition",
        ),
        "ServiceRequest": obj(
            {
                "service_request_id": string("The case number.", pattern=CASE_NUMBER_PATTERN),
                "status": string(enum=["open", "closed"]),
                "status_notes": string("The last note on the case, else its detailed status."),
                "service_name": string(),
                "service_code": string(),
                "description": string(),
                "agency_responsible": nullable(
                    string("The unit handling the case, once dispatched.")
                ),
                "service_notice": string(),
                "requested_datetime": date_time,
                "updated_datetime": date_time,
                "expected_datetime": nullable(string("The deadline.", format="date-time")),
                "address": string(),
                "address_id": string(),
                "zipcode": string(),
                "lat": {"type": "number", "minimum": -90, "maximum": 90},
                "long": {"type": "number", "minimum": -180, "maximum": 180},
                "media_url": string(),
            },
            xml_name="request",
            description="A service request as the public sees it: never the reporter or "
            "their contact details.",
        ),
        "ServiceRequests": wrapped_list("ServiceRequest", "service_requests"),
        "OneServiceRequest": wrapped_list(
            "ServiceRequest", "service_requests", minItems=1, maxItems=1
        ),
        "CreatedRequest": obj(
            {
                "service_request_id": string(pattern=CASE_NUMBER_PATTERN),
                "token": string("Resolves to the id at `GET tokens/{token}`.", minLength=1),
                "service_notice": string(),
                "account_id": string(),
            },
            xml_name="request",
        ),
        "CreatedRequests": wrapped_list(
            "CreatedRequest", "service_requests", minItems=1, maxItems=1
        ),
        "TokenResult": obj(
            {
                "service_request_id": string(pattern=CASE_NUMBER_PATTERN),
                "token": string(),
            },
            xml_name="request",
        ),
        "TokenResults": wrapped_list("TokenResult", "service_requests", minItems=1, maxItems=1),
        "Open311RequestForm": open311_form(multipart=False),
        "Open311RequestMultipart": open311_form(multipart=True),
        # --- staff JSON API
        "ApiError": obj(
            {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": string("Machine code, e.g. invalid_input, not_found, conflict."),
                        "message": string("For people."),
                    },
                    "additionalProperties": True,
                    "description": "May carry details, e.g. `field`, `filename`, `reason`.",
                }
            }
        ),
        "CaseEvent": obj(
            {
                "action": string(enum=[a.value for a in Action]),
                "from": nullable(string(enum=statuses)),
                "to": string(enum=statuses),
                "role": string(),
                "note": string(),
                "at": date_time,
            }
        ),
        "CaseSummary": obj(case_properties()),
        "ReportedCase": obj(
            {**case_properties(), "url": string("The case page, or the public tracking page.")}
        ),
        "Case": obj(
            {
                **case_properties(),
                "events": {"type": "array", "items": ref("CaseEvent")},
            }
        ),
        "ReportBody": report_body("json"),
        "ReportForm": report_body("form"),
        "ReportMultipart": report_body("multipart"),
        "ActionBody": action_body(multipart=False),
        "ActionMultipart": action_body(multipart=True),
    }


def case_properties() -> dict[str, Any]:
    """The fields of a case in the staff API (never the reporter's contact details)."""
    return {
        "id": {"type": "integer", "format": "int64"},
        "number": string(pattern=CASE_NUMBER_PATTERN),
        "status": string(enum=[s.value for s in CaseStatus]),
        "category": string("Class code."),
        "category_name": string("In the request's language."),
        "lon": {"type": "number", "minimum": -180, "maximum": 180},
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "address": nullable(string()),
        "urgent": {"type": "boolean"},
        "deadline": nullable(string(format="date-time")),
        "unit_id": nullable({"type": "integer"}),
        "version": {"type": "integer", "minimum": 1, "description": "Send back as `version`."},
        "rework_count": {"type": "integer", "minimum": 0},
        "reported_at": string(format="date-time"),
    }


def open311_form(multipart: bool) -> dict[str, Any]:
    """The fields of `POST requests` (form-encoded, or multipart with photos)."""
    properties: dict[str, Any] = {
        "api_key": string("The client's key (or the `api_key` query parameter)."),
        "jurisdiction_id": string("Optional: empty or this city's id."),
        "service_code": string("A code of `GET services`.", example="E0102"),
        "lat": {
            "type": "number",
            "minimum": -90,
            "maximum": 90,
            "description": "WGS 84 latitude; the point must lie inside the city.",
        },
        "long": {
            "type": "number",
            "minimum": -180,
            "maximum": 180,
            "description": "WGS 84 longitude.",
        },
        "address_string": string(
            "Kept with the case. This city does not geocode: lat and long are required."
        ),
        "address_id": string("Not used (no address database): lat and long are required."),
        "description": string(maxLength=MAX_DESCRIPTION),
        "email": string("Never published."),
        "device_id": string("Scopes the idempotency key with the api_key."),
        "account_id": string("Echoed in the response."),
        "first_name": string("Never published."),
        "last_name": string("Never published."),
        "phone": string("Never published."),
        "media_url": string(
            "A photo the client hosts: an http(s) URL.", pattern=r"^(https?://\S{1,2000})?$"
        ),
        "idempotency_key": string("As the `Idempotency-Key` header (the header wins)."),
    }
    if multipart:
        properties["media"] = {
            "type": "array",
            "maxItems": MAX_PHOTOS,
            "items": string(format="binary"),
            "description": "Photos: JPEG, PNG or WebP, up to 10 MB each. They are decoded, "
            "re-encoded without metadata and kept with the case.",
        }
    return {
        "type": "object",
        "required": ["service_code", "lat", "long"],
        "properties": properties,
        "additionalProperties": {"type": "string"},
        "description": "Answers to the service's attributes go in free-form fields named "
        "`attribute[CODE]` (e.g. `attribute[cover_state]=missing`), checked against the "
        "service definition: an unknown attribute, a missing required one or a value outside "
        "its list is a 400. Other unknown fields are ignored.",
    }


def report_body(kind: str) -> dict[str, Any]:
    """The fields of `POST /api/reports` as `json`, `form` or `multipart` (with photos)."""
    properties: dict[str, Any] = {
        "category": string("Class code.", example="E0102"),
        "lon": {"type": "number", "minimum": -180, "maximum": 180},
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "description": string(maxLength=MAX_DESCRIPTION),
        "address": string(),
        "urgent": {"type": "boolean"}
        if kind == "json"
        else string("`1`, `on` or `true` for urgent.", enum=["", "0", "1", "on", "true", "false"]),
        "idempotency_key": string(
            "8-128 letters, digits or . _ : - (or the Idempotency-Key header).",
            pattern=IDEMPOTENCY_PATTERN,
        ),
        "name": string("Reporter's contact, never published."),
        "phone": string("Reporter's contact, never published."),
        "email": string("Reporter's contact, never published."),
    }
    if kind == "multipart":
        properties["photos"] = {
            "type": "array",
            "maxItems": MAX_PHOTOS,
            "items": string(format="binary"),
            "description": "JPEG, PNG or WebP, up to 10 MB each.",
        }
    return {"type": "object", "required": ["category", "lon", "lat"], "properties": properties}


def action_body(multipart: bool) -> dict[str, Any]:
    """The fields of `POST /api/cases/{case_id}/actions/{action}` (each action reads its own)."""
    properties: dict[str, Any] = {
        "version": {
            "type": "integer",
            "minimum": 0,
            "description": "The version you saw: a stale one is a 409.",
        },
        "reason": string("Return, reject, invalidate, extension and suspension requests."),
        "note": string("Report done, check fail..."),
        "unit_id": {"type": "integer", "minimum": 0, "description": "Dispatch to this unit."},
        "inspector_id": {"type": "integer", "minimum": 0, "description": "Who checks on site."},
        "merge_into": string("Case number to merge into."),
        "extra_value": string("Extension asked: amount..."),
        "extra_unit": string("...in `hours` or `days`."),
    }
    if multipart:
        properties["photos"] = {
            "type": "array",
            "maxItems": MAX_PHOTOS,
            "items": string(format="binary"),
        }
    return {"type": "object", "properties": properties}


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
                            "schema": ref("Open311RequestMultipart"),
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


def staff_paths() -> dict[str, Any]:
    """The staff and reporters' JSON API."""
    signed_in = [{"sessionCookie": []}]
    with_csrf = [{"sessionCookie": [], "csrfToken": []}]
    return {
        "/api/reports": {
            "post": {
                "tags": [STAFF_TAG],
                "operationId": "apiCreateReport",
                "summary": "Report a problem (signed in or anonymous)",
                "description": "Anonymous visitors report as citizens; they still need the "
                "session cookie that holds their CSRF token.",
                "security": with_csrf,
                "parameters": [p("staff_idempotency_header")],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {"schema": ref("ReportBody")},
                        FORM: {"schema": ref("ReportForm")},
                        MULTIPART: {"schema": ref("ReportMultipart")},
                    },
                },
                "responses": {
                    "201": {
                        "description": "The new case.",
                        "content": {JSON: {"schema": ref("ReportedCase")}},
                    },
                    "200": {
                        "description": "A retry with the same key: the first case.",
                        "content": {JSON: {"schema": ref("ReportedCase")}},
                    },
                    **staff_errors(400, 403, 413, 422),
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
                    "200": {
                        "description": "The case.",
                        "content": {JSON: {"schema": ref("Case")}},
                    },
                    **staff_errors(403, 404),
                },
            }
        },
        "/api/cases/{case_id}/actions/{action}": {
            "post": {
                "tags": [STAFF_TAG],
                "operationId": "apiAct",
                "summary": "Apply an action of the lifecycle to a case",
                "security": with_csrf,
                "parameters": [
                    p("case_id"),
                    {
                        "name": "action",
                        "in": "path",
                        "required": True,
                        "description": "An action of the transition table (others are a 400).",
                        "schema": string(enum=[a.value for a in Action]),
                    },
                ],
                "requestBody": {
                    "required": False,
                    "content": {
                        JSON: {"schema": ref("ActionBody")},
                        FORM: {"schema": ref("ActionBody")},
                        MULTIPART: {"schema": ref("ActionMultipart")},
                    },
                },
                "responses": {
                    "200": {
                        "description": "The case after the action, with its events.",
                        "content": {JSON: {"schema": ref("Case")}},
                    },
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
            "schemas": schemas(),
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
            current_app.config.get("CITY_NAME", ""),
            current_app.config.get("SESSION_COOKIE_NAME", "session"),
        )
    )


def _markdown_code(text: str) -> Markup:
    """Escape `text`, with its `backticked` parts as <code>."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


@bp.get("/openapi")
def openapi_page() -> Response:
    """A plain page listing every operation, with a link to the description."""
    spec = _built_spec("/", "", current_app.config.get("CITY_NAME", ""))
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
