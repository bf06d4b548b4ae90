"""The FastAPI application: `create_app(config)`. Run by engine.web.server in its own process.

Everything needs a login (session cookie or API token) except `/health`, `/login` and `/static`.
`/metrics` answers loopback clients without login (a Prometheus on the same host) and anyone else
only with an API token. Each request uses its thread's own store connection (SQLite in WAL, or
PostgreSQL: readers never wait for the engine's writer; the few writes here are short BEGIN IMMEDIATE
transactions).
Pages send `Cache-Control: no-store` and a strict Content-Security-Policy (no inline script).
"""
from __future__ import annotations

import contextvars
import ipaddress
import logging
import secrets
import sqlite3
import threading
from pathlib import Path
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from engine.config import EngineConfig
from engine.db import PgPool, is_postgres, store_errors
from engine.store import connect, migrate
from engine.web import audit, users
from engine.web.auth import (LOGIN_CSRF_COOKIE, SESSION_COOKIE, LoginRequired, Principal, Sessions, forbid,
                             identify, load_secret)

log = logging.getLogger("engine.web")
# Web.conn() inside a request on PostgreSQL: the pooled connection lent to this request (set by the middleware)
_LENT: contextvars.ContextVar[list | None] = contextvars.ContextVar("lent_connection", default=None)
HERE = Path(__file__).resolve().parent


