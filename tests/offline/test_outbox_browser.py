"""The phone app in headless Chromium, as an inspector without a signal uses it: reports with
photos made offline survive a reload and a browser restart and reach the server exactly once
when the network returns, with their photos and capture times; a refused report keeps its
reason until deleted; a task action queued on a case that changed meanwhile comes back as a
conflict, one whose reply was lost is sent once (its action UUID); a deployment's new service
worker takes over; signing out drops the kept pages.

Set GRIDMGMT_SCREENSHOTS to a folder to keep screenshots of the outbox (English, Chinese)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from PIL import Image
from playwright.sync_api import Page, expect
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.offline.conftest import PhoneFor, sign_in
from tests.support import Web, browser, jpeg

CATEGORY = "E0102"  # exposed garbage
SHOTS = os.environ.get("GRIDMGMT_SCREENSHOTS")


def shot(page: Page, name: str) -> None:
    """Keep a picture of the outbox (only its section: small enough for the README)."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.locator("section.outbox").screenshot(path=str(Path(SHOTS) / f"{name}.png"))


def photo_file(folder: Path, name: str, size: tuple[int, int], color: tuple[int, int, int]) -> Path:
    """A real photo on disk (a noisy one, so that it is not tiny as a JPEG)."""
    image = Image.effect_noise(size, 60).convert("RGB")
    image = Image.blend(image, Image.new("RGB", size, color), 0.5)
    path = folder / name
    image.save(path, "JPEG", quality=90)
    return path


def wait_for_worker(page: Page) -> None:
    """Until the service worker controls the page and has kept the offline pages."""
    # Polled from here: wait_for_function's own polling evaluates strings, which the CSP refuses.
    wait_until(lambda: page.evaluate("navigator.serviceWorker.controller !== null"))
    wait_until(
        lambda: page.evaluate(
            """async () => {
                const cache = await caches.open('gm-pages');
                return !!(await cache.match('/report')) && !!(await cache.match('/outbox'));
            }"""
        )
    )


def wait_for_kept(page: Page, path: str, showing: str) -> None:
    """Until the worker's copy of `path` shows `showing` (it is written after the page)."""
    script = """async ([path, showing]) => {
        const kept = await (await caches.open('gm-pages')).match(path);
        return !!kept && (await kept.text()).includes(showing);
    }"""
    wait_until(lambda: page.evaluate(script, [path, showing]))


def outbox_states(page: Page) -> list[str]:
    return page.locator("#outbox li.outbox-item").evaluate_all(
        "items => items.map(i => i.dataset.state)"
    )


def make_report(page: Page, description: str, photos: list[Path]) -> None:
    """Fill the report form at the phone's position and submit it."""
    page.get_by_role("button", name="Use my location").click()
    expect(page.locator("#lon")).not_to_have_value("")
    page.select_option("#category", CATEGORY)
    page.fill("textarea[name=description]", description)
    page.set_input_files("input[name=photos]", [str(p) for p in photos])
    page.locator("#report-form button[type=submit]").click()


def cases_described(engine: Engine, prefix: str) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT c.id, c.number, c.description, c.captured_at, c.reported_at,"
                " c.gps_accuracy_m, c.submission_uuid,"
                " (SELECT count(*) FROM photos p WHERE p.case_id = c.id) AS photos,"
                " (SELECT count(*) FROM photos p WHERE p.case_id = c.id"
                "  AND p.client_uuid IS NOT NULL AND p.captured_at IS NOT NULL) AS phone_photos"
                " FROM cases c WHERE c.description LIKE :p ORDER BY c.id"
            ),
            {"p": prefix + "%"},
        ).mappings()
        return [dict(r) for r in rows]


def wait_until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.3)


