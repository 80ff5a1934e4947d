"""The cases and case_events tables: numbering, the append-only event log, CHECK constraints."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from geoalchemy2.shape import from_shape, to_shape
from shapely.geometry import Point
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from cases.catalogue import load_catalogue
from cases.models import Case, CaseEvent, CaseStatus, Category

NUMBER = re.compile(r"^[0-9]{8}[0-9]{6,}$")
MakeCase = Callable[..., Case]


@pytest.fixture
def category(session: Session) -> Category:
    load_catalogue(session)
    session.commit()
    found = session.scalar(select(Category).where(Category.code == "E0101"))
    assert found is not None
    return found


@pytest.fixture
def make_case(session: Session, category: Category) -> MakeCase:
    def make(status: str = "reported", lon: float = -118.2437, lat: float = 34.0522) -> Case:
        case = Case(
            source="citizen",
            status=status,
            category=category,
            location=from_shape(Point(lon, lat), srid=4326),
        )
        session.add(case)
        session.flush()
        return case

    return make


@pytest.fixture
def event(session: Session, make_case: MakeCase) -> CaseEvent:
    case = make_case()
    logged = CaseEvent(
        case_id=case.id, action="report", to_status="reported", actor_role="citizen", note="first"
    )
    session.add(logged)
    session.commit()
    return logged


def db_today(session: Session) -> str:
    return session.scalar(text("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')"))


def test_case_number_from_server_default(session: Session, make_case: MakeCase) -> None:
    case = make_case()

    assert case.id is not None
    assert NUMBER.match(case.number), case.number
    assert len(case.number) == 14
    assert case.number[:8] == db_today(session)
    assert case.status == "reported"
    assert case.dispatch_state == "none"
    assert case.version == 1
    assert to_shape(case.location).equals(Point(-118.2437, 34.0522))


def test_two_cases_get_different_numbers(session: Session, make_case: MakeCase) -> None:
    first, second = make_case(), make_case(lon=-118.25)

    assert first.number != second.number
    assert int(second.number[8:]) > int(first.number[8:])


def _setval(owner: Engine, value: int, is_called: bool) -> None:
    # on a connection of its own: sequences ignore rollbacks, and the test's may be aborted;
    # as the owner: the app's role may draw numbers, not move the sequence
    with owner.connect() as conn:
        conn.execute(text("SELECT setval('case_number_seq', :v, :c)"), {"v": value, "c": is_called})
        conn.commit()


@pytest.fixture
def sequence_near_six_digits(session: Session, owner_engine: Engine) -> Iterator[None]:
    """Move case_number_seq to 999,999, then put it back."""
    last, called = session.execute(text("SELECT last_value, is_called FROM case_number_seq")).one()
    _setval(owner_engine, 999999, True)
    try:
        yield
    finally:
        _setval(owner_engine, last, called)


def test_case_numbers_stay_unique_past_six_digits(
    session: Session, make_case: MakeCase, sequence_near_six_digits: None
) -> None:
    first = make_case()
    with session.begin_nested():
        second = make_case(lon=-118.25)

    assert first.number[8:] == "1000000"
    assert second.number[8:] == "1000001"
    assert first.number != second.number


def test_case_event_insert(session: Session, event: CaseEvent) -> None:
    assert event.id is not None
    assert event.created_at is not None
    assert event.data == {}
    case = session.get(Case, event.case_id)
    assert case is not None
    session.refresh(case)
    assert [e.id for e in case.events] == [event.id]


def _event_row(session: Session, event_id: int) -> tuple[str, str] | None:
    row = session.execute(
        text("SELECT note, to_status FROM case_events WHERE id = :id"), {"id": event_id}
    ).one_or_none()
    return None if row is None else (row.note, row.to_status)


# The app's role may not update or delete events at all (gridmgmt.kernel.roles); the trigger
# refuses the owner too (test_the_trigger_refuses_even_the_owner).
REFUSED = "permission denied for table case_events"


def test_orm_update_of_event_refused(session: Session, event: CaseEvent) -> None:
    with pytest.raises(DBAPIError, match=REFUSED), session.begin_nested():
        event.note = "rewritten"
        session.flush()

    assert _event_row(session, event.id) == ("first", "reported")


def test_orm_delete_of_event_refused(session: Session, event: CaseEvent) -> None:
    with pytest.raises(DBAPIError, match=REFUSED), session.begin_nested():
        session.delete(event)
        session.flush()

    assert _event_row(session, event.id) == ("first", "reported")


@pytest.mark.parametrize(
    ("sql", "operation"),
    [
        ("UPDATE case_events SET note = 'rewritten' WHERE id = :id", "UPDATE"),
        ("UPDATE case_events SET to_status = 'closed'", "UPDATE"),
        ("DELETE FROM case_events WHERE id = :id", "DELETE"),
        ("DELETE FROM case_events", "DELETE"),
    ],
)
def test_raw_sql_change_of_event_refused(
    session: Session, event: CaseEvent, sql: str, operation: str
) -> None:
    with (
        pytest.raises(DBAPIError, match=REFUSED) as excinfo,
        session.begin_nested(),
    ):
        session.execute(text(sql), {"id": event.id})

    assert excinfo.value.orig is not None
    assert excinfo.value.orig.pgcode == "42501"  # insufficient_privilege
    assert _event_row(session, event.id) == ("first", "reported")
    assert session.scalar(select(func.count()).select_from(CaseEvent)) == 1


@pytest.mark.parametrize(
    ("sql", "operation"),
    [
        ("UPDATE case_events SET note = 'rewritten'", "UPDATE"),
        ("DELETE FROM case_events", "DELETE"),
        ("TRUNCATE case_events CASCADE", "TRUNCATE"),
    ],
)
def test_the_trigger_refuses_even_the_owner(owner_engine: Engine, sql: str, operation: str) -> None:
    with owner_engine.connect() as connection, Session(bind=connection) as owner:
        load_catalogue(owner)
        case = Case(
            source="citizen",
            status="reported",
            category=owner.scalar(select(Category).where(Category.code == "E0101")),
            location=from_shape(Point(-118.2437, 34.0522), srid=4326),
        )
        owner.add(case)
        owner.flush()
        owner.add(
            CaseEvent(case_id=case.id, action="report", to_status="reported", actor_role="citizen")
        )
        owner.flush()
        with pytest.raises(DBAPIError, match=f"append-only: {operation} refused"):
            connection.execute(text(sql))
        connection.rollback()


def test_more_events_can_be_appended(session: Session, event: CaseEvent) -> None:
    session.add(
        CaseEvent(
            case_id=event.case_id,
            action="verify",
            from_status="reported",
            to_status="verified",
            actor_role="inspector",
        )
    )
    session.flush()

    count = session.scalar(
        select(func.count()).select_from(CaseEvent).where(CaseEvent.case_id == event.case_id)
    )
    assert count == 2


def test_unknown_status_refused(session: Session, make_case: MakeCase) -> None:
    with pytest.raises(IntegrityError, match="ck_cases_status"), session.begin_nested():
        make_case(status="lost")


def test_unknown_source_refused(session: Session, category: Category) -> None:
    case = Case(
        source="carrier-pigeon",
        status="reported",
        category=category,
        location=from_shape(Point(-118.2, 34.0), srid=4326),
    )
    with pytest.raises(IntegrityError, match="ck_cases_source"), session.begin_nested():
        session.add(case)
        session.flush()


@pytest.mark.parametrize("status", [s.value for s in CaseStatus])
def test_known_status_accepted(session: Session, make_case: MakeCase, status: str) -> None:
    case = make_case(status=status)  # flushed: the CHECK constraint has accepted it
    stored = session.scalar(text("SELECT status FROM cases WHERE id = :id"), {"id": case.id})
    assert stored == status
