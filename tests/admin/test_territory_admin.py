"""The territory administration page (`/admin/territory`): through the app on a seeded demo
city rolled back after each test (uploads of real Los Angeles council boundaries, good and
bad; cells; the check), then in headless Chromium on a clone of the demo city of its own, as
the admin on a phone and a desktop, in English and Chinese; every other role refused."""

from __future__ import annotations

import copy
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page
from redis import Redis
from shapely.geometry import mapping, shape
from shapely.ops import unary_union
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import Session

from gridmgmt.kernel.audit import AdminAudit, AuditAction
from gridmgmt.kernel.db import db
from grids.geojson import load_layer
from grids.models import Area, GridCell
from tests.admin.conftest import DESKTOP, PHONE, TIMEOUT_MS, sign_in
from tests.admin.test_admin_browser import LOCALES, no_sideways_scroll, translated
from tests.conftest import demo_clone, shared_file
from tests.support import Web, browser, nested, point_in, real_app, seeded_demo, serving

STREET = "990100006"  # the demo's street: the councils below go under it
COUNCILS = (
    "126",
    "43",
    "53",
)  # Hermon, Elysian Valley Riverside, Rampart Village (not in the demo)
NEW_CODES = {"990100006126", "990100006043", "990100006053"}
DEMO_COMMUNITY = "990100006046"  # Historic Cultural, a demo community
OTHERS = ["inspector", "operator", "dispatcher", "staff", "leader", "citizen"]
PATHS = ["/admin/territory", "/admin/territory/check"]
LIMIT = 32 * 1024 * 1024


def councils(*ids: str) -> dict[str, Any]:
    """A FeatureCollection of these real councils, in this order."""
    layer = load_layer(shared_file("la_neighborhood_councils.geojson"))
    by_id = {f["properties"]["nc_id"]: f for f in layer["features"]}
    return {"type": "FeatureCollection", "features": [copy.deepcopy(by_id[i]) for i in ids]}


def self_intersecting(feature: dict[str, Any]) -> dict[str, Any]:
    """The feature with two far vertices of its outer ring swapped: a bow-tie (invalid)."""
    ring = feature["geometry"]["coordinates"][0][0]
    i, j = len(ring) // 4, 3 * len(ring) // 4
    ring[i], ring[j] = ring[j], ring[i]
    return feature


def bad_layer() -> dict[str, Any]:
    """The three councils: the second self-intersecting, the third without its code."""
    layer = councils(*COUNCILS)
    self_intersecting(layer["features"][1])
    del layer["features"][2]["properties"]["nc_id"]
    return layer


def import_form(data: bytes, name: str = "councils.geojson", **fields: str) -> dict[str, Any]:
    """The import form's fields, with `data` as the uploaded file."""
    return {
        "level": "community",
        "code_field": "nc_id",
        "name_field": "name",
        "parent_code": STREET,
        "file": (io.BytesIO(data), name),
        **fields,
    }


def as_bytes(layer: dict[str, Any]) -> bytes:
    return json.dumps(layer).encode()


# ---------------------------------------------------------------- in the browser

# These come first: the tests through the app below bind the app's session to their seeded
# city's connection (`tests.support.rolled_back`) for the rest of the module, and the live
# server's requests would then run there too (the server refuses to start if they do).


@pytest.fixture(scope="module")
def territory_db(demo_database_url: URL) -> Iterator[URL]:
    """A database of its own for the browser tests: a clone of the demo city."""
    with demo_clone("territory", demo_database_url) as url:
        yield url


