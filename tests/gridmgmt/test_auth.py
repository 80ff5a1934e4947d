"""Users and API keys: `flask users create`, `flask apikey create` and gridmgmt.kernel.auth."""

from __future__ import annotations

import hashlib

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash

from gridmgmt.kernel import auth
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import NotFound
from gridmgmt.kernel.models import ApiKey, Role, Unit, User

PASSWORD = "correct-horse-battery"
NON_UNIT_ROLES = [r.value for r in Role if r is not Role.UNIT_STAFF]


@pytest.fixture
def unit(session: Session) -> Unit:
    """A committed department unit (committed so a failing command cannot roll it back)."""
    water = Unit(code="T-DEPT-WATER", name="Test water", kind="department", unit_type="water")
    session.add(water)
    session.commit()
    return water


def create_user(
    cli: FlaskCliRunner,
    username: str,
    role: str,
    unit: str | None = None,
    password: str = PASSWORD,
) -> Result:
    args = ["users", "create", username, "--role", role, "--password-stdin"]
    if unit is not None:
        args += ["--unit", unit]
    return cli.invoke(args=args, input=password + "\n")


def user_count(session: Session, username: str) -> int:
    return session.scalar(select(func.count()).select_from(User).where(User.username == username))


# ---------------------------------------------------------------- flask users create


@pytest.mark.parametrize("role", NON_UNIT_ROLES)
def test_create_user_of_each_role(cli: FlaskCliRunner, session: Session, role: str) -> None:
    result = create_user(cli, f"u_{role}", role)

    assert result.exit_code == 0, result.output
    assert f"created {role} u_{role}" in result.output
    user = session.scalar(select(User).where(User.username == f"u_{role}"))
    assert user is not None
    assert user.role == role
    assert user.unit_id is None
    assert user.active is True


def test_create_unit_staff_bound_to_unit(cli: FlaskCliRunner, session: Session, unit: Unit) -> None:
    result = create_user(cli, "u_staff", "unit_staff", unit=unit.code)

    assert result.exit_code == 0, result.output
    assert f"created unit_staff u_staff of unit {unit.code}" in result.output
    user = session.scalar(select(User).where(User.username == "u_staff"))
    assert user is not None
    assert user.role == Role.UNIT_STAFF.value
    assert user.unit_id == unit.id


def test_password_is_hashed_and_authenticates(cli: FlaskCliRunner, session: Session) -> None:
    assert create_user(cli, "hashme", "operator").exit_code == 0

    user = session.scalar(select(User).where(User.username == "hashme"))
    assert user is not None
    assert user.password_hash != PASSWORD
    assert PASSWORD not in user.password_hash
    assert check_password_hash(user.password_hash, PASSWORD)
    assert auth.authenticate(session, "hashme", PASSWORD) == user
    assert auth.authenticate(session, "hashme", PASSWORD + "x") is None
    assert auth.authenticate(session, "hashme", "") is None
    assert auth.authenticate(session, "nobody", PASSWORD) is None


def test_inactive_user_does_not_authenticate(cli: FlaskCliRunner, session: Session) -> None:
    assert create_user(cli, "gone", "leader").exit_code == 0
    user = session.scalar(select(User).where(User.username == "gone"))
    assert user is not None
    user.active = False
    session.flush()

    assert auth.authenticate(session, "gone", PASSWORD) is None


@pytest.mark.parametrize("role", NON_UNIT_ROLES)
def test_unit_refused_for_non_unit_staff(
    cli: FlaskCliRunner, session: Session, unit: Unit, role: str
) -> None:
    result = create_user(cli, "sideways", role, unit=unit.code)

    assert result.exit_code == 1
    assert "only unit staff belong to a unit" in result.output
    assert role in result.output  # names the role it was refused for
    assert "nothing was changed" in result.output
    assert user_count(session, "sideways") == 0


def test_unit_staff_without_unit_refused(cli: FlaskCliRunner, session: Session) -> None:
    result = create_user(cli, "floating", "unit_staff")

    assert result.exit_code == 1
    assert "--unit" in result.output
    assert user_count(session, "floating") == 0


def test_unknown_unit_refused(cli: FlaskCliRunner, session: Session) -> None:
    result = create_user(cli, "lost", "unit_staff", unit="NO-SUCH-UNIT")

    assert result.exit_code == 1
    assert "unit NO-SUCH-UNIT does not exist" in result.output
    assert user_count(session, "lost") == 0


def test_duplicate_username_refused(cli: FlaskCliRunner, session: Session) -> None:
    assert create_user(cli, "twin", "inspector").exit_code == 0

    result = create_user(cli, "twin", "dispatcher", password="another-password")

    assert result.exit_code == 1
    assert "user twin already exists" in result.output
    assert user_count(session, "twin") == 1
    twin = session.scalar(select(User).where(User.username == "twin"))
    assert twin is not None
    assert twin.role == "inspector"
    assert auth.authenticate(session, "twin", PASSWORD) is not None


