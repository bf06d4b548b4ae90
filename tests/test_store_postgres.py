"""The PostgreSQL side of engine.db on a real server: the SQL translation, what a COMMIT really did,
a lost connection (a restarted server), and what error texts and URLs may show. Plus the outbound
release rule that matters once several nodes claim rows (both backends)."""
from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from channels.mllp.client import MLLPClient, msa
from engine import outbound
from engine.db import StoreError, connect, describe, error_text
from tests.conftest import open_store
from tests.pg import PostgresCluster, server_bin

pg = pytest.mark.postgresql_only


def terminate(admin_url: str, conn) -> None:
    """What a server restart or fail-over does to one connection: the server ends it."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (conn.raw.info.backend_pid,))


@pg
def test_comments_dollar_quotes_and_e_strings_are_not_parameters_or_quotes(store_url):
    conn = open_store(store_url)
    # an apostrophe in a comment used to open a "string" that swallowed the next `?`
    assert tuple(conn.execute("SELECT ? AS a -- the sender's id?\n, ? AS b", ("1", "2")).fetchone()) == ("1", "2")
    assert tuple(conn.execute("SELECT /* what's ? */ ? AS a", ("3",)).fetchone()) == ("3",)
    assert tuple(conn.execute("SELECT $$it's ?$$ AS a, $q$?$q$ AS b, ? AS c", ("4",)).fetchone()) == \
        ("it's ?", "?", "4")
    assert tuple(conn.execute(r"SELECT E'it\'s ?' AS a, ? AS b", ("5",)).fetchone()) == ("it's ?", "5")
    assert tuple(conn.execute("SELECT '50%' AS a, ? AS b -- 10% off", ("6",)).fetchone()) == ("50%", "6")
    assert conn.execute("SELECT count(*) FROM (SELECT 'Likely' AS s) t WHERE s LIKE ?", ("likely",)).fetchone()[0] == 1


@pg
def test_a_commit_that_postgres_turned_into_a_rollback_raises(store_url):
    conn = open_store(store_url)
    conn.execute("CREATE TABLE kept (v BIGINT)")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO kept VALUES (?)", (1,))
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1/0")          # caught by a caller that then commits anyway
    with pytest.raises(StoreError, match="rolled back"):
        conn.execute("COMMIT")
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM kept").fetchone()[0] == 0
    conn.execute("BEGIN")
    conn.execute("INSERT INTO kept VALUES (?)", (2,))
    conn.execute("COMMIT")                  # a good transaction still commits
    assert conn.execute("SELECT count(*) FROM kept").fetchone()[0] == 1


@pg
def test_a_lost_connection_is_opened_again_at_the_next_transaction_never_inside_one(store_url, pg_cluster):
    conn = open_store(store_url)
    conn.execute("CREATE TABLE kept (v BIGINT)")
    terminate(pg_cluster.url(), conn)
    conn.execute("BEGIN IMMEDIATE")         # lost while idle: opened again, nothing lost
    conn.execute("INSERT INTO kept VALUES (?)", (1,))
    conn.execute("COMMIT")

    conn.execute("BEGIN")
    conn.execute("INSERT INTO kept VALUES (?)", (2,))
    terminate(pg_cluster.url(), conn)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("INSERT INTO kept VALUES (?)", (3,))
    with pytest.raises(StoreError, match="lost inside a transaction"):
        conn.execute("COMMIT")              # never a COMMIT on a fresh connection that "succeeds"
    conn.execute("ROLLBACK")
    terminate(pg_cluster.url(), conn)
    assert [r[0] for r in conn.execute("SELECT v FROM kept ORDER BY v")] == [1]   # a read outside: again


@pg
@pytest.mark.slow
def test_engine_answers_AE_while_postgres_is_down_and_AA_again_after_it_restarts(make_engine, monkeypatch):
    cluster = PostgresCluster.start(Path(tempfile.mkdtemp(prefix="engine-pg-restart-")))
    pg_ctl = [*cluster._as_user, str(server_bin() / "pg_ctl"), "-D", str(cluster.data), "-w", "-t", "60"]
    try:
        url = cluster.new_database()
        monkeypatch.setenv("ENGINE_STORE_URL", url)
        engine = make_engine()
        with MLLPClient("127.0.0.1", engine.port, timeout=20) as client:
            assert msa(client.send(orm("BEFORE")))[0] == "AA"
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], check=True, capture_output=True)
        with MLLPClient("127.0.0.1", engine.port, timeout=20) as client:
            started = time.monotonic()
            assert msa(client.send(orm("DURING")))[0] == "AE"     # not AA, and no hang
            assert time.monotonic() - started < 15
        subprocess.run([*pg_ctl, "-l", str(cluster.root / "server.log"), "start"], check=True, capture_output=True)
        with MLLPClient("127.0.0.1", engine.port, timeout=20) as client:
            assert msa(client.send(orm("DURING")))[0] == "AA"     # the sender's resend: the writer reconnected
            assert msa(client.send(orm("AFTER")))[0] == "AA"
        engine.wait_processed(30)
        journal = engine.journal()
        try:
            for cid in ("BEFORE", "DURING", "AFTER"):
                rows = journal.search(control_id=cid)
                assert [r["duplicate_of"] for r in rows] == [None], (cid, [dict(r) for r in rows])
                assert rows[0]["status"] == "transformed"
        finally:
            journal.close()
        engine.stop()
    finally:
        cluster.stop()


def orm(cid: str) -> bytes:
    return (f"MSH|^~\\&|EPIC|GENHOSP|ENGINE|SPEC|20261123101500||ORM^O01^ORM_O01|{cid}|P|2.5.1\r"
            f"PID|1||MRN{cid}^^^GENHOSP^MR||TESTPATIENT^ALEX||19700101|F\r"
            f"ORC|NW|PL{cid}\rOBR|1|PL{cid}||CARDCONS^Cardiology consult\r").encode()


@pg
def test_database_errors_in_logs_carry_no_values(store_url):
    conn = open_store(store_url)
    conn.execute("CREATE TABLE people (mrn TEXT UNIQUE)")
    conn.execute("INSERT INTO people VALUES (?)", ("MRN-SECRET-42",))
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        conn.execute("INSERT INTO people VALUES (?)", ("MRN-SECRET-42",))
    assert "MRN-SECRET-42" in str(caught.value)        # PostgreSQL's DETAIL quotes the key
    assert error_text(caught.value) == "UniqueViolation (SQLSTATE 23505)"


@pg
@pytest.mark.store
def test_the_store_password_never_shows_in_descriptions_or_errors(pg_cluster):
    port = pg_cluster.port
    assert describe(f"postgresql://engine:S3cret@db:5432/engine") == "postgresql://db:5432/engine"
    assert describe(f"postgresql://db/engine?user=engine&password=S3cret&sslmode=require") == \
        "postgresql://db/engine?sslmode=require"
    for url in (f"postgresql://engine:S3%zzcret@127.0.0.1:{port}/x",          # libpq quotes the bad token
                f"postgresql://127.0.0.1:{port}/x?user=nobody&password=S3cret"):
        with pytest.raises(StoreError) as caught:
            connect(url)
        assert "S3" not in str(caught.value) and "cret" not in str(caught.value), str(caught.value)


def test_a_worker_releases_only_rows_it_still_holds(store_url):
    import sqlite3
    from engine.outbound import Outbound
    from engine.store import Journal
    Journal(store_url).close()                       # the schema
    conn = open_store(store_url)
    conn.row_factory = sqlite3.Row
    ids = [outbound.enqueue(conn, Outbound("ehr", "SIU^S12", f"MSH|{i}".encode(), control_id=f"C{i}",
                                           patient_key=f"P{i}"), order="per_patient") for i in range(2)]
    assert [r["id"] for r in outbound.claim_due(conn, "ehr", worker="node-a", lease_seconds=0)] == ids
    time.sleep(0.01)
    assert outbound.release_expired(conn) == 2        # node-a was too slow: its lease ran out
    assert [r["id"] for r in outbound.claim_due(conn, "ehr", worker="node-b")] == ids
    outbound.release(conn, ids, worker="node-a")      # node-a, late, gives back "its" batch
    rows = [outbound.get(conn, i) for i in ids]
    assert [(r["status"], r["claimed_by"]) for r in rows] == [("sending", "node-b")] * 2
    outbound.release(conn, ids, worker="node-b")
    assert [outbound.get(conn, i)["status"] for i in ids] == ["queued"] * 2


@pg
def test_a_frozen_node_holding_the_write_lock_does_not_stall_the_others(store_url, monkeypatch):
    from engine import db
    monkeypatch.setattr(db, "IDLE_IN_TRANSACTION_SECONDS", 1.0)    # 60 s in production
    frozen, other = open_store(store_url), open_store(store_url)
    frozen.execute("BEGIN IMMEDIATE")           # ...and then nothing: the node stopped
    started = time.monotonic()
    other.execute("BEGIN IMMEDIATE")            # waits for the server to end the frozen session
    other.execute("COMMIT")
    assert time.monotonic() - started < 10
    with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
        frozen.execute("SELECT 1")              # the frozen node learns it lost its transaction
    frozen.execute("ROLLBACK")
    frozen.execute("BEGIN IMMEDIATE")           # and carries on on a fresh connection
    frozen.execute("COMMIT")
