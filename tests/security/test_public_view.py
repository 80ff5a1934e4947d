"""What the public sees of a case, read over HTTP as an outsider would: Open311 listings and
lookups (JSON and XML), the tracking page and the open-data exports show the public view
(`cases.public`) and nothing else. A case is taken through the loop by the real staff over
the JSON API, with internal notes (a return, a handling note, a failed check, a rejection)
and one note marked public; each internal note must be absent from every public output.

Staff pages name no reporter: unit staff and the centre see "citizen" where a citizen
reported, and unit staff see "inspector" where an inspector did."""

from __future__ import annotations

import csv
import io
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, text

from gridmgmt.app.demo import DEMO_API_KEY
from tests.security.conftest import sign_in
from tests.security.test_bodies import with_csrf
from tests.security.test_reports import jpeg
from tests.support import copy_case

GARBAGE = "E0102"  # handled by the first community's unit (demo user `staff`)
OPEN311 = "/open311/v2"
CITIZEN_NAME = "Zebulon Quackenbush"  # the demo citizen's display name, for this module
INSPECTOR_NAME = "Ingrid Fieldwalker"


@dataclass
class Staff:
    """The demo city's people, signed in over HTTP."""

    server: str
    citizen: requests.Session
    inspector: requests.Session
    operator: requests.Session
    dispatcher: requests.Session
    staff: requests.Session

    def act(
        self, who: requests.Session, case_id: int, action: str, files: Any = None, **body: Any
    ) -> dict[str, Any]:
        """One action through the staff JSON API; the answer must be a 200."""
        url = f"{self.server}/api/cases/{case_id}/actions/{action}"
        if files:
            answer = who.post(url, data={k: str(v) for k, v in body.items()}, files=files)
        else:
            answer = who.post(url, json=body)
        assert answer.status_code == 200, (action, answer.text[:400])
        return answer.json()

    def report(self, who: requests.Session, point: tuple[float, float], **body: Any) -> dict:
        """A report through the JSON API (201)."""
        fields = {"category": GARBAGE, "lon": point[0], "lat": point[1], **body}
        answer = who.post(f"{self.server}/api/reports", json=fields)
        assert answer.status_code == 201, answer.text[:400]
        return answer.json()


@dataclass(frozen=True)
class Loop:
    """The cases of this module and the secrets that must never leave the staff pages."""

    handled: dict[str, Any]  # through the loop, closed, with one public note
    rejected: dict[str, Any]
    merged: dict[str, Any]
    unverified: dict[str, Any]
    citizens: dict[str, Any]  # a citizen's report in the staff unit's hands
    secrets: tuple[str, ...]
    public_note: str