def test_reports_made_offline_reach_the_server_once_after_a_restart(
    phone_for: PhoneFor, offline_engine: Engine, tmp_path: Path
) -> None:
    photos = [
        photo_file(tmp_path, "big.jpg", (3000, 2000), (120, 80, 40)),  # shrunk on the phone
        photo_file(tmp_path, "small-1.jpg", (800, 600), (20, 120, 40)),
        photo_file(tmp_path, "small-2.jpg", (640, 480), (20, 40, 160)),
    ]
    phone = phone_for("field")
    page = phone.new_page()
    sign_in(page, "inspector")
    page.goto("/report")
    wait_for_worker(page)
    empty = page.evaluate("navigator.storage.estimate().then(e => e.usage)")

    phone.set_offline(True)
    made = [("offline A", photos[:2]), ("offline B", photos[2:]), ("offline C", photos)]
    for description, files in made:
        make_report(page, description, files)
        expect(page.locator("#report-status")).to_contain_text("Saved on this phone")
    expect(page.locator("#outbox li.outbox-item")).to_have_count(3)
    assert outbox_states(page) == ["waiting"] * 3
    expect(page.locator("#outbox li.outbox-item").first).to_contain_text("GPS ±9 m")

    page.reload()  # no network: the service worker's copy of the page, the outbox as it was
    expect(page.locator("h1")).to_have_text("Report a problem")
    expect(page.locator("#outbox li.outbox-item")).to_have_count(3)
    usage = page.evaluate("navigator.storage.estimate().then(e => e.usage)")
    kept = page.evaluate(
        """async () => {
            const db = await new Promise(r => { const q = indexedDB.open('gridmgmt-outbox');
                                                q.onsuccess = () => r(q.result); });
            const blobs = await new Promise(r => { const q = db.transaction('blobs')
                .objectStore('blobs').getAll(); q.onsuccess = () => r(q.result); });
            return blobs.map(b => b.blob.size);
        }"""
    )
    assert len(kept) == 6
    assert max(kept) < 1_500_000  # the 3000 px photo was shrunk to 2048 px before storing
    assert usage - empty > sum(kept) * 0.9  # the photos are on the phone, not elsewhere
    assert usage < 20 * 1024 * 1024
    print(f"\nstorage: {empty} bytes before, {usage} after; photos kept: {kept}")
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        facts = {"before": empty, "after": usage, "photos": kept}
        Path(SHOTS, "storage.json").write_text(json.dumps(facts))
    assert cases_described(offline_engine, "offline ") == []
    phone.close()

    # The phone restarted: the session cookie is gone, the outbox and the worker are not.
    phone = phone_for("field")
    phone.set_offline(True)
    page = phone.new_page()
    page.goto("/report")
    expect(page.locator("#outbox li.outbox-item")).to_have_count(3)
    phone.set_offline(False)
    sign_in(page, "inspector")  # the items are the inspector's: sent in their session only
    page.goto("/outbox")
    wait_until(lambda: len(cases_described(offline_engine, "offline ")) == 3)
    expect(page.locator("#outbox li.outbox-item[data-state=sent]")).to_have_count(3)
    wait_until(
        lambda: [c["photos"] for c in cases_described(offline_engine, "offline ")] == [2, 1, 3]
    )
    cases = cases_described(offline_engine, "offline ")
    assert [c["description"] for c in cases] == ["offline A", "offline B", "offline C"]
    for case in cases:
        assert case["photos"] == case["phone_photos"]
        assert case["captured_at"] < case["reported_at"]  # made offline, arrived later
        assert case["gps_accuracy_m"] == 9
    numbers = page.locator("#outbox .outbox-state").all_inner_texts()
    assert sorted(f"Sent: case {c['number']}" for c in cases) == sorted(numbers)
    page.goto(f"/cases/{cases[0]['id']}")
    expect(page.locator(".captured-at")).to_have_count(1)
    expect(page.locator(".gps-accuracy")).to_have_text("GPS ±9 m")

    # Sent again (a reply lost): nothing new.
    page.goto("/outbox")
    page.evaluate(
        """async () => { const items = await gridmgmtOutbox.all();
            for (const item of items) { item.state = 'waiting'; item.result = null;
                item.photos.forEach(p => { p.sent = false; }); await gridmgmtOutbox.put(item); }
            return gridmgmtOutbox.flush({force: true}); }"""
    )
    # (the page's own flush may hold the lock: then its next round sends them)
    expect(page.locator("#outbox li.outbox-item[data-state=sent]")).to_have_count(3, timeout=30_000)
    assert [c["id"] for c in cases_described(offline_engine, "offline ")] == [
        c["id"] for c in cases
    ]


