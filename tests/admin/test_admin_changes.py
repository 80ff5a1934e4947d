"""The administrators' pages through the app (test client, on a seeded demo city rolled back
after each test): people, api keys, who may see them, and the audit row of every change."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask import Flask
from redis import Redis
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gridmgmt.kernel import key_uses
from gridmgmt.kernel.audit import AdminAudit, AuditAction, find_changes, record_change
from gridmgmt.kernel.auth import hash_api_key
from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import ApiKey, Role, User
from gridmgmt.kernel.web import _account_key
from tests.open311.open311_support import DEMO_KEY, OPEN311
from tests.support import Web, browser, nested, point_in, seeded_demo

PAGES = ["/admin/setup", "/admin/people", "/admin/keys", "/admin/audit"]
OTHERS = ["inspector", "operator", "dispatcher", "staff", "leader", "citizen"]
STRONG = "correct-horse-battery-9"


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
    return list(
        session.scalars(
            select(AdminAudit).where(AdminAudit.action == action.value).order_by(AdminAudit.id)
        )
    )


def user(session: Session, username: str) -> User:
    session.expire_all()
    found = session.scalar(select(User).where(User.username == username))
    assert found is not None
    return found


# ---------------------------------------------------------------- who may see the pages


@pytest.mark.parametrize("path", PAGES)
def test_admin_sees_the_page(admin: Web, path: str) -> None:
    answer = admin.get(path)

    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"


def admin_requests(app: Flask) -> list[tuple[str, str]]:
    """Every (method, path) of the administration: each rule under /admin/ of the app's URL
    map, its variables filled in (1 for a number), so a page added later is covered too."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/admin"):
            continue
        values = {
            name: 1 if type(converter).__name__ == "IntegerConverter" else "x"
            for name, converter in rule._converters.items()
        }
        path = rule.build(values, append_unknown=False)[1]
        found += [(method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return found


@pytest.mark.parametrize("role", OTHERS)
def test_other_roles_are_refused(app: Flask, session: Session, role: str) -> None:
    web = browser(app, role)
    requests = admin_requests(app)
    audited = session.scalar(select(func.count()).select_from(AdminAudit))

    assert len(requests) >= 40  # people, keys, units, routing, catalogue, calendars, territory...
    for method, path in requests:
        if method == "GET":
            answer = web.get(path)
        else:
            answer = web.post(path, {"username": "intruder", "role": "admin", "name": "intruder"})
        assert answer.status_code == 403, (role, method, path, answer.status_code)
    assert session.scalar(select(User).where(User.username == "intruder")) is None
    assert session.scalar(select(func.count()).select_from(AdminAudit)) == audited


def test_anonymous_goes_to_login(app: Flask, session: Session) -> None:
    web = browser(app)

    for path in PAGES:
        answer = web.get(path)
        assert answer.status_code == 302 and "/login" in answer.headers["Location"], path


def test_admin_home_and_menu_link_the_pages(admin: Web) -> None:
    first = admin.get("/")
    assert first.status_code == 302 and first.headers["Location"] == "/admin/setup"  # their work
    home = admin.get("/", follow_redirects=True).get_data(as_text=True)
    inbox = admin.get("/admin/setup").get_data(as_text=True)

    for path in PAGES:
        assert f'href="{path}"' in home, path
        assert f'href="{path}"' in inbox, path  # the menu


# ---------------------------------------------------------------- people


def test_create_person_is_audited(admin: Web, session: Session) -> None:
    answer = admin.post(
        "/admin/people",
        {"username": "newop", "display_name": "New Op", "role": "operator", "password": STRONG},
    )

    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    created = user(session, "newop")
    assert created.role == "operator" and created.unit_id is None
    (row,) = audit_rows(session, AuditAction.USER_CREATED)
    assert row.actor == "admin" and row.target_type == "user" and row.target_id == str(created.id)
    assert row.before is None
    assert row.after == {
        "username": "newop",
        "display_name": "New Op",
        "role": "operator",
        "unit": None,
        "active": True,
    }
    assert "password" not in str(row.after)


def test_create_unit_staff_needs_a_unit(admin: Web, session: Session) -> None:
    answer = admin.post(
        "/admin/people", {"username": "nounit", "role": "unit_staff", "password": STRONG}
    )

    assert answer.status_code == 400
    assert "unit staff must be bound to a unit" in answer.get_data(as_text=True)
    assert session.scalar(select(User).where(User.username == "nounit")) is None
    assert audit_rows(session, AuditAction.USER_CREATED) == []


def test_create_with_made_up_password_shows_it_once(
    app: Flask, admin: Web, session: Session
) -> None:
    answer = admin.post(
        "/admin/people", {"username": "w2", "role": "unit_staff", "unit": "DEPT-WATER"}
    )

    page = answer.get_data(as_text=True)
    found = re.search(r'data-secret="password">([^<]+)<', page)
    assert found, page[:500]
    assert user(session, "w2").unit.code == "DEPT-WATER"  # type: ignore[union-attr]
    signed = browser(app).post("/login", {"username": "w2", "password": found.group(1)})
    assert signed.status_code == 302
    assert found.group(1) not in admin.get("/admin/people").get_data(as_text=True)
    assert user(session, "w2").last_signin_at is not None


def test_change_role_is_audited_and_rules_hold(admin: Web, session: Session) -> None:
    target = user(session, "operator")

    moved = admin.post(f"/admin/people/{target.id}/role", {"role": "dispatcher"})
    wrong = admin.post(f"/admin/people/{target.id}/role", {"role": "unit_staff", "unit": ""})

    assert moved.status_code == 303 and wrong.status_code == 303
    assert user(session, "operator").role == "dispatcher"
    (row,) = audit_rows(session, AuditAction.USER_ROLE_CHANGED)
    assert (row.before["role"], row.after["role"]) == ("operator", "dispatcher")
    page = admin.get(f"/admin/people/{target.id}").get_data(as_text=True)
    assert "unit staff must be bound to a unit" in page
    to_unit = admin.post(
        f"/admin/people/{target.id}/role", {"role": "unit_staff", "unit": "DEPT-WATER"}
    )
    assert to_unit.status_code == 303
    changed = user(session, "operator")
    assert changed.role == "unit_staff" and changed.unit.code == "DEPT-WATER"  # type: ignore[union-attr]
    assert len(audit_rows(session, AuditAction.USER_ROLE_CHANGED)) == 2


def test_deactivate_and_reactivate(app: Flask, admin: Web, session: Session) -> None:
    target = user(session, "leader")
    leader = browser(app, "leader")
    assert leader.get("/evaluation").status_code == 200

    admin.post(f"/admin/people/{target.id}/active", {"active": "0"})

    assert user(session, "leader").active is False
    assert leader.get("/evaluation").status_code == 302  # their session ended
    admin.post(f"/admin/people/{target.id}/active", {"active": "1"})
    assert user(session, "leader").active is True
    (off,) = audit_rows(session, AuditAction.USER_DEACTIVATED)
    (on,) = audit_rows(session, AuditAction.USER_ACTIVATED)
    assert (off.before["active"], off.after["active"]) == (True, False)
    assert (on.before["active"], on.after["active"]) == (False, True)


def test_admin_cannot_lock_themselves_out(admin: Web, session: Session) -> None:
    me = user(session, "admin")

    admin.post(f"/admin/people/{me.id}/active", {"active": "0"})
    admin.post(f"/admin/people/{me.id}/role", {"role": "citizen"})

    still = user(session, "admin")
    assert still.active and still.role == Role.ADMIN.value
    assert audit_rows(session, AuditAction.USER_DEACTIVATED) == []
    assert audit_rows(session, AuditAction.USER_ROLE_CHANGED) == []


def test_reset_password(app: Flask, admin: Web, session: Session) -> None:
    target = user(session, "inspector")

    weak = admin.post(f"/admin/people/{target.id}/password", {"password": "short"})
    typed = admin.post(f"/admin/people/{target.id}/password", {"password": STRONG})

    assert weak.status_code == 303
    assert typed.status_code == 200
    assert (
        browser(app).post("/login", {"username": "inspector", "password": STRONG}).status_code
        == 302
    )
    (row,) = audit_rows(session, AuditAction.USER_PASSWORD_RESET)
    assert row.before == row.after  # the facts kept say nothing about passwords
    assert STRONG not in str(row.after)


def test_unlock_lifts_the_sign_in_lock(
    app: Flask, admin: Web, session: Session, redis_conn: Redis
) -> None:
    target = user(session, "dispatcher")
    with app.test_request_context():
        key = _account_key("dispatcher")
    redis_conn.set(key, 99, ex=600)

    answer = admin.post(f"/admin/people/{target.id}/unlock")

    assert answer.status_code == 303
    assert redis_conn.get(key) is None
    (row,) = audit_rows(session, AuditAction.USER_UNLOCKED)
    assert row.target_id == str(target.id)


def test_people_search(admin: Web) -> None:
    page = admin.get("/admin/people?q=wat").get_data(as_text=True)

    assert 'data-username="water"' in page
    assert 'data-username="leader"' not in page
    by_role = admin.get("/admin/people?role=unit_staff").get_data(as_text=True)
    assert 'data-username="staff"' in by_role and 'data-username="admin"' not in by_role


# ---------------------------------------------------------------- api keys


def test_create_key_shows_the_secret_once(admin: Web, session: Session) -> None:
    answer = admin.post("/admin/keys", {"name": "hotline", "trusted": "1"})

    page = answer.get_data(as_text=True)
    found = re.search(r'data-secret="api-key">([^<]+)<', page)
    assert found, page[:500]
    key = session.scalar(select(ApiKey).where(ApiKey.name == "hotline"))
    assert key is not None and key.trusted and key.key_hash == hash_api_key(found.group(1))
    assert found.group(1) not in admin.get("/admin/keys").get_data(as_text=True)
    (row,) = audit_rows(session, AuditAction.API_KEY_CREATED)
    assert row.after == {"name": "hotline", "prefix": key.prefix, "trusted": True, "revoked": False}


def test_change_and_revoke_key(admin: Web, session: Session) -> None:
    key = session.scalar(select(ApiKey).where(ApiKey.name == "demo-app"))
    assert key is not None

    admin.post(f"/admin/keys/{key.id}", {"name": "demo-app-2", "trusted": "1"})
    admin.post(f"/admin/keys/{key.id}/revoke")

    session.expire_all()
    assert key.name == "demo-app-2" and key.trusted and key.revoked_at is not None
    (changed,) = audit_rows(session, AuditAction.API_KEY_CHANGED)
    assert (changed.before["name"], changed.after["name"]) == ("demo-app", "demo-app-2")
    (revoked,) = audit_rows(session, AuditAction.API_KEY_REVOKED)
    assert (revoked.before["revoked"], revoked.after["revoked"]) == (False, True)
    assert not key.usable


def shown_requests(admin: Web, name: str) -> str:
    page = admin.get("/admin/keys").get_data(as_text=True)
    found = re.search(rf'data-key="{name}".*?class="key-uses">([^<]+)<', page, re.S)
    assert found, page[:300]
    return found.group(1)


def test_the_pages_show_a_person_s_last_sign_in_and_a_key_s_last_use(
    app: Flask, admin: Web, session: Session
) -> None:
    operator = user(session, "admin")  # signed in by the `admin` fixture
    page = admin.get(f"/admin/person/{operator.id}".replace("person", "people"))
    shown = re.search(r'data-fact="last-signin">([^<]+)<', page.get_data(as_text=True))
    assert shown and shown.group(1) != "never"
    when = operator.last_signin_at
    assert when is not None and shown.group(1)[:4] == str(when.year)  # signed in by `browser`
    keys = admin.get("/admin/keys").get_data(as_text=True)
    assert re.search(r'class="key-last-used">never<', keys)  # the demo key is never used


def test_a_key_s_requests_are_counted_and_folded_into_the_database(
    app: Flask, admin: Web, session: Session, redis_conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == DEMO_KEY[:8]))
    assert key is not None and key.use_count == 0
    key_id, name = key.id, key.name
    lon, lat = point_in(session, "990100006046")  # a demo community
    report = {"api_key": DEMO_KEY, "service_code": "E0102", "lat": lat, "long": lon}
    client = app.test_client()

    for _ in range(3):
        assert client.post(f"{OPEN311}/requests.json", data=report).status_code == 201
    bad = {**report, "api_key": DEMO_KEY[:-1] + ("A" if DEMO_KEY[-1] != "A" else "B")}
    assert client.post(f"{OPEN311}/requests.json", data=bad).status_code == 403
    assert shown_requests(admin, name) == "3"  # counted in Redis, not folded yet
    session.expire_all()  # the test's session is the app's: the key was loaded above
    used = re.search(
        rf'data-key="{name}".*?class="key-last-used">([^<]+)<',
        admin.get("/admin/keys").get_data(as_text=True),
        re.S,
    )
    assert used and used.group(1)[:2] == "20", used and used.group(0)  # a date, not "never"

    with app.app_context():
        monkeypatch.setattr(key_uses, "add_uses", broken_write)
        with pytest.raises(DBAPIError):
            key_uses.fold_key_uses()
        monkeypatch.undo()
        assert key_uses.waiting_uses(redis_conn) == {key_id: 3}  # put back, not lost
        assert key_uses.fold_key_uses() == "3 uses folded"
        assert key_uses.fold_key_uses() == "0 uses folded"  # taken once
    folded = db.session.scalar(select(ApiKey.use_count).where(ApiKey.id == key_id))
    assert folded == 3 and key_uses.waiting_uses(redis_conn) == {}
    assert client.post(f"{OPEN311}/requests.json", data=report).status_code == 201
    assert shown_requests(admin, name) == "4"


def broken_write(session: Session, counts: dict[int, int]) -> None:
    session.execute(text("SELECT 1/0"))


def test_a_request_is_not_refused_when_its_use_cannot_be_counted() -> None:
    nobody = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)

    key_uses.count_use(nobody, 1)  # logged, not raised

    assert key_uses.waiting_uses(nobody) == {}


