"""The staff's case search: by number, address, reporter's phone or e-mail, class, status, unit,
community and report date; newest first, a page at a time, and a CSV of the whole result.

Who may search, and what (`check_access`): operators, dispatchers, leaders and administrators
search every case; unit staff only their unit's (`queries.visible_cases`, the rule of every
staff page), and never by a reporter's contact (units never see it); inspectors and citizens
not at all. The results show no reporter and no contact: a search by a phone or e-mail tells
which cases, never whose, and each one is recorded as a security event (`contact_search`).

Each filter has an index at a million cases (migration 0020): the number's prefix, the
address's trigrams (pg_trgm), the contact's digits or lower-cased e-mail, the report time.
The trigram index is searched by the rare words of the address only (`address_words`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Select, func, select, text, tuple_
from sqlalchemy.orm import Session, selectinload

from cases.models import Case, Category
from cases.queries import visible_cases
from cases.status import CaseStatus
from gridmgmt.kernel import security_events
from gridmgmt.kernel.errors import Forbidden, InvalidInput
from gridmgmt.kernel.models import Role, Unit, User
from gridmgmt.kernel.security_events import SecurityEventKind
from grids.models import Area

SEARCH_ROLES = frozenset({Role.OPERATOR, Role.DISPATCHER, Role.LEADER, Role.ADMIN, Role.UNIT_STAFF})
# Who may search by a reporter's phone or e-mail (unit staff never see a citizen's contact).
CONTACT_ROLES = frozenset({Role.OPERATOR, Role.DISPATCHER, Role.LEADER, Role.ADMIN})
PAGE_SIZE = 50
EXPORT_CAP = 50_000  # rows of one CSV; a wider result says so in its last line
EXPORT_CHUNK = 5_000  # rows read per query while the CSV streams
MAX_TEXT = 100  # characters of a text filter
MIN_ADDRESS = 3  # a trigram index needs three characters to narrow anything down
MIN_PHONE_DIGITS = 5
# A word of the address found in more of the addresses than this (by the column's statistics)
# is left out of the trigram index's search and only checked on the rows it finds.
FREQUENT_WORD = 0.05
WORD = re.compile(r"[^\W_]+")  # what pg_trgm takes as a word: letters and digits
NUMBER = re.compile(r"[A-Za-z0-9-]{1,24}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CaseQuery:
    """What a search asks for; empty filters ask for nothing (all the cases one may see)."""

    number: str = ""  # exact, or the start of a number
    address: str = ""  # a piece of the address, any case
    phone: str = ""  # the reporter's phone, digits only
    email: str = ""  # the reporter's e-mail, lower case
    category: str = ""  # a class code
    status: CaseStatus | None = None
    unit_id: int | None = None
    community_id: int | None = None
    reported_from: date | None = None  # days in the city's display time zone, both included
    reported_to: date | None = None

    @property
    def contact_fields(self) -> list[str]:
        """The reporter's contact details this search is by ("phone", "email")."""
        return [name for name in ("phone", "email") if getattr(self, name)]

    def args(self) -> dict[str, str]:
        """The query as the search page's URL parameters (empty ones left out)."""
        return {
            f.name: str(value.value if isinstance(value, CaseStatus) else value)
            for f in fields(self)
            if (value := getattr(self, f.name)) not in ("", None)
        }


@dataclass(frozen=True)
class Cursor:
    """Where a page ends (newest first): the next page starts after this case."""

    reported_at: datetime
    case_id: int

    def encode(self) -> str:
        """The cursor as a URL parameter: microseconds since 1970, a dot, the case id."""
        micros = (self.reported_at - EPOCH) // timedelta(microseconds=1)
        return f"{micros}.{self.case_id}"

    @classmethod
    def decode(cls, raw: str) -> Cursor:
        """A cursor from its URL parameter.

        Raises:
            InvalidInput: not one this page made.
        """
        micros, dot, case_id = raw.partition(".")
        if not (dot and micros.isascii() and micros.isdigit() and case_id.isascii()
                and case_id.isdigit() and len(raw) <= 40):  # fmt: skip
            raise InvalidInput("this page link is broken: start the search again", field="after")
        return cls(EPOCH + timedelta(microseconds=int(micros)), int(case_id))


