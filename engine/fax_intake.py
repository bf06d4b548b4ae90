"""Fax intake in the store: the `faxes` table, the review gate, and filing one read fax.

A fax channel (channels/fax) reads a file in a worker process and hands the result to
`commit_fax`, which the journal's single writer runs inside its transaction (a
`WriterTask`), so the fax row, its journal message, its referral (or addendum or review
item) and any outbound messages commit together or not at all. The channel moves the
file out of processing/ only after that commit.

Outcomes (`faxes.status`):
- `accepted`     confident and complete: referral created `received`, event `fax.accepted`;
- `needs_review` a required field missing or a field below its confidence threshold:
                 referral created `needs_review` with a review exception naming the fields;
- `addendum`     same patient + specialty + referrer as an open referral inside the window:
                 the fax is added to it as a document, no second referral;
- `duplicate`    the same file (sha256) was already filed: recorded, nothing else;
- `error`        the file could not be read (reason from the reader): kept in error/.

Idempotent by document hash: a file recovered from processing/ after a crash whose hash is
already filed is not filed again (`already_filed`), whatever step the crash interrupted.
Pure parts (`review_reasons`, `to_mapped`) do no I/O; all SQL besides the `faxes` table and
the addendum look-up goes through engine.referral_store.
"""
from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlite_utils

from engine.config import FAX_FIELDS, FaxReview, ReferralsConfig
from engine.normalized import Diagnosis, Identifier, Insurance, Mapped, Patient, Provider
from engine.store import now_iso

log = logging.getLogger("engine.fax")

FAX_STATUSES = ("received", "accepted", "needs_review", "rejected", "addendum", "duplicate", "error")
FINISHED = ("closed", "canceled", "declined", "rejected", "leaked", "completed")


def migrate_faxes(db: sqlite_utils.Database) -> None:
    """Migration 5: one row per fax file the engine took from a drop folder."""
    db["faxes"].create({
        "id": int, "channel": str, "file_name": str, "sha256": str, "received_at": str, "pages": int,
        "status": str, "extraction": str, "review_reasons": str, "ocr_text": str, "pages_dir": str,
        "referral_id": int, "message_id": int, "duplicate_of": int, "error_reason": str, "error": str,
        "updated_at": str,
    }, pk="id", not_null={"channel", "file_name", "sha256", "received_at", "status"})
    t = db["faxes"]
    t.create_index(["sha256"])
    t.create_index(["status", "received_at"])
    t.create_index(["referral_id"])


# ---- the review gate (pure) ---------------------------------------------------------

def _empty(value) -> bool:
    return value is None or value == "" or value == []


def npi_valid(npi: str) -> bool:
    """10 digits whose last is the Luhn check digit over 80840 + the first nine."""
    if len(npi) != 10 or not npi.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed("80840" + npi)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def review_reasons(extraction: dict, review: FaxReview) -> list[str]:
    """Why a coordinator must look at this fax (empty: accept it). Names fields, never their values."""
    confidence = extraction.get("confidence") or {}
    reasons = [f"{f}: not found" for f in review.required if _empty(extraction.get(f))]
    for f in FAX_FIELDS:
        if _empty(extraction.get(f)):
            continue
        threshold = review.min_confidence.get(f, review.default_min_confidence)
        c = confidence.get(f)
        if c is None or c < threshold:
            shown = "none" if c is None else f"{c:.2f}"
            reasons.append(f"{f}: confidence {shown} below {threshold:.2f}")
    npi = extraction.get("referring_provider_npi")
    if npi and not npi_valid(str(npi)):
        reasons.append("referring_provider_npi: check digit does not match")
    if "no text found on any page" in (extraction.get("warnings") or []):
        reasons.append("document: no text found on any page")
    return reasons


def to_mapped(extraction: dict, received_at: str) -> Mapped:
    """The fax's fields in the engine's normalized form (event referral.order), for engine.referrals."""
    e = {k: (None if _empty(extraction.get(k)) else extraction.get(k)) for k in FAX_FIELDS}
    sex = e["patient_sex"] if e["patient_sex"] in ("M", "F", "U") else None
    patient = Patient(family_name=e["patient_family_name"], given_name=e["patient_given_name"],
                      birth_date=e["patient_dob"], sex=sex, phone=e["patient_phone"],
                      identifiers=[Identifier(id=str(e["patient_mrn"]), type="MR")] if e["patient_mrn"] else [])
    providers = []
    if e["referring_provider_name"] or e["referring_provider_npi"] or e["referring_practice_fax"]:
        given, _, family = (e["referring_provider_name"] or "").rpartition(" ")
        providers.append(Provider(role="referring", given_name=given or None, family_name=family or None,
                                  npi=e["referring_provider_npi"], phone=e["referring_practice_phone"],
                                  fax=e["referring_practice_fax"]))
    insurance = [Insurance(payer=e["insurance_payer"], member_id=e["insurance_member_id"])] \
        if (e["insurance_payer"] or e["insurance_member_id"]) else []
    codes = e["diagnosis_codes"] or []
    urgency = e["urgency"] if e["urgency"] in ("routine", "urgent", "stat") else None
    return Mapped(event="referral.order", message_type="FAX", event_time=received_at, urgency=urgency,
                  specialty=(e["referred_to_specialty"] or None) and str(e["referred_to_specialty"]).lower(),
                  reason=e["reason"], patient=patient, providers=providers, insurance=insurance,
                  diagnoses=[Diagnosis(code=str(c), system="I10") for c in codes])


