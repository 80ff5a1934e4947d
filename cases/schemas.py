"""One schema per API object: the bodies of the staff JSON API (pydantic models) and the
records of Open311 GeoReport v2 (TypedDicts).

The same definitions validate what comes in (`cases.forms`), serialise what goes out
(`cases.api`, `cases.open311`) and generate the OpenAPI description (`gridmgmt.app.openapi`).
Limits are imported from the code that enforces them, never restated.

Response schemas are published in pydantic's validation mode: a client validating an answer
against them gets exactly what `Model.model_validate` accepts (every key present, no others).
"""

from __future__ import annotations

from datetime import datetime
from typing import (
    Annotated,
    Any,
    Literal,
    Required,  # pydantic reads these on 3.11
)

from flask import current_app
from geoalchemy2.shape import to_shape
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    PlainSerializer,
    WithJsonSchema,
    with_config,
)
from typing_extensions import TypedDict

from cases.intake import IDEMPOTENCY_KEY, MAX_DESCRIPTION, ReportInput
from cases.lifecycle import Action, ActionInput
from cases.models import Case, CaseStatus
from cases.notices import reporter_code
from cases.photos import MAX_PHOTOS, Upload
from cases.public import PUBLIC_NOTE
from gridmgmt.kernel.errors import InvalidInput
from gridmgmt.kernel.i18n import current_lang, localized
from grids.gridding import LAT_RANGE, LON_RANGE

ID_MAX = 10**18 - 1  # more digits than any id or version has (and Python reads them slowly)
CASE_NUMBER = r"^[0-9]{14,24}$"  # `next_case_number()`: the date and a daily sequence
JSON = "application/json"
XML = "text/xml"

Longitude = Annotated[
    float,
    Field(ge=LON_RANGE[0], le=LON_RANGE[1], allow_inf_nan=False, description="WGS 84."),
]
Latitude = Annotated[
    float,
    Field(ge=LAT_RANGE[0], le=LAT_RANGE[1], allow_inf_nan=False, description="WGS 84."),
]
Id = Annotated[int, Field(ge=0, le=ID_MAX)]
# Dates as Python writes them (`isoformat()`: an offset, never `Z`): what clients always got.
Timestamp = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str)]
# A file part of a multipart body: the parser hands over the uploads it read.
Photos = Annotated[
    list[Annotated[InstanceOf[Upload], WithJsonSchema({"type": "string", "format": "binary"})]],
    Field(max_length=MAX_PHOTOS, description="JPEG, PNG or WebP, up to 10 MB each."),
]
CONTACT = "Reporter's contact, never published."
MAX_SHORT_TEXT = 500  # an address
MAX_CONTACT = 200  # a name, phone, e-mail, code or short value
UUID_TEXT = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
MAX_GPS_ACCURACY = 100_000  # metres: a phone's worst guess (a cell tower's) is a few km


# ---------------------------------------------------------------- staff JSON API: input