@pytest.fixture(scope="module")
def territory_engine(territory_db: URL) -> Iterator[Engine]:
    engine = create_engine(territory_db)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def territory_server(
    territory_db: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    bound = db.primary_session.session_factory.kw.get("bind")
    assert bound is None, "the app's session is bound to a test's connection: run these first"
    with (
        real_app(territory_db, redis_url, tmp_path_factory.mktemp("photos")) as live,
        serving(live) as url,
    ):
        yield url


@pytest.fixture(scope="module")
def signed_in(browser: Browser, territory_server: str) -> Iterator[Callable[..., Page]]:
    """`signed_in(username, **options)`: a page of a new context signed in as that demo login
    (None: anonymous), phone-sized unless `options` say otherwise."""
    opened: list[BrowserContext] = []

    def make(username: str | None, **options: Any) -> Page:
        context = browser.new_context(base_url=territory_server, **{**PHONE, **options})
        context.set_default_timeout(TIMEOUT_MS)
        opened.append(context)
        page = context.new_page()
        if username is not None:
            sign_in(page, territory_server, username)
        return page

    yield make
    for context in opened:
        context.close()


def options_for(size: str, lang: str) -> dict[str, Any]:
    options = {**(PHONE if size == "phone" else DESKTOP), "locale": LOCALES[lang]}
    if size == "desktop":
        options |= {"is_mobile": False, "has_touch": False}
    return options


@pytest.mark.browser
@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_pages_render(
    signed_in: Callable[..., Page],
    screenshot: Callable[[Page, str], None],
    size: str,
    lang: str,
) -> None:
    page = signed_in("admin", **options_for(size, lang))

    for path, name, title in (
        ("/admin/territory", "territory", "Territory"),
        ("/admin/territory/check", "territory-check", "Territory check"),
    ):
        answer = page.goto(path)
        assert answer is not None and answer.status == 200
        assert page.locator("html").get_attribute("lang") == lang
        if lang == "en" or not translated(title):
            assert page.locator("h1").inner_text() == title
        else:
            assert page.locator("h1").inner_text() != title
        no_sideways_scroll(page)
        screenshot(page, f"{name}-{size}-{lang}")


@pytest.mark.browser
def test_upload_generate_and_check_in_the_browser(
    signed_in: Callable[..., Page],
    territory_engine: Engine,
    screenshot: Callable[[Page, str], None],
    tmp_path: Path,
) -> None:
    good = tmp_path / "three-councils.geojson"
    good.write_bytes(as_bytes(councils(*COUNCILS)))
    bad = tmp_path / "bad-councils.geojson"
    bad.write_bytes(as_bytes(bad_layer()))
    page = signed_in("admin")
    page.goto("/admin/territory")
    page.click("summary:has-text('Import areas from GeoJSON')")

    page.set_input_files("#import-file", str(bad))
    page.fill("#import-code-field", "nc_id")
    page.fill("#import-parent", STREET)
    with page.expect_navigation():
        page.click("#import-form button[type=submit]")
    rows = page.locator("tr[data-feature]").evaluate_all("els => els.map(e => e.dataset.feature)")
    assert rows == ["2", "3"]
    assert page.locator("#import-code-field").input_value() == "nc_id"  # the form kept
    no_sideways_scroll(page)
    screenshot(page, "territory-rejected-phone-en")

    page.set_input_files("#import-file", str(good))
    with page.expect_navigation():
        page.click("#import-form button[type=submit]")
    assert "three-councils.geojson: 3 created, 0 updated." in page.locator(".flashes").inner_text()
    assert page.locator("[data-flag=without-cells]").is_visible()

    assert page.locator("#cells-community").is_visible()  # open: communities without cells
    page.select_option("#cells-community", "990100006126")
    page.fill("#cells-size", "100")
    with page.expect_navigation():
        page.click("#cells-form button[type=submit]")
    made = page.locator("tr[data-area='990100006126'] [data-cells]").get_attribute("data-cells")
    assert made is not None and int(made) > 0
    assert f"cells of 100 m made: {int(made)}." in page.locator(".flashes").inner_text()
    no_sideways_scroll(page)
    screenshot(page, "territory-generated-phone-en")

    page.click("a.territory-check-link")
    page.locator("#check-map.leaflet-container").wait_for()
    markers = int(page.locator("#check-map").get_attribute("data-markers") or "0")
    assert markers == page.locator("tr[data-kind]").count() > 0
    assert page.locator("#check-map").get_attribute("data-shapes") == str(markers)
    assert page.locator("#check-map .leaflet-interactive").count() >= markers
    assert page.locator("#check-map .leaflet-marker-icon").count() == 0  # no stray points
    gap = page.locator("tr[data-kind=community_gap]", has_text="990100006043")
    whole = int(page.locator("#check-map").get_attribute("data-zoom") or "0")
    gap.locator("button.show-on-map").click()
    assert page.locator("#check-map").get_attribute("data-shown") == gap.get_attribute("data-index")
    assert int(page.locator("#check-map").get_attribute("data-zoom") or "0") > whole
    assert "990100006043" in page.locator(".leaflet-popup-content").inner_text()
    screenshot(page, "territory-check-popup-phone-en")

    page.goto("/admin/audit?who=admin")
    actions = page.locator("[data-action]").evaluate_all("els => els.map(e => e.dataset.action)")
    assert actions[:2] == ["cells_generated", "territory_imported"]
    no_sideways_scroll(page)
    screenshot(page, "territory-audit-phone-en")

    with Session(territory_engine) as session:
        actions = list(
            session.scalars(
                select(AdminAudit.action)
                .where(AdminAudit.action.in_(["territory_imported", "cells_generated"]))
                .order_by(AdminAudit.id)
            )
        )
        assert actions == ["territory_imported", "cells_generated"]
        codes = set(session.scalars(select(Area.code).where(Area.code.in_(NEW_CODES))))
        assert codes == NEW_CODES


@pytest.mark.browser
@pytest.mark.parametrize("role", OTHERS)
def test_other_roles_are_refused_in_the_browser(signed_in: Callable[..., Page], role: str) -> None:
    page = signed_in(role)

    for path in PATHS:
        answer = page.goto(path)
        assert answer is not None and answer.status == 403, (role, path)


@pytest.mark.browser
def test_anonymous_is_sent_to_login_in_the_browser(signed_in: Callable[..., Page]) -> None:
    page = signed_in(None)

    page.goto("/admin/territory")

    assert "/login" in page.url


# ---------------------------------------------------------------- through the app


@pytest.fixture(scope="module")
def city(app: Flask) -> Iterator[Connection]:
    with seeded_demo() as connection:
        yield connection


@pytest.fixture
def session(city: Connection, redis_conn: Redis) -> Iterator[Session]:
    db.session.remove()
    with nested(city) as session:
        yield session


@pytest.fixture
def admin(app: Flask, session: Session) -> Web:
    return browser(app, "admin")


def audit_rows(session: Session, action: AuditAction) -> list[AdminAudit]:
    session.expire_all()
    query = select(AdminAudit).where(AdminAudit.action == action.value).order_by(AdminAudit.id)
    return list(session.scalars(query))


def community_codes(session: Session) -> set[str]:
    session.expire_all()
    return set(session.scalars(select(Area.code).where(Area.level == "community")))


def cells_of(session: Session, code: str) -> int:
    query = (
        select(func.count())
        .select_from(GridCell)
        .join(Area, Area.id == GridCell.community_id)
        .where(Area.code == code)
    )
    return session.scalar(query) or 0


def problem_rows(page: str) -> list[tuple[str, str]]:
    """(feature, error code) of each row of the refused layer's table."""
    return re.findall(r'<tr data-feature="(\d+)" data-error="([a-z_]+)">', page)


def test_admin_sees_the_territory(admin: Web) -> None:
    answer = admin.get("/admin/territory")

    page = answer.get_data(as_text=True)
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    assert '<li data-count="community"><strong>8</strong>' in page
    assert f'<tr data-area="{DEMO_COMMUNITY}">' in page
    assert 'data-flag="without-cells"' not in page  # the demo's communities all have cells


@pytest.mark.parametrize("role", OTHERS)
def test_other_roles_are_refused(app: Flask, session: Session, role: str) -> None:
    web = browser(app, role)

    for path in PATHS:
        assert web.get(path).status_code == 403, (role, path)
    upload = web.post("/admin/territory/import", import_form(as_bytes(councils(*COUNCILS))))
    cells = web.post("/admin/territory/cells", {"community": DEMO_COMMUNITY, "size": "100"})
    assert (upload.status_code, cells.status_code) == (403, 403)
    assert community_codes(session).isdisjoint(NEW_CODES)


def test_anonymous_goes_to_login(app: Flask, session: Session) -> None:
    web = browser(app)

    for path in PATHS:
        answer = web.get(path)
        assert answer.status_code == 302 and "/login" in answer.headers["Location"], path


def test_a_good_upload_is_imported_and_audited(admin: Web, session: Session) -> None:
    answer = admin.post("/admin/territory/import", import_form(as_bytes(councils(*COUNCILS))))

    assert answer.status_code == 303, answer.get_data(as_text=True)[:500]
    assert community_codes(session) >= NEW_CODES
    page = admin.get("/admin/territory").get_data(as_text=True)
    assert "councils.geojson: 3 created, 0 updated." in page
    assert '<li data-count="community"><strong>11</strong>' in page
    assert 'data-flag="without-cells"' in page  # the three new ones have no cells yet
    for code in NEW_CODES:
        assert f'<tr data-area="{code}" class="no-cells">' in page
    (row,) = audit_rows(session, AuditAction.TERRITORY_IMPORTED)
    assert (row.actor, row.target_type, row.target_id) == ("admin", "territory", "community")
    assert row.before == {"level": "community", "areas": 8}
    assert row.after is not None and row.after["areas"] == 11 and row.after["created"] == 3


def test_a_district_and_its_street_are_uploaded_then_communities_under_them(
    admin: Web, session: Session
) -> None:
    whole = councils(*COUNCILS)
    union = unary_union([shape(f["geometry"]) for f in whole["features"]])

    def parent(code: str, name: str) -> bytes:
        feature = {"type": "Feature", "properties": {"code": code, "name": name}}
        return as_bytes({"type": "FeatureCollection", "features": [{**feature, "geometry":
                         mapping(union)}]})  # fmt: skip

    district = admin.post(
        "/admin/territory/import",
        import_form(parent("990200", "North East"), level="district", code_field="code",
                    parent_code=""),
    )  # fmt: skip
    street = admin.post(
        "/admin/territory/import",
        import_form(parent("001", "Riverside"), level="street", code_field="code",
                    parent_code="990200"),
    )  # fmt: skip
    communities = admin.post(
        "/admin/territory/import", import_form(as_bytes(whole), parent_code="990200001")
    )

    assert (district.status_code, street.status_code, communities.status_code) == (303, 303, 303)
    session.expire_all()
    found = session.execute(select(Area.code, Area.level).where(Area.code.like("9902%")))
    levels = {code: level for code, level in found}
    assert levels["990200"] == "district" and levels["990200001"] == "street"
    assert {levels[f"990200001{c.zfill(3)}"] for c in COUNCILS} == {"community"}
    assert [r.target_id for r in audit_rows(session, AuditAction.TERRITORY_IMPORTED)] == [
        "district",
        "street",
        "community",
    ]


def test_every_bad_feature_is_listed_and_nothing_imported(admin: Web, session: Session) -> None:
    answer = admin.post("/admin/territory/import", import_form(as_bytes(bad_layer())))

    page = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert "Features with problems: 2 of 3. Nothing was imported." in page
    assert problem_rows(page) == [("2", "invalid_input"), ("3", "invalid_input")]
    assert "feature 2: invalid geometry (Self-intersection" in page
    assert "feature 3 has no field &#39;nc_id&#39;" in page
    assert 'value="nc_id"' in page  # the form again, as it was filled
    assert community_codes(session).isdisjoint(NEW_CODES)
    assert audit_rows(session, AuditAction.TERRITORY_IMPORTED) == []


def test_make_valid_repairs_the_invalid_geometry(admin: Web, session: Session) -> None:
    layer = councils(*COUNCILS)
    self_intersecting(layer["features"][1])

    refused = admin.post("/admin/territory/import", import_form(as_bytes(layer)))
    repaired = admin.post("/admin/territory/import", import_form(as_bytes(layer), make_valid="1"))

    assert refused.status_code == 400
    assert problem_rows(refused.get_data(as_text=True)) == [("2", "invalid_input")]
    assert repaired.status_code == 303
    assert community_codes(session) >= NEW_CODES
    (row,) = audit_rows(session, AuditAction.TERRITORY_IMPORTED)
    assert row.after is not None and row.after["make_valid"] is True


def test_a_feature_missing_its_code(admin: Web, session: Session) -> None:
    layer = councils(*COUNCILS)
    del layer["features"][0]["properties"]["nc_id"]

    answer = admin.post("/admin/territory/import", import_form(as_bytes(layer)))

    page = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert problem_rows(page) == [("1", "invalid_input")]
    assert "feature 1 has no field &#39;nc_id&#39;" in page
    assert community_codes(session).isdisjoint(NEW_CODES)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<html>not a layer</html>", "notes.geojson is not valid GeoJSON"),
        (
            b'{"type": "Feature", "properties": {}}',
            "notes.geojson is not a GeoJSON FeatureCollection",
        ),
        (b'{"type": "FeatureCollection", "features": []}', "notes.geojson has no features"),
    ],
)
def test_what_is_not_geojson_is_refused(
    admin: Web, session: Session, data: bytes, message: str
) -> None:
    answer = admin.post("/admin/territory/import", import_form(data, "notes.geojson"))

    assert answer.status_code == 400
    assert message in answer.get_data(as_text=True)
    assert audit_rows(session, AuditAction.TERRITORY_IMPORTED) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"level": "county"}, "unknown level &#39;county&#39;"),
        ({"code_field": ""}, "name the properties that hold each area"),
        ({"parent_code": "990199"}, "parent area 990199 does not exist"),
        ({"parent_code": "990100"}, "a community cannot have parent 990100 (district)"),
    ],
)
def test_bad_form_fields_are_refused(
    admin: Web, session: Session, fields: dict[str, str], message: str
) -> None:
    answer = admin.post(
        "/admin/territory/import", import_form(as_bytes(councils(*COUNCILS)), **fields)
    )

    assert answer.status_code in (400, 404)
    assert message in answer.get_data(as_text=True)
    assert community_codes(session).isdisjoint(NEW_CODES)


