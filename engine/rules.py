"""Outbound rules: what a referral change owes the outside world, queued in the same transaction.

`OutboundPlanner.after_apply(conn, message_id, applied)` runs inside the journal
writer's transaction right after a message changed a referral. For every rule of
`outbound.rules` whose `on` names the message's event (or `status:NEW` for the
status it moved to) and whose `origin` fits the referral, it renders the rule's
template against the referral's context and queues it (engine.outbound) with a
dedupe key of rule + message, so a replayed message queues nothing twice.

`fax_letter` rules queue a JSON letter for the fax outbox (channels/fax_outbox.py
builds the PDF at delivery); a referral with no referring fax number gets a
review exception instead, visible to coordinators. Rendering is string building
(tens of µs): no I/O beyond the writer's own connection.
"""
from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import time

from engine import outbound
from engine.config import EngineConfig, FaxDestination, OutboundRule
from engine.referral_store import ReferralStore
from engine.templates import MSH, Templates

log = logging.getLogger("engine.rules")


def new_control_id() -> str:
    """An MSH-10 unique across restarts and nodes, ≤ 20 characters (ST length in v2.3): time + randomness."""
    return f"RE{int(time.time() * 1000):x}{secrets.token_hex(3)}".upper()


def _json_field(value):
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def referral_context(conn: sqlite3.Connection, referral_id: int, *, event: str | None = None,
                     message_id: int | None = None, at: str | None = None) -> dict | None:
    """Everything a template may name, for one referral (None when it does not exist).

    `appointment`: the one the triggering message touched, else the latest; `document`: the
    triggering message's document, else the latest consult note."""
    row = conn.execute("SELECT * FROM referrals WHERE id=?", (referral_id,)).fetchone()
    if row is None:
        return None
    referral = {k: _json_field(row[k]) for k in row.keys()}
    patient_extra = referral.get("patient") if isinstance(referral.get("patient"), dict) else {}
    identifiers = [{"id": i, "authority": a, "type": t} for i, a, t in conn.execute(
        "SELECT identifier, authority, type FROM referral_identifiers WHERE referral_id=? ORDER BY rowid",
        (referral_id,))]
    patient = {**patient_extra, "mrn": referral.get("patient_mrn"), "identifiers": identifiers,
               "family_name": referral.get("patient_family_name"), "given_name": referral.get("patient_given_name"),
               "birth_date": referral.get("patient_birth_date"), "sex": referral.get("patient_sex"),
               "phone": referral.get("patient_phone") or patient_extra.get("phone")}
    referring = referral.get("referring_provider") if isinstance(referral.get("referring_provider"), dict) else {}
    referring = {**referring, "npi": referral.get("referring_npi") or referring.get("npi")}
    if not referring.get("family_name") and referral.get("referring_name"):
        given, _, family = referral["referring_name"].rpartition(" ")
        referring.update(given_name=given or None, family_name=family)
    receiving = referral.get("receiving_provider") if isinstance(referral.get("receiving_provider"), dict) else {}
    appointment = None
    if message_id is not None:
        appointment = conn.execute("SELECT * FROM appointments WHERE referral_id=? AND message_id=?",
                                   (referral_id, message_id)).fetchone()
    appointment = appointment or conn.execute("SELECT * FROM appointments WHERE referral_id=? ORDER BY "
                                              "updated_at DESC, id DESC LIMIT 1", (referral_id,)).fetchone()
    document = None
    if message_id is not None:
        document = conn.execute("SELECT * FROM documents WHERE referral_id=? AND message_id=? ORDER BY id DESC "
                                "LIMIT 1", (referral_id, message_id)).fetchone()
    document = document or conn.execute("SELECT * FROM documents WHERE referral_id=? AND kind='consult_note' "
                                        "ORDER BY id DESC LIMIT 1", (referral_id,)).fetchone()
    doc = None
    if document is not None:
        import base64
        doc = {k: document[k] for k in document.keys() if k != "content"}
        doc["lines"] = [line for line in (document["text"] or "").splitlines() if line.strip()]
        if document["content"]:
            doc["content_base64"] = base64.b64encode(document["content"]).decode("ascii")
    diagnoses = [{"code": c, "description": d, "system": s} for c, d, s in conn.execute(
        "SELECT code, description, system FROM diagnoses WHERE referral_id=? ORDER BY id", (referral_id,))]
    return {"referral": referral, "patient": patient, "referring": referring, "receiving": receiving,
            "appointment": dict(appointment) if appointment else None, "document": doc, "diagnoses": diagnoses,
            "event": {"kind": event, "at": at, "reason": event}}


