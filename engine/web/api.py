"""The JSON API under /api/ (OpenAPI at /api/docs): the same reads and actions as the pages, with the
same permissions and audit rows. Machine clients send `Authorization: Bearer <token>`.
Errors: 401 without credentials, 403 for a role without the permission, 404 for an unknown id,
409 when an action cannot be done in the record's current state (the detail says why), 422 for bad input."""
from __future__ import annotations

import json

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from engine import kpis
from engine.referral_store import ReferralStore
from engine.store import STATUSES
from engine.web import actions, channel_state, queries
from engine.web.app import Web, needs, needs_api_write


class Assign(BaseModel):
    owner: str = Field(min_length=1, description="who works the referral from now on")


class NextAction(BaseModel):
    text: str = Field(min_length=1)
    due: str | None = Field(default=None, description="2026-12-01 or 2026-12-01T09:00")


class StatusChange(BaseModel):
    status: str
    reason: str = Field(min_length=1, description="kept in the status history")


class FaxAccept(BaseModel):
    fields: dict[str, str | list[str] | None] = Field(default_factory=dict,
                                                      description="corrected fields, by extract field name")


class FaxReject(BaseModel):
    reason: str = Field(min_length=1)


def router(web: Web) -> APIRouter:
    r = APIRouter(prefix="/api", tags=["api"])

    @r.get("/me")
    def me(p=needs(web)):
        from engine.web.auth import PERMISSIONS
        return {"user": p.name, "role": p.role, "via": p.via,
                "permissions": sorted(k for k in PERMISSIONS if p.may(k))}

    @r.get("/channels")
    def channels(p=needs(web)):
        from engine.web.pages import channel_views
        return {"channels": [v.__dict__ for v in channel_views(web)]}

    @r.post("/channels/{name}/pause")
    def pause(name: str, request: Request, p=needs_api_write(web, "channels.control")):
        return _channel(web, request, p, name, True)

    @r.post("/channels/{name}/resume")
    def resume(name: str, request: Request, p=needs_api_write(web, "channels.control")):
        return _channel(web, request, p, name, False)

    @r.get("/messages")
    def messages(request: Request, p=needs(web), control_id: str | None = None, patient_id: str | None = None,
                 name: str | None = None, message_type: str | None = None, status: str | None = None,
                 channel: str | None = None, since: str | None = None, until: str | None = None,
                 before: int | None = None, limit: int = 50):
        """Newest first; pass `next_before` back as `before` for the next page."""
        if status and status not in STATUSES:
            raise HTTPException(422, f"status {status!r}: valid values are {', '.join(STATUSES)}")
        from engine.web.pages import _utc
        f = queries.MessageFilter(control_id, patient_id, name, message_type, status, channel, _utc(since),
                                  _utc(until))
        rows, next_before = queries.messages(web.conn(), f, before, min(max(limit, 1), 500))
        web.audit(p, request, "view", "message_search", None, json.dumps(f.terms()) if f.terms() else None)
        return {"messages": rows, "next_before": next_before}

    @r.get("/messages/{message_id}")
    def message(message_id: int, request: Request, p=needs(web)):
        doc = queries.message_detail(web.conn(), message_id)
        if doc is None:
            raise HTTPException(404, f"no message with id {message_id}")
        web.audit(p, request, "view", "message", message_id)
        return doc

    @r.post("/messages/{message_id}/reprocess")
    def reprocess(message_id: int, request: Request, p=needs_api_write(web, "messages.reprocess")):
        try:
            actions.reprocess(web.db_path, message_id)
        except actions.ActionError as exc:
            raise HTTPException(404 if "no message" in str(exc) else 409, str(exc)) from None
        web.audit(p, request, "reprocess", "message", message_id)
        return {"message_id": message_id, "status": "received"}

    @r.get("/outbound")
    def outbound_list(request: Request, p=needs(web), status: str | None = None, destination: str | None = None,
                      before: int | None = None, limit: int = 50):
        conn = web.conn()
        if not queries._table_exists(conn, "outbound"):
            raise HTTPException(404, "the outbound queue is not enabled in this store")
        from engine import outbound
        web.audit(p, request, "view", "outbound_list")
        return {"depths": outbound.queue_depths(conn), "dead": outbound.dead_letters(conn, limit=20),
                "rows": outbound.listing(conn, status=status, destination=destination, before_id=before,
                                         limit=min(max(limit, 1), 500))}

    @r.post("/outbound/{outbound_id}/resend")
    def resend(outbound_id: int, request: Request, p=needs_api_write(web, "outbound.resend")):
        try:
            actions.resend(web.conn(), outbound_id)
        except actions.ActionError as exc:
            raise HTTPException(409, str(exc)) from None
        web.audit(p, request, "resend", "outbound", outbound_id)
        return {"outbound_id": outbound_id, "status": "queued"}

    @r.get("/referrals")
    def referrals(request: Request, p=needs(web), status: str | None = None, specialty: str | None = None,
                  urgency: str | None = None, owner: str | None = None, payer: str | None = None,
                  min_age_days: float | None = None, max_age_days: float | None = None,
                  patient_id: str | None = None, after: str | None = None, limit: int = 50):
        """The worklist, oldest first; pass `next_after` back as `after` for the next page."""
        f = queries.WorklistFilter(status, specialty, urgency, owner, payer, min_age_days, max_age_days, patient_id)
        rows, next_after = queries.worklist(web.conn(), f, after, min(max(limit, 1), 500))
        web.audit(p, request, "view", "referral_worklist", None, json.dumps(f.terms()) if f.terms() else None)
        return {"referrals": rows, "next_after": next_after}

    @r.get("/referrals/{referral_id}")
    def referral(referral_id: int, request: Request, p=needs(web)):
        conn = web.conn()
        timeline = ReferralStore(conn).timeline(referral_id)
        if timeline is None:
            raise HTTPException(404, f"no referral with id {referral_id}")
        web.audit(p, request, "view", "referral", referral_id)
        return timeline

    def referral_write(kind: str, referral_id: int, request: Request, p, values: dict) -> dict:
        try:
            referral = actions.referral_action(web.conn(), kind, referral_id, p.name, **values)
        except actions.ActionError as exc:
            raise HTTPException(404 if "no referral" in str(exc) else 409, str(exc)) from None
        web.audit(p, request, kind, "referral", referral_id, json.dumps(values))
        return {"referral": referral}

    @r.post("/referrals/{referral_id}/assign")
    def assign(referral_id: int, body: Assign, request: Request, p=needs_api_write(web, "referrals.edit")):
        return referral_write("assign", referral_id, request, p, body.model_dump())

    @r.post("/referrals/{referral_id}/next-action")
    def next_action(referral_id: int, body: NextAction, request: Request, p=needs_api_write(web, "referrals.edit")):
        return referral_write("next_action", referral_id, request, p, body.model_dump())

    @r.post("/referrals/{referral_id}/status")
    def status(referral_id: int, body: StatusChange, request: Request, p=needs_api_write(web, "referrals.edit")):
        return referral_write("status", referral_id, request, p, body.model_dump())

    @r.get("/kpis")
    def kpi_report(request: Request, p=needs(web), start: str | None = None, end: str | None = None):
        """Summary, daily series and aging by specialty over [start, end] (default: the last 30 days)."""
        try:
            start_d, end_d = kpis.period(start, end)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        web.audit(p, request, "view", "kpis", None, f"{start_d}..{end_d}")
        return kpis.report(web.conn(), start_d, end_d)

    @r.get("/faxes")
    def faxes(request: Request, p=needs(web), status: str | None = "needs_review", before: int | None = None):
        conn = web.conn()
        if not queries.faxes_enabled(conn):
            raise HTTPException(404, "fax intake is not enabled in this store")
        rows, next_before = queries.faxes(conn, status, before)
        web.audit(p, request, "view", "fax_list", None, status)
        return {"faxes": rows, "next_before": next_before}

    @r.get("/faxes/{fax_id}")
    def fax(fax_id: int, request: Request, p=needs(web)):
        from engine.web import fax_review
        conn = web.conn()
        if not queries.faxes_enabled(conn):
            raise HTTPException(404, "fax intake is not enabled in this store")
        doc = fax_review.get(conn, fax_id)
        if doc is None:
            raise HTTPException(404, f"no fax with id {fax_id}")
        web.audit(p, request, "view", "fax", fax_id)
        return doc

    @r.post("/faxes/{fax_id}/accept")
    def fax_accept(fax_id: int, body: FaxAccept, request: Request, p=needs_api_write(web, "faxes.review")):
        """Apply corrected fields (optional) and accept: the referral becomes ready."""
        from engine.web import fax_review
        try:
            edits = fax_review.parse_edits({k: (", ".join(v) if isinstance(v, list) else v)
                                            for k, v in body.fields.items()})
            doc = fax_review.accept(web.conn(), fax_id, edits, p.name, web.config.referrals)
        except fax_review.ReviewError as exc:
            raise HTTPException(404 if "no fax" in str(exc) else 409, str(exc)) from None
        web.audit(p, request, "fax_accept", "fax", fax_id, json.dumps(edits))
        return doc

    @r.post("/faxes/{fax_id}/reject")
    def fax_reject(fax_id: int, body: FaxReject, request: Request, p=needs_api_write(web, "faxes.review")):
        from engine.web import fax_review
        try:
            doc = fax_review.reject(web.conn(), fax_id, body.reason, p.name)
        except fax_review.ReviewError as exc:
            raise HTTPException(404 if "no fax" in str(exc) else 409, str(exc)) from None
        web.audit(p, request, "fax_reject", "fax", fax_id, body.reason)
        return doc

    return r


def _channel(web: Web, request: Request, p, name: str, pause: bool) -> dict:
    if name not in {c.name for c in web.config.channels if c.source.type == "mllp"}:
        raise HTTPException(404, f"no MLLP channel {name!r} in the config (only listeners can be paused)")
    channel_state.set_paused(web.conn(), name, pause, p.name)
    web.audit(p, request, "channel_pause" if pause else "channel_resume", "channel", name)
    return {"channel": name, "paused": pause}