class Web:
    """What every route needs: config, store connections, sessions, templates, audit."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.db_path = config.store_location
        web = config.web
        self.sessions = Sessions(load_secret(config.data_dir), web.session_hours * 3600, web.cookie_secure)
        self._local = threading.local()
        # PostgreSQL: request threads borrow from one pool (store.pool_size) for the length of a request
        self.pool = PgPool(str(self.db_path), config.store.pool_size) if is_postgres(self.db_path) else None
        conn = connect(self.db_path)
        try:
            migrate(conn, self.db_path)      # a no-op when the engine opened the store first
        finally:
            conn.close()
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals["roles_may"] = lambda p, perm: p is not None and p.may(perm)

    def conn(self) -> sqlite3.Connection:
        lent = _LENT.get()
        if self.pool is not None and lent is not None:     # inside a request: one pooled connection for it
            if not lent:
                lent.append(self.pool.take())
            return lent[0]
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.db_path, self.config.store.synchronous)
            conn.row_factory = sqlite3.Row
        return conn

    def principal(self, request: Request) -> Principal | None:
        return identify(request, self.conn(), self.sessions)

    def audit(self, p: Principal | None, request: Request, action: str, kind: str | None = None,
              target: str | int | None = None, detail: str | None = None) -> None:
        audit.record(self.conn(), p.name if p else None, p.role if p else None, action, kind, target, detail,
                     request.client.host if request.client else None)

    def render(self, request: Request, name: str, p: Principal | None, status_code: int = 200, **context):
        csrf = self.sessions.csrf_token(p.session_id) if p is not None and p.session_id else ""
        return self.templates.TemplateResponse(request, name, {"p": p, "csrf": csrf, **context},
                                               status_code=status_code)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/metrics"


def _local_path(target: str | None, default: str = "/") -> str:
    """Only same-site paths after login or an action (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def create_app(config: EngineConfig) -> FastAPI:
    web = Web(config)
    if config.schedules.aging is not None:     # "late" on the dashboard = late for the aging schedule
        from engine import kpis
        kpis.CLOCK_DAYS.update(config.schedules.aging.sla_days)
    app = FastAPI(title="Referral integration engine", version="1",
                  description="Dashboard JSON API. Authenticate with `Authorization: Bearer <token>` "
                              "(`run_engine.py user token NAME`). Every read of patient data and every "
                              "action is written to the audit log.",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.web = web
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def headers(request: Request, call_next):
        lent: list = []                   # the request's pooled connection, given back when it is answered
        token = _LENT.set(lent)
        try:
            response = await call_next(request)
        finally:
            _LENT.reset(token)
            for conn in lent:
                web.pool.give(conn)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        if not request.url.path.startswith("/api/docs"):
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                "frame-ancestors 'none'; form-action 'self'")
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired):
        if _is_api(request):
            return JSONResponse({"detail": "login required: send Authorization: Bearer <token>"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if _is_api(request) or exc.status_code == 401:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        p = web.principal(request)
        return web.render(request, "error.html", p, status_code=exc.status_code, status=exc.status_code,
                          detail=exc.detail)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        if _is_api(request):
            return JSONResponse({"detail": problems}, status_code=422)
        return web.render(request, "error.html", web.principal(request), status_code=422, status=422,
                          detail=problems)

    # ---- no login -------------------------------------------------------------------------------

    @app.get("/health", include_in_schema=False)
    def health():
        try:
            web.conn().execute("SELECT 1 FROM messages LIMIT 1").fetchall()
        except store_errors() as exc:
            return JSONResponse({"status": "error", "store": type(exc).__name__}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request):
        host = request.client.host if request.client else ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback and web.principal(request) is None:
            raise LoginRequired()
        from engine.web.metrics import exposition
        body, content_type = exposition(config.data_dir, web.conn, [c.name for c in config.channels])
        return Response(body, media_type=content_type)

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/", problem: str | None = None):
        token = secrets.token_urlsafe(24)
        response = web.render(request, "login.html", None, login_csrf=token, next=_local_path(next),
                              problem=problem)
        web.sessions.set_cookie(response, request, LOGIN_CSRF_COOKIE, token, max_age=3600)
        return response

    @app.post("/login", include_in_schema=False)
    def login(request: Request, username: str = Form(...), password: str = Form(...),
              csrf_token: str = Form(""), next: str = Form("/")):
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not expected or not secrets.compare_digest(expected, csrf_token):
            raise HTTPException(403, "the login form expired or came from another site; load it again")
        result = users.authenticate(web.conn(), username, password, max_failures=config.web.lockout_attempts,
                                    lock_minutes=config.web.lockout_minutes)
        client = request.client.host if request.client else None
        if result.user is None:
            audit.record(web.conn(), username, None, f"login_failed:{result.problem}", "user", username,
                         client=client)
            log.warning("login refused", extra={"fields": {"reason": result.problem}})
            text = {"locked": "Too many failed logins: this account is locked for a while.",
                    "disabled": "This account is disabled."}.get(result.problem, "Wrong user name or password.")
            return web.render(request, "login.html", None, status_code=401, login_csrf=expected,
                              next=_local_path(next), problem=text)
        audit.record(web.conn(), result.user.name, result.user.role, "login", "user", result.user.name, client=client)
        response = RedirectResponse(_local_path(next), status_code=303)
        web.sessions.set_cookie(response, request, SESSION_COOKIE, web.sessions.new_cookie(result.user),
                                max_age=web.sessions.max_age)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request):
        p = web.principal(request)
        form = await request.form()
        if p is not None and web.sessions.csrf_ok(p, form.get("csrf_token")):
            from engine.web.users import end_sessions
            end_sessions(web.conn(), p.user.id)      # the cookie is signed, not stored: end it server-side too
            web.audit(p, request, "logout", "user", p.name)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # The OpenAPI document and its page need a login too (served here, offline: no CDN assets).
    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi(p=needs(web)):
        return app.openapi()

    @app.get("/api/docs", include_in_schema=False)
    def api_docs(request: Request, p=needs(web)):
        schema = app.openapi()
        endpoints = [{"method": method.upper(), "path": path, "summary": op.get("summary", ""),
                      "description": op.get("description", ""),
                      "params": [q["name"] for q in op.get("parameters", []) if q.get("in") == "query"]}
                     for path, ops in schema["paths"].items() for method, op in ops.items()]
        return web.render(request, "api_docs.html", p, endpoints=endpoints, info=schema["info"])

    from engine.web import api, pages
    app.include_router(pages.router(web))
    app.include_router(api.router(web))
    return app


# ---- dependencies used by pages and api ---------------------------------------------------------

def needs(web: Web, permission: str = "view"):
    """A dependency: the caller, who must be logged in and hold `permission`."""
    def dependency(request: Request) -> Principal:
        p = web.principal(request)
        if p is None:
            raise LoginRequired()
        forbid(p, permission)
        return p
    return Depends(dependency)


def needs_form(web: Web, permission: str):
    """For form POSTs: `needs` plus the form's csrf_token."""
    async def dependency(request: Request) -> Principal:
        p = web.principal(request)
        if p is None:
            raise LoginRequired()
        forbid(p, permission)
        form = await request.form()
        if not web.sessions.csrf_ok(p, form.get("csrf_token")):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        return p
    return Depends(dependency)


def needs_api_write(web: Web, permission: str):
    """For JSON POSTs: a token, or a session with the X-CSRF-Token header."""
    def dependency(request: Request) -> Principal:
        p = web.principal(request)
        if p is None:
            raise LoginRequired()
        forbid(p, permission)
        if not web.sessions.csrf_ok(p, request.headers.get("x-csrf-token")):
            raise HTTPException(403, "a session-authenticated POST needs the X-CSRF-Token header")
        return p
    return Depends(dependency)