def fax_letter(context: dict, destination: FaxDestination, rule: OutboundRule) -> dict | None:
    """The fax outbox's JSON for the referring practice, or None without a fax number to send to."""
    referring, referral, patient = context["referring"], context["referral"], context["patient"]
    to_fax = referring.get("fax")
    if not to_fax:
        return None
    document = context.get("document") or {}
    consult = bool(document) and "note.received" in rule.on
    name = " ".join(x for x in (patient.get("given_name"), patient.get("family_name")) if x)
    appointment = context.get("appointment") or {}
    if consult:
        body = document.get("text") or "The consult note is attached."
    else:
        body = f"Referral status: {referral.get('status')}."
        if appointment.get("start"):
            body += f"\nAppointment: {appointment['start']} {appointment.get('location') or ''}".rstrip()
    letter = {
        "to_fax": to_fax, "to_name": " ".join(x for x in (referring.get("given_name"), referring.get("family_name"))
                                             if x) or referring.get("practice") or "Referring provider",
        "subject": ("Consult note" if consult else "Referral status") + f": {name}".rstrip(": "),
        "kind": "consult_note" if consult else "status_letter",
        "referral": {"id": referral.get("id"), "patient_name": name, "patient_dob": patient.get("birth_date"),
                     "specialty": referral.get("specialty"), "status": referral.get("status"),
                     "department": referral.get("receiving_department")},
        "body": body, "attachments": [],
    }
    if consult and document.get("content_base64") and document.get("content_type") == "application/pdf":
        letter["attachments"].append({"content_type": "application/pdf", "base64": document["content_base64"]})
    return letter


def migrate_triggers(db) -> None:
    """Migration 8: referral changes made outside the journal writer (a coordinator's status change, a
    fax accepted in review) wait here for the engine to run the outbound rules on them; and the
    partial index of owed outbound rows."""
    db["rule_triggers"].create({"id": int, "referral_id": int, "event": str, "from_status": str, "to_status": str,
                                "cause_kind": str, "cause_id": str, "at": str, "planned_at": str, "error": str},
                               pk="id", not_null={"referral_id", "cause_kind", "at"})
    db["rule_triggers"].create_index(["planned_at", "id"])
    # The delivery workers' claims read the owed rows of a destination in id order: a partial index
    # holds just those (a few rows normally, a backlog when a destination is down), never the sent history.
    db.execute("CREATE INDEX outbound_owed ON outbound (destination, id) "
               "WHERE status IN ('queued','sending','error')")


def note_trigger(conn: sqlite3.Connection, referral_id: int, event: str | None, from_status: str | None,
                 to_status: str | None, cause_kind: str, cause_id: str | None, at: str) -> None:
    """Called in the transaction of a change made outside the writer; the engine plans it shortly after
    (`plan_triggers`, run with the retry pump), so user actions reach the same rules as messages."""
    conn.execute("INSERT INTO rule_triggers (referral_id, event, from_status, to_status, cause_kind, cause_id, at) "
                 "VALUES (?,?,?,?,?,?,?)", (referral_id, event, from_status, to_status, cause_kind, cause_id, at))


def plan_triggers(conn: sqlite3.Connection, after_apply, limit: int = 200) -> int:
    """Run the outbound rules (and whatever else the engine hooks after a change) on waiting triggers,
    oldest first; each is planned once (`planned_at`), with `trigger<ID>` as the cause."""
    from engine.referrals import Applied
    rows = conn.execute("SELECT * FROM rule_triggers WHERE planned_at IS NULL ORDER BY id LIMIT ?",
                        (limit,)).fetchall()
    for row in rows:
        applied = Applied("applied", row["referral_id"], None, row["event"], row["from_status"], row["to_status"],
                          cause=f"trigger{row['id']}")
        at, error = outbound.now_iso(), None
        conn.execute("SAVEPOINT trigger")
        try:
            if after_apply is not None:
                after_apply(conn, None, applied)
            conn.execute("RELEASE trigger")
        except Exception as exc:    # planned once, with the reason; the coordinators see it
            conn.execute("ROLLBACK TO trigger")
            conn.execute("RELEASE trigger")
            error = f"{type(exc).__name__}: {exc}"
            log.error("rules failed on a user action", extra={"fields": {"trigger": row["id"],
                                                                         "error": type(exc).__name__}})
            status = conn.execute("SELECT status FROM referrals WHERE id=?", (row["referral_id"],)).fetchone()
            if status is not None:
                ReferralStore(conn).add_exception(row["referral_id"], None, row["event"] or "user.action",
                                                  status[0], f"the outbound rules failed on this change: {error}", at)
        conn.execute("UPDATE rule_triggers SET planned_at=?, error=? WHERE id=?", (at, error, row["id"]))
    return len(rows)