def test_a_refused_report_keeps_its_reason_until_deleted(
    phone_for: PhoneFor, offline_engine: Engine, spot: tuple[float, float]
) -> None:
    phone = phone_for("refused")
    page = phone.new_page()
    sign_in(page, "inspector")
    page.goto("/report")
    wait_for_worker(page)
    page.fill("#lon", str(spot[0] + 30))  # far outside the city
    page.fill("#lat", str(spot[1]))
    page.select_option("#category", CATEGORY)
    page.fill("textarea[name=description]", "refused: outside")
    page.locator("#report-form button[type=submit]").click()
    item = page.locator("#outbox li.outbox-item")
    expect(item).to_have_attribute("data-state", "refused")
    reason = item.locator(".outbox-reason")
    expect(reason).to_contain_text("no unit grid cell")
    page.reload()
    expect(item).to_have_attribute("data-state", "refused")
    expect(reason).to_be_visible()
    # One more waiting offline, for the screenshot of the outbox with both.
    phone.set_offline(True)
    make_report(page, "waiting: by the bridge", [])
    expect(page.locator("#report-status")).to_contain_text("Saved on this phone")
    expect(page.locator("#outbox li.outbox-item[data-state=waiting]")).to_have_count(1)
    page.goto("/outbox")  # the kept page, without a signal
    expect(page.locator("#outbox li.outbox-item")).to_have_count(2)
    expect(page.locator(".outbox-attention")).to_contain_text("Refused or in conflict: 1")
    shot(page, "outbox-en")
    # In Chinese: a retry is refused again, now with the reason in the reader's language.
    phone.set_offline(False)
    page.goto("/lang/zh")
    page.goto("/outbox")
    expect(page.locator("#outbox li.outbox-item[data-state=sent]")).to_have_count(1)
    refused = page.locator("#outbox li.outbox-item[data-state=refused]")
    # A send in progress (here: the lock held, as another tab or the worker would) when the
    # retry is asked for: the retry waits for it instead of leaving the item for a later round.
    page.evaluate(
        """() => { navigator.locks.request('gridmgmt-outbox-send', () =>
            new Promise(done => setTimeout(done, 1500))); }"""
    )
    refused.locator(".outbox-retry").click()
    expect(refused).to_have_count(0)  # waiting again, behind the lock
    expect(refused.locator(".outbox-reason")).not_to_contain_text("no unit grid cell")
    expect(refused.locator(".outbox-reason")).to_contain_text("34.04")
    expect(page.locator("#outbox li.outbox-item[data-state=sent]")).to_have_count(1)
    shot(page, "outbox-zh")
    page.once("dialog", lambda dialog: dialog.accept())
    refused.locator(".outbox-delete").click()
    expect(refused).to_have_count(0)
    assert cases_described(offline_engine, "refused:") == []


def to_checking(app: Flask, spot: tuple[float, float], tmp: Path) -> tuple[int, str]:
    """A case through the loop up to the inspector's on-site check, by the app's own API."""
    operator, dispatcher, staff = (browser(app, u) for u in ("operator", "dispatcher", "staff"))
    made = operator.api(
        "/api/reports",
        {"category": CATEGORY, "lon": spot[0], "lat": spot[1], "description": "to check"},
    ).get_json()
    case_id = made["id"]

    def act(web: Web, action: str, **fields: Any) -> dict[str, Any]:
        answer = web.api(f"/api/cases/{case_id}/actions/{action}", fields)
        assert answer.status_code == 200, answer.get_json()
        return answer.get_json()

    act(operator, "file")
    act(dispatcher, "dispatch")
    act(staff, "accept")
    done = staff.client.post(
        f"/api/cases/{case_id}/actions/report_done",
        data={"note": "cleared", "photos": (io.BytesIO(jpeg()), "after.jpg")},
        content_type="multipart/form-data",
        headers={"X-CSRFToken": staff.token},
    )
    assert done.status_code == 200, done.get_json()
    act(operator, "assign_check")
    return case_id, made["number"]


