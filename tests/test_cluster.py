"""Several engine nodes on one PostgreSQL store behind HAProxy (deploy/haproxy/engine-mllp.cfg), on loopback.

Three `run_engine.py run` processes share a fresh database; HAProxy (Debian's) spreads MLLP senders over
them. Referrals arrive as ORM^O01, then SIU^S12 (booked), then SIU^S13 (rescheduled), each patient's
messages in order on one sender connection; every SIU owes a notification to the referring EHR (a real
MLLP receiver), ordered per patient. One node is killed (SIGKILL) mid-run. Then:
nothing lost (every AA'd control id is stored exactly once as an original), nothing processed twice,
every referral `scheduled` with one booking and one reschedule in its history, every notification
delivered, and each patient's notifications in the order their messages came.
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bench.procs import port_accepts
from channels.mllp.client import MLLPClient, msa
from engine.config import load_config
from tests.conftest import REPO, EngineProcess, free_port, open_store, sample, wait_until, write_config
from tests.receivers import MLLPReceiver

pytestmark = [pytest.mark.store, pytest.mark.postgresql_only]

HAPROXY_CFG = REPO / "deploy" / "haproxy" / "engine-mllp.cfg"
REFERRALS = int(os.environ.get("CLUSTER_TEST_REFERRALS", "16667"))      # x3 messages: 50,001
SENDERS = 6


@functools.lru_cache(maxsize=None)
def _template(name: str) -> bytes:
    return b"\r".join(s for s in sample(name).split(b"\r") if s.strip()) + b"\r"


def story(i: int) -> list[bytes]:
    """Referral i: ORM^O01, SIU^S12, SIU^S13, with its own MSH-10s, placer number, MRN and appointment ids."""
    out = []
    for name in ("ORM_O01_v2.5.1_bench25.hl7", "SIU_S12_v2.5.1.hl7", "SIU_S13_v2.5.1.hl7"):
        raw = _template(name)
        msh = raw.split(b"\r", 1)[0].split(b"|")
        control = f"{name[:7]}{i:06d}".replace("_", "").encode()
        raw = raw.replace(b"|" + msh[9] + b"|", b"|" + control + b"|", 1)
        for old, new in ((b"RF250304-0481", f"RC{i:06d}"), (b"10483726", f"7{i:07d}"),
                         (b"PA250305-0481", f"PC{i:06d}"), (b"88120455", f"FC{i:06d}")):
            raw = raw.replace(old, new.encode())
        out.append(raw)
    return out


def node_config(root: Path, name: str, ehr_port: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return write_config(root, isolation="process", store_extra=f"  node: {name}\n", channel_extra=f"""    transformer: {{mappings: {REPO / 'mappings'}}}
    destinations:
      - {{name: referring_ehr, type: mllp, host: 127.0.0.1, port: {ehr_port}, ack_timeout_seconds: 5,
          receiving_application: REFERRING_EHR, receiving_facility: MAPLE}}
processing:
  isolation: process
  lease_seconds: 3
outbound:
  order: per_patient
  lease_seconds: 5
  backoff_seconds: 0.1
  max_backoff_seconds: 1
  templates: {REPO / 'mappings' / 'outbound'}
  rules:
    - name: appointment_to_referrer
      on: [appointment.booked, appointment.rescheduled]
      origin: hl7
      send: siu_notification
      to: referring_ehr
schedules:
  retry_pump_seconds: 0.5
outreach:
  templates: {REPO / 'mappings' / 'outreach'}