def test_departments_and_rules_from_the_command_line(app: Flask, session: Session) -> None:
    cli = app.test_cli_runner()

    added = cli.invoke(
        args=["units", "add-department", "DEPT-TEST", "Test works", "--type", "roads"]
    )
    rule = cli.invoke(
        args=["routing", "add", "C0101", "DEPT-TEST", "--area", "990100006046", "--priority", "500"]
    )
    unknown = cli.invoke(args=["routing", "add", "C9999", "DEPT-TEST"])
    listed = cli.invoke(args=["routing", "list", "--category", "C0101"])

    assert added.exit_code == 0 and "department DEPT-TEST (roads) added" in added.output
    assert rule.exit_code == 0, rule.output
    assert unknown.exit_code == 1 and "nothing was changed" in unknown.output
    assert "C0101 -> DEPT-TEST in 990100006046, priority 500" in listed.output
    (unit,) = audit_rows(session, AuditAction.UNIT_CREATED)
    (made,) = audit_rows(session, AuditAction.RULE_CREATED)
    assert (unit.actor, made.actor, made.after["unit"]) == ("system", "system", "DEPT-TEST")


# ---------------------------------------------------------------- the audit log


def test_audit_page_lists_changes_newest_first_and_filters(admin: Web, session: Session) -> None:
    admin.post("/admin/keys", {"name": "first-key"})
    admin.post("/admin/keys", {"name": "second-key"})
    target = user(session, "citizen")
    admin.post(f"/admin/people/{target.id}/active", {"active": "0"})

    page = admin.get("/admin/audit").get_data(as_text=True)
    actions = re.findall(r'data-action="([a-z_]+)"', page)
    assert actions[:3] == ["user_deactivated", "api_key_created", "api_key_created"]
    assert page.index("second-key") < page.index("first-key")
    assert 'href="/admin/security"' in page
    only = admin.get("/admin/audit?action=user_deactivated").get_data(as_text=True)
    assert re.findall(r'data-action="([a-z_]+)"', only) == ["user_deactivated"]
    nobody = admin.get("/admin/audit?who=nobody").get_data(as_text=True)
    assert "data-action=" not in nobody
    by_admin = admin.get("/admin/audit?who=adm").get_data(as_text=True)
    assert len(re.findall(r"data-action=", by_admin)) == 3


