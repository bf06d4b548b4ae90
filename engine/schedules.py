"""Scheduled work: aging/escalation, consult-note chase, patient reminders, no-show follow-up, retry pump.

The jobs are APScheduler jobs whose job store is a table (`apscheduler_jobs`) in
the engine's own database, so their next run times survive restarts; a run
missed while the engine was down runs once at start (coalesced). Each job is a
sweep: a pure-ish function over the store connection, run by the journal writer
(`WriterTask`), idempotent (a referral already escalated to a level, an
appointment already reminded, a chase already sent this period is skipped), so
running a sweep twice is harmless. The sweeps are plain functions so tests and
the CLI (`run_engine.py sweep NAME`) can run them at a chosen `now`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
from datetime import datetime, timedelta, timezone

from engine import outbound
from engine.config import AgingSchedule, EngineConfig, NoteChaseSchedule, ReminderSchedule
from engine.lifecycle import TRANSITIONS, ReferralStatus
from engine.referral_store import ReferralStore
from engine.db import sqlalchemy_url
from engine.store import WriterTask, now_iso

log = logging.getLogger("engine.schedules")

ACTOR = "schedule"
WAITING = ("received", "needs_review", "incomplete", "ready", "auth_pending")   # not yet scheduled


def migrate_schedule_runs(db) -> None:
    """Migration 10: when each scheduled job last started and on which node, so that nodes sharing a
    store (and so the job store) run each job once per period between them."""
    db["schedule_runs"].create({"job": str, "started_at": str, "node": str}, pk="job", not_null={"started_at"})


def claim_run(conn, job: str, now: datetime, every_seconds: float, node: str) -> bool:
    """True when this node may run `job` now: nobody started it in the last half period. Run inside the
    writer's transaction (on PostgreSQL under the cluster-wide write lock), so of several nodes whose
    schedulers fire together exactly one runs the sweep."""
    row = conn.execute("SELECT started_at FROM schedule_runs WHERE job=?", (job,)).fetchone()
    if row is not None and row[0] > now_iso(now - timedelta(seconds=every_seconds / 2)):
        return False
    conn.execute("INSERT INTO schedule_runs (job, started_at, node) VALUES (?,?,?) ON CONFLICT(job) DO UPDATE "
                 "SET started_at=excluded.started_at, node=excluded.node", (job, now_iso(now), node))
    return True


def _age_days(created: str, now: datetime) -> float:
    start = datetime.fromisoformat(created)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return (now - start).total_seconds() / 86400


def aging_sweep(conn: sqlite3.Connection, cfg: AgingSchedule, now: datetime, planner=None) -> dict:
    """Escalate unscheduled referrals past their SLA (one level per SLA period: owner, next action,
    an `escalated` event); past `expire_days`, move those the lifecycle allows to `leaked`."""
    store = ReferralStore(conn)
    at = now_iso(now)
    escalated = leaked = 0
    for row in conn.execute(
            f"SELECT id, status, urgency, created_at, owner, escalation_level FROM referrals WHERE status IN "
            f"({','.join('?' * len(WAITING))}, 'no_show')", WAITING).fetchall():
        referral_id, status, urgency, created, owner, level = row
        age = _age_days(created, now)
        if cfg.expire_days is not None and age >= cfg.expire_days and \
                ReferralStatus.LEAKED in TRANSITIONS[ReferralStatus(status)]:
            store.set_status(referral_id, status, "leaked", at, ACTOR, "aging",
                             f"unscheduled after {age:.0f} days (expires after {cfg.expire_days:g})")
            leaked += 1
            if planner is not None:
                planner.plan(conn, referral_id, None, status, "leaked", cause=f"aging:leaked:{referral_id}")
            else:       # run outside the engine (the CLI): the engine plans it with the retry pump
                from engine.rules import note_trigger
                note_trigger(conn, referral_id, None, status, "leaked", ACTOR, "aging", at)
            continue
        if status == "no_show":
            continue
        sla = cfg.sla_days.get(urgency or "routine", cfg.sla_days.get("routine", 14))
        due_level = math.floor(age / sla) if sla > 0 else 0
        if due_level <= (level or 0):
            continue
        conn.execute("UPDATE referrals SET escalation_level=?, escalated_at=?, updated_at=? WHERE id=?",
                     (due_level, at, at, referral_id))
        store.add_event(referral_id, "escalated", str(level or 0), str(due_level), at, ACTOR, "aging",
                        f"{urgency or 'routine'} referral unscheduled after {age:.1f} days (SLA {sla:g})")
        if not owner and cfg.escalate_to:
            store.assign(referral_id, cfg.escalate_to, ACTOR, at)
        store.set_next_action(referral_id, f"Escalated (level {due_level}): past the {sla:g}-day SLA for "
                              f"{urgency or 'routine'} referrals; schedule or contact the patient", at, ACTOR, at)
        escalated += 1
    return {"escalated": escalated, "leaked": leaked}


def note_chase_sweep(conn: sqlite3.Connection, cfg: NoteChaseSchedule, now: datetime, order: str) -> dict:
    """Visits completed more than `after_days` ago without a consult note: ask the specialist (an e-mail
    or webhook to `cfg.to`), at most once per `repeat_days`; a next action for the coordinator either way."""
    store = ReferralStore(conn)
    at = now_iso(now)
    cutoff = now_iso(now - timedelta(days=cfg.after_days))
    chased = 0
    for referral_id, department, completed_at in conn.execute(
            "SELECT r.id, r.receiving_department, max(h.at) FROM referrals r JOIN status_history h "
            "ON h.referral_id=r.id AND h.to_status='completed' WHERE r.status='completed' AND r.note_received=0 "
            "GROUP BY r.id HAVING max(h.at)<=?", (cutoff,)).fetchall():
        period = math.floor(_age_days(completed_at, now) / cfg.repeat_days)
        key = f"note_chase:{referral_id}:{period}"
        if conn.execute("SELECT 1 FROM referral_events WHERE referral_id=? AND kind='note_chase' AND cause_id=?",
                        (referral_id, key)).fetchone():
            continue
        if cfg.to:
            payload = {"to": cfg.recipient, "subject": f"Consult note requested for referral {referral_id}",
                       "body": f"The visit for referral {referral_id} ({department or 'specialist'}) was completed "
                               f"on {completed_at[:10]}; the referring provider has not received the consult "
                               f"note. Please send it.", "referral_id": referral_id}
            outbound.enqueue(conn, outbound.Outbound(cfg.to, "note_request", json.dumps(payload).encode(),
                                                     referral_id=referral_id, rule="note_chase", dedupe_key=key),
                             order=order, at=at)
        store.add_event(referral_id, "note_chase", None, str(period + 1), at, ACTOR, key,
                        f"no consult note {cfg.after_days:g}+ days after the visit")
        store.set_next_action(referral_id, "Consult note missing: request it from the specialist", at, ACTOR, at)
        chased += 1
    return {"chased": chased}


def reminder_sweep(conn: sqlite3.Connection, cfg: ReminderSchedule, now: datetime, outreach) -> dict:
    """Booked appointments starting within `hours_before`: one reminder each (`appointments.reminded_at`)."""
    horizon = now + timedelta(hours=cfg.hours_before)
    sent = 0
    for appointment_id, referral_id, start in conn.execute(
            "SELECT a.id, a.referral_id, a.start FROM appointments a JOIN referrals r ON r.id=a.referral_id "
            "WHERE a.status='booked' AND a.reminded_at IS NULL AND r.status='scheduled' AND a.start IS NOT NULL"
    ).fetchall():
        try:
            begins = datetime.fromisoformat(start)
        except ValueError:
            continue
        if begins.tzinfo is None:
            begins = begins.replace(tzinfo=outreach.zone)
        if not now < begins <= horizon:
            continue
        outreach.send(conn, referral_id, "appointment_reminder", now, key=f"reminder:{appointment_id}",
                      appointment_id=appointment_id)
        conn.execute("UPDATE appointments SET reminded_at=? WHERE id=?", (now_iso(now), appointment_id))
        sent += 1
    return {"reminded": sent}


def no_show_sweep(conn: sqlite3.Connection, now: datetime, outreach) -> dict:
    """Referrals in no_show: one follow-up to the patient per no-show (when outreach is configured:
    `outreach` not None), and a next action to re-book."""
    store = ReferralStore(conn)
    at = now_iso(now)
    followed = 0
    for referral_id, history_id in conn.execute(
            "SELECT r.id, max(h.id) FROM referrals r JOIN status_history h ON h.referral_id=r.id AND "
            "h.to_status='no_show' WHERE r.status='no_show' GROUP BY r.id").fetchall():
        key = f"no_show:{history_id}"
        if conn.execute("SELECT 1 FROM referral_events WHERE referral_id=? AND kind='no_show_follow_up' AND "
                        "cause_id=?", (referral_id, key)).fetchone():
            continue
        if outreach is not None:
            outreach.send(conn, referral_id, "no_show_follow_up", now, key=key)
        store.add_event(referral_id, "no_show_follow_up", None, None, at, ACTOR, key,
                        "patient contacted to re-book" if outreach is not None else "no patient outreach configured")
        store.set_next_action(referral_id, "No-show: re-book the appointment with the patient", at, ACTOR, at)
        followed += 1
    return {"followed_up": followed}


class EngineScheduler:
    """The sweeps: APScheduler in the engine's event loop, jobs stored in the engine's database (they run
    every few minutes; the job store's write after each run is rare). The pumps that run every few
    seconds (retry pump, payer inbox) are plain asyncio tasks: nothing about them needs to survive a
    restart, and a job-store write on the event loop every few seconds would delay ACKs."""

    def __init__(self, engine):
        self.engine = engine
        self.scheduler = None
        self._pumps: list[asyncio.Task] = []

    def start(self) -> None:
        config: EngineConfig = self.engine.config
        if not config.schedules.enabled:
            return
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        global _ENGINE
        _ENGINE = self.engine
        url, options = sqlalchemy_url(config.store_location)
        store = SQLAlchemyJobStore(url=url, tablename="apscheduler_jobs", engine_options=options)
        self.scheduler = AsyncIOScheduler(jobstores={"default": store}, timezone=timezone.utc,
                                          job_defaults={"coalesce": True, "max_instances": 1,
                                                        "misfire_grace_time": 24 * 3600})
        s = config.schedules
        pumps = {"retry_pump": (retry_pump, s.retry_pump_seconds)}
        if config.payers.inbox is not None:   # engine/payer_exchange.py: 271/278 answer files
            pumps["payer_inbox"] = (run_payer_inbox, config.payers.inbox_every_seconds)
        for name, (func, seconds) in pumps.items():
            self._pumps.append(asyncio.create_task(_every(func, seconds), name=name))
        jobs = {}
        if s.aging is not None:
            jobs["aging"] = (run_aging, s.aging.every_minutes * 60)
        if s.note_chase is not None:
            jobs["note_chase"] = (run_note_chase, s.note_chase.every_minutes * 60)
        if s.reminders is not None and (config.outreach.sms or config.outreach.email):
            jobs["reminders"] = (run_reminders, s.reminders.every_minutes * 60)
        if s.no_show_follow_up is not None:
            jobs["no_show_follow_up"] = (run_no_show, s.no_show_follow_up.every_minutes * 60)
        if config.payers.rules:        # engine/authorization.py: overdue authorizations, pended follow-ups
            jobs["auth_overdue"] = (run_auth_overdue, config.payers.sweep_every_minutes * 60)
        self.scheduler.start()
        existing = {job.id for job in self.scheduler.get_jobs()}
        for job_id in existing - set(jobs):
            self.scheduler.remove_job(job_id)        # a schedule taken out of the config
        _INTERVALS.clear()
        _INTERVALS.update({job_id: seconds for job_id, (_, seconds) in jobs.items()})
        for job_id, (func, seconds) in jobs.items():
            # replace_existing keeps the stored next run time unless the interval changed
            self.scheduler.add_job(func, "interval", seconds=seconds, id=job_id, replace_existing=True,
                                   next_run_time=None if job_id in existing else datetime.now(timezone.utc))
            if job_id in existing:
                self.scheduler.resume_job(job_id)
        log.info("schedules started", extra={"fields": {"jobs": sorted(jobs), "pumps": sorted(pumps)}})

    def stop(self) -> None:
        for task in self._pumps:
            task.cancel()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)


async def _every(func, seconds: float) -> None:
    """Run `func` now and then every `seconds` (after each run ends) until cancelled."""
    while True:
        try:
            await func()
        except asyncio.CancelledError:
            raise
        except Exception as exc:     # one failed run is logged; the next one comes as usual
            log.error("pump failed", extra={"fields": {"pump": getattr(func, "__name__", "?"),
                                                       "error": type(exc).__name__}})
        await asyncio.sleep(seconds)


# ---- job entry points (module-level: the job store keeps references to them) -------------

_ENGINE = None
_INTERVALS: dict[str, float] = {}     # job -> seconds between runs (claim_run: once per period cluster-wide)


async def _sweep(name: str, fn) -> None:
    engine = _ENGINE
    if engine is None or engine.committer is None:
        return

    def once(conn):
        if not claim_run(conn, name, datetime.now(timezone.utc), _INTERVALS.get(name, 0.0), engine.config.node_name):
            return {}             # another node ran it this period
        return fn(conn)
    result = await engine.committer.submit(WriterTask(name, once), background=True)
    if isinstance(result, Exception):
        log.error("scheduled job failed", extra={"fields": {"job": name, "error": type(result).__name__}})
        return
    if any(result.values()):
        log.info("scheduled job", extra={"fields": {"job": name, **result}})
        engine.delivery.wake()


async def retry_pump() -> None:
    """Wake the delivery workers, after planning what user actions owe (engine.rules.plan_triggers)."""
    engine = _ENGINE
    if engine is None or engine.delivery is None or engine.committer is None:
        return
    try:
        await _pump(engine)
    except asyncio.CancelledError:     # the engine is stopping: the next start pumps again
        return


async def _pump(engine) -> None:
    from engine.rules import plan_triggers
    tasks = [WriterTask("release claims", outbound.release_expired)]   # a delivery worker failed mid-batch
    if engine.after_apply is not None:
        tasks.append(WriterTask("plan triggers", lambda conn: plan_triggers(conn, engine.after_apply)))
    for task in tasks:          # separate: one failing never stops the other
        result = await engine.committer.submit(task, background=True)
        if isinstance(result, Exception):
            log.error("retry pump failed", extra={"fields": {"task": task.name, "error": type(result).__name__}})
    engine.delivery.wake()


async def run_aging() -> None:
    cfg = _ENGINE.config.schedules.aging
    await _sweep("aging", lambda conn: aging_sweep(conn, cfg, datetime.now(timezone.utc), _ENGINE.planner))


async def run_note_chase() -> None:
    cfg, order = _ENGINE.config.schedules.note_chase, _ENGINE.config.outbound.order
    await _sweep("note_chase", lambda conn: note_chase_sweep(conn, cfg, datetime.now(timezone.utc), order))


async def run_reminders() -> None:
    from engine.outreach import Outreach
    cfg, outreach = _ENGINE.config.schedules.reminders, Outreach.for_engine(_ENGINE.config)
    await _sweep("reminders", lambda conn: reminder_sweep(conn, cfg, datetime.now(timezone.utc), outreach))


async def run_no_show() -> None:
    from engine.outreach import Outreach
    config = _ENGINE.config
    outreach = Outreach.for_engine(config) if (config.outreach.sms or config.outreach.email) else None
    await _sweep("no_show_follow_up", lambda conn: no_show_sweep(conn, datetime.now(timezone.utc), outreach))


async def run_auth_overdue() -> None:
    from engine.authorization import Authorizations
    authorizations = Authorizations(_ENGINE.config)
    await _sweep("auth_overdue", lambda conn: authorizations.sweep(conn, datetime.now(timezone.utc)))


async def run_payer_inbox() -> None:
    from engine import payer_exchange
    engine = _ENGINE
    if engine is None:
        return
    try:
        result = await payer_exchange.run(engine)
    except asyncio.CancelledError:     # the engine is stopping: the files wait in the inbox
        return
    except Exception as exc:
        log.error("scheduled job failed", extra={"fields": {"job": "payer_inbox", "error": type(exc).__name__}})
        return
    if any(result.values()):
        log.info("scheduled job", extra={"fields": {"job": "payer_inbox", **result}})
        engine.delivery.wake()          # an answer may have queued a 278 or outbound rules' messages