def test_short_password_refused(cli: FlaskCliRunner, session: Session) -> None:
    result = create_user(cli, "shorty", "admin", password="x" * (auth.MIN_PASSWORD_LENGTH - 1))

    assert result.exit_code == 1
    assert f"at least {auth.MIN_PASSWORD_LENGTH} characters" in result.output
    assert user_count(session, "shorty") == 0


def test_password_of_minimum_length_accepted(cli: FlaskCliRunner, session: Session) -> None:
    password = "y" * auth.MIN_PASSWORD_LENGTH
    assert create_user(cli, "exact", "admin", password=password).exit_code == 0
    assert auth.authenticate(session, "exact", password) is not None


def test_password_policy_is_twelve_characters() -> None:
    assert auth.MIN_PASSWORD_LENGTH == 12


@pytest.mark.parametrize("password", ["q1w2e3r4t5y6", "1QAZ2WSX3EDC"])
def test_common_password_refused(cli: FlaskCliRunner, session: Session, password: str) -> None:
    result = create_user(cli, "commoner", "citizen", password=password)

    assert result.exit_code == 1
    assert "most common" in result.output
    assert user_count(session, "commoner") == 0


def test_common_password_list_is_shipped() -> None:
    common = auth.common_passwords()
    assert len(common) > 19_000
    assert {"123456", "password", "q1w2e3r4t5y6"} <= common
    assert "gridmgmt-demo" not in common


def test_new_password_ends_sessions(cli: FlaskCliRunner, session: Session) -> None:
    assert create_user(cli, "changer", "citizen").exit_code == 0
    old_key = session.scalar(select(User).where(User.username == "changer")).get_id()
    result = cli.invoke(
        args=["users", "password", "changer", "--password-stdin"], input="a-new-long-secret\n"
    )
    assert result.exit_code == 0, result.output
    session.expire_all()
    user = session.scalar(select(User).where(User.username == "changer"))
    assert user.get_id() != old_key
    assert auth.authenticate(session, "changer", "a-new-long-secret") is not None
    assert auth.authenticate(session, "changer", PASSWORD) is None


def test_new_password_follows_the_policy(cli: FlaskCliRunner, session: Session) -> None:
    assert create_user(cli, "stubborn", "citizen").exit_code == 0
    result = cli.invoke(args=["users", "password", "stubborn", "--password-stdin"], input="x\n")
    assert result.exit_code == 1
    assert "at least 12 characters" in result.output


def test_deactivated_user_cannot_authenticate(cli: FlaskCliRunner, session: Session) -> None:
    assert create_user(cli, "leaver", "citizen").exit_code == 0
    assert cli.invoke(args=["users", "deactivate", "leaver"]).exit_code == 0
    session.expire_all()
    assert auth.authenticate(session, "leaver", PASSWORD) is None
    assert cli.invoke(args=["users", "activate", "leaver"]).exit_code == 0
    session.expire_all()
    assert auth.authenticate(session, "leaver", PASSWORD) is not None


def test_unknown_user_commands_fail(cli: FlaskCliRunner) -> None:
    for args in (["deactivate", "ghost"], ["unlock", "ghost"], ["totp", "ghost"]):
        result = cli.invoke(args=["users", *args])
        assert result.exit_code == 1
        assert "user ghost does not exist" in result.output


