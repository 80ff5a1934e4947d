"""Open311 GeoReport v2 at /open311/v2/: the city's open door for apps and other systems.

JSON or XML by the path's extension; errors are the spec's list of {code, description} with a
4xx status, never an HTML page. Reports enter the same loop as every other report.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET

from flask import Blueprint, Flask, Response, current_app, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import defer, selectinload

from cases import intake, public, queries
from cases.intake import ReportInput
from cases.models import Case, CaseSource, Category
from cases.photos import Upload
from cases.schemas import (
    AttributeValue,
    CreatedRequest,
    Discovery,
    DiscoveryEndpoint,
    Open311ErrorEntry,
    Service,
    ServiceAttribute,
    ServiceDefinition,
    ServiceRequest,
    TokenResult,
    open311_fields,
)
from cases.status import CaseStatus
from cases.views import photo_root
from gridmgmt.kernel import key_uses, ratelimit, security_events
from gridmgmt.kernel.auth import KeyUse, use_api_key
from gridmgmt.kernel.db import db, reads_replica
from gridmgmt.kernel.errors import NotFound
from gridmgmt.kernel.http_errors import register_error_format
from gridmgmt.kernel.i18n import current_lang
from gridmgmt.kernel.models import Unit
from gridmgmt.kernel.queue import queues
from gridmgmt.kernel.security_events import SecurityEventKind

bp = Blueprint("open311", __name__, url_prefix="/open311/v2")
FORMATS = ("json", "xml")
LISTED = sorted(s.value for s in public.LISTED_STATUSES)  # what a listing may show
MAX_PAGE_SIZE = 1000
MAX_PAGE = 100_000
DEFAULT_DAYS = 90


class Open311Error(Exception):
    """An error in the spec's format: a code (the HTTP status) and a description."""

    def __init__(self, status: int, description: str, headers: dict[str, str] | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.headers = headers or {}


XML_HEADER = '<?xml version="1.0" encoding="utf-8"?>'
PLURALS = {
    "attributes": "attribute",
    "values": "value",
    "endpoints": "endpoint",
    "formats": "format",
}


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(value: object) -> str:
    """Text XML 1.0 can carry: forbidden control characters become U+FFFD."""
    return _NOT_XML.sub("\ufffd", str(value))


def _xml_value(parent: ET.Element, key: str, value: Any) -> None:
    node = ET.SubElement(parent, key)
    if isinstance(value, list):
        for entry in value:
            child = ET.SubElement(node, PLURALS.get(key, "item"))
            if isinstance(entry, dict):
                for k, v in entry.items():
                    _xml_value(child, k, v)
            else:
                child.text = _xml_text(entry)
    elif isinstance(value, bool):
        node.text = "true" if value else "false"
    elif value is not None:
        node.text = _xml_text(value)


def to_xml(root: str, item: str, rows: list[dict[str, Any]] | dict[str, Any]) -> str:
    """A list of records (or one record) as the spec's XML."""
    element = ET.Element(root)
    records = rows if isinstance(rows, list) else [rows]
    for row in records:
        target = ET.SubElement(element, item) if isinstance(rows, list) else element
        for key, value in row.items():
            _xml_value(target, key, value)
    return XML_HEADER + ET.tostring(element, encoding="unicode")


def respond(
    fmt: str, root: str, item: str, rows: list[dict[str, Any]] | dict[str, Any], status: int = 200
) -> Response:
    """A list (or one object: discovery, a service definition) as JSON or XML."""
    if fmt == "xml":
        return Response(to_xml(root, item, rows), status=status, mimetype="text/xml")
    response = jsonify(rows)
    response.status_code = status
    return response


def error_response(fmt: str, status: int, description: str) -> Response:
    """The spec's error list."""
    errors = [Open311ErrorEntry(code=status, description=description)]
    return respond(fmt, "errors", "error", errors, status)


def _fmt(raw: str) -> str:
    if raw not in FORMATS:
        raise Open311Error(404, f"unknown format {raw!r}: use .json or .xml")
    return raw


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else None


def service_json(category: Category) -> Service:
    """One service of `GET services`."""
    return Service(
        service_code=category.code,
        service_name=category.name_en,
        description=category.description_en or category.name_en,
        metadata=bool(category.attributes),
        type="realtime",
        keywords=", ".join(category.keywords),
        group=f"{category.major.kind.capitalize()}: {category.major.name_en}",
    )


def definition_json(category: Category) -> ServiceDefinition:
    """A service definition: the attributes a client must or may send."""
    return ServiceDefinition(
        service_code=category.code,
        attributes=[
            ServiceAttribute(
                variable=True,
                code=a["code"],
                datatype=a.get("datatype", "string"),
                required=bool(a.get("required")),
                datatype_description=a.get("description_en", ""),
                order=order,
                description=a.get("description_en", a["code"]),
                values=[
                    AttributeValue(key=v["key"], name=v.get("name_en", v["key"]))
                    for v in a.get("values", [])
                ],
            )
            for order, a in enumerate(category.attributes, start=1)
        ],
    )


def status_notes(view: queries.PublicCase) -> str:
    """What Open311 says of where a case stands (in English, like its service names): a note
    staff marked public, else the public status text and, for a report that did not become a
    case, why."""
    if view.note:
        return view.note
    if view.merged_into:
        return f"{view.text} ({view.merged_into})"
    if view.reason_text:
        return f"{view.text}: {view.reason_text}"
    return view.text


def request_json(view: queries.PublicCase, units: dict[int, str]) -> ServiceRequest:
    """A service request as the public sees it (`cases.public`): no reporter, no contact
    details, no internal note; a report that did not become a case without its description
    and address; the position rounded by the coordinate policy."""
    case = view.case
    return ServiceRequest(
        service_request_id=case.number,
        status="closed" if view.status in public.CLOSED_STATUSES else "open",
        status_notes=status_notes(view),
        service_name=case.category.name_en,
        service_code=case.category.code,
        description=case.description if view.listed else "",
        agency_responsible=units.get(case.unit_id or 0) if view.listed else None,
        service_notice="",
        requested_datetime=_iso(case.reported_at),
        updated_datetime=_iso(case.updated_at),
        expected_datetime=_iso(case.deadline) if view.listed else None,
        address=(case.address or "") if view.listed else "",
        address_id="",
        zipcode="",
        lat=view.lat,
        long=view.lon,
        media_url=(case.media_url or "") if view.listed else "",
    )


def _api_key_secret() -> str:
    """The api key the request brings (form or query string)."""
    secret = (request.form.get("api_key") or request.args.get("api_key") or "").strip()
    if not secret:
        raise Open311Error(403, "api_key is required to post a service request")
    return secret


def _api_key(secret: str) -> KeyUse:
    """The active api key with this secret, its use recorded; an unknown or revoked key is
    refused (403) and recorded as a security event (with the key's id when it is revoked,
    never the secret)."""
    try:
        found = use_api_key(db.session(), secret)
    except NotFound as err:
        key_id = err.details.get("api_key_id")  # a revoked key is named, an unknown one not
        reason = "unknown" if key_id is None else "revoked"
        security_events.record(
            SecurityEventKind.API_KEY_REFUSED, api_key=key_id, detail={"reason": reason}
        )
        if key_id is not None:
            raise Open311Error(403, "api_key has been revoked") from None
        raise Open311Error(403, "api_key is not valid") from None
    key_uses.count_use(queues.redis, found.id)
    return found


@bp.before_request
def _refuse_bad_keys_on_reads() -> None:
    """A read (GET) needs no api_key, but one that comes with an unknown or revoked key is
    refused like a POST (403, recorded): a revoked client is refused everywhere."""
    if request.method == "GET" and (secret := (request.args.get("api_key") or "").strip()):
        _api_key(secret)


def _jurisdiction() -> None:
    given = (request.values.get("jurisdiction_id") or "").strip()
    ours = current_app.config.get("OPEN311_JURISDICTION", "")
    if given and ours and given != ours:
        raise Open311Error(404, f"jurisdiction_id {given!r} is not this city ({ours})")


def rate_limit(secret: str) -> None:
    """Fixed one-second windows per api_key and per client address (POST only), counted before
    the key is looked up, so that a flood of bad keys never reaches the database; fails open.

    Raises:
        TooManyRequests: 429 in Open311's error list, with Retry-After.
    """
    ratelimit.limit(
        "open311",
        per_client="OPEN311_RATE_PER_IP",
        per_account="OPEN311_RATE_PER_KEY",
        account=ratelimit.account_of_key(secret),
        window=1,
    )


def _float(name: str) -> float | None:
    raw = (request.form.get(name) or "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise Open311Error(400, f"{name} must be a number") from None


ATTRIBUTE = re.compile(r"attribute\[(.+)\]")


@bp.get("/discovery.<fmt>")
def discovery(fmt: str) -> ResponseReturnValue:
    """Where this endpoint is and what it speaks."""
    fmt = _fmt(fmt)
    base = url_for("open311.discovery", fmt="json", _external=True).rsplit("/", 1)[0] + "/"
    return respond(
        fmt,
        "discovery",
        "discovery",
        Discovery(
            changeset="2026-11-23T00:00:00Z",
            contact=current_app.config.get("OPEN311_CONTACT", ""),
            key_service=current_app.config.get("OPEN311_KEY_SERVICE", ""),
            endpoints=[
                DiscoveryEndpoint(
                    specification="http://wiki.open311.org/GeoReport_v2",
                    url=base,
                    changeset="2026-11-23T00:00:00Z",
                    type="production",
                    formats=["application/json", "text/xml"],
                )
            ],
        ),
    )


@bp.get("/services.<fmt>")
@reads_replica
def list_services(fmt: str) -> ResponseReturnValue:
    """Every active class of the catalogue."""
    fmt = _fmt(fmt)
    _jurisdiction()
    categories = db.session.scalars(
        select(Category)
        .where(Category.active)
        .options(selectinload(Category.major))
        .order_by(Category.code)
    )
    return respond(fmt, "services", "service", [service_json(c) for c in categories])


@bp.get("/services/<code>.<fmt>")
@bp.get("/service/<code>.<fmt>")
@reads_replica
def service_definition(code: str, fmt: str) -> ResponseReturnValue:
    """A class's attributes (also at the singular path some clients use)."""
    fmt = _fmt(fmt)
    _jurisdiction()
    category = db.session.scalar(select(Category).where(Category.code == code, Category.active))
    if category is None:
        raise Open311Error(404, f"unknown service_code {code!r}")
    return respond(fmt, "service_definition", "", definition_json(category))


@bp.post("/requests.<fmt>")
def create_request(fmt: str) -> ResponseReturnValue:
    """A new service request: the case exists from the first moment."""
    fmt = _fmt(fmt)
    _jurisdiction()
    secret = _api_key_secret()
    rate_limit(secret)
    key = _api_key(secret)
    form = open311_fields(request.form)  # the fields of `Open311RequestForm`
    code = (form.get("service_code") or "").strip()
    if not code:
        raise Open311Error(400, "service_code is required")
    lat, lon = _float("lat"), _float("long")
    if lat is None or lon is None:
        if (form.get("address_string") or form.get("address_id") or "").strip():
            raise Open311Error(400, "this city does not geocode addresses: send lat and long")
        raise Open311Error(400, "lat and long are required")
    attributes = {m.group(1): v for k, v in request.form.items() if (m := ATTRIBUTE.fullmatch(k))}
    device = (form.get("device_id") or "").strip()
    client_key = (
        request.headers.get("Idempotency-Key") or form.get("idempotency_key") or ""
    ).strip()
    # A client's retry (same key, same device) returns the first case.
    idempotency = None
    if client_key:
        scope = f"{key.id}\x1f{device}\x1f{client_key}".encode()
        idempotency = "o311-" + hashlib.sha256(scope).hexdigest()[:40]
    name = " ".join(p for p in (form.get("first_name", ""), form.get("last_name", "")) if p).strip()
    contact = {
        "name": name,
        "email": form.get("email", ""),
        "phone": form.get("phone", ""),
        "device_id": device,
        "account_id": form.get("account_id", ""),
    }
    media = [Upload(f.filename or "media", f.read()) for f in request.files.getlist("media") if f]
    data = ReportInput(
        category_code=code,
        lon=lon,
        lat=lat,
        description=form.get("description", ""),
        address=form.get("address_string"),
        # believed only from a trusted key (the catalogue's urgent policy), else ignored
        urgent=(request.form.get("urgent") or "").strip().lower() in {"1", "true", "yes", "on"},
        idempotency_key=idempotency,
        contact=contact,
        photos=media,
        media_url=form.get("media_url"),
        attributes=attributes,
        # an e-mail or phone given is where the reporter hears back, in the request's language
        notify=bool((contact["email"] or contact["phone"]).strip()),
        language=current_lang(),
    )
    with db.transaction() as session:
        result = intake.report_case(
            session,
            data,
            None,
            CaseSource.HOTLINE if key.trusted else CaseSource.OPEN311,
            photo_root(),
            api_key_id=key.id,
            trusted=key.trusted,
        )
        number = result.number
    token = number  # the request exists at once: its id is its token
    body = [
        CreatedRequest(
            service_request_id=number,
            token=token,
            service_notice="",
            account_id=form.get("account_id", ""),
        )
    ]
    return respond(fmt, "service_requests", "request", body, 201 if result.created else 200)


def _date(name: str) -> datetime | None:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise Open311Error(
            400, f"{name} must be a W3C date-time, e.g. 2026-11-23T08:00:00Z"
        ) from None
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    offset = value.utcoffset() or timedelta()
    if abs(offset) >= timedelta(hours=16) or not 1900 <= value.year <= 9000:
        raise Open311Error(400, f"{name} is out of range")
    return value


def _find(query: Any) -> list[dict[str, Any]]:
    session = db.session()
    # Nothing the public view does not show: the position is read by public_cases in one
    # query (not parsed from each geometry), the contact and attributes stay in the database.
    hidden = (defer(Case.location), defer(Case.contact), defer(Case.attributes))
    cases = list(session.scalars(query.options(selectinload(Case.category), *hidden)))
    unit_ids = {c.unit_id for c in cases if c.unit_id}
    units = dict(session.execute(select(Unit.id, Unit.name).where(Unit.id.in_(unit_ids))).all())
    decimals = current_app.config["PUBLIC_COORDINATE_DECIMALS"]
    return [request_json(v, units) for v in queries.public_cases(session, cases, decimals)]


@bp.get("/requests.<fmt>")
@reads_replica
def list_requests(fmt: str) -> ResponseReturnValue:
    """Service requests by id list, or by service, period and status (newest first, paged)."""
    fmt = _fmt(fmt)
    _jurisdiction()
    secret = (request.args.get("api_key") or "").strip()
    ratelimit.limit(
        "reads",
        per_client="RATE_READS_PER_CLIENT",
        per_account="RATE_READS_PER_ACCOUNT",
        account=ratelimit.account_of_key(secret) if secret else ratelimit.account_of_user(),
    )
    query = select(Case)
    ids = [
        i.strip() for i in (request.args.get("service_request_id") or "").split(",") if i.strip()
    ]
    if ids:  # looked up by number: any report, in its public view
        query = query.where(Case.number.in_(ids[:MAX_PAGE_SIZE]))
    else:  # listed: only cases that entered the loop
        query = query.where(Case.status.in_(LISTED))
        end = _date("end_date") or datetime.now(UTC)
        start = _date("start_date") or end - timedelta(days=DEFAULT_DAYS)
        if start > end:
            raise Open311Error(400, "start_date is after end_date")
        query = query.where(Case.reported_at >= start, Case.reported_at <= end)
        codes = [c for c in (request.args.get("service_code") or "").split(",") if c]
        if codes:  # by id, so that the index of (class, report time) serves the page
            classes = select(Category.id).where(Category.code.in_(codes[:MAX_PAGE_SIZE]))
            query = query.where(Case.category_id.in_(list(db.session.scalars(classes))))
        status = (request.args.get("status") or "").strip()
        if status == "open":
            query = query.where(Case.status != CaseStatus.CLOSED)
        elif status == "closed":
            query = query.where(Case.status == CaseStatus.CLOSED)
        elif status:
            raise Open311Error(400, "status is open or closed")
    try:
        page = max(int(request.args.get("page", 1)), 1)
        size = min(max(int(request.args.get("page_size", MAX_PAGE_SIZE)), 1), MAX_PAGE_SIZE)
    except ValueError:
        raise Open311Error(400, "page and page_size are whole numbers") from None
    if page > MAX_PAGE:
        raise Open311Error(400, f"page is at most {MAX_PAGE}")
    query = query.order_by(Case.reported_at.desc(), Case.id.desc()).offset((page - 1) * size)
    found = _find(query.limit(size))
    if ids and len(found) < len(set(ids[:MAX_PAGE_SIZE])):
        db.confirm_absent()  # a client's own new request may not be on the replica yet
    return respond(fmt, "service_requests", "request", found)


@bp.get("/requests/<number>.<fmt>")
@reads_replica
def get_request(number: str, fmt: str) -> ResponseReturnValue:
    """One service request, as a one-element list."""
    fmt = _fmt(fmt)
    _jurisdiction()
    found = _find(select(Case).where(Case.number == number))
    if not found:
        db.confirm_absent()  # a client's own new request may not be on the replica yet
        raise Open311Error(404, f"no service request {number!r}")
    return respond(fmt, "service_requests", "request", found)


@bp.get("/tokens/<token>.<fmt>")
def get_token(token: str, fmt: str) -> ResponseReturnValue:
    """The service request a token stands for (a request exists at once, so its token is its
    id: clients that poll tokens get their answer on the first call)."""
    fmt = _fmt(fmt)
    _jurisdiction()
    if db.session.scalar(select(Case.id).where(Case.number == token)) is None:
        raise Open311Error(404, f"unknown token {token!r}")
    body = [TokenResult(service_request_id=token, token=token)]
    return respond(fmt, "service_requests", "request", body)


def request_format() -> str:
    match = re.search(r"\.(json|xml)$", request.path)
    return match.group(1) if match else "json"


@bp.errorhandler(Open311Error)
def _open311_error(err: Open311Error) -> Response:
    response = error_response(request_format(), err.status, err.description)
    response.headers.update(err.headers)
    return response


def _answer_error(status: int, message: str) -> Response:
    """Any error under /open311/, in the spec's format: a conflict or an unplaceable point is
    a 400 there (the spec knows no 409 or 422)."""
    return error_response(request_format(), 400 if status in (409, 422) else status, message)


class Open311Paths:
    """WSGI middleware: /open311//v2///x.json and /open311/v2/x.json/ are /open311/v2/x.json,
    answered in place (clients do not follow redirects on POST)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Normalise the path, then pass on."""
        path = environ.get("PATH_INFO", "")
        if path.startswith("/open311") or path.startswith("//open311"):
            path = re.sub(r"/{2,}", "/", path)
            environ["PATH_INFO"] = path.rstrip("/") or "/"
        return self.app(environ, start_response)


def init_app(app: Flask) -> None:
    """Register Open311 (CSRF does not apply: clients authenticate with an api_key)."""
    from gridmgmt.kernel.web import csrf

    csrf.exempt(bp)
    app.register_blueprint(bp)
    register_error_format(app, "/open311/", _answer_error)
    app.wsgi_app = Open311Paths(app.wsgi_app)  # type: ignore[method-assign]
