"""The report page's map in headless Chromium: what it shows so that a place can be recognised.

Without a tile layer (a city intranet, offline) the map draws what the database knows: the
community names, and from zoom 17 the unit grid cells in view with their codes, fetched from
the app alone. With a tile URL set, the tiles come from that origin and only the community
names are drawn over them. "Use my location" shows the device's position and its accuracy."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from playwright.sync_api import Page, Request, Route, expect
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from gridmgmt.kernel import settings
from grids.services import locate
from tests.browser.conftest import ContextFor

TILES = "https://tiles.example.test/{z}/{x}/{y}.png"
TILE_ORIGIN = "https://tiles.example.test"
ATTRIBUTION = "© Example City GIS"
ACCURACY_M = 25
DESKTOP = {"viewport": {"width": 1366, "height": 900}, "is_mobile": False, "has_touch": False}
# The smallest PNG there is: one transparent pixel, as every tile of the fake tile server.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def community_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(text("SELECT name FROM areas WHERE level = 'community'")))


def cell_code_at(engine: Engine, point: tuple[float, float]) -> str:
    with Session(engine) as session:
        return locate(session, *point).cell_code


def outside_requests(page: Page, base_url: str) -> list[str]:
    """Start recording every request the page makes to anywhere but the app itself."""
    seen: list[str] = []

    def note(request: Request) -> None:
        if not request.url.startswith((base_url, "data:", "blob:")):
            seen.append(request.url)

    page.on("request", note)
    return seen


def label_in_view(page: Page, exclude: str) -> tuple[float, float]:
    """The centre of a cell label inside the map, but not the one of cell `exclude` (under
    the marker) nor under the zoom buttons."""
    frame = page.locator("#picker").bounding_box()
    assert frame is not None
    left, top = frame["x"] + 16, frame["y"] + 16
    right, bottom = frame["x"] + frame["width"] - 16, frame["y"] + frame["height"] - 16
    for label in page.locator("#picker .gm-label-cell").all():
        box = label.bounding_box()  # as drawn (getBoundingClientRect)
        if box is None or exclude.endswith(label.locator(".gm-cell-sequence").inner_text()):
            continue
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        zoom_buttons = x < frame["x"] + 64 and y < frame["y"] + 104
        if left < x < right and top < y < bottom and not zoom_buttons:
            return x, y
    raise AssertionError("no cell label inside the map")


def use_my_location(page: Page) -> None:
    """Tap "Use my location" and wait until the map shows the position."""
    page.get_by_role("button", name=re.compile("Use my location|使用我的位置")).click()
    expect(page.locator("#picker .gm-here")).to_have_count(1)


@pytest.fixture
def at_point(context_for: ContextFor, community_point: tuple[float, float]) -> Callable[..., Page]:
    """`at_point(**options)`: an anonymous report page whose device is at `community_point`,
    `ACCURACY_M` metres sure."""

    def open_page(**options: object) -> Page:
        context = context_for(
            None,
            geolocation={
                "longitude": community_point[0],
                "latitude": community_point[1],
                "accuracy": ACCURACY_M,
            },
            permissions=["geolocation"],
            **options,
        )
        return context.new_page()

    return open_page


@pytest.fixture
def tile_setting(live_app: Flask, browser_engine: Engine) -> Iterator[None]:
    """The city's tile layer set to TILES (as /admin/settings would), put back afterwards."""
    with browser_engine.begin() as conn:
        before = conn.execute(
            text("SELECT tile_url, tile_attribution FROM city_settings WHERE id = 1")
        ).first()
        conn.execute(
            text("""
                INSERT INTO city_settings (id, tile_url, tile_attribution)
                VALUES (1, :url, :attribution)
                ON CONFLICT (id) DO UPDATE SET tile_url = :url, tile_attribution = :attribution
            """),
            {"url": TILES, "attribution": ATTRIBUTION},
        )
    with live_app.app_context():
        settings.forget()
    yield
    with browser_engine.begin() as conn:
        if before is None:
            conn.execute(text("DELETE FROM city_settings WHERE id = 1"))
        else:
            conn.execute(
                text("UPDATE city_settings SET tile_url = :u, tile_attribution = :a WHERE id = 1"),
                {"u": before[0], "a": before[1]},
            )
    with live_app.app_context():
        settings.forget()