class ReportBody(BaseModel):
    """`POST /api/reports` as JSON or form fields (the web form sends the same)."""

    model_config = ConfigDict(extra="ignore")

    category: str = Field(max_length=MAX_CONTACT, description="Class code.", examples=["E0102"])
    lon: Longitude
    lat: Latitude
    description: str = Field("", max_length=MAX_DESCRIPTION)
    address: str | None = Field(None, max_length=MAX_SHORT_TEXT)
    urgent: bool = False
    idempotency_key: str | None = Field(
        None,
        pattern=f"^{IDEMPOTENCY_KEY}$",
        description="8-128 letters, digits or . _ : - (or the Idempotency-Key header).",
    )
    name: str = Field("", max_length=MAX_CONTACT, description=CONTACT)
    phone: str = Field("", max_length=MAX_CONTACT, description=CONTACT)
    email: str = Field("", max_length=MAX_CONTACT, description=CONTACT)
    submission_uuid: str | None = Field(
        None,
        pattern=UUID_TEXT,
        description="The phone's UUID of the report (an outbox's): the same UUID with the same"
        " content is the first case (200), with other content a 409. Photos may follow,"
        " one a request, at /api/reports/{submission_uuid}/photos.",
    )
    captured_at: datetime | None = Field(
        None, description="When the phone captured the report (ISO 8601 with an offset)."
    )
    gps_accuracy: float | None = Field(
        None,
        ge=0,
        le=MAX_GPS_ACCURACY,
        allow_inf_nan=False,
        description="The position's accuracy the phone gave, in metres.",
    )
    notify: bool = Field(
        False,
        description="Hear back about the report (filed, rejected, dispatched, done, closed, "
        "and the satisfaction follow-up) by `email` and/or SMS to `phone`.",
    )
    language: Literal["en", "zh"] | None = Field(
        None, description="The language of the messages (default: the request's)."
    )

    def to_input(self, photos: list[Upload], idempotency_header: str | None) -> ReportInput:
        """The service's input (the body's key wins over the header)."""
        return ReportInput(
            category_code=self.category,
            lon=self.lon,
            lat=self.lat,
            description=self.description,
            address=self.address,
            urgent=self.urgent,
            idempotency_key=self.idempotency_key or idempotency_header,
            contact={"name": self.name, "phone": self.phone, "email": self.email},
            photos=photos,
            submission_uuid=self.submission_uuid.lower() if self.submission_uuid else None,
            captured_at=self.captured_at,
            gps_accuracy=self.gps_accuracy,
            notify=self.notify,
            language=self.language or current_lang(),
        )


class ReportUpload(ReportBody):
    """`POST /api/reports` as multipart: the fields and the photos."""

    photos: Photos = []


class ActionBody(BaseModel):
    """`POST /api/cases/{case_id}/actions/{action}` (each action reads the fields it needs)."""

    model_config = ConfigDict(extra="ignore")

    version: Id | None = Field(None, description="The version you saw: a stale one is a 409.")
    reason: str = Field(
        "",
        max_length=MAX_DESCRIPTION,
        description="Return, reject, invalidate, extension, suspension.",
    )
    note: str = Field("", max_length=MAX_DESCRIPTION, description="Report done, check fail...")
    public_note: bool = Field(
        False, description="Show the note (or the reason) to the public; notes are internal."
    )
    unit_id: Id | None = Field(None, description="Dispatch to this unit.")
    inspector_id: Id | None = Field(None, description="Who checks on site.")
    merge_into: str | None = Field(
        None, max_length=MAX_CONTACT, description="Case number to merge into."
    )
    extra_value: str | None = Field(
        None, max_length=MAX_CONTACT, description="Extension asked: amount..."
    )
    extra_unit: str | None = Field(
        None, max_length=MAX_CONTACT, description="...in `hours` or `days`."
    )
    action_uuid: str | None = Field(
        None,
        pattern=UUID_TEXT,
        description="The phone's UUID of the action (an outbox's): sent again after a lost"
        " reply, the case as it is now (200, even though its version moved on); with another"
        " action, a 409.",
    )

    def to_input(self, photos: list[Upload]) -> ActionInput:
        """The service's input."""
        return ActionInput(
            reason=self.reason,
            note=self.note,
            public_note=self.public_note,
            version=self.version,
            photos=photos,
            unit_id=self.unit_id,
            merge_into=self.merge_into,
            inspector_id=self.inspector_id,
            extra_value=self.extra_value,
            extra_unit=self.extra_unit,
            action_uuid=self.action_uuid.lower() if self.action_uuid else None,
        )


class ActionUpload(ActionBody):
    """An action's body as multipart: the fields and the photos (report done, check...)."""

    photos: Photos = []


# ---------------------------------------------------------------- staff JSON API: output