# ---- filing one fax (inside the writer's transaction) --------------------------------

@dataclass
class FaxResult:
    """What a fax channel hands the writer for one file."""
    channel: str
    file_name: str
    sha256: str
    received_at: str
    recovered: bool = False            # found in processing/ at start-up (a crash interrupted it)
    extraction: dict | None = None     # the reader's result; None when it failed
    error_reason: str | None = None    # ocr.DocumentError.reason, or 'internal'
    error: str | None = None
    pages_dir: str | None = None
    review: FaxReview = field(default_factory=FaxReview)
    addendum_window_days: float = 14.0


@dataclass(frozen=True)
class Filed:
    fax_id: int
    status: str                        # one of FAX_STATUSES, or 'already_filed'
    referral_id: int | None = None
    filed_status: str | None = None    # for already_filed: the status it was filed with
    error: str | None = None


def already_filed(conn: sqlite3.Connection, sha256: str) -> sqlite3.Row | None:
    """The fax row that filed this content successfully (not a duplicate record, not an error: a
    failed earlier copy does not make a later good copy an error), else the first error row, or None.
    The watcher asks the same question (`filed_ok`) before reading a file."""
    return conn.execute("SELECT id, status, referral_id, error FROM faxes WHERE sha256=? AND status!='duplicate' "
                        "ORDER BY status='error', id LIMIT 1", (sha256,)).fetchone()


def filed_ok(conn: sqlite3.Connection, sha256: str) -> bool:
    """Has this content been filed successfully before (so reading it again is pointless)?"""
    first = already_filed(conn, sha256)
    return first is not None and first["status"] != "error"


def commit_fax(conn: sqlite3.Connection, fax: FaxResult, rules: ReferralsConfig | None = None,
               after_apply=None) -> Filed:
    """File one fax; runs in the journal writer's transaction (engine.store.WriterTask).

    `after_apply(conn, message_id, applied)` is the outbound planner's hook (engine.rules), called
    with event fax.accepted / fax.needs_review so rules can send ADT^A04 + ORM^O01 for accepted faxes.
    Raises whatever SQLite raises; the writer rolls this task back to its savepoint and the
    channel leaves the file in processing/ to try again."""
    from engine.referral_store import ReferralStore
    from engine.referrals import Applied, contributed_fields, diagnosis_rows, missing_items, route

    at = now_iso()
    if fax.recovered:   # did the crash come after this very file's commit? Then there is nothing new to file
        done = conn.execute("SELECT id, status, referral_id, error FROM faxes WHERE sha256=? AND file_name=? "
                            "ORDER BY id DESC LIMIT 1", (fax.sha256, fax.file_name)).fetchone()
        if done is not None:
            return Filed(done["id"], "already_filed", done["referral_id"], done["status"], done["error"])
    first = already_filed(conn, fax.sha256)
    if first is not None and first["status"] != "error":
        fax_id = _insert_fax(conn, fax, at, "duplicate", referral_id=first["referral_id"], duplicate_of=first["id"])
        return Filed(fax_id, "duplicate", first["referral_id"])
    if fax.extraction is None:
        fax_id = _insert_fax(conn, fax, at, "error")
        return Filed(fax_id, "error", error=fax.error)

    extraction = {k: v for k, v in fax.extraction.items() if k != "ocr_text"}
    pages = int(extraction.get("pages") or 0) or None
    # RETURNING, not lastrowid (SQLite only); the row is fetched before the next statement
    message_id = conn.execute(
        "INSERT INTO messages (channel, received_at, peer, raw, content_hash, status, message_type, updated_at) "
        "VALUES (?,?,?,?,?,?,?,?) RETURNING id",
        (fax.channel, fax.received_at, f"file:{fax.file_name}", json.dumps(extraction, sort_keys=True).encode(),
         fax.sha256, "transformed", "FAX", at)).fetchone()[0]
    fax_id = _insert_fax(conn, fax, at, "received", message_id=message_id, pages=pages)
    store = ReferralStore(conn)
    mapped = to_mapped(extraction, fax.received_at)
    document = {"kind": "fax", "title": f"Faxed referral {fax.file_name}", "date": fax.received_at,
                "status": "final", "text": fax.extraction.get("ocr_text"), "content_type": None}

    existing = _addendum_target(conn, mapped, fax.addendum_window_days, at)
    if existing is not None:
        store.add_document(existing, message_id, {**document, "kind": "fax_addendum"}, None, at)
        store.link_message(message_id, existing, "referral.update", "addendum", "fax_addendum", at)
        _finish(conn, fax_id, "addendum", existing, at)
        return Filed(fax_id, "addendum", existing)

    reasons = review_reasons(extraction, fax.review)
    status = "needs_review" if reasons else "received"
    rules = rules or ReferralsConfig()
    referral = {**contributed_fields(mapped), "status": status, "source_message_id": message_id,
                "referred_at": fax.received_at, "origin": "fax"}
    diagnoses = diagnosis_rows(mapped)
    identifiers = [(i.id, i.authority, i.type) for i in mapped.patient.identifiers]
    missing, auth_pending = missing_items(referral, rules, diagnoses=len(diagnoses), identifiers=len(identifiers),
                                          documents=True)
    referral.update(route(referral, rules), missing=missing)
    referral_id = store.create(referral, at)
    detail = "fax accepted" if not reasons else f"fax needs review: {len(reasons)} item(s)"
    store.set_status(referral_id, None, status, at, "fax", fax_id, detail)
    store.add_identifiers(referral_id, identifiers)
    store.add_diagnoses(referral_id, diagnoses)
    store.add_document(referral_id, message_id, document, None, at)
    store.link_message(message_id, referral_id, "referral.order", "applied", None, at)
    if reasons:
        store.add_exception(referral_id, message_id, "referral.order", status, "fax needs review: "
                            + "; ".join(reasons), at)
    else:       # accepted: judged like an HL7 order (completeness rules -> ready | incomplete | auth_pending)
        from engine.lifecycle import Facts, intake_status
        judged = intake_status(Facts(tuple(missing), auth_pending)).value
        store.set_status(referral_id, status, judged, at, "fax", fax_id,
                         f"missing: {', '.join(missing)}" if missing else "completeness rules met")
        status = judged
    _finish(conn, fax_id, "accepted" if not reasons else "needs_review", referral_id, at, reasons)
    if after_apply is not None:
        event = "fax.needs_review" if reasons else "fax.accepted"
        after_apply(conn, message_id, Applied("created", referral_id, detail, event, None, status))
    return Filed(fax_id, "accepted" if not reasons else "needs_review", referral_id)