def test_no_file_is_refused(admin: Web, session: Session) -> None:
    form = import_form(b"")
    del form["file"]

    answer = admin.post("/admin/territory/import", form)

    assert answer.status_code == 400
    assert "choose a GeoJSON file to import" in answer.get_data(as_text=True)


@pytest.mark.parametrize("over", [1, 200_000])  # read past the limit; said by its length
def test_a_file_over_the_limit_is_refused(admin: Web, session: Session, over: int) -> None:
    real = as_bytes(councils(*COUNCILS))
    padded = real[:-1] + b" " * (LIMIT + over - len(real)) + b"}"  # still valid GeoJSON

    answer = admin.post("/admin/territory/import", import_form(padded))

    assert answer.status_code == 413
    assert "larger than the 32 MB this page takes" in answer.get_data(as_text=True)
    assert community_codes(session).isdisjoint(NEW_CODES)


def test_cells_for_one_community(admin: Web, session: Session) -> None:
    before = cells_of(session, DEMO_COMMUNITY)

    answer = admin.post(
        "/admin/territory/cells", {"community": DEMO_COMMUNITY, "size": "200", "code_length": "15"}
    )

    assert answer.status_code == 303
    after = cells_of(session, DEMO_COMMUNITY)
    assert 0 < after < before  # 200 m squares: about a quarter as many as 100 m ones
    page = admin.get("/admin/territory").get_data(as_text=True)
    assert f"{DEMO_COMMUNITY} HISTORIC CULTURAL NC: cells of 200 m made: {after}." in page
    (row,) = audit_rows(session, AuditAction.CELLS_GENERATED)
    assert (row.target_type, row.before, row.after) == (
        "area",
        {"name": "HISTORIC CULTURAL NC", "code": DEMO_COMMUNITY, "cells": before},
        {
            "name": "HISTORIC CULTURAL NC",
            "code": DEMO_COMMUNITY,
            "cells": after,
            "cell_size_m": 200.0,
            "code_length": 15,
        },
    )