class CaseEvent(BaseModel):
    """One step of a case's timeline."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True)

    action: Action
    from_status: CaseStatus | None = Field(alias="from")
    to: CaseStatus
    role: str
    note: str
    public_note: bool = Field(description="Staff chose to show this note to the public.")
    at: Timestamp


class CaseSummary(BaseModel):
    """A case in the staff API (never the reporter or their contact details)."""

    model_config = ConfigDict(extra="forbid")

    id: int
    number: str = Field(pattern=CASE_NUMBER)
    status: CaseStatus
    category: str = Field(description="Class code.")
    category_name: str = Field(description="In the request's language.")
    lon: Longitude
    lat: Latitude
    address: str | None
    urgent: bool
    deadline: Timestamp | None
    unit_id: int | None
    version: int = Field(ge=1, description="Send back as `version`.")
    rework_count: int = Field(ge=0)
    reported_at: Timestamp

    @classmethod
    def fields_of(cls, case: Case) -> dict[str, Any]:
        """The summary's values read from a case row."""
        point = to_shape(case.location)
        return {
            "id": case.id,
            "number": case.number,
            "status": case.status,
            "category": case.category.code,
            "category_name": localized(case.category, "name"),
            "lon": point.x,
            "lat": point.y,
            "address": case.address,
            "urgent": case.urgent,
            "deadline": case.deadline,
            "unit_id": case.unit_id,
            "version": case.version,
            "rework_count": case.rework_count,
            "reported_at": case.reported_at,
        }

    @classmethod
    def of(cls, case: Case) -> CaseSummary:
        """The summary of a case."""
        return cls.model_validate(cls.fields_of(case))

    def json_body(self) -> dict[str, Any]:
        """The body as it is sent."""
        return self.model_dump(mode="json", by_alias=True)


class ReportedCase(CaseSummary):
    """The answer to a report: the case and where to see it."""

    url: str = Field(description="The case page, or the public tracking page.")
    submission_uuid: str | None = Field(description="The phone's UUID of the report, if any.")
    captured_at: Timestamp | None = Field(description="When the phone captured it, if it said.")
    photos: int = Field(ge=0, description="Photos the case has now.")
    followup_code: str = Field(
        description="The reporter's code: with it, the satisfaction follow-up is answered on "
        "the tracking page once the case is closed (keep it; it is shown only now)."
    )

    @classmethod
    def reported(cls, case: Case, url: str) -> ReportedCase:
        """The case a report made (or found again), with the page to show next."""
        return cls.model_validate(
            {
                **cls.fields_of(case),
                "url": url,
                "followup_code": reporter_code(current_app.config["SECRET_KEY"], case.id),
                "submission_uuid": case.submission_uuid,
                "captured_at": case.captured_at,
                "photos": len(case.photos),
            }
        )


class PhotoBody(BaseModel):
    """`POST /api/reports/{submission_uuid}/photos`: one photo of a report sent before."""

    model_config = ConfigDict(extra="ignore")

    photo_uuid: str = Field(
        pattern=UUID_TEXT, description="The phone's UUID of the photo: a repeat stores nothing."
    )
    captured_at: datetime | None = Field(None, description="When the phone took it.")


class PhotoUpload(PhotoBody):
    """The photo's multipart body: the fields and the one file."""

    photo: Annotated[InstanceOf[Upload], WithJsonSchema({"type": "string", "format": "binary"})]


class AttachedPhoto(BaseModel):
    """The answer to a photo: the case it belongs to; `created` false for a repeat."""

    model_config = ConfigDict(extra="forbid")

    photo_uuid: str
    case_id: int
    number: str = Field(pattern=CASE_NUMBER)
    photos: int = Field(ge=0, description="Photos the case has now.")
    created: bool

    def json_body(self) -> dict[str, Any]:
        """The body as it is sent."""
        return self.model_dump(mode="json")


class CaseDetail(CaseSummary):
    """A case with its timeline: `GET /api/cases/{id}` and the answer to an action."""

    events: list[CaseEvent]

    @classmethod
    def of(cls, case: Case) -> CaseDetail:
        """The case and its events."""
        events = [
            CaseEvent(
                action=e.action,
                from_status=e.from_status,
                to=e.to_status,
                role=e.actor_role,
                note=e.note,
                public_note=bool(e.data.get(PUBLIC_NOTE)),
                at=e.created_at,
            )
            for e in case.events
        ]
        return cls.model_validate({**cls.fields_of(case), "events": events})


