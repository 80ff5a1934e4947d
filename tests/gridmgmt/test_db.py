"""gridmgmt.kernel.db.Prepared: hot statements planned once per connection."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from gridmgmt.kernel.db import Prepared, db

ECHO = Prepared(
    "gridmgmt_test_echo",
    "SELECT CAST(:word AS text) || '-' || CAST(:n AS int)::text AS said, '{}'::jsonb AS empty,"
    " CAST(:n AS int) + 1 AS next",
)


def forget_prepared(session: Session) -> None:
    """Leave the pooled connection as a new one: nothing prepared, nothing remembered."""
    session.execute(text("DEALLOCATE ALL"))
    session.connection().connection.info.pop("gridmgmt.prepared", None)


def test_parameters_become_positional_and_casts_stay() -> None:
    assert ECHO.prepare == (
        "PREPARE gridmgmt_test_echo AS SELECT CAST($1 AS text) || '-' || CAST($2 AS int)::text"
        " AS said, '{}'::jsonb AS empty, CAST($2 AS int) + 1 AS next"
    )
    assert ECHO.run == "EXECUTE gridmgmt_test_echo(%(word)s, %(n)s)"


def test_prepares_once_per_connection_then_executes_by_name(session: Session) -> None:
    forget_prepared(session)
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(args[2].split(" ", 1)[0])

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        first = ECHO.execute(session, {"word": "it's", "n": 41}).one()
        second = ECHO.execute(session, {"word": None, "n": 1}).one()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)

    assert (first.said, first.empty, first.next) == ("it's-41", {}, 42)
    assert (second.said, second.next) == (None, 2)
    assert [s for s in sent if s != "SAVEPOINT"] == ["PREPARE", "EXECUTE", "EXECUTE"]


def test_a_new_connection_prepares_again(session: Session) -> None:
    ECHO.execute(session, {"word": "a", "n": 1}).one()
    forget_prepared(session)  # as a reconnect leaves it

    assert ECHO.execute(session, {"word": "b", "n": 2}).one().said == "b-2"


def test_a_bad_value_is_the_database_error_not_a_stale_statement(session: Session) -> None:
    with pytest.raises(DataError, match="invalid input syntax"), session.begin_nested():
        ECHO.execute(session, {"word": "x", "n": "not a number"}).one()
    assert ECHO.execute(session, {"word": "y", "n": 3}).one().said == "y-3"


def test_a_percent_sign_in_the_sql_is_no_placeholder(session: Session) -> None:
    percent = Prepared("gridmgmt_test_percent", "SELECT '100%' || CAST(:x AS text) AS said")

    assert percent.execute(session, {"x": "%s"}).one().said == "100%%s"
