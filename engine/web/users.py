"""Dashboard users: argon2 password hashes, roles, lockout, API tokens. No web framework here (the CLI
uses it). Every write is one short `BEGIN IMMEDIATE` transaction on the caller's connection (the same
discipline as engine.coordinator), so the daemon's writer waits microseconds at most.

Errors, all raised before anything is written: `UserError` (unknown user, name taken, bad role, a
password too short).
"""
from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from engine.store import now_iso, write_transaction
from engine.web.schema import ROLES

MIN_PASSWORD = 10
TOKEN_PREFIX = "rie_"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong name costs as long as a wrong password
# (the response time must not tell which names exist).
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class UserError(ValueError):
    """A user command that cannot be done as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: str
    disabled: bool
    session_epoch: int


@dataclass(frozen=True, slots=True)
class LoginResult:
    user: User | None
    problem: str | None        # None on success; 'bad_credentials', 'locked', 'disabled'
    locked_until: str | None = None


_write = write_transaction


def _user(row) -> User | None:
    if row is None:
        return None
    return User(row[0], row[1], row[2], bool(row[3]), row[4])


_COLUMNS = "id, name, role, disabled, session_epoch"


def get(conn: sqlite3.Connection, user_id: int) -> User | None:
    return _user(conn.execute(f"SELECT {_COLUMNS} FROM users WHERE id=?", (user_id,)).fetchone())


def by_name(conn: sqlite3.Connection, name: str) -> User | None:
    return _user(conn.execute(f"SELECT {_COLUMNS} FROM users WHERE name=?", (name,)).fetchone())


def listing(conn: sqlite3.Connection) -> list[dict]:
    return [dict(zip(("id", "name", "role", "disabled", "failed_logins", "locked_until", "last_login_at",
                      "created_at"), r)) for r in conn.execute(
        "SELECT id, name, role, disabled, failed_logins, locked_until, last_login_at, created_at FROM users "
        "ORDER BY name")]


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")


def add(conn: sqlite3.Connection, name: str, role: str, password: str) -> User:
    if not _NAME.match(name):
        raise UserError(f"user name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
    if role not in ROLES:
        raise UserError(f"role {role!r}: valid roles are {', '.join(ROLES)}")
    _check_password(password)
    hashed = _hasher.hash(password)
    with _write(conn):
        if by_name(conn, name) is not None:
            raise UserError(f"user {name!r} exists already (use `user passwd` to change the password)")
        at = now_iso()
        conn.execute("INSERT INTO users (name, role, password_hash, created_at, updated_at) VALUES (?,?,?,?,?)",
                     (name, role, hashed, at, at))
    return by_name(conn, name)


def end_sessions(conn: sqlite3.Connection, user_id: int) -> None:
    """Log out: every session cookie of the user stops working (a copied cookie included); API tokens stay."""
    with _write(conn):
        conn.execute("UPDATE users SET session_epoch=session_epoch+1, updated_at=? WHERE id=?", (now_iso(), user_id))


def set_password(conn: sqlite3.Connection, name: str, password: str) -> User:
    """New password; unlocks the account and ends every session the user had."""
    _check_password(password)
    hashed = _hasher.hash(password)
    with _write(conn):
        if not conn.execute("UPDATE users SET password_hash=?, failed_logins=0, locked_until=NULL, "
                            "session_epoch=session_epoch+1, updated_at=? WHERE name=?",
                            (hashed, now_iso(), name)).rowcount:
            raise UserError(f"no user {name!r}")
    return by_name(conn, name)


def set_role(conn: sqlite3.Connection, name: str, role: str) -> User:
    if role not in ROLES:
        raise UserError(f"role {role!r}: valid roles are {', '.join(ROLES)}")
    with _write(conn):
        if not conn.execute("UPDATE users SET role=?, session_epoch=session_epoch+1, updated_at=? WHERE name=?",
                            (role, now_iso(), name)).rowcount:
            raise UserError(f"no user {name!r}")
    return by_name(conn, name)


def disable(conn: sqlite3.Connection, name: str) -> User:
    """The user can no longer log in; their sessions end and their API tokens are revoked."""
    at = now_iso()
    with _write(conn):
        row = conn.execute("SELECT id FROM users WHERE name=?", (name,)).fetchone()
        if row is None:
            raise UserError(f"no user {name!r}")
        conn.execute("UPDATE users SET disabled=1, session_epoch=session_epoch+1, updated_at=? WHERE id=?",
                     (at, row[0]))
        conn.execute("UPDATE api_tokens SET revoked_at=? WHERE user_id=? AND revoked_at IS NULL", (at, row[0]))
    return by_name(conn, name)


def authenticate(conn: sqlite3.Connection, name: str, password: str, *, max_failures: int = 5,
                 lock_minutes: float = 15.0, now: datetime | None = None) -> LoginResult:
    """Check a login. `max_failures` wrong passwords in a row lock the account for `lock_minutes`
    (a correct password while locked is refused too, and does not reset the count)."""
    now = now or datetime.now(timezone.utc)
    row = conn.execute("SELECT id, password_hash, disabled, failed_logins, locked_until FROM users WHERE name=?",
                       (name,)).fetchone()
    if row is None:
        try:
            _hasher.verify(_DUMMY_HASH, password)
        except VerificationError:
            pass
        return LoginResult(None, "bad_credentials")
    user_id, hashed, disabled, failures, locked_until = row
    if disabled:
        return LoginResult(None, "disabled")
    if locked_until and datetime.fromisoformat(locked_until) > now:
        return LoginResult(None, "locked", locked_until)
    try:
        _hasher.verify(hashed, password)
        ok = True
    except (VerificationError, InvalidHashError):
        ok = False
    at = now.isoformat(timespec="microseconds")
    with _write(conn):
        if not ok:
            failures = (failures or 0) + 1
            lock = (now + timedelta(minutes=lock_minutes)).isoformat(timespec="seconds") \
                if failures >= max_failures else None
            conn.execute("UPDATE users SET failed_logins=?, locked_until=?, updated_at=? WHERE id=?",
                         (0 if lock else failures, lock, at, user_id))
            return LoginResult(None, "locked" if lock else "bad_credentials", lock)
        rehash = _hasher.hash(password) if _hasher.check_needs_rehash(hashed) else hashed
        conn.execute("UPDATE users SET failed_logins=0, locked_until=NULL, last_login_at=?, password_hash=? "
                     "WHERE id=?", (at, rehash, user_id))
    return LoginResult(get(conn, user_id), None)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(conn: sqlite3.Connection, name: str, label: str | None = None) -> str:
    """A new API token for the user (shown once; only its SHA-256 is stored). It acts with the user's role."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with _write(conn):
        row = conn.execute("SELECT id, disabled FROM users WHERE name=?", (name,)).fetchone()
        if row is None:
            raise UserError(f"no user {name!r}")
        if row[1]:
            raise UserError(f"user {name!r} is disabled")
        conn.execute("INSERT INTO api_tokens (user_id, token_hash, label, created_at) VALUES (?,?,?,?)",
                     (row[0], _token_hash(token), label, now_iso()))
    return token


def by_token(conn: sqlite3.Connection, token: str) -> User | None:
    """The enabled user owning this unrevoked token, or None."""
    row = conn.execute("SELECT u.id, u.name, u.role, u.disabled, u.session_epoch FROM api_tokens t "
                       "JOIN users u ON u.id=t.user_id WHERE t.token_hash=? AND t.revoked_at IS NULL",
                       (_token_hash(token),)).fetchone()
    user = _user(row)
    return None if user is None or user.disabled else user
