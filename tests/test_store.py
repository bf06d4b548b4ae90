"""The journal on a real store (a SQLite file, then a PostgreSQL database): one transaction per writer
batch, duplicates, idempotent status changes."""
from __future__ import annotations

import pytest

from engine.db import dialect, integrity_errors
from engine.intake import take_frame
from engine.store import Journal, StatusChange, StoreError
from tests.conftest import open_store

pytestmark = pytest.mark.store


def msg(control_id: str, body: str = "A") -> bytes:
    return (f"MSH|^~\\&|EPIC|GEN|ENG|SPEC|20261123||ADT^A08|{control_id}|P|2.5.1\r"
            f"PID|1||MRN-{body}^^^GEN^MR\r").encode()


def frame(raw: bytes):
    return take_frame(raw, "ehr_inbound", "127.0.0.1:1").messages()


def test_frames_and_status_changes_share_one_transaction(store_url):
    journal = Journal(store_url)
    [stored] = journal.write([frame(msg("C1"))])
    first = stored[0].id
    results = journal.write([frame(msg("C2")), [StatusChange(first, "transformed")]])
    assert results[1] == 1 and journal.get(first)["status"] == "transformed"
    # Applying the same change again changes nothing: only rows still 'received' move.
    assert journal.write([[StatusChange(first, "error", "late")]]) == [0]
    assert journal.get(first)["status"] == "transformed" and journal.get(first)["error"] is None


def test_duplicates_within_one_batch_and_across_batches(store_url):
    journal = Journal(store_url)
    [a, b, c] = journal.write([frame(msg("C1")), frame(msg("C1")), frame(msg("C1", "B"))])
    assert a[0].duplicate_of is None
    assert b[0].duplicate_of == a[0].id
    assert c[0].duplicate_of is None and c[0].control_id_reused
    [d] = journal.write([frame(msg("C1"))])
    assert d[0].duplicate_of == a[0].id
    assert [r["status"] for r in journal.search(control_id="C1")] == ["duplicate", "received", "duplicate",
                                                                      "received"]


def test_a_failed_batch_stores_nothing(store_url):
    journal = Journal(store_url)
    good = frame(msg("C1"))
    bad = frame(msg("C2"))
    bad[0].channel = None          # violates NOT NULL: the whole transaction must roll back
    with pytest.raises(integrity_errors()):
        journal.write([good, bad])
    assert journal.counts() == {}
    journal.write([good])
    assert journal.counts() == {"received": 1}


def test_newer_schema_is_refused_by_name(store_url):
    Journal(store_url).close()
    conn = open_store(store_url)       # as a newer engine would leave it: SQLite's user_version, PG's table
    if dialect(conn) == "postgresql":
        conn.execute("INSERT INTO schema_version (version) VALUES (999)")
    else:
        conn.execute("PRAGMA user_version=999")
    conn.close()
    with pytest.raises(StoreError, match="newer than this engine"):
        Journal(store_url)


def test_reader_needs_an_existing_store(store_url):
    # SQLite: no file yet. PostgreSQL: a database the engine never migrated (no tables).
    with pytest.raises(StoreError, match="no store here"):
        Journal(store_url, readonly=True)


@pytest.mark.sqlite_only
def test_the_wal_stays_bounded_under_sustained_writes_with_a_reader_open(tmp_path):
    journal = Journal(tmp_path / "j.db")
    reader = Journal(tmp_path / "j.db", readonly=True)
    wal = tmp_path / "j.db-wal"
    sizes = []
    for n in range(400):
        journal.write([frame(msg(f"C{n}-{k}", "x" * 3000)) for k in range(10)])
        reader.search(limit=5)          # readers come and go, as the CLI and the processor do
        sizes.append(wal.stat().st_size)
    # 4,000 messages of ~3 KB: ~12 MB written; the WAL restarts instead of holding it all.
    assert max(sizes) < 12 * 1024 * 1024
