"""Who is asking, and may they: sessions, API tokens, CSRF, roles.

- Sessions: a cookie signed with itsdangerous (secret in `<data_dir>/web_secret`, made on first start,
  mode 0600) holding the user id, the user's session epoch and a random session id. HttpOnly,
  SameSite=Strict, Secure when served over https (`web.cookie_secure: auto`) or always/never. Changing
  a password or role, or disabling a user, bumps the epoch: every session of that user ends.
- API tokens: `Authorization: Bearer rie_...` (only the SHA-256 is stored); a token acts with its
  user's role and needs no CSRF token (a browser never sends it by itself).
- CSRF: every form carries `csrf_token` = HMAC(secret, session id); JSON POSTs made with a session
  carry it in `X-CSRF-Token`. The login form (no session yet) uses a double-submit cookie.
- Roles: `PERMISSIONS` below is the whole matrix; every route names the permission it needs.

Bad paths: no or bad credentials -> `LoginRequired` (pages redirect to /login, the API answers 401);
a role without the permission -> 403; a missing or wrong CSRF token -> 403.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from engine.web import users
from engine.web.schema import ROLES

SESSION_COOKIE = "rie_session"
LOGIN_CSRF_COOKIE = "rie_login_csrf"

PERMISSIONS: dict[str, frozenset[str]] = {
    "view": frozenset(ROLES),                                   # read pages, incl. patient data (audited)
    "messages.reprocess": frozenset({"admin", "analyst"}),
    "outbound.resend": frozenset({"admin", "analyst"}),
    "channels.control": frozenset({"admin", "analyst"}),        # pause / resume
    "referrals.edit": frozenset({"admin", "coordinator"}),      # assign, next action, status
    "faxes.review": frozenset({"admin", "coordinator"}),        # edit, accept, reject
    "audit.view": frozenset({"admin"}),
}


class LoginRequired(Exception):
    """No valid session or token."""


def load_secret(data_dir: Path) -> bytes:
    """The signing secret, created on first start with mode 0600 (O_EXCL: two processes starting at once
    agree on one)."""
    path = Path(data_dir) / "web_secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text().strip()
        if len(secret) < 32:
            raise RuntimeError(f"{path}: the web secret is too short; delete the file to make a new one")
        return secret.encode()
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


@dataclass(frozen=True, slots=True)
class Principal:
    user: users.User
    via: str                 # 'session' or 'token'
    session_id: str | None = None

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def role(self) -> str:
        return self.user.role

    def may(self, permission: str) -> bool:
        return self.user.role in PERMISSIONS[permission]


class Sessions:
    def __init__(self, secret: bytes, max_age_seconds: float, cookie_secure: str):
        self.secret = secret
        self.max_age = int(max_age_seconds)
        self.cookie_secure = cookie_secure
        self._serializer = URLSafeTimedSerializer(secret, salt="rie-session")

    def new_cookie(self, user: users.User) -> str:
        return self._serializer.dumps({"uid": user.id, "ep": user.session_epoch, "sid": secrets.token_urlsafe(16)})

    def read_cookie(self, value: str) -> dict | None:
        try:
            data = self._serializer.loads(value, max_age=self.max_age)
        except BadSignature:      # includes SignatureExpired
            return None
        return data if isinstance(data, dict) and {"uid", "ep", "sid"} <= data.keys() else None

    def csrf_token(self, session_id: str) -> str:
        return hmac.new(self.secret, f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()[:40]

    def csrf_ok(self, principal: Principal, token: str | None) -> bool:
        if principal.via == "token":
            return True
        return bool(token) and hmac.compare_digest(self.csrf_token(principal.session_id or ""), token)

    def secure(self, request: Request) -> bool:
        return self.cookie_secure == "always" or (self.cookie_secure == "auto" and request.url.scheme == "https")

    def set_cookie(self, response, request: Request, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict",
                            secure=self.secure(request), path="/")


def identify(request: Request, conn, sessions: Sessions) -> Principal | None:
    """The caller, from a bearer token or the session cookie; None when neither is valid."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        user = users.by_token(conn, header[7:].strip())
        return Principal(user, "token") if user else None
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    data = sessions.read_cookie(cookie)
    if data is None:
        return None
    user = users.get(conn, data["uid"])
    if user is None or user.disabled or user.session_epoch != data["ep"]:
        return None
    return Principal(user, "session", data["sid"])


def forbid(principal: Principal, permission: str) -> None:
    if not principal.may(permission):
        raise HTTPException(403, f"your role ({principal.role}) may not do this ({permission})")
