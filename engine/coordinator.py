"""Coordinator actions: a user assigns a referral, sets its next action, changes its status by hand or
resolves a review exception. Each action is one short write transaction; each leaves a row saying who.

Single-writer discipline (the same as `Journal.link` / `Journal.requeue`, which the CLI uses while the
daemon runs): the action opens `BEGIN IMMEDIATE` on its own connection (`engine.db.connect`, either
backend), which takes the store's write lock (SQLite's, or PostgreSQL's advisory WRITE_LOCK) at once or
waits for it (SQLite's `busy_timeout`, 30 s) while the daemon's group-commit writer finishes its batch. Reading the current status *inside* that transaction means no
message can change the referral between the check and the write, and the transaction is a handful of
indexed statements, so the daemon's next commit (and the ACKs waiting on it) is delayed by
microseconds, never by the user.

Status changes go through `lifecycle.manual_transition` (what a coordinator may do, pure) and
`ReferralStore.set_status` (cause_kind 'user', cause_id the user, detail the reason), the one place that
writes status history. Owner / next action / resolutions are `referral_events` rows (same shape).

Errors, all raised before anything is written: `UnknownReferral`, `UnknownException`,
`ExceptionAlreadyResolved`, `InvalidDue` (all `ActionRefused`), and `lifecycle.ManualTransitionRefused`.
"""
from __future__ import annotations

from contextlib import contextmanager
from datetime import date, datetime, timezone
from typing import Iterator

from engine.lifecycle import ManualTransitionRefused, manual_transition
from engine.referral_store import ReferralStore
from engine.rules import note_trigger
from engine.store import now_iso, write_transaction

__all__ = ["ActionRefused", "UnknownReferral", "UnknownException", "ExceptionAlreadyResolved", "InvalidDue",
           "ManualTransitionRefused", "parse_due", "assign", "set_next_action", "set_status", "resolve_exception"]


class ActionRefused(ValueError):
    """A coordinator action that cannot be done as asked; the message says why."""


class UnknownReferral(ActionRefused, LookupError):
    pass


class UnknownException(ActionRefused, LookupError):
    pass


class ExceptionAlreadyResolved(ActionRefused):
    pass


class InvalidDue(ActionRefused):
    pass


def parse_due(value: str | None) -> str | None:
    """A due date as stored: 'YYYY-MM-DD' stays a date; an ISO date-time becomes UTC ISO (a time without
    offset is local time, as `--since` reads it). Raises InvalidDue for anything else."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return date.fromisoformat(value).isoformat() if len(value) == 10 else \
            datetime.fromisoformat(value).astimezone(timezone.utc).isoformat(timespec="seconds")
    except ValueError:
        raise InvalidDue(f"due {value!r}: use YYYY-MM-DD (2026-12-01) or an ISO date-time "
                         "(2026-12-01T09:00, 2026-12-01T09:00+01:00)") from None


@contextmanager
def _write(conn) -> Iterator[ReferralStore]:
    """One short write transaction (see the module docstring); rolled back on any error."""
    with write_transaction(conn):
        yield ReferralStore(conn)


def _referral(store: ReferralStore, referral_id: int) -> dict:
    referral = store.get(referral_id)
    if referral is None:
        raise UnknownReferral(f"no referral with id {referral_id}")
    return referral


def assign(conn, referral_id: int, owner: str, by_user: str, at: str | None = None) -> dict:
    """Make `owner` the referral's owner. Returns the referral as now stored."""
    with _write(conn) as store:
        if not store.assign(referral_id, owner, by_user, at or now_iso()):
            raise UnknownReferral(f"no referral with id {referral_id}")
        return _referral(store, referral_id)


def set_next_action(conn, referral_id: int, text: str, due: str | None, by_user: str,
                    at: str | None = None) -> dict:
    """Set what happens next and by when (`due`: see `parse_due`). Returns the referral as now stored."""
    due = parse_due(due)
    with _write(conn) as store:
        if not store.set_next_action(referral_id, text, due, by_user, at or now_iso()):
            raise UnknownReferral(f"no referral with id {referral_id}")
        return _referral(store, referral_id)


def set_status(conn, referral_id: int, to: str, by_user: str, reason: str | None,
               at: str | None = None) -> dict:
    """A coordinator's status change; raises ManualTransitionRefused (naming what is allowed) when the
    lifecycle does not allow it by hand. Returns the referral as now stored."""
    with _write(conn) as store:
        current = _referral(store, referral_id)["status"]
        decision = manual_transition(current, to, reason)
        at = at or now_iso()
        store.set_status(referral_id, current, decision.to.value, at, "user", by_user, decision.detail)
        note_trigger(conn, referral_id, None, current, decision.to.value, "user", by_user, at)
        return _referral(store, referral_id)


def resolve_exception(conn, exception_id: int, by_user: str, note: str | None = None,
                      at: str | None = None) -> dict:
    """Mark a review exception resolved (the referral's status is unchanged: use `set_status` for that).
    Returns the exception row as now stored."""
    with _write(conn) as store:
        existing = store.exception(exception_id)
        if existing is None:
            raise UnknownException(f"no review exception with id {exception_id}")
        if existing["resolved_at"] is not None:
            raise ExceptionAlreadyResolved(f"review exception {exception_id} was resolved at "
                                           f"{existing['resolved_at']} by {existing['resolved_by'] or 'the engine'}")
        store.resolve_exception(exception_id, by_user, note, at or now_iso())
        return store.exception(exception_id)
