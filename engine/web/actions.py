"""What dashboard users do, shared by the pages and the JSON API. Each action reuses the engine's own
write path (Journal.requeue, engine.coordinator, engine.outbound.resend, channel_state) and is
audited by the caller. Errors: `ActionError` (the message says why, shown to the user)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from engine.db import columns
from engine.store import Journal, write_transaction


class ActionError(ValueError):
    pass


def reprocess(db_path: Path, message_id: int) -> None:
    """Back to 'received' so the processor runs it through the current mappings again."""
    journal = Journal(db_path)
    try:
        if journal.get(message_id) is None:
            raise ActionError(f"no message with id {message_id}")
        if not journal.requeue(message_ids=[message_id]):
            raise ActionError(f"message {message_id} cannot be reprocessed: only messages that were accepted "
                              f"(ACK AA/CA), are not duplicates and were processed (transformed, filtered or "
                              f"error) can be")
    finally:
        journal.close()


def resend(conn: sqlite3.Connection, outbound_id: int) -> None:
    from engine import outbound
    if not columns(conn, "outbound"):
        raise ActionError("the outbound queue is not enabled in this store")
    with write_transaction(conn):
        ok = outbound.resend(conn, outbound_id)
    if not ok:
        raise ActionError(f"outbound message {outbound_id} does not exist or is being sent right now")


def referral_action(conn: sqlite3.Connection, kind: str, referral_id: int, by_user: str, **values) -> dict:
    from engine import coordinator
    try:
        if kind == "assign":
            owner = (values.get("owner") or "").strip()
            if not owner:
                raise ActionError("owner: give the user who works the referral")
            return coordinator.assign(conn, referral_id, owner, by_user)
        if kind == "next_action":
            text = (values.get("text") or "").strip()
            if not text:
                raise ActionError("next action: say what happens next")
            return coordinator.set_next_action(conn, referral_id, text, values.get("due") or None, by_user)
        if kind == "status":
            reason = (values.get("reason") or "").strip()
            if not reason:
                raise ActionError("status: a reason is required (it is kept in the status history)")
            return coordinator.set_status(conn, referral_id, values.get("status") or "", by_user, reason)
    except (coordinator.ActionRefused, coordinator.ManualTransitionRefused) as exc:
        raise ActionError(str(exc)) from None
    raise ActionError(f"unknown referral action {kind!r}")
