"""The dashboard's reads, each one page at a time with keyset paging, bounded by an index.

Bound (issue 6: list and search pages p95 <= 200 ms with 1,000,000 messages): every query here walks
an index in id (or worklist) order and stops after `limit + 1` rows; none counts the journal. A time
range is turned into an id range first (ids grow with arrival), so it narrows the same walk.
Writes are not here: actions reuse Journal.requeue, engine.coordinator, engine.outbound.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone

from engine.db import any_of, columns, dialect
from engine.kpis import CLOCK_DAYS, WAITING

PAGE = 50


@dataclass
class MessageFilter:
    control_id: str | None = None
    patient_id: str | None = None
    name: str | None = None            # patient family name (via the referrals that know it)
    message_type: str | None = None    # ORM or ORM^O01
    status: str | None = None
    channel: str | None = None
    since: str | None = None           # ISO, UTC
    until: str | None = None

    def terms(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v}


def _first_id_at_or_after(conn: sqlite3.Connection, moment: str) -> int | None:
    row = conn.execute("SELECT id FROM messages WHERE received_at>=? ORDER BY received_at LIMIT 1",
                       (moment,)).fetchone()
    return row[0] if row else None


def patient_ids_for_name(conn: sqlite3.Connection, name: str, limit: int = 200) -> list[str]:
    """Identifiers of patients whose family name starts with `name` (case-insensitive, ASCII), from
    referrals. Served by the family-name index of migration 6: NOCASE on SQLite; on PostgreSQL, whose
    ILIKE cannot walk a btree, a range of lower(name) over the lower() index (same matches)."""
    prefix = name.split(",")[0].strip().replace("%", "").replace("_", "")
    if dialect(conn) == "postgresql":
        low = "".join(c.lower() if c.isascii() else c for c in prefix)   # as lower() in "C"
        match, args = "lower(r.patient_family_name)>=? AND lower(r.patient_family_name)<?", (low, low + "\U0010ffff")
    else:
        match, args = "r.patient_family_name LIKE ?", (prefix + "%",)
    rows = conn.execute("SELECT DISTINCT i.identifier FROM referrals r JOIN referral_identifiers i ON "
                        f"i.referral_id=r.id WHERE {match} LIMIT ?", (*args, limit)).fetchall()
    return [r[0] for r in rows]


def messages(conn: sqlite3.Connection, f: MessageFilter, before: int | None = None,
             limit: int = PAGE) -> tuple[list[dict], int | None]:
    """Newest first; returns (rows, the `before` of the next page or None)."""
    where, args = [], []
    for column, value in (("control_id", f.control_id), ("patient_id", f.patient_id), ("status", f.status),
                          ("channel", f.channel)):
        if value:
            where.append(f"{column}=?")
            args.append(value)
    if f.name:
        ids = patient_ids_for_name(conn, f.name)
        if not ids:
            return [], None
        fragment, value = any_of(conn, ids)
        where.append(f"patient_id {fragment}")
        args.append(value)
    if f.message_type:
        if "^" in f.message_type:
            where.append("message_type=?")
            args.append(f.message_type)
        else:   # a range, so the (message_type, received_at) index can serve it
            where.append("(message_type=? OR (message_type>? AND message_type<?))")
            args += [f.message_type, f.message_type + "^", f.message_type + "_"]
    if f.since:
        first = _first_id_at_or_after(conn, f.since)
        if first is None:
            return [], None
        where.append("id>=? AND received_at>=?")
        args += [first, f.since]
    if f.until:
        first = _first_id_at_or_after(conn, f.until)
        if first is not None:
            where.append("id<?")
            args.append(first)
        where.append("received_at<?")
        args.append(f.until)
    if before:
        where.append("id<?")
        args.append(before)
    sql = ("SELECT id, channel, received_at, peer, control_id, sender, message_type, patient_id, status, ack_code, "
           "error, warnings, duplicate_of FROM messages")
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = [dict(r) for r in conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1]["id"] if more else None)


def breakdown(text: str, version: str | None) -> list[dict]:
    """Segments with their fields (position, name, value, components) through the project's parser."""
    from engine.describe import field_name
    from engine.hl7v2.parse import ParseError, parse
    try:
        message = parse(text)
    except ParseError:
        return []
    seps = message.separators
    out = []
    for seg in message:
        fields = []
        for position, value in enumerate(seg.fields[1:], start=1):
            if not value:
                continue
            header_sep = seg.name in ("MSH", "FHS", "BHS") and position <= 2
            reps = [value] if header_sep else value.split(seps.rep_sep)
            components = [] if header_sep else [
                [c for c in rep.split(seps.comp_sep)] for rep in reps
                if seps.comp_sep in rep or len(reps) > 1]
            fields.append({"position": f"{seg.name}-{position}", "value": value, "components": components,
                           "name": field_name(seg.name, position, version or "2.5")})
        out.append({"segment": seg.name, "fields": fields})
    return out


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    return bool(columns(conn, name))      # no columns: no such table (either backend)