REFUSED = "permission denied for table admin_audit"


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE admin_audit SET actor = 'someone else'",
        "DELETE FROM admin_audit",
        "TRUNCATE admin_audit",
    ],
)
def test_app_role_cannot_rewrite_the_audit_log(admin: Web, session: Session, sql: str) -> None:
    admin.post("/admin/keys", {"name": "audited"})

    with pytest.raises(DBAPIError, match=REFUSED), session.begin_nested():
        session.execute(text(sql))


@pytest.mark.parametrize(
    ("sql", "operation"),
    [
        ("UPDATE admin_audit SET actor = 'someone else'", "UPDATE"),
        ("DELETE FROM admin_audit", "DELETE"),
        ("TRUNCATE admin_audit", "TRUNCATE"),
    ],
)
def test_the_trigger_refuses_even_the_owner(owner_engine: Engine, sql: str, operation: str) -> None:
    with owner_engine.connect() as conn, conn.begin() as outer:
        conn.execute(
            text(
                "INSERT INTO admin_audit (actor, action, target_type) "
                "VALUES ('admin', 'user_created', 'user')"
            )
        )
        with pytest.raises(DBAPIError, match=f"admin_audit is append-only: {operation} refused"):
            conn.execute(text(sql))
        outer.rollback()


def test_the_audit_finds_things_by_code_and_rules_by_class(session: Session) -> None:
    unit = record_change(
        session, None, AuditAction.UNIT_CREATED, "unit", 1, None, {"code": "DEPT-X"}
    )
    rule = record_change(
        session, None, AuditAction.RULE_CREATED, "rule", 2, None, {"category": "E0102", "unit": "U"}
    )

    assert [r.id for r in find_changes(session, "dept-x")[0]] == [unit.id]
    assert [r.id for r in find_changes(session, "E01")[0]] == [rule.id]
