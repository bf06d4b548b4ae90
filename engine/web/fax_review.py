"""Fax review: a coordinator looks at a fax in `needs_review` (page images beside the extracted fields
and their confidence), corrects fields, then accepts or rejects it.

Each action is one short write transaction (BEGIN IMMEDIATE, as engine.coordinator) that goes through
the engine's own pieces: `engine.fax_intake.to_mapped` + `engine.referrals.contributed_fields` /
`missing_items` / `route` for the corrected fields, `ReferralStore.update` / `set_status` (the one
place writing status history, cause 'user') / `resolve_exception`, and `lifecycle.manual_transition`
for what a coordinator may do by hand (needs_review -> ready on accept, -> rejected on reject).
The fax row keeps the corrected extraction (edited fields get confidence 1.0 and are listed under
`reviewed_fields`) and its status becomes `accepted` or `rejected`.

Errors, all before anything is written: `ReviewError` (no such fax, not waiting for review, a required
item still missing on accept, a bad field value, no reason on reject).
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from engine.config import FAX_FIELDS, ReferralsConfig
from engine.store import now_iso, write_transaction

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
LIST_FIELDS = ("diagnosis_codes",)


class ReviewError(ValueError):
    pass


_write = write_transaction


def page_images(pages_dir: str | None) -> list[Path]:
    """The page images the reader kept, in page order (file names sort by page)."""
    if not pages_dir or not Path(pages_dir).is_dir():
        return []
    return sorted(p for p in Path(pages_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def get(conn: sqlite3.Connection, fax_id: int) -> dict | None:
    row = conn.execute("SELECT * FROM faxes WHERE id=?", (fax_id,)).fetchone()
    if row is None:
        return None
    fax = dict(row)
    extraction = json.loads(fax["extraction"]) if fax.get("extraction") else {}
    confidence = extraction.get("confidence") or {}
    fax["extraction"] = extraction
    fax["review_reasons"] = json.loads(fax["review_reasons"]) if fax.get("review_reasons") else []
    flagged = {reason.split(":", 1)[0] for reason in fax["review_reasons"]}
    fax["fields"] = [{"name": name, "value": extraction.get(name), "confidence": confidence.get(name),
                      "flagged": name in flagged,
                      "text": ", ".join(extraction.get(name) or []) if name in LIST_FIELDS
                      else ("" if extraction.get(name) is None else str(extraction.get(name)))}
                     for name in FAX_FIELDS]
    fax["images"] = [p.name for p in page_images(fax.get("pages_dir"))]
    fax.pop("ocr_text", None)
    return fax


def parse_edits(form: dict) -> dict:
    """Form fields named after FAX_FIELDS -> values (blank = none; diagnosis codes comma separated)."""
    edits = {}
    for name in FAX_FIELDS:
        if name not in form:
            continue
        text = (form.get(name) or "").strip()
        if name in LIST_FIELDS:
            edits[name] = [c.strip().upper() for c in text.replace(";", ",").split(",") if c.strip()]
        else:
            edits[name] = text or None
    if edits.get("urgency") not in (None, "routine", "urgent", "stat"):
        raise ReviewError(f"urgency {edits['urgency']!r}: routine, urgent or stat")
    if edits.get("patient_sex") not in (None, "M", "F", "U"):
        raise ReviewError(f"patient_sex {edits['patient_sex']!r}: M, F or U")
    return edits


def _waiting(conn: sqlite3.Connection, fax_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT id, status, extraction, referral_id, received_at FROM faxes WHERE id=?",
                       (fax_id,)).fetchone()
    if row is None:
        raise ReviewError(f"no fax with id {fax_id}")
    if row["status"] != "needs_review":
        raise ReviewError(f"fax {fax_id} is {row['status']}, not waiting for review")
    if row["referral_id"] is None:
        raise ReviewError(f"fax {fax_id} has no referral to review")
    return row


def _apply_edits(conn: sqlite3.Connection, row: sqlite3.Row, edits: dict, by_user: str, rules: ReferralsConfig,
                 at: str) -> tuple[dict, list[str]]:
    """Corrected extraction onto the fax and its referral; returns (extraction, missing items)."""
    from engine.fax_intake import to_mapped
    from engine.referral_store import ReferralStore
    from engine.referrals import contributed_fields, diagnosis_rows, missing_items, route
    extraction = json.loads(row["extraction"]) if row["extraction"] else {}
    changed = [k for k, v in edits.items() if extraction.get(k) != v]
    extraction.update(edits)
    confidence = extraction.setdefault("confidence", {})
    for name in changed:
        confidence[name] = 1.0
    extraction["reviewed_fields"] = sorted(set(extraction.get("reviewed_fields") or []) | set(changed))
    extraction["reviewed_by"] = by_user
    store = ReferralStore(conn)
    mapped = to_mapped(extraction, row["received_at"])
    referral_id = row["referral_id"]
    fields = {k: v for k, v in contributed_fields(mapped).items() if v is not None}
    store.add_identifiers(referral_id, [(i.id, i.authority, i.type) for i in mapped.patient.identifiers])
    store.add_diagnoses(referral_id, diagnosis_rows(mapped))
    current = {**store.get(referral_id), **fields}
    diagnoses, identifiers, _ = store.completeness_counts(referral_id)
    missing, _ = missing_items(current, rules, diagnoses=diagnoses, identifiers=identifiers, documents=True)
    store.update(referral_id, {**fields, **route(current, rules), "missing": missing}, at)
    conn.execute("UPDATE faxes SET extraction=?, updated_at=? WHERE id=?",
                 (json.dumps(extraction, sort_keys=True), at, row["id"]))
    return extraction, missing


def save(conn: sqlite3.Connection, fax_id: int, edits: dict, by_user: str, rules: ReferralsConfig) -> dict:
    """Keep corrections; the fax stays in review."""
    at = now_iso()
    with _write(conn):
        _apply_edits(conn, _waiting(conn, fax_id), edits, by_user, rules, at)
    return get(conn, fax_id)


def _close_review(conn: sqlite3.Connection, row: sqlite3.Row, to: str, reason: str, by_user: str, fax_status: str,
                  at: str) -> None:
    from engine.lifecycle import ManualTransitionRefused, manual_transition
    from engine.referral_store import ReferralStore
    store = ReferralStore(conn)
    referral = store.get(row["referral_id"])
    try:
        decision = manual_transition(referral["status"], to, reason)
    except ManualTransitionRefused as exc:
        raise ReviewError(str(exc)) from None
    store.set_status(row["referral_id"], referral["status"], decision.to.value, at, "user", by_user, decision.detail)
    # the outbound rules run on it in the engine (fax.accepted: register the patient, create the order)
    from engine.rules import note_trigger
    note_trigger(conn, row["referral_id"], "fax.accepted" if fax_status == "accepted" else None, referral["status"],
                 decision.to.value, "user", by_user, at)
    for (exception_id,) in conn.execute("SELECT id FROM review_exceptions WHERE referral_id=? AND resolved_at IS NULL",
                                        (row["referral_id"],)).fetchall():
        store.resolve_exception(exception_id, by_user, f"fax review: {fax_status}", at)
    conn.execute("UPDATE faxes SET status=?, updated_at=? WHERE id=?", (fax_status, at, row["id"]))


def accept(conn: sqlite3.Connection, fax_id: int, edits: dict, by_user: str, rules: ReferralsConfig) -> dict:
    """Corrections applied, the referral `ready`, its review exceptions resolved, the fax `accepted`.
    Refused (nothing written) while a required item is still missing."""
    at = now_iso()
    with _write(conn):
        row = _waiting(conn, fax_id)
        _, missing = _apply_edits(conn, row, edits, by_user, rules, at)
        if missing:
            raise ReviewError(f"still missing: {', '.join(missing)}; fill them in, or reject the fax")
        _close_review(conn, row, "ready", "fax reviewed and accepted", by_user, "accepted", at)
    return get(conn, fax_id)


def reject(conn: sqlite3.Connection, fax_id: int, reason: str, by_user: str) -> dict:
    """The referral `rejected` (with the reason), its review exceptions resolved, the fax `rejected`."""
    if not (reason or "").strip():
        raise ReviewError("a reason is required to reject a fax (it is kept in the status history)")
    at = now_iso()
    with _write(conn):
        _close_review(conn, _waiting(conn, fax_id), "rejected", reason.strip(), by_user, "rejected", at)
    return get(conn, fax_id)