""")


class Sender(threading.Thread):
    """One EHR interface: a connection through HAProxy, window 1; on a broken connection it reconnects
    and sends the unanswered message again, as MLLP senders do."""

    def __init__(self, port: int, messages: list[bytes]):
        super().__init__(daemon=True)
        self.port, self.messages = port, messages
        self.acked: list[bytes] = []
        self.resent = 0
        self.error: str | None = None

    def run(self) -> None:
        client = None
        try:
            for message in self.messages:
                for attempt in range(200):
                    try:
                        if client is None:
                            client = MLLPClient("127.0.0.1", self.port, timeout=20)
                        code = msa(client.send(message))[0]
                        if code not in ("AA", "CA"):       # CA: the samples ask for enhanced mode (MSH-15 AL)
                            raise AssertionError(f"ACK {code}")
                        self.acked.append(message.split(b"\r", 1)[0].split(b"|")[9])
                        break
                    except (ConnectionError, TimeoutError, OSError):
                        if client is not None:
                            client.close()
                        client, self.resent = None, self.resent + 1
                        time.sleep(0.05)
                else:
                    raise AssertionError("no node answered after 200 tries")
        except Exception as exc:     # reported by the test
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if client is not None:
                client.close()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_three_nodes_behind_haproxy_lose_and_double_nothing_when_one_is_killed(tmp_path, backend):
    with MLLPReceiver() as ehr:
        nodes = [EngineProcess(node_config(tmp_path / f"node{n}", f"node{n}", ehr.port)).start() for n in (1, 2, 3)]
        front, stats = free_port(), free_port()
        env = {**os.environ, "MLLP_BIND": f"127.0.0.1:{front}", "HAPROXY_STATS_BIND": f"127.0.0.1:{stats}",
               **{f"ENGINE_NODE{n}": f"127.0.0.1:{p.port}" for n, p in enumerate(nodes, 1)}}
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(HAPROXY_CFG)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: port_accepts(front), timeout=10, what="haproxy listening")
            per_sender = [[m for i in range(s, REFERRALS, SENDERS) for m in story(i)] for s in range(SENDERS)]
            senders = [Sender(front, messages) for messages in per_sender]
            for s in senders:
                s.start()
            total = sum(len(m) for m in per_sender)
            wait_until(lambda: sum(len(s.acked) for s in senders) > total // 3 or any(s.error for s in senders),
                       timeout=600, step=0.2, what="a third of the messages ACKed")
            assert [s.error for s in senders] == [None] * SENDERS
            nodes[1].kill()                                   # SIGKILL: claims, in-flight rows, open connections
            for s in senders:
                s.join(900)
            assert [s.error for s in senders] == [None] * SENDERS
            acked = [cid for s in senders for cid in s.acked]
            assert len(acked) == total == len(set(acked))

            conn = open_store(backend)
            try:
                def settled():
                    left = conn.execute("SELECT count(*) FROM messages WHERE status='received'").fetchone()[0]
                    owed = conn.execute("SELECT count(*) FROM outbound WHERE status<>'sent'").fetchone()[0]
                    sent = conn.execute("SELECT count(*) FROM outbound").fetchone()[0]
                    return left == 0 and owed == 0 and sent == 2 * REFERRALS
                try:
                    wait_until(settled, timeout=float(os.environ.get("CLUSTER_TEST_SETTLE", "900")), step=1,
                               what="every message processed and notification sent")
                except AssertionError as exc:
                    state = {"messages": conn.execute("SELECT status, claimed_by, count(*) FROM messages "
                                                      "GROUP BY 1, 2 ORDER BY 1, 2").fetchall(),
                             "outbound": conn.execute("SELECT status, claimed_by, count(*) FROM outbound "
                                                      "GROUP BY 1, 2 ORDER BY 1, 2").fetchall()}
                    raise AssertionError(f"{exc}: {state}") from None
                originals = conn.execute(
                    "SELECT control_id, count(*) FROM messages WHERE duplicate_of IS NULL GROUP BY control_id "
                    "HAVING count(*) > 1").fetchall()
                assert originals == []                         # nothing stored twice as an original
                stored = {r[0] for r in conn.execute("SELECT control_id FROM messages WHERE duplicate_of IS NULL")}
                assert stored == {cid.decode() for cid in acked}   # nothing lost
                assert conn.execute("SELECT count(*) FROM messages WHERE status<>'transformed' AND "
                                    "duplicate_of IS NULL").fetchone()[0] == 0
                statuses = dict(conn.execute("SELECT status, count(*) FROM referrals GROUP BY status").fetchall())
                assert statuses == {"scheduled": REFERRALS}
                wrong = conn.execute(
                    "SELECT r.id FROM referrals r WHERE (SELECT count(*) FROM referral_messages m "
                    "WHERE m.referral_id=r.id) <> 3 LIMIT 5").fetchall()
                assert wrong == []                             # each message applied once, to its referral
                received = dict(conn.execute("SELECT received_by, count(*) FROM messages GROUP BY 1").fetchall())
                assert {"node1", "node2", "node3"} <= set(received), received     # HAProxy spread the senders
                if REFERRALS >= 1000:                                               # and the nodes shared processing
                    claims = {r[0] for r in conn.execute("SELECT DISTINCT claimed_by FROM messages")}
                    assert {"node1", "node3"} <= claims, claims
            finally:
                conn.close()

            # Each patient's notifications reached the EHR in order, S12 before S13. Rows a dead node had sent
            # but not recorded are sent again by another node, from the first unrecorded row on, with the
            # same MSH-10 (at-least-once): the first arrival of each distinct message keeps the order.
            seen: dict[str, dict[tuple[str, str], None]] = {}
            for raw in list(ehr.messages):
                segments = raw.split(b"\r")
                msh = segments[0].split(b"|")
                pid = next(s for s in segments if s.startswith(b"PID|")).split(b"|")[3].split(b"^")[0].decode()
                seen.setdefault(pid, {}).setdefault((msh[8].split(b"^")[1].decode(), msh[9].decode()), None)
            assert len(seen) == REFERRALS
            assert {tuple(event for event, _ in arrivals) for arrivals in seen.values()} == {("S12", "S13")}
            print(f"notifications delivered: {len(ehr.messages)} for {2 * REFERRALS} rows "
                  f"({len(ehr.messages) - 2 * REFERRALS} sent again after the kill); "
                  f"sender reconnects: {sum(s.resent for s in senders)}")
        finally:
            haproxy.terminate()
            haproxy.wait(10)
            for node in nodes:
                if node.proc.poll() is None:
                    node.terminate()



def fax_node_config(root: Path, name: str, shared: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    folders = "\n".join(f"      {k}: {shared / k}" for k in ("inbox", "processing", "processed", "error"))
    return write_config(root, store_extra=f"  node: {name}\n", channel_extra=f"""
  - name: fax_inbound
    source:
      type: fax_folder
{folders}
      completeness: rename
      poll_seconds: 0.3
      workers: 1
      takeover_seconds: 2
