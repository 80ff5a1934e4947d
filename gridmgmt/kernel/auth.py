"""People and keys: create users with one role each, issue and verify Open311 API keys."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pyotp
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from gridmgmt.kernel.db import Prepared
from gridmgmt.kernel.errors import Conflict, InvalidInput, NotFound
from gridmgmt.kernel.models import ApiKey, Role, Unit, User

MIN_PASSWORD_LENGTH = 12
_USERNAME = re.compile(r"[A-Za-z0-9_.@-]{2,64}")
COMMON_PASSWORDS = Path(__file__).resolve().parent.parent / "data" / "common-passwords.txt"


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (lower case; see gridmgmt/data/README.md)."""
    lines = COMMON_PASSWORDS.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip())


def check_password_policy(password: str) -> None:
    """Refuse a password that is short or among the common ones.

    Raises:
        InvalidInput: the password is too short or too common.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            "a password has at least %(least)s characters", least=MIN_PASSWORD_LENGTH
        )
    if password.lower() in common_passwords():
        raise InvalidInput("this password is one of the most common ones: choose another")


def unit_for_role(session: Session, role: Role, unit_code: str | None) -> Unit | None:
    """The unit a person of `role` belongs to: unit staff name one, nobody else may.

    Raises:
        InvalidInput: a unit missing for unit staff, or given for another role.
        NotFound: the unit does not exist.
    """
    if role == Role.UNIT_STAFF:
        if not unit_code:
            raise InvalidInput("unit staff must be bound to a unit: give --unit CODE")
        unit = session.scalar(select(Unit).where(Unit.code == unit_code))
        if unit is None:
            raise NotFound("unit %(unit_code)s does not exist", unit_code=unit_code)
        return unit
    if unit_code:
        raise InvalidInput(
            "only unit staff belong to a unit; the role %(role)s is on the supervision "
            "side, and nobody is on both sides",
            role=role.value,
        )
    return None


def create_user(
    session: Session,
    username: str,
    password: str,
    role: Role | str,
    unit_code: str | None = None,
    display_name: str | None = None,
) -> User:
    """Create a user with exactly one role; unit staff must name their unit, no one else may.

    Raises:
        InvalidInput: bad username, short password, unknown role, or a unit given wrongly.
        NotFound: the unit does not exist.
        Conflict: the username is taken.
    """
    if not _USERNAME.fullmatch(username):
        raise InvalidInput("a username is 2-64 letters, digits or . _ @ -")
    try:
        role = Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise InvalidInput(
            "unknown role %(role)r; roles are %(roles)s", role=role, roles=roles
        ) from None
    check_password_policy(password)
    unit = unit_for_role(session, role, unit_code)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict("user %(username)s already exists", username=username)
    user = User(
        username=username,
        display_name=display_name,
        password_hash=generate_password_hash(password),
        role=role.value,
        unit=unit,
    )
    session.add(user)
    session.flush()
    return user


@cache
def _dummy_hash() -> str:
    """A hash of nobody's password, checked when the username is unknown."""
    return generate_password_hash(secrets.token_urlsafe(16))


def authenticate(session: Session, username: str, password: str) -> User | None:
    """Return the active user with these credentials, or None. An unknown or inactive
    username costs one password check too (against a dummy hash), so that the time of the
    answer does not tell which usernames exist."""
    user = session.scalar(select(User).where(User.username == username, User.active))
    if user is None:
        check_password_hash(_dummy_hash(), password)
        return None
    if not check_password_hash(user.password_hash, password):
        return None
    return user


def find_account(session: Session, username: str) -> User | None:
    """The user called `username`, active or not, or None (for the audit trail of a failed
    sign-in: whose account was tried)."""
    return session.scalar(select(User).where(User.username == username))


def signin_failure_reason(authenticated: User | None, account: User | None) -> str:
    """Why a sign-in failed, for the audit trail only (the page says "wrong username or
    password" whatever it was): `wrong_code` when the password was right (`authenticated`),
    else `unknown_user`, `inactive_user` or `wrong_password` by the `account` tried."""
    if authenticated is not None:
        return "wrong_code"
    if account is None:
        return "unknown_user"
    return "wrong_password" if account.active else "inactive_user"


def record_signin(session: Session, user_id: int) -> None:
    """Note the time of a successful sign-in (shown on the administrators' people page)."""
    session.execute(update(User).where(User.id == user_id).values(last_signin_at=func.now()))


def find_user(session: Session, username: str) -> User:
    """The user called `username`.

    Raises:
        NotFound: no such user.
    """
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound("user %(username)s does not exist", username=username)
    return user


def set_password(session: Session, username: str, password: str) -> User:
    """Give `username` a new password and end all their sessions.

    Raises:
        NotFound: no such user.
        InvalidInput: the password is too short or too common.
    """
    check_password_policy(password)
    user = find_user(session, username)
    user.password_hash = generate_password_hash(password)
    user.end_sessions()
    session.flush()
    return user


def set_totp(session: Session, username: str, enable: bool = True) -> str | None:
    """Give `username` a new second factor (a TOTP secret) and return its provisioning URI
    for an authenticator app, or remove it (`enable` false: None). Their sessions end.

    Raises:
        NotFound: no such user.
    """
    user = find_user(session, username)
    user.totp_secret = pyotp.random_base32() if enable else None
    user.end_sessions()
    session.flush()
    if user.totp_secret is None:
        return None
    return pyotp.TOTP(user.totp_secret).provisioning_uri(name=username, issuer_name="gridmgmt")


