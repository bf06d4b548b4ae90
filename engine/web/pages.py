"""Server-rendered pages (Jinja2). Every route names its permission; every page showing patient data
writes an audit row ('view', which record or which search). Forms post back with a CSRF token and
redirect (303) to the page they came from with a short notice."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from engine import kpis
from engine.referral_store import ReferralStore
from engine.store import STATUSES
from engine.web import actions, audit, channel_state, queries
from engine.web.app import Web, _local_path, needs, needs_form
from engine.web.charts import bar_chart, line_chart
from engine.web.metrics import BOUND, frames_in, per_channel_counts

NOTICES = {"reprocessed": "Queued for processing again.", "resent": "Queued for sending again.",
           "paused": "Channel paused: it no longer accepts connections (within about a second).",
           "resumed": "Channel resumed.", "saved": "Saved.", "accepted": "Accepted.", "rejected": "Rejected."}


def _utc(value: str | None) -> str | None:
    """A date or local date-time from a form field as UTC ISO; None when empty."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(422, f"time {value!r}: use 2026-11-23 or 2026-11-23T10:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _back(request: Request, path: str, notice: str | None = None, error: str | None = None) -> RedirectResponse:
    query = {k: v for k, v in (("notice", notice), ("error", error)) if v}
    sep = "&" if "?" in path else "?"
    return RedirectResponse(_local_path(path) + (sep + urlencode(query) if query else ""), status_code=303)


def channel_views(web: Web) -> list[queries.ChannelView]:
    conn = web.conn()
    states = channel_state.states(conn)
    counts = frames_in(web.config.data_dir)
    day_ago = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat(timespec="microseconds")
    first_today = queries._first_id_at_or_after(conn, day_ago)
    waiting = per_channel_counts(conn, "received")
    errors = per_channel_counts(conn, "error", first_today) if first_today is not None else {}
    depths = {}
    if queries._table_exists(conn, "outbound"):
        from engine import outbound
        depths = {d["destination"]: d for d in outbound.queue_depths(conn)}
    out = []
    for c in web.config.channels:
        state = states.get(c.name)
        source = (f"{c.source.type} {c.source.host}:{c.source.port}" if c.source.type == "mllp"
                  else f"{c.source.type} {getattr(c.source, 'inbox', '')}")   # fax_folder: its inbox
        view = queries.ChannelView(c.name, c.enabled, source, bool(state and state["paused"]), state,
                                   counts.get(c.name, {}), waiting.get(c.name, 0), errors.get(c.name, 0),
                                   pausable=c.source.type == "mllp")
        view.destinations = [{"name": d.name, "type": d.type, **depths.get(d.name, {})}
                             for d in getattr(c, "destinations", [])]
        out.append(view)
    return out


