"""Referral KPIs over a date range, from the store alone (no web, no I/O besides the connection given).

Definitions (the dashboard shows them beside the numbers):
- period: referrals *created* in [start, end] (whole UTC days); event-based figures (no-shows, auth
  turnaround) count events that happened in the period.
- completion rate: created in the period and now completed or closed / created in the period.
- loop-closure rate: closed / (completed + closed): of the visits that happened, how many had the
  consult note delivered back to the referrer.
- leakage rate: leaked, or flagged as routed out of network / created.
- time to appointment / to completed visit: median days from creation to the first status change to
  scheduled / completed (referrals created in the period that got there).
- no-show rate: changes to no_show / changes to completed or no_show, in the period.
- auth turnaround: median hours from entering auth_pending to leaving it (entered in the period).
- fax auto-accept rate: referrals that came by fax and never went through needs_review / all that came
  by fax (None when the store does not record how a referral came).
- aging by specialty: referrals still waiting for an appointment now, by age bucket.

Cost: every query is bounded by the period through covering indexes (migration 6 adds
`referrals(created_at, status, leakage_risk)` and `status_history(referral_id, to_status, at)`) or
`(to_status, at)`, except aging (the open referrals, through the status index). Measured on 100,000
referrals: 30 days ~0.1 s, 365 days ~1.2 s (bench/bench_web.py). Bad input: `period` raises ValueError
naming the date it could not read, or an end before the start.
"""
from __future__ import annotations

import csv
import io
import sqlite3
import statistics
from datetime import date, datetime, timedelta, timezone

from engine.db import columns, days_between, dialect

WAITING = ("received", "needs_review", "incomplete", "ready", "auth_pending")   # no appointment yet
AGE_BUCKETS = ((0, 3, "0-3 d"), (4, 7, "4-7 d"), (8, 14, "8-14 d"), (15, 30, "15-30 d"), (31, None, "> 30 d"))
# Aging clocks per urgency (DESIGN.md): past the clock a waiting referral is late.
CLOCK_DAYS = {"stat": 1, "urgent": 3, "routine": 14}   # the web app sets it from schedules.aging.sla_days


def period(start: str | date | None, end: str | date | None, default_days: int = 30,
           today: date | None = None) -> tuple[date, date]:
    """(start, end) dates, both included; defaults: the last `default_days` days up to today (UTC)."""
    today = today or datetime.now(timezone.utc).date()

    def read(value, fallback: date, name: str) -> date:
        if value in (None, ""):
            return fallback
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value)[:10])
        except ValueError:
            raise ValueError(f"{name} {value!r}: use YYYY-MM-DD") from None
    end_d = read(end, today, "end")
    start_d = read(start, end_d - timedelta(days=default_days - 1), "start")
    if end_d < start_d:
        raise ValueError(f"end {end_d} is before start {start_d}")
    return start_d, end_d


def _bounds(start: date, end: date) -> tuple[str, str]:
    return start.isoformat(), (end + timedelta(days=1)).isoformat()


def _days(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds() / 86400


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return column in columns(conn, table)


def _kpi_index(conn) -> str:
    """SQLite's planner is told to walk the covering period index; PostgreSQL picks it itself (no hint syntax)."""
    return "INDEXED BY idx_referrals_kpi " if dialect(conn) == "sqlite" else ""


def summary(conn: sqlite3.Connection, start: date, end: date) -> dict:
    lo, hi = _bounds(start, end)
    by_status: dict[str, int] = {}
    flagged = 0
    for status, n, risk in conn.execute(
            "SELECT status, count(*), count(*) FILTER (WHERE leakage_risk<>0 AND status<>'leaked') FROM referrals "
            f"{_kpi_index(conn)}WHERE created_at>=? AND created_at<? GROUP BY status", (lo, hi)):
        by_status[status] = n
        flagged += risk or 0
    total = sum(by_status.values())
    completed, closed = by_status.get("completed", 0), by_status.get("closed", 0)
    to_appointment, to_visit = [], []
    # Day differences in SQL (both backends read ISO with offsets): no per-row parsing in Python.
    first = "(SELECT min(at) FROM status_history h WHERE h.referral_id=r.id AND h.to_status='{}')"
    for scheduled, done in conn.execute(
            f"SELECT {days_between(conn, 'r.created_at', first.format('scheduled'))}, "
            f"{days_between(conn, 'r.created_at', first.format('completed'))} "
            f"FROM referrals r {_kpi_index(conn)}WHERE r.created_at>=? AND r.created_at<? AND r.status IN "
            "('scheduled','completed','closed','no_show','canceled','leaked')", (lo, hi)):
        if scheduled is not None:
            to_appointment.append(scheduled)
        if done is not None:
            to_visit.append(done)
    events = dict(conn.execute(
        "SELECT to_status, count(*) FROM status_history WHERE to_status IN ('no_show','completed') "
        "AND at>=? AND at<? GROUP BY to_status", (lo, hi)).fetchall())
    auth_hours = [_days(entered, left) * 24 for entered, left in conn.execute(
        "SELECT h.at, (SELECT min(h2.at) FROM status_history h2 WHERE h2.referral_id=h.referral_id AND h2.id>h.id "
        "AND h2.to_status!='auth_pending') FROM status_history h WHERE h.to_status='auth_pending' "
        "AND h.at>=? AND h.at<?", (lo, hi)) if left]
    fax_total = fax_auto = None
    if _has_column(conn, "referrals", "origin"):
        fax_total, fax_auto = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM status_history h WHERE "
            "h.referral_id=r.id AND h.to_status='needs_review')) FROM referrals r WHERE r.origin='fax' "
            "AND r.created_at>=? AND r.created_at<?", (lo, hi)).fetchone()
    return {
        "start": start.isoformat(), "end": end.isoformat(), "referrals": total, "by_status": by_status,
        "completion_rate": _rate(completed + closed, total),
        "loop_closure_rate": _rate(closed, completed + closed),
        "leakage_rate": _rate(by_status.get("leaked", 0) + flagged, total),
        "median_days_to_appointment": _median(to_appointment),
        "median_days_to_completed_visit": _median(to_visit),
        "no_show_rate": _rate(events.get("no_show", 0), events.get("no_show", 0) + events.get("completed", 0)),
        "median_auth_turnaround_hours": _median(auth_hours),
        "fax_referrals": fax_total,
        "fax_auto_accept_rate": _rate(fax_auto or 0, fax_total) if fax_total is not None else None,
    }