def check_second_factor(user: User, code: str) -> bool:
    """True when `user` has no second factor, or `code` is its current one (30 s steps, one
    step of clock drift allowed either way)."""
    if user.totp_secret is None:
        return True
    code = code.strip().replace(" ", "")
    return code.isdigit() and pyotp.TOTP(user.totp_secret).verify(code, valid_window=1)


def set_active(session: Session, username: str, active: bool) -> User:
    """Activate or deactivate `username`; either way, all their sessions end.

    Raises:
        NotFound: no such user.
    """
    user = find_user(session, username)
    user.active = active
    user.end_sessions()
    session.flush()
    return user


def set_role(session: Session, username: str, role: Role | str, unit_code: str | None) -> User:
    """Give `username` another role (and unit): the rules of `create_user` hold (one role,
    unit staff bound to a unit, nobody else). Their sessions end: what they may do changed.

    Raises:
        NotFound: no such user or unit.
        InvalidInput: unknown role, or a unit given wrongly.
    """
    user = find_user(session, username)
    try:
        role = Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise InvalidInput(
            "unknown role %(role)r; roles are %(roles)s", role=role, roles=roles
        ) from None
    unit = unit_for_role(session, role, unit_code)
    user.role = role.value
    user.unit = unit
    user.end_sessions()
    session.flush()
    return user


def hash_api_key(key: str) -> str:
    """SHA-256 of a key: keys are random and long, so a fast hash is enough."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    """A new key: `secret` is shown once and never stored."""

    api_key: ApiKey
    secret: str


def create_api_key(session: Session, name: str, trusted: bool = False) -> IssuedKey:
    """Issue an Open311 API key; only its hash is stored.

    Raises:
        InvalidInput: empty name.
        Conflict: a key with this name exists.
    """
    name = name.strip()
    if not name:
        raise InvalidInput("an API key needs a name (the client or channel using it)")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise Conflict("an API key named %(name)r already exists", name=name)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(name=name, key_hash=hash_api_key(secret), prefix=secret[:8], trusted=trusted)
    session.add(key)
    session.flush()
    return IssuedKey(key, secret)


@dataclass(frozen=True)
class KeyUse:
    """The active key a request came with: enough to file, limit and record its reports."""

    id: int
    name: str
    trusted: bool


# Found whatever its state (a revoked key is refused, but as itself: the audit trail names it).
_FIND_API_KEY = Prepared(
    "gridmgmt_find_api_key",
    """
    SELECT id, name, trusted, active AND revoked_at IS NULL AS usable,
           coalesce(last_used_at < now() - interval '1 minute', true) AS use_stale
    FROM api_keys WHERE key_hash = :key_hash
""",
)


# Skipped while another request holds the row: that one is recording the use already, and
# waiting for it would hold this report up. NO KEY UPDATE, the lock an UPDATE of a non-key
# column takes: it does not clash with the KEY SHARE locks that the reports being filed hold
# on the row (their foreign key), so neither waits for the other.
_RECORD_USE = text("""
    UPDATE api_keys SET last_used_at = now()
    WHERE id = (SELECT id FROM api_keys WHERE id = :id FOR NO KEY UPDATE SKIP LOCKED)
""")


def use_api_key(session: Session, secret: str) -> KeyUse:
    """Return the active key matching `secret`, and record its use in this transaction when
    the recorded one is over a minute old (a row that every report updated would serialise a
    client's reports). The record is approximate: it is skipped while another request holds
    the row, and it is rolled back with a request that fails.

    Raises:
        NotFound: no such key, or a revoked (or deactivated) one: then its `details` name
            the key (`api_key_id`), for the audit trail.
    """
    row = _FIND_API_KEY.execute(session, {"key_hash": hash_api_key(secret)}).first()
    if row is None:
        raise NotFound("unknown or revoked API key")
    if not row.usable:
        raise NotFound("unknown or revoked API key", details={"api_key_id": row.id})
    if row.use_stale:
        session.execute(_RECORD_USE, {"id": row.id})
    return KeyUse(row.id, row.name, row.trusted)


def find_api_key(session: Session, name_or_id: str) -> ApiKey:
    """The api key called `name_or_id`, else the one with that id.

    Raises:
        NotFound: no such key.
    """
    key = session.scalar(select(ApiKey).where(ApiKey.name == name_or_id.strip()))
    if key is None and name_or_id.strip().isdigit():
        key = session.get(ApiKey, int(name_or_id.strip()))
    if key is None:
        raise NotFound("no API key named %(name)r", name=name_or_id)
    return key


def revoke_api_key(session: Session, name_or_id: str) -> ApiKey:
    """Revoke a key for good: from now on every request with it is refused (and recorded as a
    security event). Revoking a revoked key changes nothing.

    Raises:
        NotFound: no such key.
    """
    key = find_api_key(session, name_or_id)
    if key.revoked_at is None:
        key.revoked_at = session.scalar(select(func.now()))
        key.active = False
        session.flush()
    return key


def update_api_key(session: Session, key_id: int, name: str, trusted: bool) -> ApiKey:
    """Rename a key and mark it trusted or not (its secret stays the same).

    Raises:
        NotFound: no such key.
        InvalidInput: empty name.
        Conflict: another key has this name.
    """
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound("no API key named %(name)r", name=str(key_id))
    name = name.strip()
    if not name:
        raise InvalidInput("an API key needs a name (the client or channel using it)")
    taken = session.scalar(select(ApiKey.id).where(ApiKey.name == name, ApiKey.id != key.id))
    if taken is not None:
        raise Conflict("an API key named %(name)r already exists", name=name)
    key.name = name
    key.trusted = trusted
    session.flush()
    return key


def api_keys(session: Session) -> list[ApiKey]:
    """Every api key, revoked ones included, by name."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.name)))