def router(web: Web) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/")
    def home(p=needs(web)):
        return RedirectResponse("/referrals" if p.role == "coordinator" else "/channels", status_code=303)

    # ---- channels --------------------------------------------------------------------------------

    @r.get("/channels")
    def channels(request: Request, p=needs(web), notice: str | None = None, error: str | None = None):
        return web.render(request, "channels.html", p, channels=channel_views(web), bound=BOUND,
                          notice=NOTICES.get(notice), error=error)

    @r.post("/channels/{name}/{verb}")
    def channel_control(request: Request, name: str, verb: str, p=needs_form(web, "channels.control")):
        if verb not in ("pause", "resume"):
            raise HTTPException(404, "no such channel action")
        if name not in {c.name for c in web.config.channels if c.source.type == "mllp"}:
            raise HTTPException(404, f"no MLLP channel {name!r} in the config (only listeners can be paused)")
        channel_state.set_paused(web.conn(), name, verb == "pause", p.name)
        web.audit(p, request, f"channel_{verb}", "channel", name)
        return _back(request, "/channels", notice="paused" if verb == "pause" else "resumed")

    # ---- messages --------------------------------------------------------------------------------

    @r.get("/messages")
    def messages(request: Request, p=needs(web), control_id: str = "", patient_id: str = "", name: str = "",
                 message_type: str = "", status: str = "", channel: str = "", since: str = "", until: str = "",
                 before: int | None = None):
        if status and status not in STATUSES:
            raise HTTPException(422, f"status {status!r}: valid values are {', '.join(STATUSES)}")
        f = queries.MessageFilter(control_id.strip() or None, patient_id.strip() or None, name.strip() or None,
                                  message_type.strip() or None, status or None, channel or None, _utc(since),
                                  _utc(until))
        rows, next_before = queries.messages(web.conn(), f, before)
        web.audit(p, request, "view", "message_search", None, json.dumps(f.terms()) if f.terms() else None)
        params = {k: v for k, v in request.query_params.items() if k != "before"}
        next_url = f"/messages?{urlencode({**params, 'before': next_before})}" if next_before else None
        return web.render(request, "messages.html", p, rows=rows, form=dict(request.query_params),
                          statuses=STATUSES, channels=[c.name for c in web.config.channels], next_url=next_url)

    @r.get("/messages/{message_id}")
    def message(request: Request, message_id: int, p=needs(web), notice: str | None = None,
                error: str | None = None):
        doc = queries.message_detail(web.conn(), message_id)
        if doc is None:
            raise HTTPException(404, f"no message with id {message_id}")
        web.audit(p, request, "view", "message", message_id)
        return web.render(request, "message.html", p, m=doc, notice=NOTICES.get(notice), error=error)

    @r.post("/messages/{message_id}/reprocess")
    def reprocess(request: Request, message_id: int, p=needs_form(web, "messages.reprocess")):
        try:
            actions.reprocess(web.db_path, message_id)
        except actions.ActionError as exc:
            return _back(request, f"/messages/{message_id}", error=str(exc))
        web.audit(p, request, "reprocess", "message", message_id)
        return _back(request, f"/messages/{message_id}", notice="reprocessed")

    # ---- outbound --------------------------------------------------------------------------------

    @r.get("/outbound")
    def outbound_page(request: Request, p=needs(web), status: str = "", destination: str = "",
                      before: int | None = None, notice: str | None = None, error: str | None = None):
        conn = web.conn()
        if not queries._table_exists(conn, "outbound"):
            return web.render(request, "outbound.html", p, enabled=False)
        from engine import outbound
        rows = outbound.listing(conn, status=status or None, destination=destination or None, before_id=before,
                                limit=queries.PAGE + 1)
        next_before = rows[queries.PAGE - 1]["id"] if len(rows) > queries.PAGE else None
        web.audit(p, request, "view", "outbound_list", None, json.dumps({"status": status, "destination": destination}))
        params = {k: v for k, v in request.query_params.items() if k not in ("before", "notice", "error")}
        return web.render(request, "outbound.html", p, enabled=True, depths=outbound.queue_depths(conn),
                          dead=outbound.dead_letters(conn, limit=20), rows=rows[:queries.PAGE],
                          form=dict(request.query_params), statuses=outbound.STATUSES,
                          next_url=f"/outbound?{urlencode({**params, 'before': next_before})}" if next_before else None,
                          notice=NOTICES.get(notice), error=error)

    @r.post("/outbound/{outbound_id}/resend")
    def resend(request: Request, outbound_id: int, p=needs_form(web, "outbound.resend"), back: str = Form("/outbound")):
        try:
            actions.resend(web.conn(), outbound_id)
        except actions.ActionError as exc:
            return _back(request, back, error=str(exc))
        web.audit(p, request, "resend", "outbound", outbound_id)
        return _back(request, back, notice="resent")

    # ---- referrals -------------------------------------------------------------------------------

    @r.get("/referrals")
    def worklist(request: Request, p=needs(web), status: str = "", specialty: str = "", urgency: str = "",
                 owner: str = "", payer: str = "", min_age: str = "", max_age: str = "", patient_id: str = "",
                 after: str | None = None):
        def days(value: str, name: str):
            try:
                return float(value) if value else None
            except ValueError:
                raise HTTPException(422, f"{name} {value!r}: a number of days") from None
        f = queries.WorklistFilter(status or None, specialty or None, urgency or None, owner or None, payer or None,
                                   days(min_age, "min_age"), days(max_age, "max_age"), patient_id or None)
        rows, next_after = queries.worklist(web.conn(), f, after)
        web.audit(p, request, "view", "referral_worklist", None, json.dumps(f.terms()) if f.terms() else None)
        params = {k: v for k, v in request.query_params.items() if k != "after"}
        from engine.lifecycle import ReferralStatus
        return web.render(request, "referrals.html", p, rows=rows, form=dict(request.query_params),
                          statuses=[s.value for s in ReferralStatus],
                          next_url=f"/referrals?{urlencode({**params, 'after': next_after})}" if next_after else None)

    @r.get("/referrals/{referral_id}")
    def referral(request: Request, referral_id: int, p=needs(web), notice: str | None = None,
                 error: str | None = None):
        conn = web.conn()
        timeline = ReferralStore(conn).timeline(referral_id)
        if timeline is None:
            raise HTTPException(404, f"no referral with id {referral_id}")
        web.audit(p, request, "view", "referral", referral_id)
        from engine.lifecycle import ReferralStatus
        age, colour = queries.aging(timeline["referral"], datetime.now(timezone.utc))
        return web.render(request, "referral.html", p, t=timeline, ref=timeline["referral"],
                          age=round(age, 1), colour=colour,
                          statuses=[s.value for s in ReferralStatus], notice=NOTICES.get(notice), error=error)

    @r.post("/referrals/{referral_id}/{kind}")
    async def referral_action(request: Request, referral_id: int, kind: str, p=needs_form(web, "referrals.edit")):
        form = await request.form()
        kind = kind.replace("-", "_")
        values = {k: form.get(k) for k in ("owner", "text", "due", "status", "reason")}
        from starlette.concurrency import run_in_threadpool
        try:
            await run_in_threadpool(_referral_action, web, kind, referral_id, p.name, values)
        except actions.ActionError as exc:
            return _back(request, f"/referrals/{referral_id}", error=str(exc))
        await run_in_threadpool(web.audit, p, request, kind, "referral", referral_id,
                                json.dumps({k: v for k, v in values.items() if v}))
        return _back(request, f"/referrals/{referral_id}", notice="saved")

    # ---- faxes -----------------------------------------------------------------------------------

    @r.get("/faxes")
    def faxes(request: Request, p=needs(web), status: str = "needs_review", before: int | None = None):
        conn = web.conn()
        if not queries.faxes_enabled(conn):
            return web.render(request, "faxes.html", p, enabled=False)
        rows, next_before = queries.faxes(conn, status or None, before)
        web.audit(p, request, "view", "fax_list", None, status)
        return web.render(request, "faxes.html", p, enabled=True, rows=rows, status=status,
                          next_url=f"/faxes?{urlencode({'status': status, 'before': next_before})}"
                          if next_before else None)

    @r.get("/faxes/{fax_id}")
    def fax(request: Request, fax_id: int, p=needs(web), notice: str | None = None, error: str | None = None):
        from engine.web import fax_review
        conn = web.conn()
        if not queries.faxes_enabled(conn):
            raise HTTPException(404, "fax intake is not enabled in this store")
        doc = fax_review.get(conn, fax_id)
        if doc is None:
            raise HTTPException(404, f"no fax with id {fax_id}")
        web.audit(p, request, "view", "fax", fax_id)
        return web.render(request, "fax.html", p, f=doc, notice=NOTICES.get(notice), error=error)

    @r.get("/faxes/{fax_id}/pages/{number}")
    def fax_page(fax_id: int, number: int, p=needs(web)):
        from fastapi.responses import FileResponse
        from engine.web import fax_review
        row = web.conn().execute("SELECT pages_dir FROM faxes WHERE id=?", (fax_id,)).fetchone()
        images = fax_review.page_images(row["pages_dir"]) if row else []
        if not 1 <= number <= len(images):
            raise HTTPException(404, f"fax {fax_id} has no page image {number}")
        return FileResponse(images[number - 1])      # chosen by index from the engine's own folder, never by name

    @r.post("/faxes/{fax_id}/{verb}")
    async def fax_action(request: Request, fax_id: int, verb: str, p=needs_form(web, "faxes.review")):
        from starlette.concurrency import run_in_threadpool
        from engine.web import fax_review
        if verb not in ("save", "accept", "reject"):
            raise HTTPException(404, "no such fax action")
        form = dict(await request.form())
        try:
            edits = fax_review.parse_edits(form)
            if verb == "reject":
                await run_in_threadpool(lambda: fax_review.reject(web.conn(), fax_id, form.get("reason", ""), p.name))
            elif verb == "accept":
                await run_in_threadpool(lambda: fax_review.accept(web.conn(), fax_id, edits, p.name,
                                                                  web.config.referrals))
            else:
                await run_in_threadpool(lambda: fax_review.save(web.conn(), fax_id, edits, p.name,
                                                                web.config.referrals))
        except fax_review.ReviewError as exc:
            return _back(request, f"/faxes/{fax_id}", error=str(exc))
        await run_in_threadpool(web.audit, p, request, f"fax_{verb}", "fax", fax_id,
                                json.dumps({k: v for k, v in edits.items()}) if verb != "reject" else form.get("reason"))
        return _back(request, f"/faxes/{fax_id}",
                     notice={"save": "saved", "accept": "accepted", "reject": "rejected"}[verb])

    # ---- KPIs ------------------------------------------------------------------------------------

    @r.get("/kpis")
    def kpi_page(request: Request, p=needs(web), start: str = "", end: str = ""):
        try:
            start_d, end_d = kpis.period(start, end)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        doc = kpis.report(web.conn(), start_d, end_d)
        web.audit(p, request, "view", "kpis", None, f"{start_d}..{end_d}")
        series = doc["daily"]
        charts = {
            "daily": line_chart([d["day"] for d in series],
                                {"created": [d["created"] for d in series],
                                 "scheduled": [d["scheduled"] for d in series],
                                 "completed": [d["completed"] for d in series]},
                                title="Referrals per day"),
            "aging": bar_chart([a["specialty"] for a in doc["aging"][:12]],
                               [a["waiting"] for a in doc["aging"][:12]],
                               [a["late"] for a in doc["aging"][:12]], title="Waiting for an appointment "
                               "(dark: past the urgency clock)"),
        }
        return web.render(request, "kpis.html", p, doc=doc, s=doc["summary"], charts=charts,
                          start=start_d.isoformat(), end=end_d.isoformat(),
                          buckets=[label for _, _, label in kpis.AGE_BUCKETS])

    @r.get("/kpis.csv")
    def kpi_csv(request: Request, p=needs(web), start: str = "", end: str = ""):
        try:
            start_d, end_d = kpis.period(start, end)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        body = kpis.to_csv(kpis.report(web.conn(), start_d, end_d))
        web.audit(p, request, "export", "kpis", None, f"{start_d}..{end_d}")
        return Response(body, media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="kpis-{start_d}-{end_d}.csv"'})

    # ---- audit log (admin) -----------------------------------------------------------------------

    @r.get("/audit")
    def audit_page(request: Request, p=needs(web, "audit.view"), user: str = "", target_kind: str = "",
                   target_id: str = "", before: int | None = None):
        rows = audit.listing(web.conn(), user=user or None, target_kind=target_kind or None,
                             target_id=target_id or None, before_id=before, limit=queries.PAGE + 1)
        params = {k: v for k, v in request.query_params.items() if k != "before"}
        next_url = f"/audit?{urlencode({**params, 'before': rows[queries.PAGE - 1]['id']})}" \
            if len(rows) > queries.PAGE else None
        from engine.web import users
        return web.render(request, "audit.html", p, rows=rows[:queries.PAGE], form=dict(request.query_params),
                          next_url=next_url, users=users.listing(web.conn()))

    return r


def _referral_action(web: Web, kind: str, referral_id: int, by_user: str, values: dict) -> dict:
    return actions.referral_action(web.conn(), kind, referral_id, by_user, **values)