def daily(conn: sqlite3.Connection, start: date, end: date) -> list[dict]:
    """One row per day of the period: referrals created, scheduled, completed, closed that day."""
    lo, hi = _bounds(start, end)
    days = {(start + timedelta(days=i)).isoformat(): {"created": 0, "scheduled": 0, "completed": 0, "closed": 0}
            for i in range((end - start).days + 1)}
    for day, n in conn.execute("SELECT substr(created_at,1,10), count(*) FROM referrals WHERE created_at>=? "
                               "AND created_at<? GROUP BY 1", (lo, hi)):
        if day in days:
            days[day]["created"] = n
    for status, day, n in conn.execute(
            "SELECT to_status, substr(at,1,10), count(*) FROM status_history WHERE to_status IN "
            "('scheduled','completed','closed') AND at>=? AND at<? GROUP BY 1, 2", (lo, hi)):
        if day in days:
            days[day][status] = n
    return [{"day": day, **counts} for day, counts in days.items()]


def aging_by_specialty(conn: sqlite3.Connection, now: datetime | None = None) -> list[dict]:
    """Referrals waiting for an appointment now, per specialty and age bucket, plus how many are past
    their urgency's clock."""
    now = now or datetime.now(timezone.utc)
    cut = lambda days: (now - timedelta(days=days)).isoformat()   # noqa: E731
    buckets = []
    for low, high, label in AGE_BUCKETS:
        # created in (now - high - 1 day, now - low days]
        cond = f"created_at<='{cut(low)}'" + (f" AND created_at>'{cut(high + 1)}'" if high is not None else "")
        buckets.append((label, cond))
    late = " OR ".join(f"(coalesce(urgency,'routine')='{u}' AND created_at<'{cut(d)}')" for u, d in CLOCK_DAYS.items())
    sums = ", ".join(f"count(*) FILTER (WHERE {cond})" for _, cond in buckets)
    placeholders = ",".join("?" * len(WAITING))
    out = []
    for row in conn.execute(f"SELECT coalesce(specialty,'(none)'), count(*), {sums}, count(*) FILTER (WHERE {late}) "
                            f"FROM referrals WHERE status IN ({placeholders}) GROUP BY 1 ORDER BY 2 DESC, 1", WAITING):
        out.append({"specialty": row[0], "waiting": row[1],
                    "buckets": {label: row[2 + i] or 0 for i, (label, _) in enumerate(buckets)},
                    "late": row[-1] or 0})
    return out


def report(conn: sqlite3.Connection, start: date, end: date, now: datetime | None = None) -> dict:
    from engine.authorization import auth_kpis
    return {"summary": summary(conn, start, end), "daily": daily(conn, start, end),
            "aging": aging_by_specialty(conn, now),
            "authorization": auth_kpis(conn, start.isoformat(), (end + timedelta(days=1)).isoformat())}


def to_csv(report_doc: dict) -> str:
    """Three blocks in one file: metric,value; the daily series; aging by specialty."""
    out = io.StringIO()
    w = csv.writer(out)
    s = report_doc["summary"]
    w.writerow(["metric", "value"])
    for key, value in s.items():
        if key == "by_status":
            for status, n in sorted(value.items()):
                w.writerow([f"referrals_{status}", n])
        else:
            w.writerow([key, "" if value is None else value])
    w.writerow([])
    w.writerow(["day", "created", "scheduled", "completed", "closed"])
    for d in report_doc["daily"]:
        w.writerow([d["day"], d["created"], d["scheduled"], d["completed"], d["closed"]])
    w.writerow([])
    w.writerow(["payer", "authorizations_decided", "approved", "denied", "denial_rate", "median_days", "p90_days"])
    for p in report_doc["authorization"]["by_payer"]:
        w.writerow([p["payer"], p["decided"], p["approved"], p["denied"], p["denial_rate"], p["median_days"],
                    p["p90_days"]])
    w.writerow([])
    labels = [label for _, _, label in AGE_BUCKETS]
    w.writerow(["specialty", "waiting", *labels, "late"])
    for a in report_doc["aging"]:
        w.writerow([a["specialty"], a["waiting"], *(a["buckets"][label] for label in labels), a["late"]])
    return out.getvalue()