def test_a_queued_check_on_a_changed_case_comes_back_as_a_conflict(
    phone_for: PhoneFor, offline_app: Flask, spot: tuple[float, float], tmp_path: Path
) -> None:
    with offline_app.app_context():
        case_id, number = to_checking(offline_app, spot, tmp_path)
    phone = phone_for("tasks")
    page = phone.new_page()
    sign_in(page, "inspector")
    page.goto("/tasks")
    wait_for_worker(page)
    wait_for_kept(page, "/tasks", number)
    phone.set_offline(True)
    page.reload()  # the kept task list
    task = page.locator(f'form[data-case-number="{number}"]')
    task.locator("xpath=ancestor::details").locator("summary").click()
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "tasks-offline.png"), full_page=True)
    task.get_by_role("button", name="Check passed").click()
    expect(task.locator(".status")).to_contain_text("Saved on this phone")
    expect(page.locator("#outbox li.outbox-item")).to_have_attribute("data-state", "waiting")
    # Meanwhile the case changes: the same inspector failed the check from another device.
    with offline_app.app_context():
        desk = browser(offline_app, "inspector")
        failed = desk.api(f"/api/cases/{case_id}/actions/check_fail", {"note": "still dirty"})
        assert failed.status_code == 200, failed.get_json()
    phone.set_offline(False)
    item = page.locator("#outbox li.outbox-item")
    expect(item).to_have_attribute("data-state", "conflict", timeout=30_000)
    expect(item.locator(".outbox-state")).to_have_text("Conflict: the case changed")
    expect(item.locator(".outbox-reason")).to_contain_text(
        f"case {number} changed since you opened it"
    )
    expect(item.get_by_role("link", name=f"Open case {number}")).to_have_attribute(
        "href", f"/cases/{case_id}"
    )
    shot(page, "outbox-conflict")


def test_a_queued_check_whose_reply_was_lost_is_sent_once_not_a_conflict(
    phone_for: PhoneFor,
    offline_app: Flask,
    offline_engine: Engine,
    spot: tuple[float, float],
    tmp_path: Path,
) -> None:
    """The check reaches the server but the phone never hears back: sent again with its
    action UUID, the server answers with the case (200) instead of a stale version (409)."""
    with offline_app.app_context():
        case_id, number = to_checking(offline_app, spot, tmp_path)
    phone = phone_for("lost-reply")
    page = phone.new_page()
    sign_in(page, "inspector")
    page.goto("/tasks")
    wait_for_worker(page)
    wait_for_kept(page, "/tasks", number)
    phone.set_offline(True)
    page.reload()  # the kept task list
    task = page.locator(f'form[data-case-number="{number}"]')
    task.locator("xpath=ancestor::details").locator("summary").click()
    task.get_by_role("button", name="Check passed").click()
    item = page.locator("#outbox li.outbox-item")
    expect(item).to_have_attribute("data-state", "waiting")

    calls: list[str] = []  # the action UUID of each attempt
    lost: list[int] = []  # what the server said to the attempt whose answer was lost
    answers: list[int] = []  # what the page heard

    def lose_first_answer(route: Any, request: Any) -> None:
        calls.append(json.loads(request.post_data or "{}").get("action_uuid", ""))
        if len(calls) == 1:
            lost.append(route.fetch().status)  # the server checks the case...
            route.abort("internetdisconnected")  # ...but the phone never hears back
        else:
            route.continue_()

    page.route(f"**/api/cases/{case_id}/actions/check_pass", lose_first_answer)
    page.on(
        "response",
        lambda r: answers.append(r.status) if r.url.endswith("/actions/check_pass") else None,
    )
    phone.set_offline(False)
    wait_until(lambda: page.wait_for_timeout(200) or len(calls) == 1)  # routes run meanwhile
    expect(item).to_have_attribute("data-state", "waiting")  # no answer: it waits
    page.evaluate("window.gridmgmt.outbox.flush(true)")  # as the next try would
    expect(item).to_have_attribute("data-state", "sent")
    expect(item.locator(".outbox-state")).to_have_text(f"Sent: case {number}")
    assert lost == [200], lost  # the first attempt did the check
    assert len(calls) == 2 and calls[0] and calls[0] == calls[1], calls
    assert answers == [200], answers  # the resend: the case as it is, not a 409
    with offline_engine.connect() as connection:
        done = connection.execute(
            text(
                "SELECT data->>'action_uuid' FROM case_events"
                " WHERE case_id = :id AND action = 'check_pass'"
            ),
            {"id": case_id},
        ).scalars()
        assert list(done) == [calls[0]]  # done once, with the phone's UUID