def test_unknown_user_checks_a_dummy_hash(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    real = auth.check_password_hash
    monkeypatch.setattr(auth, "check_password_hash", lambda h, p: checked.append(h) or real(h, p))
    assert auth.authenticate(session, "nobody-at-all", PASSWORD) is None
    assert checked == [auth._dummy_hash()]


def test_bad_username_refused(cli: FlaskCliRunner, session: Session) -> None:
    result = create_user(cli, "has space", "citizen")

    assert result.exit_code == 1
    assert "username" in result.output
    assert user_count(session, "has space") == 0


def test_unknown_role_refused_by_cli(cli: FlaskCliRunner, session: Session) -> None:
    result = create_user(cli, "wizard", "wizard")

    assert result.exit_code == 2  # click usage error
    assert user_count(session, "wizard") == 0


@pytest.mark.parametrize(
    ("role", "with_unit"),
    [("unit_staff", False), ("inspector", True)],
    ids=["unit_staff-without-unit", "inspector-with-unit"],
)
def test_check_constraint_binds_unit_staff_to_a_unit(
    session: Session, unit: Unit, role: str, with_unit: bool
) -> None:
    user = User(username="direct", password_hash="x", role=role)
    user.unit_id = unit.id if with_unit else None

    with pytest.raises(IntegrityError, match="ck_users_unit_staff_unit"), session.begin_nested():
        session.add(user)
        session.flush()

    assert user_count(session, "direct") == 0


# ---------------------------------------------------------------- flask apikey create


def create_key(cli: FlaskCliRunner, name: str, *flags: str) -> Result:
    return cli.invoke(args=["apikey", "create", name, *flags])


def test_apikey_printed_once_and_only_hash_stored(cli: FlaskCliRunner, session: Session) -> None:
    result = create_key(cli, "web-portal")

    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1  # stdout is the key alone; the notice goes to stderr
    secret = lines[0]
    assert len(secret) >= 32
    assert "cannot be shown again" in result.stderr

    key = session.scalar(select(ApiKey).where(ApiKey.name == "web-portal"))
    assert key is not None
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert key.trusted is False
    assert key.active is True
    row = session.execute(text("SELECT * FROM api_keys WHERE name = :n"), {"n": "web-portal"}).one()
    for column, value in row._mapping.items():
        assert secret not in str(value), f"the secret is stored in api_keys.{column}"


def test_apikey_trusted_flag(cli: FlaskCliRunner, session: Session) -> None:
    result = create_key(cli, "hotline-12345", "--trusted")

    assert result.exit_code == 0, result.output
    assert "(trusted)" in result.stderr
    key = session.scalar(select(ApiKey).where(ApiKey.name == "hotline-12345"))
    assert key is not None
    assert key.trusted is True


def test_apikey_duplicate_name_refused(cli: FlaskCliRunner, session: Session) -> None:
    first = create_key(cli, "mobile-app")
    assert first.exit_code == 0

    second = create_key(cli, "mobile-app")

    assert second.exit_code == 1
    assert "already exists" in second.output
    assert second.stdout.strip() == ""  # no secret printed for a key that was not made
    count = session.scalar(
        select(func.count()).select_from(ApiKey).where(ApiKey.name == "mobile-app")
    )
    assert count == 1
    # the first key still works
    assert auth.use_api_key(session, first.stdout.strip()).name == "mobile-app"


def test_apikey_blank_name_refused(cli: FlaskCliRunner, session: Session) -> None:
    before = session.scalar(select(func.count()).select_from(ApiKey))
    result = create_key(cli, "   ")

    assert result.exit_code == 1
    assert "needs a name" in result.output
    assert session.scalar(select(func.count()).select_from(ApiKey)) == before


def test_use_api_key_by_secret_records_use_once_a_minute(
    cli: FlaskCliRunner, session: Session
) -> None:
    secret = create_key(cli, "partner").stdout.strip()
    key = session.scalar(select(ApiKey).where(ApiKey.name == "partner"))
    assert key is not None and key.last_used_at is None

    found = auth.use_api_key(session, secret)

    assert (found.id, found.name, found.trusted) == (key.id, "partner", False)
    session.refresh(key)
    first_use = key.last_used_at
    assert first_use is not None
    auth.use_api_key(session, secret)  # within the minute: not written again
    session.refresh(key)
    assert key.last_used_at == first_use
    with pytest.raises(NotFound):
        auth.use_api_key(session, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    with pytest.raises(NotFound):
        auth.use_api_key(session, "")


def test_use_api_key_refuses_revoked_key(cli: FlaskCliRunner, session: Session) -> None:
    secret = create_key(cli, "revoked").stdout.strip()
    key = session.scalar(select(ApiKey).where(ApiKey.name == "revoked"))
    assert key is not None
    key.active = False
    session.flush()

    with pytest.raises(NotFound):
        auth.use_api_key(session, secret)


def test_recording_a_key_s_use_and_filing_its_reports_never_wait_for_each_other(
    app: Flask,
) -> None:
    engine = db.engine
    with Session(engine) as setup, setup.begin():
        issued = auth.create_api_key(setup, "lock-test")
        key_id, secret = issued.api_key.id, issued.secret
    filing, recording, next_filing = engine.connect(), Session(engine), engine.connect()
    key_share = text("SELECT 1 FROM api_keys WHERE id = :id FOR KEY SHARE")  # a report's FK
    try:
        for conn in (filing, recording.connection(), next_filing):
            conn.execute(text("SET lock_timeout = '2s'"))
        filing.execute(key_share, {"id": key_id})  # a report being filed, not committed yet

        auth.use_api_key(recording, secret)  # records the use: neither skipped nor waiting
        next_filing.execute(key_share, {"id": key_id})  # the next report does not wait either

        used = recording.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id))
        assert used is not None
    finally:
        for conn in (filing, next_filing):
            conn.rollback()
            conn.close()
        recording.rollback()
        recording.close()
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM api_keys WHERE id = :id"), {"id": key_id})