class ApiErrorDetail(BaseModel):
    """What went wrong: a machine code, words for people, maybe the field at fault."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(description="e.g. invalid_input, not_found, conflict.")
    message: str = Field(description="For people (English).")


class ApiError(BaseModel):
    """The staff API's error body. Written by `gridmgmt.kernel.errors` (below this package);
    this model is its description, checked against real answers by the tests."""

    model_config = ConfigDict(extra="forbid")

    error: ApiErrorDetail


STAFF_MODELS: tuple[type[BaseModel], ...] = (
    ReportBody,
    ReportUpload,
    ActionBody,
    ActionUpload,
    CaseEvent,
    CaseSummary,
    ReportedCase,
    CaseDetail,
    ApiError,
    PhotoBody,
    PhotoUpload,
    AttachedPhoto,
)


# ---------------------------------------------------------------- Open311 GeoReport v2
# The records `cases.open311` builds (each serialiser calls its TypedDict) and the POST's
# fields its parser reads. Values are the wire's: dates are already text.

DateTimeText = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
UriText = Annotated[str, Field(json_schema_extra={"format": "uri"})]
CaseNumber = Annotated[str, Field(pattern=CASE_NUMBER, description="The case number.")]
FORBID = ConfigDict(extra="forbid")


@with_config(FORBID)
class Open311ErrorEntry(TypedDict):
    """One entry of the spec's error list."""

    code: Annotated[int, Field(ge=400, le=499, description="The HTTP status.")]
    description: Annotated[str, Field(description="What is wrong, for people.")]


@with_config(FORBID)
class DiscoveryEndpoint(TypedDict):
    """One endpoint of `GET discovery`."""

    specification: UriText
    url: Annotated[UriText, Field(description="Base URL of this endpoint.")]
    changeset: DateTimeText
    type: Literal["production", "test"]
    formats: list[Literal["application/json", "text/xml"]]


@with_config(FORBID)
class Discovery(TypedDict):
    """`GET discovery`: where this endpoint is and what it speaks."""

    changeset: DateTimeText
    contact: str
    key_service: Annotated[str, Field(description="Where to ask for an api_key.")]
    endpoints: list[DiscoveryEndpoint]


@with_config(FORBID)
class Service(TypedDict):
    """One service of `GET services`: a class of the catalogue."""

    service_code: Annotated[
        str, Field(description="Class code: kind letter + major + minor.", examples=["C0101"])
    ]
    service_name: str
    description: str
    metadata: Annotated[
        bool, Field(description="True when the service has attributes (see its definition).")
    ]
    type: Literal["realtime", "batch", "blackbox"]
    keywords: Annotated[str, Field(description="Comma-separated keywords.")]
    group: Annotated[str, Field(examples=["Component: Public facilities"])]


@with_config(FORBID)
class AttributeValue(TypedDict):
    """An allowed answer of a list attribute."""

    key: str
    name: str


@with_config(FORBID)
class ServiceAttribute(TypedDict):
    """A question a service asks (the answer goes in the form field `attribute[CODE]`)."""

    variable: bool
    code: Annotated[str, Field(description="Send the answer as the form field `attribute[CODE]`.")]
    datatype: Literal["string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"]
    required: bool
    datatype_description: str
    order: Annotated[int, Field(ge=1)]
    description: str
    values: Annotated[
        list[AttributeValue],
        Field(description="The allowed keys of a (single|multi)valuelist; else empty."),
    ]


@with_config(FORBID)
class ServiceDefinition(TypedDict):
    """`GET services/{code}`: the attributes a client must or may send."""

    service_code: str
    attributes: list[ServiceAttribute]


@with_config(FORBID)
class ServiceRequest(TypedDict):
    """A service request as the public sees it: never the reporter or their contact details."""

    service_request_id: CaseNumber
    status: Literal["open", "closed"]
    status_notes: Annotated[
        str,
        Field(
            description="The latest note staff marked public, else the public status text;"
            " for a report that did not become a case, why."
        ),
    ]
    service_name: str
    service_code: str
    description: str
    agency_responsible: Annotated[
        str | None, Field(description="The unit handling the case, once dispatched.")
    ]
    service_notice: str
    requested_datetime: DateTimeText
    updated_datetime: DateTimeText
    expected_datetime: Annotated[DateTimeText | None, Field(description="The deadline.")]
    address: str
    address_id: str
    zipcode: str
    lat: Latitude
    long: Longitude
    media_url: str