def test_a_citizen_s_report_sent_later_keeps_its_code_and_leaves_no_flash(
    phone_for: PhoneFor, offline_engine: Engine
) -> None:
    """Sent in the background, a report's "Case N reported" does not wait for whatever page
    comes next; the citizen's follow-up code, shown only at report time, stays in the outbox."""
    phone = phone_for("citizen")
    page = phone.new_page()
    page.goto("/report")
    wait_for_worker(page)
    phone.set_offline(True)
    make_report(page, "citizen later: bins by the bridge", [])
    # Its first try has failed (no signal) before the network comes back: else, on a slow
    # machine, that try finds the network and the page goes to the new case at once.
    expect(page.locator("#report-status")).to_contain_text("Saved on this phone")
    item = page.locator("#outbox li.outbox-item")
    expect(item).to_have_attribute("data-state", "waiting")
    phone.set_offline(False)
    expect(item).to_have_attribute("data-state", "sent", timeout=30_000)
    expect(item.locator(".outbox-code")).to_contain_text(
        re.compile(r"follow-up code is [A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}")
    )
    assert len(cases_described(offline_engine, "citizen later:")) == 1
    page.goto("/outbox")
    expect(page.locator("#outbox li.outbox-item .outbox-code")).to_have_count(1)
    expect(page.locator(".flash")).to_have_count(0)  # nothing piled up for this page


def test_a_kept_page_s_expired_token_does_not_break_a_plain_form(phone_for: PhoneFor) -> None:
    """The task list opened from the phone's copy carries an old CSRF token: signing out from
    it (a plain form, not the outbox's) still works once the network is back."""
    phone = phone_for("old-token")
    page = phone.new_page()
    sign_in(page, "inspector")
    page.goto("/tasks")
    wait_for_worker(page)
    wait_for_kept(page, "/tasks", "Sign out")
    phone.set_offline(True)
    page.reload()  # the kept copy, its token from when it was kept
    page.evaluate(
        "document.querySelectorAll('input[name=csrf_token]').forEach(i => i.value = 'expired')"
    )
    phone.set_offline(False)
    with page.expect_navigation(timeout=30_000):  # after a fresh token and the worker's clearing
        page.get_by_role("button", name="Sign out").click()
    expect(page.locator("body")).not_to_contain_text("CSRF")
    assert page.evaluate("fetch('/api/offline/session').then(r => r.json())")["user"] == ""