def test_cells_for_all_communities(admin: Web, session: Session) -> None:
    answer = admin.post("/admin/territory/cells", {"community": "", "size": "100"})

    assert answer.status_code == 303
    total = session.scalar(select(func.count()).select_from(GridCell))
    page = admin.get("/admin/territory").get_data(as_text=True)
    assert f"Cells of 100 m made: {total:,}, in 8 communities." in page
    (row,) = audit_rows(session, AuditAction.CELLS_GENERATED)
    assert (row.target_type, row.target_id) == ("territory", "all") and row.after is not None
    assert row.after["cells"] == total and row.after["communities"] == 8


@pytest.mark.parametrize(
    ("fields", "message", "status"),
    [
        ({"size": "abc"}, "the cell size must be a number of metres", 400),
        ({"size": "nan"}, "the cell size must be a number of metres", 400),
        ({"size": "0.5"}, "cell size must be between 1 and 10000 metres", 400),
        ({"size": "100", "code_length": "16"}, "cell codes are 14 or 15 digits", 400),
        ({"size": "100", "community": "990100006999"}, "990100006999 does not exist", 404),
        ({"size": "20"}, "use a larger --size", 400),  # 50x50 too many for 999 codes
    ],
)
def test_bad_cell_settings_are_refused(
    admin: Web, session: Session, fields: dict[str, str], message: str, status: int
) -> None:
    before = cells_of(session, DEMO_COMMUNITY)

    answer = admin.post("/admin/territory/cells", {"community": DEMO_COMMUNITY, **fields})

    assert answer.status_code == status
    assert message in answer.get_data(as_text=True)
    assert cells_of(session, DEMO_COMMUNITY) == before
    assert audit_rows(session, AuditAction.CELLS_GENERATED) == []


