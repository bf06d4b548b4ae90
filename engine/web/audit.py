"""The audit log: one row per view of patient data and per action (who, role, what, when, which record).

Rows are written in their own short transaction right when the page or API call is served (a view
that cannot be audited is not served: the error propagates). `detail` may hold search terms, which
can be patient data: it stays in the store, never in the logs.
"""
from __future__ import annotations

import sqlite3

from engine.store import now_iso, write_transaction


def record(conn: sqlite3.Connection, user: str | None, role: str | None, action: str, target_kind: str | None = None,
           target_id: str | int | None = None, detail: str | None = None, client: str | None = None) -> None:
    with write_transaction(conn):
        conn.execute('INSERT INTO audit_log (at, "user", role, action, target_kind, target_id, detail, client) '
                     "VALUES (?,?,?,?,?,?,?,?)", (now_iso(), user, role, action, target_kind,
                                                 None if target_id is None else str(target_id), detail, client))


def listing(conn: sqlite3.Connection, *, user: str | None = None, target_kind: str | None = None,
            target_id: str | None = None, before_id: int | None = None, limit: int = 100) -> list[dict]:
    """Newest first, keyset paged by id."""
    where, args = [], []
    for column, value in (('"user"', user), ("target_kind", target_kind), ("target_id", target_id)):
        if value:
            where.append(f"{column}=?")
            args.append(value)
    if before_id:
        where.append("id<?")
        args.append(before_id)
    # `user` quoted: a reserved word in PostgreSQL (bare, it reads the session user there)
    sql = 'SELECT id, at, "user", role, action, target_kind, target_id, detail, client FROM audit_log'
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [dict(r) for r in conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))]