@with_config(FORBID)
class CreatedRequest(TypedDict):
    """The answer to `POST requests`."""

    service_request_id: CaseNumber
    token: Annotated[
        str, Field(min_length=1, description="Resolves to the id at `GET tokens/{token}`.")
    ]
    service_notice: str
    account_id: str


@with_config(FORBID)
class TokenResult(TypedDict):
    """`GET tokens/{token}`: the request a token stands for."""

    service_request_id: CaseNumber
    token: str


NEVER_PUBLISHED = "Never published."


class Open311RequestForm(TypedDict, total=False):
    """The fields of `POST requests` (form-encoded or multipart); answers to the service's
    attributes come besides them as `attribute[CODE]`."""

    api_key: Annotated[str, Field(description="The client's key (or the `api_key` query).")]
    jurisdiction_id: Annotated[str, Field(description="Optional: empty or this city's id.")]
    service_code: Required[
        Annotated[str, Field(description="A code of `GET services`.", examples=["E0102"])]
    ]
    lat: Required[Annotated[float, Field(ge=LAT_RANGE[0], le=LAT_RANGE[1])]]
    long: Required[
        Annotated[
            float,
            Field(
                ge=LON_RANGE[0],
                le=LON_RANGE[1],
                description="WGS 84 longitude; the point must lie inside the city.",
            ),
        ]
    ]
    address_string: Annotated[
        str,
        Field(description="Kept with the case. This city does not geocode: send lat and long."),
    ]
    address_id: Annotated[str, Field(description="Not used (no address database).")]
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION)]
    email: Annotated[str, Field(description=NEVER_PUBLISHED)]
    device_id: Annotated[str, Field(description="Scopes the idempotency key with the api_key.")]
    account_id: Annotated[str, Field(description="Echoed in the response.")]
    first_name: Annotated[str, Field(description=NEVER_PUBLISHED)]
    last_name: Annotated[str, Field(description=NEVER_PUBLISHED)]
    phone: Annotated[str, Field(description=NEVER_PUBLISHED)]
    media_url: Annotated[
        str,
        Field(
            pattern=r"^(https?://\S{1,2000})?$",
            description="A photo the client hosts: an http(s) URL.",
        ),
    ]
    idempotency_key: Annotated[
        str, Field(description="As the `Idempotency-Key` header (the header wins).")
    ]


class Open311Upload(Open311RequestForm, total=False):
    """`POST requests` as multipart: the fields and photos."""

    media: Annotated[
        list[Annotated[bytes, WithJsonSchema({"type": "string", "format": "binary"})]],
        Field(
            max_length=MAX_PHOTOS,
            description="Photos: JPEG, PNG or WebP, up to 10 MB each. They are decoded, "
            "re-encoded without metadata and kept with the case.",
        ),
    ]


OPEN311_RECORDS: tuple[type, ...] = (
    Open311ErrorEntry,
    DiscoveryEndpoint,
    Discovery,
    Service,
    AttributeValue,
    ServiceAttribute,
    ServiceDefinition,
    ServiceRequest,
    CreatedRequest,
    TokenResult,
    Open311RequestForm,
    Open311Upload,
)


def open311_fields(form: Any) -> dict[str, str]:
    """The declared fields of an Open311 POST (`Open311RequestForm`), as text; others
    (`attribute[CODE]`, unknown names) are read apart.

    Raises:
        InvalidInput: a field longer than its limit (description and media_url:
            MAX_DESCRIPTION; any other: MAX_SHORT_TEXT), answered in Open311's error format.
    """
    fields = {name: form[name] for name in Open311RequestForm.__annotations__ if name in form}
    for name, value in fields.items():
        limit = MAX_DESCRIPTION if name in ("description", "media_url") else MAX_SHORT_TEXT
        if len(value) > limit:
            raise InvalidInput(
                "%(name)s has at most %(limit)s characters", field=name, name=name, limit=limit
            )
    return fields