def test_cells_that_cases_refer_to_are_kept(app: Flask, admin: Web, session: Session) -> None:
    last = "990100006128"  # the last community by code: "all" reaches it after the others
    lon, lat = point_in(session, last)
    reported = browser(app, "operator").api(
        "/api/reports", {"category": "E0102", "lon": lon, "lat": lat}
    )
    assert reported.status_code == 201, reported.get_data(as_text=True)
    first, cells = cells_of(session, DEMO_COMMUNITY), cells_of(session, last)

    one = admin.post("/admin/territory/cells", {"community": last, "size": "200"})
    every = admin.post("/admin/territory/cells", {"community": "", "size": "200"})

    assert (one.status_code, every.status_code) == (409, 409)
    assert "cases refer to; its cells cannot be regenerated" in every.get_data(as_text=True)
    session.expire_all()
    assert (cells_of(session, DEMO_COMMUNITY), cells_of(session, last)) == (first, cells)
    assert audit_rows(session, AuditAction.CELLS_GENERATED) == []


def test_check_lists_the_problems(admin: Web, session: Session) -> None:
    answer = admin.post("/admin/territory/import", import_form(as_bytes(councils(*COUNCILS))))
    assert answer.status_code == 303

    page = admin.get("/admin/territory/check").get_data(as_text=True)

    # The three new councils have no cells: each a gap the size of itself.
    points = json.loads(
        re.search(
            r'<script type="application/json" id="check-problems">(.*?)</script>', page, re.S
        ).group(1)  # type: ignore[union-attr]
    )
    gaps = {p["first"] for p in points if p["kind"] == "community_gap"}
    assert gaps >= NEW_CODES
    assert all(-119 < p["lon"] < -118 and 33 < p["lat"] < 35 for p in points)
    assert 'data-problems="' in page and "Part of a community without cells" in page
    assert page.count('<tr data-kind="') == len(points)


def test_check_tolerance(admin: Web) -> None:
    loose = admin.get("/admin/territory/check?tolerance=1000000").get_data(as_text=True)
    bad = admin.get("/admin/territory/check?tolerance=-3")

    assert 'data-problems="0"' in loose and "No gaps or overlaps above the tolerance." in loose
    assert bad.status_code == 400
    assert "The tolerance must be a number of m² between 0 and 1000000." in bad.get_data(
        as_text=True
    )