@pytest.mark.parametrize(
    ("size", "lang"),
    [("phone", "en-US"), ("phone", "zh-CN"), ("desktop", "en-US"), ("desktop", "zh-CN")],
)
def test_without_tiles_the_map_names_the_communities_and_the_cells(
    at_point: Callable[..., Page],
    live_server: str,
    browser_engine: Engine,
    community_point: tuple[float, float],
    screenshot: Callable[[Page, str], None],
    size: str,
    lang: str,
) -> None:
    page = at_point(locale=lang, **(DESKTOP if size == "desktop" else {}))
    outside = outside_requests(page, live_server)
    page.goto("/report")
    picker = page.locator("#picker")

    # Mid zoom: the community names, as the database has them, on plain ground.
    names = picker.locator(".gm-label-community")
    expect(names.first).to_be_visible()
    shown = set(names.all_inner_texts())
    assert shown and shown <= community_names(browser_engine)
    expect(picker.locator(".leaflet-tile")).to_have_count(0)
    expect(picker.locator(".gm-label-cell")).to_have_count(0)  # no cells below zoom 17
    screenshot(page, f"base-map-{size}-{lang[:2]}-communities")

    # "Use my location": the device's dot and accuracy circle, and from zoom 17 the cells in
    # view with their codes; the one under the dot reads as the sequence of its code.
    use_my_location(page)
    expect(picker.locator(".gm-here-accuracy")).to_have_count(1)
    assert picker.get_attribute("data-accuracy") == str(ACCURACY_M)
    code = cell_code_at(browser_engine, community_point)
    cells = picker.locator(".gm-label-cell")
    expect(cells.first).to_be_visible()
    sequences = picker.locator(".gm-cell-sequence")
    expect(sequences.filter(has_text=re.compile(f"^{code[12:]}$")).first).to_be_visible()
    expect(picker.locator(".gm-cell-community").first).to_be_hidden()  # the sequence alone
    screenshot(page, f"base-map-{size}-{lang[:2]}-cells")

    # One step closer: the whole code.
    picker.locator(".leaflet-control-zoom-in").click()
    whole = picker.locator(".gm-label-cell", has_text=code[:12])
    expect(whole.filter(has_text=code[12:]).first).to_be_visible()
    expect(picker.locator(".gm-cell-community", has_text=code[:12]).first).to_be_visible()
    screenshot(page, f"base-map-{size}-{lang[:2]}-codes")

    # The labels are text on the ground, not buttons: a tap on a code still places the point.
    before = page.input_value("#lon")
    x, y = label_in_view(page, exclude=code)
    page.mouse.click(x, y)
    expect(page.locator("#lon")).not_to_have_value(before)

    assert outside == [], f"the map fetched from outside the app: {outside[:5]}"


def test_with_a_tile_url_the_tiles_come_from_that_origin_and_labels_stay_light(
    tile_setting: None,
    at_point: Callable[..., Page],
    live_server: str,
    screenshot: Callable[[Page, str], None],
) -> None:
    page = at_point()
    tiles: list[str] = []

    def serve_tile(route: Route) -> None:
        tiles.append(route.request.url)
        route.fulfill(status=200, content_type="image/png", body=PIXEL)

    page.route(f"{TILE_ORIGIN}/**", serve_tile)
    outside = outside_requests(page, live_server)
    answer = page.goto("/report")
    assert answer is not None
    assert TILE_ORIGIN in answer.headers["content-security-policy"]
    picker = page.locator("#picker")
    expect(picker.locator(".leaflet-tile-loaded").first).to_be_attached()
    expect(picker.locator(".leaflet-control-attribution")).to_contain_text(ATTRIBUTION)
    expect(picker.locator(".gm-label-community").first).to_be_visible()

    use_my_location(page)
    page.wait_for_timeout(600)  # past the map's debounce: cells would have been asked for
    expect(picker.locator(".gm-label-cell")).to_have_count(0)
    screenshot(page, "base-map-phone-en-tiles")

    assert tiles, "no tile was requested"
    assert all(url.startswith(f"{TILE_ORIGIN}/") for url in tiles)
    assert set(outside) == set(tiles), "only the tile server is asked, nothing else outside"
    assert all(re.search(r"/\d+/\d+/\d+\.png$", url) for url in tiles)


def test_a_case_page_shows_the_cell_codes_around_the_case(
    context_for: ContextFor,
    browser_engine: Engine,
    community_point: tuple[float, float],
    screenshot: Callable[[Page, str], None],
) -> None:
    """The other maps (pointMap, baseMap) draw the same: a case page starts at zoom 17."""
    page = context_for("inspector").new_page()
    page.goto("/report")
    page.fill("#lon", str(community_point[0]))
    page.fill("#lat", str(community_point[1]))
    page.select_option("#category", "E0102")  # exposed garbage
    page.fill("textarea[name=description]", "Base map: a bag of garbage by the kerb")
    page.click("#report-form button[type=submit]")
    page.wait_for_url(re.compile(r"/cases/\d+$"))
    code = cell_code_at(browser_engine, community_point)
    sequences = page.locator("#case-map .gm-cell-sequence")
    expect(sequences.filter(has_text=re.compile(f"^{code[12:]}$")).first).to_be_visible()
    screenshot(page, "base-map-phone-en-case")