""")


@pytest.mark.slow
def test_nodes_sharing_fax_folders_file_each_fax_once_and_take_over_a_dead_nodes_fax(tmp_path, backend):
    from tests.test_fax_inbox import FAXES, TWO_PAGES, drop
    shared = tmp_path / "share"
    a = EngineProcess(fax_node_config(tmp_path / "a", "node-a", shared)).start()
    drop(shared / "inbox" / "long.tif", TWO_PAGES)
    wait_until(lambda: (shared / "processing" / "node-a" / "long.tif").exists(), 60, "node-a's claim")
    a.kill()                                               # SIGKILL while it reads the fax
    b = EngineProcess(fax_node_config(tmp_path / "b", "node-b", shared)).start()
    a = EngineProcess(a.config_path).start()               # back: it recovers only its own folder (now empty)
    try:
        wait_until(lambda: (shared / "processed" / "long.tif").exists(), 120, "the fax taken over and filed")
        others = [p for p in sorted(FAXES.glob("fax_2026_00[01]*")) if p.suffix in (".tif", ".pdf")][:4]
        for p in others:                                   # both nodes watch the inbox now
            drop(shared / "inbox" / p.name, p)
        wait_until(lambda: all((shared / "processed" / p.name).exists() for p in others), 240, "all filed")
    finally:
        for node in (a, b):
            node.terminate()
    conn = open_store(backend)
    try:
        files = conn.execute("SELECT file_name, count(*) FROM faxes GROUP BY file_name ORDER BY 1").fetchall()
        assert files == sorted([("long.tif", 1)] + [(p.name, 1) for p in others])   # each filed once
        assert conn.execute("SELECT count(*) FROM faxes WHERE duplicate_of IS NOT NULL").fetchone()[0] == 0
    finally:
        conn.close()
    assert [p for p in (shared / "processing").rglob("*") if p.is_file()] == []
    assert sorted(p.name for p in (shared / "processing").iterdir()) == ["node-a", "node-b"]


def test_the_same_message_sent_to_two_nodes_at_once_is_stored_once_as_the_original(tmp_path, backend):
    """A sender that failed over resends to another node while the first may still be committing: the
    per-(sender, control id) lock makes one copy the original and the other its duplicate, every time."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import EngineThread
    nodes = []
    for name in ("node-a", "node-b"):
        (tmp_path / name).mkdir()
        nodes.append(EngineThread(load_config(write_config(tmp_path / name, store_extra=f"  node: {name}\n"))).start())
    try:
        messages = [m for i in range(40) for m in story(900_000 + i)[:1]]

        def send(port: int, message: bytes) -> str:
            with MLLPClient("127.0.0.1", port) as client:
                return msa(client.send(message))[0]
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(send, [n.port for m in messages for n in nodes],
                                  [m for m in messages for _ in nodes]))
        assert set(codes) <= {"AA", "CA"} and len(codes) == 80
    finally:
        for node in nodes:
            node.stop()
    conn = open_store(backend)
    try:
        rows = conn.execute("SELECT control_id, count(*) FILTER (WHERE duplicate_of IS NULL), "
                            "count(*) FILTER (WHERE duplicate_of IS NOT NULL), count(DISTINCT received_by) "
                            "FROM messages GROUP BY control_id").fetchall()
    finally:
        conn.close()
    assert len(rows) == 40
    assert {tuple(r[1:]) for r in rows} == {(1, 1, 2)}     # one original, one duplicate, from the two nodes
    # the analyst sees which node took a message
    import sys
    shown = subprocess.run([sys.executable, "run_engine.py", "show", "1", "--config", str(tmp_path / "node-a" /
                            "config.yaml")], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^received_by\s+node-[ab]$", shown.stdout, re.M)
