"""Pause/resume of a channel: the web process writes `channel_state`, the daemon polls it (~1 s) and
stops or starts that channel's listener. A paused channel refuses connections (senders queue on
their side, as with a stopped Mirth channel); the state survives an engine restart.
"""
from __future__ import annotations

import sqlite3

from engine.db import store_errors
from engine.store import now_iso, write_transaction


def paused(conn: sqlite3.Connection) -> set[str]:
    """Names of paused channels; empty when the table does not exist yet (a store before migration 6)."""
    try:
        return {r[0] for r in conn.execute("SELECT channel FROM channel_state WHERE paused=1")}
    except store_errors():
        return set()


def states(conn: sqlite3.Connection) -> dict[str, dict]:
    return {r[0]: {"paused": bool(r[1]), "changed_by": r[2], "changed_at": r[3], "reason": r[4]}
            for r in conn.execute("SELECT channel, paused, changed_by, changed_at, reason FROM channel_state")}


def set_paused(conn: sqlite3.Connection, channel: str, pause: bool, by_user: str, reason: str | None = None) -> None:
    with write_transaction(conn):
        conn.execute("INSERT INTO channel_state (channel, paused, changed_by, changed_at, reason) VALUES (?,?,?,?,?) "
                     "ON CONFLICT(channel) DO UPDATE SET paused=excluded.paused, changed_by=excluded.changed_by, "
                     "changed_at=excluded.changed_at, reason=excluded.reason",
                     (channel, int(pause), by_user, now_iso(), reason))
