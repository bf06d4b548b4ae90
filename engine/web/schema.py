"""Migration 6: what the dashboard keeps in the engine's store.

users (argon2 hashes, role, lockout counters, a session epoch that logs every session out when it
changes), api_tokens (SHA-256 of the token only; the token itself is shown once), audit_log (who
did or saw what, when, which record) and channel_state (pause/resume, written by the web process,
polled by the daemon), plus indexes for the KPI queries and the family-name search.
"""
from __future__ import annotations

import sqlite_utils

from engine.db import PgSchema

ROLES = ("admin", "analyst", "coordinator", "viewer")


def migrate_web(db: sqlite_utils.Database) -> None:
    db["users"].create({
        "id": int, "name": str, "role": str, "password_hash": str, "disabled": int, "failed_logins": int,
        "locked_until": str, "session_epoch": int, "created_at": str, "updated_at": str, "last_login_at": str,
    }, pk="id", not_null={"name", "role", "password_hash", "created_at"},
        defaults={"disabled": 0, "failed_logins": 0, "session_epoch": 0})
    db["users"].create_index(["name"], unique=True)

    db["api_tokens"].create({"id": int, "user_id": int, "token_hash": str, "label": str, "created_at": str,
                             "last_used_at": str, "revoked_at": str},
                            pk="id", not_null={"user_id", "token_hash", "created_at"},
                            foreign_keys=[("user_id", "users", "id")])
    db["api_tokens"].create_index(["token_hash"], unique=True)

    db["audit_log"].create({"id": int, "at": str, "user": str, "role": str, "action": str, "target_kind": str,
                            "target_id": str, "detail": str, "client": str},
                           pk="id", not_null={"at", "action"})
    db["audit_log"].create_index(["target_kind", "target_id", "id"])   # "who saw this record"
    db["audit_log"].create_index(["user", "id"])                       # "what did this user do"

    # KPIs over a date range (engine.kpis) read these without touching the rows: time to appointment /
    # visit per referral, and referrals by status in a creation period.
    db["status_history"].create_index(["referral_id", "to_status", "at"], index_name="idx_status_history_kpi")
    db["referrals"].create_index(["created_at", "status", "leakage_risk"], index_name="idx_referrals_kpi")
    # The message browser's family-name search (LIKE 'NAME%' is case-insensitive: a NOCASE index serves it).
    # PostgreSQL has no NOCASE; its ILIKE cannot walk a btree, so the search reads a range of lower(name)
    # there (engine.web.queries.patient_ids_for_name), served by this expression index ("C" collation).
    if isinstance(db, PgSchema):
        db.execute("CREATE INDEX idx_referrals_family_nocase ON referrals (lower(patient_family_name))")
    else:
        db.execute("CREATE INDEX idx_referrals_family_nocase ON referrals (patient_family_name COLLATE NOCASE)")

    db["channel_state"].create({"channel": str, "paused": int, "changed_by": str, "changed_at": str,
                                "reason": str}, pk="channel", not_null={"paused"}, defaults={"paused": 0})