def message_detail(conn: sqlite3.Connection, message_id: int) -> dict | None:
    from engine.describe import readable
    row = conn.execute("SELECT * FROM messages WHERE id=?", (message_id,)).fetchone()
    if row is None:
        return None
    doc = {k: row[k] for k in row.keys() if k != "raw"}
    text = readable(row["raw"], row["charset"])
    doc["raw"] = text
    doc["segments"] = breakdown(text, row["version"])
    doc["referrals"] = [dict(r) for r in conn.execute(
        "SELECT referral_id, event, outcome, rule, at FROM referral_messages WHERE message_id=?", (message_id,))]
    doc["unmatched"] = dict(conn.execute("SELECT * FROM unmatched WHERE message_id=?", (message_id,)).fetchone() or {}) \
        or None
    doc["outbound"] = [dict(r) for r in conn.execute(
        "SELECT id, destination, message_type, control_id, status, attempts, last_error, sent_at FROM outbound "
        "WHERE source_message_id=? ORDER BY id LIMIT 100", (message_id,))] if _table_exists(conn, "outbound") else None
    return doc


# ---- referral worklist ------------------------------------------------------------------------

@dataclass
class WorklistFilter:
    status: str | None = None
    specialty: str | None = None
    urgency: str | None = None
    owner: str | None = None
    payer: str | None = None
    min_age_days: float | None = None     # waited at least this long
    max_age_days: float | None = None
    patient_id: str | None = None

    def terms(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


def aging(row: dict, now: datetime) -> tuple[float, str]:
    """(age in days, colour): green under half the urgency's clock, amber under the clock, red past it;
    grey once the referral no longer waits for an appointment."""
    created = datetime.fromisoformat(row["created_at"])
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    age = (now - created).total_seconds() / 86400
    if row["status"] not in WAITING:
        return age, "grey"
    clock = CLOCK_DAYS.get(row.get("urgency") or "routine", CLOCK_DAYS["routine"])
    return age, "green" if age < clock / 2 else "amber" if age < clock else "red"


def worklist(conn: sqlite3.Connection, f: WorklistFilter, after: str | None = None, limit: int = PAGE,
             now: datetime | None = None) -> tuple[list[dict], str | None]:
    """Oldest first (what has waited longest comes first). `after` is the opaque 'created_at|id' of the
    previous page's last row; returns (rows, the next page's `after` or None)."""
    now = now or datetime.now(timezone.utc)
    where, args = [], []
    for column, value in (("status", f.status), ("specialty", f.specialty), ("urgency", f.urgency),
                          ("owner", f.owner), ("payer", f.payer)):
        if value:
            where.append(f"r.{column}=?")
            args.append(value)
    if f.patient_id:
        where.append("r.id IN (SELECT referral_id FROM referral_identifiers WHERE identifier=?)")
        args.append(f.patient_id)
    if f.min_age_days is not None:
        where.append("r.created_at<=?")
        args.append(_ago(now, f.min_age_days))
    if f.max_age_days is not None:
        where.append("r.created_at>=?")
        args.append(_ago(now, f.max_age_days))
    if after:
        created, _, last_id = after.rpartition("|")
        where.append("(r.created_at>? OR (r.created_at=? AND r.id>?))")
        args += [created, created, int(last_id)]
    sql = ("SELECT r.id, r.status, r.urgency, r.specialty, r.service_text, r.placer_order_number, r.patient_mrn, "
           "r.patient_family_name, r.patient_given_name, r.patient_birth_date, r.referring_name, r.payer, r.owner, "
           "r.next_action, r.next_action_due, r.leakage_risk, r.missing, r.created_at, r.updated_at FROM referrals r")
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = []
    for r in conn.execute(sql + " ORDER BY r.created_at, r.id LIMIT ?", (*args, limit + 1)):
        row = dict(r)
        row["missing"] = json.loads(row["missing"]) if row["missing"] else []
        row["age_days"], row["aging"] = aging(row, now)
        row["age_days"] = round(row["age_days"], 1)
        rows.append(row)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (f"{rows[-1]['created_at']}|{rows[-1]['id']}" if more else None)


def _ago(now: datetime, days: float) -> str:
    from datetime import timedelta
    return (now - timedelta(days=days)).isoformat()


# ---- faxes (helper B's table; shown when present) ---------------------------------------------

def faxes_enabled(conn: sqlite3.Connection) -> bool:
    return _table_exists(conn, "faxes")


def fax_columns(conn: sqlite3.Connection) -> list[str]:
    return columns(conn, "faxes")


def faxes(conn: sqlite3.Connection, status: str | None = "needs_review", before: int | None = None,
          limit: int = PAGE) -> tuple[list[dict], int | None]:
    where, args = [], []
    if status:
        where.append("status=?")
        args.append(status)
    if before:
        where.append("id<?")
        args.append(before)
    sql = "SELECT * FROM faxes" + (" WHERE " + " AND ".join(where) if where else "")
    rows = [dict(r) for r in conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1]["id"] if more else None)


@dataclass
class ChannelView:
    name: str
    enabled: bool
    source: str
    paused: bool
    state: dict | None
    frames_in: dict = field(default_factory=dict)     # ack code -> count since the engine started
    waiting: int = 0
    errors: int = 0
    destinations: list[dict] = field(default_factory=list)
    pausable: bool = True             # listeners (MLLP) can be paused; fax folders cannot (yet)