@dataclass(frozen=True)
class SearchPage:
    """A page of results and where the next one starts (None: this is the last)."""

    cases: list[Case]
    units: dict[int, str]  # unit id -> name, for the units of these cases
    communities: dict[int, str]
    next: Cursor | None


def _text(args: Mapping[str, str], name: str) -> str:
    value = (args.get(name) or "").strip()
    if len(value) > MAX_TEXT:
        raise InvalidInput(
            "a search field has at most %(most)s characters", field=name, most=MAX_TEXT
        )
    return value


def _unknown(name: str, value: object) -> InvalidInput:
    """The error of a class, unit or community that does not exist (`name`: its field)."""
    if name == "category":
        return InvalidInput("unknown class %(value)r", field=name, value=value)
    if name == "unit_id":
        return InvalidInput("unknown unit %(value)r", field=name, value=value)
    return InvalidInput("unknown community %(value)r", field=name, value=value)


def _id(args: Mapping[str, str], name: str) -> int | None:
    value = (args.get(name) or "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 12):
        raise _unknown(name, value[:20])
    return int(value)


def _day(args: Mapping[str, str], name: str) -> date | None:
    value = (args.get(name) or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value) if len(value) == 10 else date.fromisoformat("x")
    except ValueError:
        raise InvalidInput(
            "%(value)r is not a date: write it as YYYY-MM-DD", field=name, value=value[:MAX_TEXT]
        ) from None


def parse_query(args: Mapping[str, str]) -> CaseQuery:
    """The search asked for by a page's (or a link's) parameters.

    Raises:
        InvalidInput: a value that can never be right (a text too long, a status or date
            that is none, an address shorter than 3 characters...); `details.field` names it.
    """
    number = _text(args, "number").upper()
    if number and not NUMBER.fullmatch(number):
        raise InvalidInput("a case number has only letters, digits and hyphens", field="number")
    address = _text(args, "address")
    if address and len(address) < MIN_ADDRESS:
        raise InvalidInput(
            "search an address by at least %(least)s characters", field="address", least=MIN_ADDRESS
        )
    phone_typed = _text(args, "phone")
    phone = re.sub(r"[^0-9]", "", phone_typed)
    if phone_typed and len(phone) < MIN_PHONE_DIGITS:
        raise InvalidInput(
            "a phone number has at least %(least)s digits", field="phone", least=MIN_PHONE_DIGITS
        )
    email = _text(args, "email").lower()
    if email and not EMAIL.fullmatch(email):
        raise InvalidInput("%(value)r is not an e-mail address", field="email", value=email)
    raw_status = _text(args, "status")
    if raw_status and raw_status not in {s.value for s in CaseStatus}:
        raise InvalidInput("unknown status %(value)r", field="status", value=raw_status)
    reported_from, reported_to = _day(args, "reported_from"), _day(args, "reported_to")
    if reported_from and reported_to and reported_from > reported_to:
        raise InvalidInput("the first day comes after the last", field="reported_from")
    return CaseQuery(
        number=number,
        address=address,
        phone=phone,
        email=email,
        category=_text(args, "category").upper(),
        status=CaseStatus(raw_status) if raw_status else None,
        unit_id=_id(args, "unit_id"),
        community_id=_id(args, "community_id"),
        reported_from=reported_from,
        reported_to=reported_to,
    )


def check_access(user: User, query: CaseQuery) -> None:
    """Refuse a search this user may not make.

    Raises:
        Forbidden: inspectors and citizens (no search), unit staff by a reporter's contact.
    """
    if user.role not in SEARCH_ROLES:
        raise Forbidden("your role does not search cases")
    if query.contact_fields and user.role not in CONTACT_ROLES:
        raise Forbidden("unit staff do not search by a reporter's phone or e-mail")


def check_references(session: Session, query: CaseQuery) -> None:
    """Refuse a class, unit or community that does not exist (a hand-made link).

    Raises:
        InvalidInput: one of them is unknown.
    """
    checks = (
        ("category", query.category, select(Category.id).where(Category.code == query.category)),
        ("unit_id", query.unit_id, select(Unit.id).where(Unit.id == query.unit_id)),
        (
            "community_id",
            query.community_id,
            select(Area.id).where(Area.id == query.community_id, Area.level == "community"),
        ),
    )
    for name, value, exists in checks:
        if value not in ("", None) and session.scalar(exists) is None:
            raise _unknown(name, value)


def _like(text: str) -> str:
    """`text` inside a LIKE pattern, its own wildcards escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _day_start(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, zone)


@dataclass(frozen=True)
class AddressSample:
    """The planner's sample of the addresses (`pg_stats`): the most common ones with their
    share of the cases, and the histogram's bounds, each standing for an equal share of the
    rest."""

    null_share: float = 0.0
    common: tuple[tuple[str, float], ...] = ()
    bounds: tuple[str, ...] = ()

    def share(self, word: str) -> float:
        """About how many of the cases (0 to 1) have `word` in their address, any case."""
        word = word.lower()
        common = sum(share for value, share in self.common if word in value.lower())
        rest = max(0.0, 1.0 - self.null_share - sum(share for _value, share in self.common))
        if not self.bounds:
            return common + rest  # nothing known of the rest: as if all had it
        found = sum(1 for value in self.bounds if word in value.lower())
        return common + rest * found / len(self.bounds)


def read_address_sample(bind: Session | Connection) -> AddressSample | None:
    """The statistics ANALYZE keeps of the addresses; None before the first ANALYZE."""
    row = bind.execute(
        text(
            "SELECT null_frac, most_common_vals::text::text[], most_common_freqs,"
            " histogram_bounds::text::text[] FROM pg_stats"
            " WHERE schemaname = current_schema() AND tablename = 'cases'"
            " AND attname = 'address'"
        )
    ).first()
    if row is None:
        return None
    null_share, common, shares, bounds = row
    return AddressSample(
        null_share=null_share or 0.0,
        common=tuple(zip(common or (), shares or (), strict=True)),
        bounds=tuple(bounds or ()),
    )


def address_words(address: str, sample: AddressSample | None) -> tuple[str, ...]:
    """The words of a searched address that the trigram index is searched by: those few
    addresses have (`FREQUENT_WORD`), of 3 characters or more (a trigram's); none when the
    column has no statistics yet, or when every word is frequent.

    GIN answers a LIKE by reading, for each trigram of the pattern, the list of every row that
    has it. A trigram that nearly every address has ("mai" and " s " when the city is full of
    "S Main St") is a list of millions of rows: at ten million cases "1234 S Main" read the
    whole 192 MB index (390-450 ms) for 1,111 cases that "1234" alone finds in 10 ms. The
    frequent words are still checked, on the rows the rare ones find.
    """
    if sample is None:
        return ()
    words = dict.fromkeys(w for w in WORD.findall(address) if len(w) >= MIN_ADDRESS)
    return tuple(w for w in words if sample.share(w) < FREQUENT_WORD)


def conditions(
    user: User, query: CaseQuery, zone: ZoneInfo, indexed: tuple[str, ...] = ()
) -> list[Any]:
    """The WHERE terms of a search: the user's scope, then each filter given.

    Args:
        indexed: the words of the address to search its trigram index by (`address_words`);
            none: by the whole address.
    """
    terms: list[Any] = [visible_cases(user)]
    if query.number:
        terms.append(Case.number.like(_like(query.number) + "%", escape="\\"))
    if query.address and indexed:
        terms += [Case.address.ilike(f"%{_like(word)}%", escape="\\") for word in indexed]
        # The whole address on the rows those find, where the index cannot take it (on a UTF-8
        # database ILIKE is exactly this: both sides lower-cased, then LIKE).
        terms.append(
            func.lower(Case.address).like(func.lower(f"%{_like(query.address)}%"), escape="\\")
        )
    elif query.address:
        terms.append(Case.address.ilike(f"%{_like(query.address)}%", escape="\\"))
    if query.phone:  # the same expressions as the indexes of migration 0020
        terms += [
            Case.contact.has_key("phone"),
            func.regexp_replace(Case.contact["phone"].astext, "[^0-9]", "", "g") == query.phone,
        ]
    if query.email:
        terms += [
            Case.contact.has_key("email"),
            func.lower(Case.contact["email"].astext) == query.email,
        ]
    if query.category:
        terms.append(
            Case.category_id
            == select(Category.id).where(Category.code == query.category).scalar_subquery()
        )
    if query.status is not None:
        terms.append(Case.status == query.status.value)
    if query.unit_id is not None:
        terms.append(Case.unit_id == query.unit_id)
    if query.community_id is not None:
        terms.append(Case.community_id == query.community_id)
    if query.reported_from is not None:
        terms.append(Case.reported_at >= _day_start(query.reported_from, zone))
    if query.reported_to is not None:
        terms.append(Case.reported_at < _day_start(query.reported_to + timedelta(days=1), zone))
    return terms


def _newest_first(statement: Select[Any], after: Cursor | None) -> Select[Any]:
    if after is not None:
        statement = statement.where(
            tuple_(Case.reported_at, Case.id) < tuple_(after.reported_at, after.case_id)
        )
    return statement.order_by(Case.reported_at.desc(), Case.id.desc())


def record_contact_search(user: User, query: CaseQuery, export: bool = False) -> None:
    """Record a search by a reporter's phone or e-mail as a security event (each one: none is
    sampled). The detail masks the value: the last 4 digits, the e-mail's domain."""
    detail: dict[str, Any] = {"fields": query.contact_fields, "csv": export}
    if query.phone:
        detail["phone"] = "…" + query.phone[-4:]
    if query.email:
        detail["email"] = "…@" + query.email.rpartition("@")[2]
    security_events.record(SecurityEventKind.CONTACT_SEARCH, user=user, detail=detail)


def prepare(session: Session, user: User, query: CaseQuery, export: bool = False) -> None:
    """Check a search before it runs, and record it when it is by a contact.

    Raises:
        Forbidden: `check_access`.
        InvalidInput: `check_references`.
    """
    check_access(user, query)
    check_references(session, query)
    if query.contact_fields:
        record_contact_search(user, query, export)


def _indexed_words(bind: Session | Connection, query: CaseQuery) -> tuple[str, ...]:
    """The words of the query's address to search the trigram index by (`address_words`)."""
    return address_words(query.address, read_address_sample(bind)) if query.address else ()


def find_cases(
    session: Session,
    user: User,
    query: CaseQuery,
    zone: ZoneInfo,
    after: Cursor | None = None,
    size: int = PAGE_SIZE,
) -> SearchPage:
    """A page of the cases found, newest report first (call `prepare` first).

    Args:
        session: the request's session (read only).
        user: who searches: their scope applies.
        query: the filters.
        zone: the city's display time zone (the days of the date filters).
        after: the previous page's end; None for the first page.
        size: cases a page.
    """
    indexed = _indexed_words(session, query)
    statement = _newest_first(select(Case).where(*conditions(user, query, zone, indexed)), after)
    found = list(session.scalars(statement.options(selectinload(Case.category)).limit(size + 1)))
    cases = found[:size]
    unit_ids = {c.unit_id for c in cases if c.unit_id}
    community_ids = {c.community_id for c in cases if c.community_id}
    units = (
        dict(
            session.execute(select(Unit.id, Unit.name).where(Unit.id.in_(unit_ids))).tuples().all()
        )
        if unit_ids
        else {}
    )
    communities = (
        dict(
            session.execute(select(Area.id, Area.name).where(Area.id.in_(community_ids)))
            .tuples()
            .all()
        )
        if community_ids
        else {}
    )
    last = cases[-1] if len(found) > size else None
    return SearchPage(
        cases=cases,
        units=units,
        communities=communities,
        next=Cursor(last.reported_at, last.id) if last else None,
    )


# The CSV's columns: (header, the row's field).
EXPORT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("number", "number"),
    ("status", "status"),
    ("category", "category"),
    ("category_name", "category_name"),
    ("urgent", "urgent"),
    ("address", "address"),
    ("community", "community"),
    ("unit", "unit"),
    ("reported_at", "reported_at"),
    ("deadline", "deadline"),
    ("closed_at", "closed_at"),
    ("lon", "lon"),
    ("lat", "lat"),
)