@pytest.fixture(scope="module")
def people(server: str, engine: Engine) -> Iterator[Staff]:
    """The demo people, the citizen and the inspector with names that must not be shown."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE users SET display_name = CASE username WHEN 'citizen' THEN :c"
                " ELSE :i END WHERE username IN ('citizen', 'inspector')"
            ),
            {"c": CITIZEN_NAME, "i": INSPECTOR_NAME},
        )
    yield Staff(
        server,
        *(
            with_csrf(sign_in(server, n), server)
            for n in ("citizen", "inspector", "operator", "dispatcher", "staff")
        ),
    )
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE users SET display_name = NULL WHERE username IN ('citizen', 'inspector')")
        )


@pytest.fixture(scope="module")
def loop(people: Staff, inside: tuple[float, float]) -> Loop:
    """Cases in every public situation, made by the real staff over HTTP."""
    tag = uuid.uuid4().hex[:8]
    secret = {
        kind: f"{kind.upper()}-{tag}"
        for kind in ("return", "handling", "checkfail", "reject", "close", "rejectdesc", "desc")
    }
    public_note = f"Bin emptied and area swept, PUBLIC-{tag}"
    p = people
    near = (inside[0] + 0.000123, inside[1] + 0.000077)  # more decimals than the policy keeps

    # An inspector's report: verified at once; the operator files it.
    handled = p.report(p.inspector, near, description=f"overflowing bin {tag}")
    case = handled["id"]
    p.act(p.operator, case, "file")
    p.act(p.dispatcher, case, "dispatch")
    p.act(p.staff, case, "return", reason=f"not ours {secret['return']}")
    p.act(p.dispatcher, case, "dispatch")
    p.act(p.staff, case, "accept")
    photo = [("photos", ("after.jpg", jpeg((10, 200, 10)), "image/jpeg"))]
    p.act(p.staff, case, "report_done", files=photo, note=f"done {secret['handling']}")
    p.act(p.operator, case, "assign_check")
    p.act(p.inspector, case, "check_fail", note=f"still dirty {secret['checkfail']}")
    p.act(p.staff, case, "accept")
    photo = [("photos", ("after2.jpg", jpeg((10, 180, 40)), "image/jpeg"))]
    p.act(p.staff, case, "report_done", files=photo, note=public_note, public_note="true")

    # Citizens' reports: one merged into the open case, one rejected, one left unverified.
    merged = p.report(p.citizen, inside, description="same bin")
    p.act(p.operator, merged["id"], "merge", merge_into=handled["number"])
    rejected = p.report(p.citizen, inside, description=f"my neighbour {secret['rejectdesc']}")
    p.act(
        p.operator,
        rejected["id"],
        "reject",
        reason="not_city_problem",
        note=f"prank {secret['reject']}",
    )
    unverified = p.report(p.citizen, inside, description=f"unchecked {secret['desc']}")
    citizens = p.report(p.citizen, inside, description="citizen's case for the unit")
    p.act(p.operator, citizens["id"], "file")
    p.act(p.dispatcher, citizens["id"], "dispatch")

    # ...and the handled case is checked and closed with an internal note.
    p.act(p.operator, case, "assign_check")
    p.act(p.inspector, case, "check_pass")
    p.act(p.operator, case, "close", note=f"closing {secret['close']}")
    return Loop(
        handled, rejected, merged, unverified, citizens, tuple(secret.values()), public_note
    )


def open311(server: str, path: str, **params: Any) -> requests.Response:
    """A public Open311 read (no api key needed to read)."""
    answer = requests.get(f"{server}{OPEN311}/{path}", params=params, timeout=30)
    assert answer.status_code == 200, answer.text[:300]
    return answer


def listed(server: str, fmt: str = "json") -> requests.Response:
    """The Open311 listing of the last two days' cases of the class, every status."""
    start = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    return open311(server, f"requests.{fmt}", service_code=GARBAGE, start_date=start)


def looked_up(server: str, number: str) -> dict[str, Any]:
    """One request looked up by its number (JSON)."""
    [row] = open311(server, f"requests/{number}.json").json()
    return row


