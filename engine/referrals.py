"""Apply one mapped message to the referral it belongs to: match, merge, decide, record.

`apply_message(store, rules, message_id, mapped, at)` runs inside the journal
writer's transaction (the same one that moves the message to 'transformed'),
and is idempotent: a message already linked in `referral_messages` changes
nothing, so a replayed or re-decided message is harmless. Outcomes:

- `created` / `applied`: data merged; a status change (if any) wrote its history row;
- `exception`: the lifecycle refused the event (e.g. no-show on a closed referral):
  nothing applied, a `review_exceptions` row, the message still linked;
- `unmatched`: no single referral fits; an `unmatched` row with the candidates
  (the message itself stays 'transformed'); `link` resolves it and replays it;
- `ignored`: the mapping said the message means nothing for referrals.

Pure parts (what a message contributes, completeness, routing) are plain
functions; all SQL is behind `ReferralStore`.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from engine.config import ReferralsConfig
from engine.lifecycle import ORDER_EVENTS, Facts, ReferralStatus, decide
from engine.matching import match
from engine.normalized import Mapped

ICD10_SYSTEMS = {None, "", "I10", "I10C", "ICD10", "ICD10CM", "ICD-10", "ICD-10-CM"}
IDENTIFYING = frozenset({"placer_order_number", "filler_order_number", "referral_number"})
EVENT_APPOINTMENT_STATUS = {"appointment.canceled": "canceled", "appointment.no_show": "no_show",
                            "appointment.completed": "completed", "appointment.booked": "booked"}


@dataclass(frozen=True, slots=True)
class Applied:
    outcome: str                     # created | applied | exception | unmatched | ignored | already_applied
    referral_id: int | None = None
    detail: str | None = None
    event: str | None = None         # what the message meant (engine.normalized.EventKind)
    from_status: str | None = None   # the referral's status before and after (None: new referral / unchanged)
    to_status: str | None = None
    cause: str | None = None         # what the outbound rules name as the cause (default: the message)


# ---- what a message contributes (pure) ---------------------------------------

def event_of(mapped: Mapped) -> str:
    """An S14 whose appointment says completed is a completed visit, whatever the mapping named it."""
    if mapped.event == "appointment.modified" and mapped.appointment and mapped.appointment.status == "completed":
        return "appointment.completed"
    return mapped.event


def contributed_fields(mapped: Mapped) -> dict:
    """Referral columns this message has values for (None = says nothing about it)."""
    p = mapped.patient
    mrn = next((i.id for i in p.identifiers if i.type == "MR"), p.identifiers[0].id if p.identifiers else None)
    referring = next((v for v in mapped.providers if v.role in ("referring", "ordering")), None)
    receiving = next((v for v in mapped.providers if v.role == "referred_to"), None)
    insurance = mapped.insurance[0] if mapped.insurance else None
    fields = {
        "urgency": mapped.urgency, "specialty": mapped.specialty, "service_code": mapped.service_code,
        "service_text": mapped.service_text, "reason": mapped.reason,
        "placer_order_number": mapped.placer_order_number, "filler_order_number": mapped.filler_order_number,
        "referral_number": mapped.referral_number,
        "patient_mrn": mrn, "patient_family_name": p.family_name, "patient_given_name": p.given_name,
        "patient_birth_date": p.birth_date, "patient_sex": p.sex, "patient_phone": p.phone,
        "patient": p.model_dump(exclude_none=True, exclude={"identifiers"}) or None,
        "referring_npi": referring.npi if referring else None,
        "referring_name": " ".join(x for x in (referring.given_name, referring.family_name) if x) or None
        if referring else None,
        "referring_provider": referring.model_dump(exclude_none=True) if referring else None,
        "receiving_provider": receiving.model_dump(exclude_none=True) if receiving else None,
        "payer": insurance.payer if insurance else None, "member_id": insurance.member_id if insurance else None,
        "insurance": [i.model_dump(exclude_none=True) for i in mapped.insurance] or None,
        "authorization_number": _extra(mapped, "authorization_number"),
        "authorization_status": _extra(mapped, "authorization_status"),
    }
    return {k: v for k, v in fields.items() if v is not None}


def _extra(mapped: Mapped, key: str) -> str | None:
    value = mapped.extras.get(key)
    return value[0] if isinstance(value, list) and value else (value or None)


def merge(referral: dict, contributed: dict, event: str) -> dict:
    """The columns to change. Orders and patient updates overwrite what they carry; other messages
    (scheduling, notes) only fill what is still empty, so an SIU never rewrites an order's reason.
    Numbers that identify the referral (placer, filler, referral number) are never rewritten once set:
    matching relies on them."""
    authoritative = event in ("referral.order", "referral.update", "patient.registered", "patient.updated")
    changes = {}
    for key, value in contributed.items():
        current = referral.get(key)
        if key == "patient" and isinstance(current, dict):
            value = {**current, **value} if authoritative else {**value, **current}
        elif current not in (None, "", [], {}) and (not authoritative or key in IDENTIFYING):
            continue
        if value != current:
            changes[key] = value
    return changes


def diagnosis_rows(mapped: Mapped) -> list[tuple[str, str | None, str | None, bool | None]]:
    """ICD-10-CM codes validated with simple-icd-10-cm; unknown codes are kept with valid=False."""
    import simple_icd_10_cm as icd
    rows = []
    for d in mapped.diagnoses:
        valid = icd.is_valid_item(d.code) if (d.system or "").upper() in ICD10_SYSTEMS else None
        description = d.description or (icd.get_description(d.code) if valid else None)
        rows.append((d.code, d.system, description, valid))
    return rows


def _matches(values: list[str], value: str | None) -> bool:
    return not values or (value is not None and value.lower() in {v.lower() for v in values})


def missing_items(referral: dict, rules: ReferralsConfig, *, diagnoses: int, identifiers: int,
                  documents: bool) -> tuple[list[str], bool]:
    """(missing required items, authorization pending) under every completeness rule that applies."""
    required: list[str] = []
    for rule in rules.completeness:
        if _matches(rule.specialty, referral.get("specialty")) and _matches(rule.payer, referral.get("payer")):
            required += [item for item in rule.require if item not in required]
    present = {
        "member_id": referral.get("member_id"), "payer": referral.get("payer"), "diagnosis": diagnoses,
        "reason": referral.get("reason"), "referring_npi": referral.get("referring_npi"),
        "referring_provider": referral.get("referring_name") or referral.get("referring_npi"),
        "patient_birth_date": referral.get("patient_birth_date"), "patient_phone": referral.get("patient_phone"),
        "patient_identifier": identifiers, "specialty": referral.get("specialty"),
        "urgency": referral.get("urgency"), "document": documents,
    }
    missing = [item for item in required if item != "authorization" and not present[item]]
    if referral.get("coverage_status") == "inactive":    # the payer's 271 said so (engine/eligibility.py)
        missing.append("active_coverage")
    # Authorization: required by a completeness rule or by the payer's rules (engine/payers.py), pending
    # until granted: approved (278 or by hand), not required after all, or a number an order brought.
    auth_pending = ("authorization" in required or bool(referral.get("authorization_required"))) and \
        not authorization_granted(referral)
    return missing, auth_pending


def authorization_granted(referral: dict) -> bool:
    status = referral.get("authorization_status")
    if status in ("approved", "not_required"):
        return True
    return bool(referral.get("authorization_number")) and status not in NOT_GRANTED


NOT_GRANTED = frozenset({"requested", "pending", "more_info", "denied", "canceled", "expired"})


def route(referral: dict, rules: ReferralsConfig) -> dict:
    """Receiving department/destination by the first matching routing rule, and the leakage-risk flag."""
    for rule in rules.routing:
        if (_matches(rule.specialty, referral.get("specialty")) and _matches(rule.urgency, referral.get("urgency"))
                and _matches(rule.payer, referral.get("payer"))):
            return {"receiving_department": rule.department, "receiving_destination": rule.destination,
                    "leakage_risk": int(bool(rules.network) and rule.destination not in rules.network)}
    return {"receiving_department": referral.get("receiving_department"),
            "receiving_destination": referral.get("receiving_destination"), "leakage_risk": 0}


def _appointment(mapped: Mapped, event: str) -> dict | None:
    a = mapped.appointment
    if a is None:
        return None
    row = a.model_dump()
    row["status"] = EVENT_APPOINTMENT_STATUS.get(event) or a.status or "booked"
    return row


def _document(mapped: Mapped) -> tuple[dict, bytes | None] | None:
    d = mapped.document
    if d is None:
        return None
    content = None
    if d.content_base64:
        try:
            content = base64.b64decode(d.content_base64, validate=False)
        except (binascii.Error, ValueError):
            content = None
    return ({"kind": d.kind, "document_id": d.id, "title": d.title, "author": d.author, "date": d.date,
             "status": d.status, "text": d.text, "content_type": d.content_type}, content)


# ---- applying (through the store interface) ------------------------------------

def apply_message(store, rules: ReferralsConfig, message_id: int, mapped: Mapped, at: str) -> Applied:
    """Apply one mapped message; see the module docstring for the outcomes. Runs in the caller's transaction."""
    event = event_of(mapped)
    if event == "ignored":
        return Applied("ignored")
    if store.is_applied(message_id):
        return Applied("already_applied")
    found = match(mapped, store, message_id=message_id, window_days=rules.match_window_days, now=at)
    referral = store.get(found.referral_id) if found.referral_id is not None else None
    if referral is None and event not in ORDER_EVENTS:
        store.keep_unmatched(message_id, event, found.candidates, at)
        return Applied("unmatched", detail=f"{len(found.candidates)} candidates")
    store.savepoint()
    try:
        if referral is None:
            referral, current, rule = {"status": ReferralStatus.RECEIVED.value, "source_message_id": message_id,
                                       "referred_at": mapped.event_time or at}, None, None
        else:
            current, rule = ReferralStatus(referral["status"]), found.rule
        changes = merge(referral, contributed_fields(mapped), event)
        referral = {**referral, **changes}
        if current is None:         # a new referral is inserted with the message's data: nothing to re-read
            referral_id, changes = store.create(referral, at), {}
        else:
            referral_id = referral["id"]
        identifiers = [(i.id, i.authority, i.type) for i in mapped.patient.identifiers if i.id]
        diagnoses = diagnosis_rows(mapped)
        store.add_identifiers(referral_id, identifiers)
        store.add_diagnoses(referral_id, diagnoses)
        appointment = _appointment(mapped, event)
        if appointment:
            store.upsert_appointment(referral_id, appointment, message_id, mapped.event_time, at)
        document = _document(mapped)
        if document:
            store.add_document(referral_id, message_id, *document, at)
        if current is None:         # a new referral holds exactly what this message brought
            n_diagnoses, n_identifiers, n_documents = len(diagnoses), len(identifiers), int(document is not None)
        else:
            n_diagnoses, n_identifiers, n_documents = store.completeness_counts(referral_id)
        missing, auth_pending = missing_items(referral, rules, diagnoses=n_diagnoses, identifiers=n_identifiers,
                                              documents=bool(n_documents))
        changes.update(route(referral, rules), missing=missing)
        facts = Facts(tuple(missing), auth_pending,
                      store.active_appointments(referral_id) if current is not None or appointment else 0,
                      current is not None and store.order_canceled(referral_id))
        decision = decide(current, event, facts)
        if not decision.exception:
            if decision.note_received:
                changes["note_received"] = 1
            if decision.to is not None:     # the data and the status change in one row update
                store.set_status(referral_id, None if current is None else current.value, decision.to.value, at,
                                 "message", message_id, decision.detail, fields=changes)
            else:
                store.update(referral_id, changes, at)
            store.link_message(message_id, referral_id, event, "applied", rule, at)
    except BaseException:
        store.rollback_savepoint()
        raise
    if decision.exception:          # refused: undo the merged data, keep the message linked and visible
        store.rollback_savepoint()
        store.add_exception(referral_id, message_id, event, current.value, decision.exception, at)
        store.link_message(message_id, referral_id, event, "exception", rule, at)
        return Applied("exception", referral_id, decision.exception)
    store.release_savepoint()
    return Applied("created" if current is None else "applied", referral_id, decision.detail, event,
                   None if current is None else current.value, decision.to.value if decision.to else None)