@dataclass(frozen=True)
class ExportRow:
    """One case of the CSV: no reporter, no contact, no description."""

    number: str
    status: str
    category: str
    category_name: str
    urgent: bool
    address: str
    community: str
    unit: str
    reported_at: str
    deadline: str
    closed_at: str
    lon: str
    lat: str

    def values(self) -> list[Any]:
        """The row's values in the columns' order."""
        row = asdict(self)
        return [row[name] for _header, name in EXPORT_COLUMNS]


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value else ""


def export_chunk(
    connection: Connection,
    user: User,
    query: CaseQuery,
    zone: ZoneInfo,
    lang: str,
    after: Cursor | None,
    size: int,
    indexed: tuple[str, ...] = (),
) -> tuple[list[ExportRow], Cursor | None]:
    """One chunk of the CSV, newest first, and the cursor after its last case (None: it was
    the last chunk). One query, with the names joined; `indexed` as `conditions` takes it."""
    name = Category.name_zh if lang == "zh" else Category.name_en
    statement = _newest_first(
        select(
            Case.id,
            Case.number,
            Case.status,
            Category.code,
            name,
            Case.urgent,
            Case.address,
            Area.name,
            Unit.name,
            Case.reported_at,
            Case.deadline,
            Case.closed_at,
            func.ST_X(Case.location),
            func.ST_Y(Case.location),
        )
        .join(Category, Category.id == Case.category_id)
        .outerjoin(Area, Area.id == Case.community_id)
        .outerjoin(Unit, Unit.id == Case.unit_id)
        .where(*conditions(user, query, zone, indexed)),
        after,
    ).limit(size)
    found = connection.execute(statement).all()
    rows = [
        ExportRow(
            number=r[1],
            status=r[2],
            category=r[3],
            category_name=r[4] or "",
            urgent=bool(r[5]),
            address=r[6] or "",
            community=r[7] or "",
            unit=r[8] or "",
            reported_at=_iso(r[9]),
            deadline=_iso(r[10]),
            closed_at=_iso(r[11]),
            lon=f"{r[12]:.6f}",
            lat=f"{r[13]:.6f}",
        )
        for r in found
    ]
    last = found[-1] if len(found) == size else None
    return rows, Cursor(last[9], last[0]) if last else None