def test_a_deployment_s_new_worker_takes_over(
    phone_for: PhoneFor, offline_app: Flask, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A deployment changes a kept file's bytes (nothing else): the worker's version changes,
    the new worker keeps the new file, serves it, and drops the old version's files."""
    static = tmp_path / "static"
    shutil.copytree(offline_app.static_folder or "", static)
    monkeypatch.setattr(offline_app, "static_folder", str(static))
    phone = phone_for("deploy")
    page = phone.new_page()
    page.goto("/report")
    wait_for_worker(page)
    first = page.evaluate("gridmgmt.outbox.version()")["version"]
    kept_css = """async (version) => {
        const shell = await caches.open('gm-shell-' + version);
        const hit = await shell.match('/static/css/outbox.css');
        return hit ? await hit.text() : null;
    }"""
    assert "release-2" not in page.evaluate(kept_css, first)

    marker = "/* release-2: the outbox's new look */\n"
    css = static / "css" / "outbox.css"
    css.write_text(css.read_text() + marker)
    # A deployment restarts the server, which hashes the kept files again.
    monkeypatch.delitem(offline_app.extensions, "gridmgmt.offline.shell_hash")
    page.reload()  # the browser checks /sw.js: new bytes, a new worker, which takes over
    wait_until(lambda: (page.evaluate("gridmgmt.outbox.version()") or {}).get("version") != first)
    second = page.evaluate("gridmgmt.outbox.version()")["version"]
    assert second != first
    # The new version's files are kept, the old version's dropped once it activated.
    wait_until(lambda: f"gm-shell-{first}" not in page.evaluate("caches.keys()"))
    assert f"gm-shell-{second}" in page.evaluate("caches.keys()")
    assert marker in page.evaluate(kept_css, second)
    assert page.evaluate("navigator.serviceWorker.controller.scriptURL").endswith("/sw.js")
    # Served by the new worker from its files, even without a signal (once it controls the
    # page: it claims it just after dropping the old files).
    controller = """() => new Promise(resolve => {
        const worker = navigator.serviceWorker.controller;
        if (!worker) return resolve(null);
        const channel = new MessageChannel();
        channel.port1.onmessage = event => resolve(event.data.version);
        worker.postMessage({type: 'version'}, [channel.port2]);
    })"""
    wait_until(lambda: page.evaluate(controller) == second)
    phone.set_offline(True)
    served = "fetch('/static/css/outbox.css').then(r => r.text())"
    assert marker in page.evaluate(served)


def test_signing_out_drops_the_kept_pages(phone_for: PhoneFor) -> None:
    phone = phone_for("shared")
    page = phone.new_page()
    sign_in(page, "inspector")
    page.goto("/tasks")
    wait_for_worker(page)
    kept = "async () => !!(await (await caches.open('gm-pages')).match('/tasks'))"
    assert page.evaluate(kept)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    assert not page.evaluate(kept)
    phone.set_offline(True)
    page.goto("/tasks")  # without a signal: nothing of the inspector's is shown
    assert "Verification tasks" not in page.content()


KEPT_CELLS = """async (urls) => {
    const cache = await caches.open('gm-data');
    const wanted = urls.map(u => new URL(u, location.origin).href);
    const kept = (await cache.keys()).map(r => r.url).filter(u => u.includes('/cells.geojson'));
    const sizes = await Promise.all(wanted.map(async u => {
        const hit = await cache.match(u);
        return hit ? (await hit.blob()).size : -1;
    }));
    return {kept: kept.sort(), wanted: wanted.sort(), sizes: sizes};
}"""


def test_an_inspector_s_cells_are_kept_for_the_map_without_a_signal(
    phone_for: PhoneFor, offline_app: Flask, spot: tuple[float, float], tmp_path: Path
) -> None:
    """The cells around the inspector's tasks are kept before any map shows them, and the report
    page's map draws them without a signal."""
    with offline_app.app_context():
        to_checking(offline_app, spot, tmp_path)  # a check on site where the phone will be
    phone = phone_for("cells")
    page = phone.new_page()
    sign_in(page, "inspector")
    page.goto("/outbox")  # no map: no cell is shown online
    wait_for_worker(page)
    urls = page.evaluate("fetch('/api/offline/session?keep=1').then(r => r.json())")["cells"]
    assert urls

    def kept() -> dict[str, Any]:
        return page.evaluate(KEPT_CELLS, urls)

    wait_until(lambda: min(kept()["sizes"]) > 0)
    facts = kept()
    assert facts["kept"] == facts["wanted"]  # kept ahead, nothing else: no map asked for any
    usage = page.evaluate("navigator.storage.estimate().then(e => e.usage)")
    print(
        f"\ncells kept: {len(urls)} boxes, {sum(facts['sizes'])} bytes"
        f" (largest {max(facts['sizes'])}); storage in all: {usage} bytes"
    )
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        cells = {"boxes": len(urls), "bytes": sum(facts["sizes"]), "usage": usage}
        Path(SHOTS, "cells.json").write_text(json.dumps(cells))

    phone.set_offline(True)
    page.goto("/report")  # the kept page
    page.get_by_role("button", name="Use my location").click()  # the map at street level
    picker = page.locator("#picker")
    expect(picker).to_have_attribute("data-cells-shown", re.compile(r"^[1-9][0-9]*$"))
    expect(picker.locator(".gm-label-cell").first).to_be_attached()


def test_another_person_on_the_phone_gets_none_of_the_first_s_pages_nor_items(
    phone_for: PhoneFor, offline_engine: Engine
) -> None:
    """A never signed out: the phone restarted (A's cookie gone) and B signs in. B's phone
    serves none of A's kept pages or cells, and shows only how many of A's items wait."""
    phone = phone_for("shared-restart")
    page = phone.new_page()
    sign_in(page, "inspector")
    page.goto("/tasks")
    wait_for_worker(page)
    wait_for_kept(page, "/tasks", "Verification tasks")
    wait_until(lambda: page.evaluate(KEPT_CELLS, [])["kept"] != [])  # A's cells, kept ahead
    phone.set_offline(True)
    page.goto("/report")
    make_report(page, "shared: A's words by the gate", [])
    expect(page.locator("#report-status")).to_contain_text("Saved on this phone")
    phone.close()

    phone = phone_for("shared-restart")
    page = phone.new_page()
    sign_in(page, "citizen")
    page.goto("/outbox")
    expect(page.locator(".outbox-others")).to_contain_text("1 items of another account")
    expect(page.locator("#outbox li.outbox-item")).to_have_count(0)
    assert "A's words" not in page.content()
    citizen = page.evaluate("fetch('/api/offline/session').then(r => r.json())")["user"]
    wait_for_kept(page, "/report", f'<meta name="gridmgmt-user" content="{citizen}">')
    assert page.evaluate(KEPT_CELLS, [])["kept"] == []  # A's cells went with A's pages
    tasks_kept = "async () => !!(await (await caches.open('gm-pages')).match('/tasks'))"
    assert not page.evaluate(tasks_kept)
    phone.set_offline(True)
    page.goto("/tasks")  # without a signal: nothing of the inspector's
    assert "Verification tasks" not in page.content()
    page.goto("/report")
    expect(page.locator('meta[name="gridmgmt-user"]')).to_have_attribute("content", citizen)
    expect(page.locator(".outbox-others")).to_contain_text("1 items of another account")
    phone.set_offline(False)
    page.goto("/outbox")
    page.evaluate("gridmgmt.outbox.flush(true)")
    assert cases_described(offline_engine, "shared:") == []  # never sent as B


def test_signing_out_drops_the_person_s_sent_items_not_the_others(
    phone_for: PhoneFor, offline_engine: Engine, spot: tuple[float, float]
) -> None:
    phone = phone_for("sign-out-items")
    page = phone.new_page()
    sign_in(page, "inspector")
    page.goto("/report")
    wait_for_worker(page)
    with page.expect_navigation():
        make_report(page, "signout: sent", [])  # sent at once: the page goes to the case
    page.goto("/report")
    page.fill("#lon", str(spot[0] + 30))  # refused: outside the city
    page.fill("#lat", str(spot[1]))
    page.select_option("#category", CATEGORY)
    page.fill("textarea[name=description]", "signout: refused")
    page.locator("#report-form button[type=submit]").click()
    expect(page.locator("#outbox li.outbox-item[data-state=refused]")).to_have_count(1)
    page.route("**/api/reports", lambda route: route.abort("internetdisconnected"))
    make_report(page, "signout: waiting", [])
    expect(page.locator("#outbox li.outbox-item[data-state=waiting]")).to_have_count(1)
    expect(page.locator("#outbox li.outbox-item")).to_have_count(3)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    left = page.evaluate(
        "gridmgmtOutbox.all().then(items => items.map(i => [i.report.fields.description, i.state]))"
    )
    # (a try cut short by leaving the page stays 'sending': it is sent again like a waiting one)
    assert sorted(left) in (
        [["signout: refused", "refused"], ["signout: waiting", "waiting"]],
        [["signout: refused", "refused"], ["signout: waiting", "sending"]],
    )
    assert len(cases_described(offline_engine, "signout:")) == 1


SPY_ON_PERSIST = """(() => {
    if (!navigator.storage || !navigator.storage.persist) return;
    const persist = navigator.storage.persist.bind(navigator.storage);
    window.__persistAsked = 0;
    navigator.storage.persist = () => { window.__persistAsked += 1; return persist(); };
})();"""


def test_an_offline_report_asks_for_background_sync_and_lasting_storage(
    phone_for: PhoneFor,
) -> None:
    phone = phone_for("sync")
    # Chrome allows Background Sync by default; an automated browser asks first (and the
    # other tests leave it off: the worker's own sends would bypass their page.route).
    phone.grant_permissions(["geolocation", "background-sync"])
    phone.add_init_script(SPY_ON_PERSIST)
    page = phone.new_page()
    sign_in(page, "inspector")
    page.goto("/report")
    wait_for_worker(page)
    assert page.evaluate("'SyncManager' in window")  # Chromium has Background Sync
    assert page.evaluate("window.__persistAsked") == 0  # asked when something is kept
    phone.set_offline(True)
    make_report(page, "sync: by the kiosk", [])
    expect(page.locator("#report-status")).to_contain_text("Saved on this phone")
    tags = "navigator.serviceWorker.ready.then(r => r.sync.getTags())"
    wait_until(lambda: "gm-outbox" in page.evaluate(tags))  # sent by the worker, page or not
    assert page.evaluate("window.__persistAsked") >= 1


def test_the_outbox_shows_a_report_being_sent(phone_for: PhoneFor, offline_engine: Engine) -> None:
    phone = phone_for("sending")
    page = phone.new_page()
    sign_in(page, "inspector")
    page.goto("/report")
    wait_for_worker(page)
    held: list[Any] = []
    page.route("**/api/reports", lambda route: held.append(route))  # the reply held back
    make_report(page, "sending: by the stairs", [])
    item = page.locator("#outbox li.outbox-item")
    expect(item).to_have_attribute("data-state", "sending")
    expect(item.locator(".outbox-state")).to_have_text("Sending…")
    assert len(held) == 1 and cases_described(offline_engine, "sending:") == []
    with page.expect_navigation():  # sent: the page goes to the new case
        held[0].continue_()
    assert len(cases_described(offline_engine, "sending:")) == 1


def test_a_report_of_a_class_retired_meanwhile_shows_the_server_s_reason(
    phone_for: PhoneFor, offline_engine: Engine, spot: tuple[float, float]
) -> None:
    """The kept report page still offers a class the catalogue retired since: the server
    refuses the report and the outbox says why."""
    phone = phone_for("retired")
    page = phone.new_page()
    sign_in(page, "inspector")
    page.goto("/report")
    wait_for_worker(page)
    codes = page.locator("#category option").evaluate_all("options => options.map(o => o.value)")
    retired = next(code for code in codes if code and code != CATEGORY)
    retire = "UPDATE categories SET active = :active WHERE code = :code"
    with offline_engine.begin() as connection:
        connection.execute(text(retire), {"active": False, "code": retired})
    try:
        page.get_by_role("button", name="Use my location").click()
        expect(page.locator("#lon")).not_to_have_value("")
        page.select_option("#category", retired)
        page.fill("textarea[name=description]", "retired: a class no longer in use")
        page.locator("#report-form button[type=submit]").click()
        item = page.locator("#outbox li.outbox-item")
        expect(item).to_have_attribute("data-state", "refused")
        expect(item.locator(".outbox-reason")).to_contain_text(f"unknown category '{retired}'")
        expect(page.locator("#report-status")).to_contain_text("unknown category")
    finally:
        with offline_engine.begin() as connection:
            connection.execute(text(retire), {"active": True, "code": retired})
    assert cases_described(offline_engine, "retired:") == []