def open_data(server: str, fmt: str) -> str:
    """Today's open data, as text."""
    today = datetime.now(UTC).date()
    start = (today - timedelta(days=1)).isoformat()
    answer = requests.get(
        f"{server}/open-data/cases.{fmt}",
        params={"start": start, "end": (today + timedelta(days=1)).isoformat()},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text[:300]
    return answer.text


def every_public_output(server: str, loop: Loop) -> dict[str, str]:
    """Every public read of the module's cases, by name."""
    bodies = {f"list.{fmt}": listed(server, fmt).text for fmt in ("json", "xml")}
    for name in ("handled", "rejected", "merged", "unverified", "citizens"):
        number = getattr(loop, name)["number"]
        for fmt in ("json", "xml"):
            bodies[f"{name}.{fmt}"] = open311(server, f"requests/{number}.{fmt}").text
        bodies[f"{name}.track"] = requests.get(f"{server}/track/{number}", timeout=30).text
    bodies["ids.json"] = open311(
        server,
        "requests.json",
        service_request_id=",".join(getattr(loop, n)["number"] for n in ("handled", "rejected")),
    ).text
    for fmt in ("csv", "geojson"):
        bodies[f"open-data.{fmt}"] = open_data(server, fmt)
    return bodies


# ---------------------------------------------------------------- notes


def test_no_internal_note_reaches_a_public_output(server: str, loop: Loop) -> None:
    bodies = every_public_output(server, loop)

    leaks = {(name, s) for name, body in bodies.items() for s in loop.secrets if s in body}
    assert not leaks
    assert len(bodies) == 20


def test_the_note_staff_marked_public_is_shown(server: str, loop: Loop) -> None:
    number = loop.handled["number"]

    assert looked_up(server, number)["status_notes"] == loop.public_note
    page = requests.get(f"{server}/track/{number}", timeout=30).text
    assert loop.public_note.replace("'", "&#39;") in page
    [row] = [r for r in listed(server).json() if r["service_request_id"] == number]
    assert row["status_notes"] == loop.public_note


def test_the_staff_api_says_which_note_is_public(people: Staff, loop: Loop) -> None:
    case = people.operator.get(f"{people.server}/api/cases/{loop.handled['id']}").json()
    events = case["events"]

    public = [e["note"] for e in events if e["public_note"]]
    assert public == [loop.public_note]


# ---------------------------------------------------------------- what is listed


def test_listings_show_only_cases_that_entered_the_loop(server: str, loop: Loop) -> None:
    for fmt in ("json", "xml"):
        body = listed(server, fmt).text
        assert loop.handled["number"] in body
        assert loop.citizens["number"] in body
        for never in (loop.rejected, loop.merged, loop.unverified):
            assert never["number"] not in body, fmt
    for fmt in ("csv", "geojson"):
        body = open_data(server, fmt)
        assert loop.handled["number"] in body
        for never in (loop.rejected, loop.merged, loop.unverified):
            assert never["number"] not in body, fmt


def test_a_rejected_report_looked_up_is_closed_with_a_public_reason(
    server: str, loop: Loop
) -> None:
    row = looked_up(server, loop.rejected["number"])

    assert row["status"] == "closed"
    assert row["status_notes"] == "Not accepted as a case: Not a problem the city handles"
    assert (row["description"], row["address"], row["agency_responsible"]) == ("", "", None)
    page = requests.get(f"{server}/track/{loop.rejected['number']}", timeout=30).text
    assert 'data-reason="not_city_problem"' in page
    assert 'data-public-status="not_accepted"' in page


def test_a_merged_report_points_to_the_case_that_follows_it(server: str, loop: Loop) -> None:
    row = looked_up(server, loop.merged["number"])

    assert row["status"] == "closed"
    assert row["status_notes"].endswith(f"({loop.handled['number']})")
    page = requests.get(f"{server}/track/{loop.merged['number']}", timeout=30).text
    assert loop.handled["number"] in page
    assert 'data-public-status="closed"' in page  # the case that follows it is closed


def test_an_unverified_report_is_received_but_not_shown(server: str, loop: Loop) -> None:
    row = looked_up(server, loop.unverified["number"])

    assert (row["status"], row["status_notes"]) == ("open", "Received: being verified")
    assert row["description"] == ""


def test_public_statuses_hide_the_internal_steps(server: str, loop: Loop) -> None:
    page = requests.get(f"{server}/track/{loop.handled['number']}", timeout=30).text
    steps = re.findall(r'<li data-public-status="(\w+)"', page)

    # The return and the failed check are the city's business: the public sees the case go
    # to the unit, come back for the check and close.
    assert steps[0] == "received" and steps[-1] == "closed"
    assert "with_unit" in steps and "being_checked" in steps
    for internal in ("returned", "checking", "in_progress", "check fail"):
        assert f'data-public-status="{internal}"' not in page
    assert "status-returned" not in page and "status-checking" not in page


# ---------------------------------------------------------------- positions


def decimals_of(value: Any) -> int:
    """How many decimal places a number was written with."""
    exponent = Decimal(str(value)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def test_public_positions_are_rounded_the_same_everywhere(
    server: str, loop: Loop, inside: tuple[float, float]
) -> None:
    number = loop.handled["number"]
    exact = (inside[0] + 0.000123, inside[1] + 0.000077)
    expected = (round(exact[0], 4), round(exact[1], 4))

    row = looked_up(server, number)
    assert (row["long"], row["lat"]) == expected
    [listed_row] = [r for r in listed(server).json() if r["service_request_id"] == number]
    assert (listed_row["long"], listed_row["lat"]) == expected
    [record] = [r for r in csv.DictReader(io.StringIO(open_data(server, "csv"))) if
                r["number"] == number]  # fmt: skip
    assert (float(record["lon"]), float(record["lat"])) == expected
    features = json.loads(open_data(server, "geojson"))["features"]
    [feature] = [f for f in features if f["properties"]["number"] == number]
    assert tuple(feature["geometry"]["coordinates"]) == expected
    for r in listed(server).json():
        assert decimals_of(r["lat"]) <= 4 and decimals_of(r["long"]) <= 4
    xml = listed(server, "xml").text
    assert all(decimals_of(v) <= 4 for v in re.findall(r"<lat>([-0-9.]+)</lat>", xml))


def test_open_data_statuses_are_public_statuses(server: str, loop: Loop) -> None:
    records = list(csv.DictReader(io.StringIO(open_data(server, "csv"))))
    statuses = {r["status"] for r in records}

    assert statuses <= {"accepted", "with_unit", "on_hold", "being_checked", "closed"}
    [mine] = [r for r in records if r["number"] == loop.handled["number"]]
    assert mine["status"] == "closed"


# ---------------------------------------------------------------- reporters on staff pages


def who_column(page: str) -> list[str]:
    """The names of the timeline's actors on a case page."""
    return re.findall(r'<span class="who">([^<]*)</span>', page)


def test_unit_staff_see_citizen_not_the_reporter(people: Staff, loop: Loop) -> None:
    page = people.staff.get(f"{people.server}/cases/{loop.citizens['id']}").text

    assert CITIZEN_NAME not in page
    assert who_column(page)[0].strip().lower() == "citizen"


def test_unit_staff_see_inspector_not_the_inspector(people: Staff, loop: Loop) -> None:
    page = people.staff.get(f"{people.server}/cases/{loop.handled['id']}").text

    assert INSPECTOR_NAME not in page
    assert "inspector" in [w.strip().lower() for w in who_column(page)]


def test_the_centre_sees_its_inspector_but_no_citizen(people: Staff, loop: Loop) -> None:
    handled = people.operator.get(f"{people.server}/cases/{loop.handled['id']}").text
    citizens = people.operator.get(f"{people.server}/cases/{loop.citizens['id']}").text

    assert INSPECTOR_NAME in who_column(handled)
    assert CITIZEN_NAME not in citizens


def test_the_reporter_sees_their_own_name(people: Staff, loop: Loop) -> None:
    page = people.citizen.get(f"{people.server}/cases/{loop.citizens['id']}").text

    assert CITIZEN_NAME in who_column(page)


def test_an_open311_key_reads_the_same_public_view(server: str, loop: Loop) -> None:
    answer = requests.get(
        f"{server}{OPEN311}/requests/{loop.rejected['number']}.json",
        params={"api_key": DEMO_API_KEY},
        timeout=30,
    )

    [row] = answer.json()
    assert row["description"] == "" and row["status"] == "closed"


# ---------------------------------------------------------------- a slow reader


@pytest.fixture
def old_cases(engine: Engine, loop: Loop) -> Iterator[int]:
    """40,000 closed cases reported in January 2001 (a period no other test reads): an export
    of several megabytes, more than the sockets buffer, so the server must wait for its
    reader. Copies of the module's handled case; deleted afterwards."""
    count = 40_000
    with engine.begin() as conn:
        copy_case(conn, loop.handled["number"], count, "2001010", "1 minute")
    yield count
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM cases WHERE number LIKE '2001010%'"))


def open_transactions(engine: Engine) -> set[tuple[int, object]]:
    """The app's connections to the test database inside a transaction: (pid, its start)."""
    with engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT pid, xact_start FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND application_name = 'gridmgmt' AND xact_start IS NOT NULL"
                )
            ).tuples()
        )


def test_a_slow_open_data_reader_holds_no_database_connection(
    server: str, engine: Engine, old_cases: int
) -> None:
    params = {"start": "2001-01-01", "end": "2001-02-28"}
    with requests.get(f"{server}/open-data/cases.csv", params=params, stream=True, timeout=60) as a:
        assert a.status_code == 200
        head = a.raw.read(4096)  # ...then the client stops reading, like one on a bad line
        time.sleep(1.0)  # the server fills the sockets' buffers, then waits for the reader
        before = open_transactions(engine)
        time.sleep(2.0)
        held = before & open_transactions(engine)  # the same transaction, seconds later
        rest = a.raw.read()

    assert head.startswith(b"number,category")
    assert held == set()  # no transaction kept open while the reader dawdles (a chunk's
    # lasts milliseconds; a streamed cursor's, as long as the reader takes)
    rows = (head + rest).decode().splitlines()
    assert len(rows) == old_cases + 1 and len(set(rows)) == len(rows)  # none twice, none lost