# Runs a read on a connection of its own and gives it back (`db.read`).
Reader = Callable[[Callable[[Connection], Any]], Any]


def export_cases(
    read: Reader,
    user: User,
    query: CaseQuery,
    zone: ZoneInfo,
    lang: str,
    cap: int = EXPORT_CAP,
    chunk: int = EXPORT_CHUNK,
) -> Iterator[ExportRow | None]:
    """Every case found, newest first, up to `cap`; a final None when there were more.

    Args:
        read: runs each chunk's query on a connection given back before the chunk is sent
            (`db.read`), so a slow reader of the CSV holds no connection.
        user: who searches (call `prepare` first).
        query: the filters.
        zone: the city's display time zone.
        lang: "zh" or "en", for the class names.
        cap: most rows.
        chunk: rows a query.
    """
    indexed: tuple[str, ...] = read(lambda c: _indexed_words(c, query)) if query.address else ()
    after: Cursor | None = None
    sent = 0
    while sent < cap:
        size = min(chunk, cap - sent)
        start = after
        rows, after = read(
            lambda c, start=start, size=size: export_chunk(
                c, user, query, zone, lang, start, size, indexed
            )
        )
        yield from rows
        sent += len(rows)
        if after is None:
            return
    last = after
    more = read(
        lambda c: c.scalar(
            _newest_first(
                select(Case.id).where(*conditions(user, query, zone, indexed)), last
            ).limit(1)
        )
    )
    if more is not None:
        yield None