def _insert_fax(conn: sqlite3.Connection, fax: FaxResult, at: str, status: str, *, referral_id=None,
                message_id=None, duplicate_of=None, pages=None) -> int:
    extraction = None
    if fax.extraction is not None:
        extraction = json.dumps({k: v for k, v in fax.extraction.items() if k != "ocr_text"}, sort_keys=True)
    return conn.execute(
        "INSERT INTO faxes (channel, file_name, sha256, received_at, pages, status, extraction, ocr_text, "
        "pages_dir, referral_id, message_id, duplicate_of, error_reason, error, updated_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
        (fax.channel, fax.file_name, fax.sha256, fax.received_at, pages, status, extraction,
         (fax.extraction or {}).get("ocr_text"), fax.pages_dir, referral_id, message_id, duplicate_of,
         fax.error_reason, fax.error, at)).fetchone()[0]


def _finish(conn: sqlite3.Connection, fax_id: int, status: str, referral_id: int, at: str,
            reasons: list[str] | None = None) -> None:
    conn.execute("UPDATE faxes SET status=?, referral_id=?, review_reasons=?, updated_at=? WHERE id=?",
                 (status, referral_id, json.dumps(reasons) if reasons else None, at, fax_id))


def _addendum_target(conn: sqlite3.Connection, mapped: Mapped, window_days: float, at: str) -> int | None:
    """An open referral for the same patient (name + birth date), specialty and referrer (NPI, else name)
    created within the window; None when there is none or more than one (never guess)."""
    p = mapped.patient
    referring = next((v for v in mapped.providers if v.role == "referring"), None)
    if not (window_days and p.family_name and p.given_name and p.birth_date and mapped.specialty and referring):
        return None
    since = (datetime.fromisoformat(at) - timedelta(days=window_days)).isoformat(timespec="microseconds")
    rows = conn.execute(
        "SELECT id, referring_npi, referring_name FROM referrals WHERE lower(patient_family_name)=? AND "
        "lower(patient_given_name)=? AND patient_birth_date=? AND specialty=? AND created_at>=? AND "
        f"status NOT IN ({','.join('?' * len(FINISHED))})",
        (p.family_name.lower(), p.given_name.lower(), p.birth_date, mapped.specialty, since, *FINISHED)).fetchall()
    name = " ".join(x for x in (referring.given_name, referring.family_name) if x).lower()
    same = [r[0] for r in rows if (referring.npi and r[1] == referring.npi)
            or (not (referring.npi and r[1]) and name and (r[2] or "").lower() == name)]
    return same[0] if len(same) == 1 else None