class OutboundPlanner:
    """Turns applied referral changes into queued outbound messages, per `outbound.rules`."""

    def __init__(self, config: EngineConfig, templates: Templates):
        self.config = config
        self.templates = templates
        self.destinations = config.destinations()
        self.rules = [(rule.name or f"rule{i + 1}", rule) for i, rule in enumerate(config.outbound.rules)]
        for i, (_, rule) in enumerate(self.rules):
            if rule.send != "fax_letter" and rule.send not in templates:
                raise ValueError(f"outbound.rules[{i}].send: no template {rule.send!r} in {config.outbound.templates}"
                                 f"; valid: fax_letter, {', '.join(sorted(templates.templates))}")

    def matching(self, event: str | None, from_status: str | None, to_status: str | None,
                 origin: str | None) -> list[tuple[str, OutboundRule]]:
        triggers = {event} if event else set()
        if to_status and to_status != from_status:
            triggers.add(f"status:{to_status}")
        return [(name, rule) for name, rule in self.rules
                if triggers.intersection(rule.on) and (rule.origin is None or rule.origin == (origin or "hl7"))]

    def after_apply(self, conn: sqlite3.Connection, message_id: int, applied) -> list[int]:
        """engine.store.Journal's hook: queue what `applied` (engine.referrals.Applied) owes."""
        if applied.outcome not in ("created", "applied"):
            return []
        return self.plan(conn, applied.referral_id, applied.event, applied.from_status, applied.to_status,
                         cause=applied.cause or f"msg{message_id}", message_id=message_id)

    def plan(self, conn: sqlite3.Connection, referral_id: int, event: str | None, from_status: str | None,
             to_status: str | None, *, cause: str, message_id: int | None = None) -> list[int]:
        origin_row = conn.execute("SELECT origin FROM referrals WHERE id=?", (referral_id,)).fetchone()
        rules = self.matching(event, from_status, to_status, origin_row[0] if origin_row else None)
        if not rules:
            return []
        at = outbound.now_iso()
        context = referral_context(conn, referral_id, event=event, message_id=message_id, at=at)
        queued = []
        for name, rule in rules:
            item = self._render(conn, name, rule, context, referral_id, message_id, cause, at)
            if item is not None:
                row_id = outbound.enqueue(conn, item, order=self.config.outbound.order, at=at)
                if row_id is not None:
                    queued.append(row_id)
        return queued

    def _render(self, conn, name: str, rule: OutboundRule, context: dict, referral_id: int,
                message_id: int | None, cause: str, at: str) -> outbound.Outbound | None:
        destination = self.destinations[rule.to]
        patient_key = context["patient"].get("mrn") or str(referral_id)
        common = dict(destination=rule.to, referral_id=referral_id, source_message_id=message_id, rule=name,
                      dedupe_key=f"{name}:{cause}", patient_key=patient_key, closes_loop=rule.closes_loop)
        if rule.send == "fax_letter":
            letter = fax_letter(context, destination, rule)
            if letter is None:
                ReferralStore(conn).add_exception(referral_id, message_id, context["event"]["kind"] or "status",
                                                  context["referral"]["status"],
                                                  f"rule {name}: no referring fax number to send the {rule.send} to",
                                                  at)
                return None
            return outbound.Outbound(message_type="fax", payload=json.dumps(letter).encode("utf-8"), **common)
        msh = MSH(destination.sending_application, destination.sending_facility,
                  destination.receiving_application, destination.receiving_facility)
        control_id = new_control_id()
        payload = self.templates.render(rule.send, context, msh, control_id)
        return outbound.Outbound(message_type=self.templates.message_type(rule.send, context["event"]["kind"]),
                                 payload=payload, control_id=control_id, **common)
