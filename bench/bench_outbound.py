"""Outbound delivery benchmark.

Mode `--sender-only` (issue 4, the connector alone): `channels.mllp.sender.MLLPSender`
delivering N pre-built ~2 KB ORM^O01 rows (a new MSH-10 each) over one connection,
window 1 (each row waits for its ACK, exactly as the delivery loop uses it), to the
canned-ACK receiver `bench/baseline_canned.py` running in its own process. Side by
side, in the same rounds, the **bare** baseline: a minimal asyncio streams loop
(write a frame, `readuntil` the end block, check MSA-1/MSA-2 by slicing) — the cost
of one TCP round trip per message with no connector around it. Rounds interleave
bare / sender with a fresh receiver each, so a noisy machine hits both alike.

Figures: messages/s (N / wall time from the first write to the last ACK), per-row
latency p50/p99 (deliver call to result), outcomes other than `sent` (errors), and
the ratio sender / bare. Target for the whole outbound path: >= 2,000 msg/s.

    .venv/bin/python -m bench.bench_outbound --sender-only [-n 20000] [--rounds 3] [--event-loop uvloop] [--json]

Mode `--queue` (the durable queue drained by the delivery service): N rows enqueued
(engine.outbound.enqueue, one transaction) in a fresh SQLite store before timing, then
engine.delivery.DeliveryService with a real Journal + GroupCommitter, built as
engine/daemon.py builds them, delivers them to the recording canned-ACK receiver (the
canned receiver plus one list append per message, its own process). Time: from the
worker's wake-up to the commit of the transaction that records the last row `sent`.
Side by side in the same rounds, the baseline: MLLPSender alone (no queue) to the same
receiver. Afterwards it checks that every row is `sent` after exactly one attempt and
that the receiver got each control id once, in id order.

Mode `--loop` (the closed loop through a real engine process): the engine
(`run_engine.py run`, a temp config: one MLLP channel with the referral mappings, one
MLLP destination `referring_ehr` = the recording receiver, the appointment rule of
config.yaml). K = rate x seconds ORM^O01 referrals are loaded and processed first,
then K SIU^S12 (one per referral, SCH-26 = its placer order number) are sent open
loop at the offered rate. Per SIU: its scheduled send time -> arrival of the SIU
notification at the receiver (matched by SCH-26.1), against the baseline in the same
run: the engine's inbound ACK of the same SIU (what the sender sees). Both from the
scheduled send time (no coordinated omission); the receiver stamps arrivals with
time.monotonic (CLOCK_MONOTONIC, system-wide), the bench process the same clock.

    .venv/bin/python -m bench.bench_outbound --queue [-n 20000] [--rounds 3] [--batch 64]
    .venv/bin/python -m bench.bench_outbound --loop [--rate 200] [--seconds 30] [-c 1] [--rounds 3]

MODES maps each mode to a function (args) -> {label: [trial dict, ...]}; RENDER to its table.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import aio, procs
from bench.aio import FrameProtocol, server_main
from bench.loadgen import percentile
from bench.message import REPO_ROOT, orm_o01
from bench.mllp import canned_ack, frame, msh10, parse_msa
from channels.mllp.sender import MLLPSender
from channels.outbound import Delivery


def deliveries(n: int, prefix: str) -> list[Delivery]:
    return [Delivery(i, "bench", "ORM^O01", f"{prefix}{i:07d}", orm_o01(f"{prefix}{i:07d}"), 1) for i in range(n)]


def _summary(n: int, errors: int, started: float, finished: float, latencies: list[float]) -> dict:
    latencies.sort()
    pick = (lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 3))
    return {"messages": n, "errors": errors, "seconds": round(finished - started, 3),
            "msgs_per_s": round(n / (finished - started)), "p50_ms": pick(0.50), "p99_ms": pick(0.99)}


def _percentiles(values: list[float]) -> dict:
    """p50/p95/p99/max in ms (nearest rank) of values in seconds; empty -> None each."""
    v = sorted(values)
    ms = (lambda x: round(x * 1000, 2) if v else None)
    return {"p50_ms": ms(percentile(v, 50)), "p95_ms": ms(percentile(v, 95)), "p99_ms": ms(percentile(v, 99)),
            "max_ms": ms(v[-1] if v else 0.0)}


def commit_probe(data_dir: Path, commits: int = 100) -> float:
    """Median ms of a one-row SQLite commit (WAL, synchronous=FULL: one fsync) in data_dir: how slow
    the disk is at this moment (it is shared, like the cores)."""
    conn = sqlite3.connect(data_dir / "probe.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
        times = []
        for i in range(commits):
            t = time.perf_counter()
            conn.execute("INSERT INTO t VALUES (?)", (i,))
            times.append(time.perf_counter() - t)
    finally:
        conn.close()
    return round(statistics.median(times) * 1000, 2)


# ---- the recording receiver (its own process) -----------------------------

_RECORDS: list[tuple[float, bytes, bytes]] = []


def sch26(msg: bytes) -> bytes:
    """SCH-26.1 (placer order number) of a CR-separated message, by slicing; b"" when absent."""
    i = msg.find(b"\rSCH")
    if i < 0:
        return b""
    end = msg.find(b"\r", i + 1)
    fields = msg[i + 1:end if end >= 0 else len(msg)].split(msg[3:4] or b"|")
    return fields[26].split(b"^")[0] if len(fields) > 26 else b""


class RecordingAck(FrameProtocol):
    """The canned-ACK receiver (bench/baseline_canned.py) that also notes each message's arrival time
    (time.monotonic), MSH-10 and SCH-26.1. Answers AA echoing MSH-10, whatever the message."""

    def handle(self, msg: bytes) -> None:
        cid = msh10(msg)
        _RECORDS.append((time.monotonic(), cid, sch26(msg)))
        self.transport.write(canned_ack(cid))


async def _make_recorder(args):
    server = await asyncio.get_running_loop().create_server(RecordingAck, args.host, args.port)

    def write_records() -> None:   # at SIGTERM: one line per message, in arrival order
        with open(args.record, "w") as out:
            out.writelines(f"{t:.6f}\t{cid.decode()}\t{placer.decode()}\n" for t, cid, placer in _RECORDS)
    return server, write_records


def _recorder_launch(port: int, data_dir: Path) -> procs.Launch:
    return procs.Launch([sys.executable, "-m", "bench.bench_outbound", "--serve-recorder", "--port", str(port),
                         "--record", str(data_dir / "received.tsv")])


procs.SERVERS.setdefault("recorder", _recorder_launch)


def read_records(data_dir: Path) -> list[tuple[float, str, str]]:
    """What the recorder got, in arrival order: (monotonic time, MSH-10, SCH-26.1)."""
    path = data_dir / "received.tsv"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        t, cid, placer = line.split("\t")
        out.append((float(t), cid, placer))
    return out


# ---- --sender-only ------------------------------------------------------------

async def run_sender(port: int, rows: list[Delivery]) -> dict:
    """MLLPSender.deliver for every row, one after the other."""
    sender = MLLPSender(procs.HOST, port, ack_timeout=10)
    latencies, errors = [], 0
    clock = time.perf_counter
    started = clock()
    for row in rows:
        t = clock()
        result = await sender.deliver(row)
        latencies.append(clock() - t)
        errors += result.outcome != "sent"
    finished = clock()
    await sender.close()
    return _summary(len(rows), errors, started, finished, latencies)


async def run_bare(port: int, rows: list[Delivery]) -> dict:
    """The baseline: asyncio streams, write + readuntil + slice MSA, nothing else."""
    reader, writer = await asyncio.open_connection(procs.HOST, port, limit=2 ** 20)
    latencies, errors = [], 0
    clock = time.perf_counter
    started = clock()
    for row in rows:
        t = clock()
        writer.write(frame(row.payload))
        ack = await reader.readuntil(b"\x1c\r")
        code, acked = parse_msa(ack[1:-2])
        latencies.append(clock() - t)
        errors += code != b"AA" or acked.decode() != row.control_id
    finished = clock()
    writer.close()
    await writer.wait_closed()
    return _summary(len(rows), errors, started, finished, latencies)


def _trial(kind: str, args, run: Callable, rows: list[Delivery], server: str = "canned") -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-outbound-{kind}-") as d, \
            procs.running(server, Path(d)) as receiver:
        if args.warmup:
            warm = deliveries(args.warmup, "WARM")
            aio.run(run(receiver.port, warm), use_uvloop=args.event_loop == "uvloop")
        return aio.run(run(receiver.port, rows), use_uvloop=args.event_loop == "uvloop")


def sender_only(args) -> dict[str, list[dict]]:
    rows = deliveries(args.messages, "OUT")
    trials: dict[str, list[dict]] = {"bare": [], "sender": []}
    for r in range(args.rounds):
        for kind, run in (("bare", run_bare), ("sender", run_sender)):
            res = _trial(kind, args, run, rows)
            trials[kind].append(res)
            print(f"round {r + 1} {kind:7} {res['msgs_per_s']:>7,} msg/s  p50 {res['p50_ms']} ms  "
                  f"p99 {res['p99_ms']} ms  errors {res['errors']}", file=sys.stderr, flush=True)
    return trials


# ---- --queue ------------------------------------------------------------------

def queue_config(data_dir: Path, receiver_port: int, batch: int, synchronous: str = "FULL"):
    """An EngineConfig with one MLLP destination `bench` (the channel's listener is never started)."""
    from engine.config import load_config
    path = data_dir / "bench-queue.yaml"
    path.write_text(f"""
data_dir: {data_dir}
store: {{url: "sqlite:///{data_dir}/engine.db", synchronous: {synchronous}}}
channels:
  - name: bench
    source: {{type: mllp, host: 127.0.0.1, port: {procs.free_port()}}}
    destinations:
      - {{name: bench, type: mllp, host: 127.0.0.1, port: {receiver_port}, ack_timeout_seconds: 10}}
outbound: {{batch_size: {batch}}}
schedules: {{enabled: false, retry_pump_seconds: 3600}}
""")
    return load_config(path)


def _enqueue(conn: sqlite3.Connection, prefix: str, n: int) -> None:
    """n ORM^O01 rows for destination `bench`, MSH-10 = prefix + 7 digits (the caller owns the transaction)."""
    from engine.outbound import Outbound, enqueue
    for i in range(n):
        cid = f"{prefix}{i:07d}"
        enqueue(conn, Outbound("bench", "ORM^O01", orm_o01(cid), control_id=cid))


async def run_queue(config, n: int, warmup: int, prefix: str) -> dict:
    """Warm up on `warmup` rows, enqueue n rows in one writer transaction, then time the delivery
    service draining them: from its wake-up to the commit that records the last one `sent`."""
    from engine.delivery import DeliveryService
    from engine.group_commit import GroupCommitter
    from engine.store import Journal, WriterTask
    journal = Journal(config.store_location, config.store.synchronous, config.store.duplicate_window_hours)
    committer = GroupCommitter(journal.write, config.store.group_commit_max)
    committer.start(asyncio.get_running_loop())
    target = {"count": 0, "event": asyncio.Event(), "at": 0.0}
    service: DeliveryService

    def reached(_future) -> None:      # the outcome transaction has committed
        if service.delivered >= target["count"] and not target["event"].is_set():
            target["at"] = time.perf_counter()
            target["event"].set()

    def submit(task: WriterTask) -> asyncio.Future:   # what the daemon passes, watched
        future = committer.submit(task, background=True)
        if task.name.startswith("outcomes"):
            future.add_done_callback(reached)
        return future

    async def drain(count: int, timeout: float) -> float:
        target.update(count=service.delivered + count, at=0.0)
        target["event"].clear()
        service.wake()
        await asyncio.wait_for(target["event"].wait(), timeout)
        return target["at"]

    service = DeliveryService(config, submit)
    await service.start()
    try:
        if warmup:
            await committer.submit(WriterTask("enqueue warm-up", lambda c: _enqueue(c, "WARM", warmup)))
            await drain(warmup, 120)
        await committer.submit(WriterTask("enqueue", lambda c: _enqueue(c, prefix, n)))   # one transaction
        batches, write_s = committer.batches, committer.write_seconds
        started = time.perf_counter()
        finished = await drain(n, 600)
        batches, write_s = committer.batches - batches, committer.write_seconds - write_s
    finally:
        await service.stop()
        await committer.close()
    try:
        rows = journal.conn.execute("SELECT control_id, status, attempts FROM outbound WHERE control_id LIKE ? "
                                    "ORDER BY id", (prefix + "%",)).fetchall()
    finally:
        journal.close()
    seconds = finished - started
    return {"messages": n, "seconds": round(seconds, 3), "msgs_per_s": round(n / seconds),
            "errors": sum(1 for r in rows if r["status"] != "sent" or r["attempts"] != 1) + n - len(rows),
            "writer_transactions": batches, "writer_ms_per_transaction": round(write_s / batches * 1000, 3),
            "writer_busy_share": round(write_s / seconds, 3), "control_ids": [r["control_id"] for r in rows]}


def queue_trial(args, prefix: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-outbound-queue-") as d:
        data = Path(d)
        with procs.running("recorder", data) as receiver:
            config = queue_config(data, receiver.port, args.batch, args.synchronous)
            fsync_ms = commit_probe(data)
            res = aio.run(run_queue(config, args.messages, args.warmup, prefix),
                          use_uvloop=args.event_loop == "uvloop")
        got = [cid for _, cid, _ in read_records(data) if cid.startswith(prefix)]
    expected = res.pop("control_ids")
    res["received"] = len(got)
    res["commit_fsync_ms"] = fsync_ms
    res["received_once_in_id_order"] = got == expected and len(expected) == args.messages
    res["errors"] += 0 if res["received_once_in_id_order"] else 1
    return res


def queue_mode(args) -> dict[str, list[dict]]:
    """Interleaved rounds: sender alone, then queue -> delivery service -> sender, same receiver."""
    trials: dict[str, list[dict]] = {"sender": [], "queue": []}
    for r in range(args.rounds):
        res = _trial("sender", args, run_sender, deliveries(args.messages, "OUT"), server="recorder")
        trials["sender"].append(res)
        print(f"round {r + 1} sender  {res['msgs_per_s']:>7,} msg/s  p50 {res['p50_ms']} ms  "
              f"p99 {res['p99_ms']} ms  errors {res['errors']}", file=sys.stderr, flush=True)
        res = queue_trial(args, f"Q{r}")
        trials["queue"].append(res)
        print(f"round {r + 1} queue   {res['msgs_per_s']:>7,} msg/s  {res['writer_transactions']} writer "
              f"transactions, {res['writer_ms_per_transaction']} ms each, writer busy "
              f"{res['writer_busy_share']:.0%} (one-row commit {res['commit_fsync_ms']} ms); all sent once: "
              f"{res['errors'] == 0}; receiver got "
              f"{res['received']:,}, once each in id order: {res['received_once_in_id_order']}",
              file=sys.stderr, flush=True)
    return trials


# ---- --loop -------------------------------------------------------------------

LOOP_CONFIG = """\
# bench/bench_outbound.py --loop: the shipped engine with one inbound MLLP channel and one MLLP destination.
data_dir: ${{ENGINE_DATA_DIR}}
store:
  url: sqlite:///${{ENGINE_DATA_DIR}}/engine.db
  synchronous: FULL
logging: {{level: INFO, format: json, file: "${{ENGINE_DATA_DIR}}/logs/engine.log"}}
web: {{enabled: false}}
processing: {{isolation: process}}
channels:
  - name: ehr_inbound
    source:
      type: mllp
      host: 127.0.0.1
      port: ${{MLLP_PORT}}
    transformer: {{mappings: {repo}/mappings}}
    destinations:
      - {{name: referring_ehr, type: mllp, host: 127.0.0.1, port: {receiver_port}, ack_timeout_seconds: 10,
          receiving_application: REFERRING_EHR, receiving_facility: MAPLE_FP}}
outbound:
  templates: {repo}/mappings/outbound
  rules:
    - name: appointment_to_referrer
      on: [appointment.booked, appointment.rescheduled, appointment.modified, appointment.canceled,
           appointment.no_show, appointment.completed]
      origin: hl7
      send: siu_notification
      to: referring_ehr
outreach: {{templates: {repo}/mappings/outreach}}
"""

SAMPLES = REPO_ROOT / "sample_messages"


def _sample(name: str) -> bytes:
    text = (SAMPLES / name).read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    return b"\r".join(s for s in text.split(b"\r") if s.strip()) + b"\r"


def loop_messages(k: int, tag: str) -> tuple[list[bytes], list[bytes], list[str]]:
    """K ORM^O01 referrals and K SIU^S12 bookings, one per referral: placer order number (ORC-2,
    OBR-2, SCH-26), patient MRN, appointment ids and MSH-10 rewritten per referral."""
    orm, siu = _sample("ORM_O01_v2.5.1_bench25.hl7"), _sample("SIU_S12_v2.5.1.hl7")
    for template, old in ((orm, b"|MFP250304091215481|"), (siu, b"|SCH250305102233017|")):
        assert old in template and b"RF250304-0481" in template and b"10483726" in template, "sample changed"
    orms, sius, placers = [], [], []
    for i in range(k):
        placer = f"{tag}{i:06d}"
        mrn = f"9{i:07d}".encode()
        orms.append(orm.replace(b"|MFP250304091215481|", f"|O{placer}|".encode())
                    .replace(b"RF250304-0481", placer.encode()).replace(b"10483726", mrn))
        sius.append(siu.replace(b"|SCH250305102233017|", f"|S{placer}|".encode())
                    .replace(b"RF250304-0481", placer.encode()).replace(b"10483726", mrn)
                    .replace(b"PA250305-0481", f"PA{placer}".encode()).replace(b"88120455", f"F{placer}".encode()))
        placers.append(placer)
    return orms, sius, placers


async def feed(port: int, messages: list[bytes], rate: float | None, connections: int,
               timeout: float = 600.0) -> dict:
    """Send messages over `connections` MLLP connections, window 1 each.

    rate None: closed loop (each connection sends its next message when the ACK came). Else open
    loop: message i is due at t0 + i/rate and goes out on the first free connection; its latency
    counts from when it was due, so waiting for a free connection is counted.
    Returns per-message due and ACK times (time.monotonic) and the count of bad ACKs."""
    n = len(messages)
    due, acked = [0.0] * n, [0.0] * n
    bad = 0
    ready: asyncio.Queue = asyncio.Queue()
    links = [await asyncio.open_connection(procs.HOST, port, limit=2 ** 20) for _ in range(connections)]

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal bad
        while (i := await ready.get()) is not None:
            if rate is None:
                due[i] = time.monotonic()
            writer.write(frame(messages[i]))
            ack = await reader.readuntil(b"\x1c\r")
            acked[i] = time.monotonic()
            code, cid = parse_msa(ack[1:-2])
            bad += code not in (b"AA", b"CA") or cid != msh10(messages[i])
        writer.close()

    workers = [asyncio.create_task(connection(r, w)) for r, w in links]
    if rate is None:
        for i in range(n):
            ready.put_nowait(i)
    else:
        t0 = time.monotonic() + 0.01
        for i in range(n):
            due[i] = t0 + i / rate
            wait = due[i] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            ready.put_nowait(i)
    for _ in workers:
        ready.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*workers), timeout)
    return {"due": due, "acked": acked, "bad_acks": bad}


def _wait_db(db: Path, sql: str, predicate: Callable, timeout: float, what: str):
    """Poll the engine's store (read-only) until predicate(row) holds; returns the row."""
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                row = conn.execute(sql).fetchone()
            finally:
                conn.close()
            if predicate(row):
                return row
        except sqlite3.OperationalError:   # not created yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what} (last: {row})")


@contextmanager
def engine_running(data_dir: Path, receiver_port: int) -> Iterator[procs.Server]:
    config = data_dir / "bench-loop.yaml"
    config.write_text(LOOP_CONFIG.format(repo=REPO_ROOT, receiver_port=receiver_port))
    before = os.environ.get("BENCH_ENGINE_CONFIG")
    os.environ["BENCH_ENGINE_CONFIG"] = str(config)      # procs' engine launcher reads it
    try:
        with procs.running("engine", data_dir, ready_timeout=90) as engine:
            yield engine
    finally:
        if before is None:
            os.environ.pop("BENCH_ENGINE_CONFIG", None)
        else:
            os.environ["BENCH_ENGINE_CONFIG"] = before


def journal_writes(log: Path) -> dict:
    """The engine's own counters, logged at shutdown ('journal writes'), and its warnings/errors."""
    out: dict = {"log_warnings": 0, "warning_events": []}
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("WARNING", "ERROR", "CRITICAL"):
                out["log_warnings"] += 1
                event = entry.get("event")
                if entry.get("exception"):    # name the cause: the exception's last line
                    event = f"{event}: {entry['exception'].strip().splitlines()[-1]}"
                if event not in out["warning_events"]:
                    out["warning_events"].append(event)
            if entry.get("event") == "journal writes":
                out.update({k: entry.get(k) for k in ("transactions", "messages", "messages_per_transaction",
                                                      "ms_per_transaction")})
    return out


def stage_times(db: Path) -> dict[str, tuple[float, float]]:
    """Per placer order number: when the engine received its SIU (messages.received_at, at intake)
    and when the rule queued its notification (outbound.created_at, in the transaction applying the
    SIU), as time.monotonic() values (the store keeps UTC wall-clock times)."""
    from datetime import datetime
    offset = time.time() - time.monotonic()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT r.placer_order_number, m.received_at, o.created_at FROM outbound o "
                            "JOIN referrals r ON r.id=o.referral_id JOIN messages m ON m.id=o.source_message_id")
        return {placer: (datetime.fromisoformat(received).timestamp() - offset,
                         datetime.fromisoformat(queued).timestamp() - offset) for placer, received, queued in rows}
    finally:
        conn.close()


def loop_trial(args, tag: str) -> dict:
    k = max(1, int(args.rate * args.seconds))
    orms, sius, placers = loop_messages(k, tag)
    use_uvloop = args.event_loop == "uvloop"
    with tempfile.TemporaryDirectory(prefix="bench-outbound-loop-") as d:
        receiver_dir, engine_dir = Path(d) / "receiver", Path(d) / "engine"
        receiver_dir.mkdir()
        engine_dir.mkdir()
        with procs.running("recorder", receiver_dir) as receiver:
            with engine_running(engine_dir, receiver.port) as engine:
                db = engine_dir / "engine.db"
                loaded = aio.run(feed(engine.port, orms, None, 4), use_uvloop=use_uvloop)
                _wait_db(db, "SELECT (SELECT count(*) FROM referrals), (SELECT count(*) FROM messages "
                             "WHERE status='received')", lambda r: r[0] >= k and r[1] == 0, 300,
                         f"{k} referrals processed")
                fsync_ms = commit_probe(engine_dir)
                sent = aio.run(feed(engine.port, sius, args.rate, args.connections), use_uvloop=use_uvloop)
                sent_end = time.monotonic()
                counts = _wait_db(db, "SELECT count(*), sum(status='sent'), sum(attempts>1) FROM outbound",
                                  lambda r: r[1] is not None and r[1] >= k, 120, f"{k} notifications sent")
            engine_exit = engine.exit_code
        records = read_records(receiver_dir)
        writes = journal_writes(engine_dir / "logs" / "engine.log")
        stages = stage_times(engine_dir / "engine.db")
    arrival: dict[str, float] = {}
    duplicates = 0
    for t, _cid, placer in records:
        if placer in arrival:
            duplicates += 1
        else:
            arrival.setdefault(placer, t)
    due, acked = sent["due"], sent["acked"]
    loop_lat = [arrival[p] - due[i] for i, p in enumerate(placers) if p in arrival]
    after_ack = [arrival[p] - acked[i] for i, p in enumerate(placers) if p in arrival]
    ack_lat = [acked[i] - due[i] for i in range(k)]
    span = due[-1] - due[0] if k > 1 else 0.0
    # where each SIU's time went: sent -> received by the engine -> notification queued -> arrived
    staged = [(i, p) for i, p in enumerate(placers) if p in stages and p in arrival]
    breakdown = {
        "1 due -> engine intake": _percentiles([stages[p][0] - due[i] for i, p in staged]),
        "2 intake -> ACK at sender": _percentiles([acked[i] - stages[p][0] for i, p in staged]),
        "3 intake -> notification queued": _percentiles([stages[p][1] - stages[p][0] for i, p in staged]),
        "4 queued -> arrival at receiver": _percentiles([arrival[p] - stages[p][1] for i, p in staged]),
    }
    return {"referrals": k, "offered_rate": args.rate, "connections": args.connections,
            "send_seconds": round(span, 2), "achieved_rate": round((k - 1) / span) if span else None,
            "orm_bad_acks": loaded["bad_acks"], "siu_bad_acks": sent["bad_acks"],
            "matched": len(loop_lat), "duplicates": duplicates, "outbound_rows": counts[0],
            "outbound_sent": counts[1], "outbound_retried": counts[2] or 0,
            "drain_after_last_send_s": round(max(arrival.values(), default=sent_end) - due[-1], 3),
            "engine_exit": engine_exit, "commit_fsync_ms": fsync_ms, "engine_journal": writes,
            "ack": _percentiles(ack_lat), "notification": _percentiles(loop_lat),
            "after_ack": _percentiles(after_ack), "stages": breakdown}


def loop_mode(args) -> dict[str, list[dict]]:
    trials: dict[str, list[dict]] = {"loop": []}
    for r in range(args.rounds):
        res = loop_trial(args, f"BP{r}")
        trials["loop"].append(res)
        a, n = res["ack"], res["notification"]
        print(f"round {r + 1} {res['referrals']:,} SIU at {res['offered_rate']:g}/s ({res['achieved_rate']}/s "
              f"achieved): ACK p50 {a['p50_ms']} p99 {a['p99_ms']} max {a['max_ms']} ms | notification p50 "
              f"{n['p50_ms']} p95 {n['p95_ms']} p99 {n['p99_ms']} max {n['max_ms']} ms | matched "
              f"{res['matched']:,}/{res['referrals']:,}, duplicates {res['duplicates']}, bad ACKs "
              f"{res['orm_bad_acks'] + res['siu_bad_acks']}, rows retried {res['outbound_retried']}, engine exit "
              f"{res['engine_exit']} | one-row commit {res['commit_fsync_ms']} ms | "
              f"engine writer {res['engine_journal']}", file=sys.stderr, flush=True)
    return trials


MODES: dict[str, Callable[[argparse.Namespace], dict[str, list[dict]]]] = {
    "sender_only": sender_only, "queue": queue_mode, "loop": loop_mode}


def _ms(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def table(trials: dict[str, list[dict]], baseline: str = "bare") -> str:
    base = statistics.median(t["msgs_per_s"] for t in trials[baseline])
    lines = [f"| path | msgs/s (median) | p50 ms | p99 ms | msgs/s per round | errors | vs {baseline} |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for label, runs in trials.items():
        rate = statistics.median(t["msgs_per_s"] for t in runs)
        per_round = " / ".join(f"{t['msgs_per_s']:,}" for t in runs)
        p50 = statistics.median(t["p50_ms"] for t in runs) if "p50_ms" in runs[0] else None
        p99 = statistics.median(t["p99_ms"] for t in runs) if "p99_ms" in runs[0] else None
        lines.append(f"| {label} | {rate:,.0f} | {_ms(p50)} | {_ms(p99)} | {per_round} | "
                     f"{sum(t['errors'] for t in runs)} | {rate / base:.2f}× |")
    if baseline == "sender":     # the queue's ratio per round: the two ran side by side
        ratios = [q["msgs_per_s"] / s["msgs_per_s"] for s, q in zip(trials["sender"], trials["queue"])]
        lines += ["", "queue / sender per round: " + " / ".join(f"{x:.2f}×" for x in ratios)]
    return "\n".join(lines)


def loop_table(trials: dict[str, list[dict]]) -> str:
    lines = ["| round | SIU sent | offered / achieved msg/s | path | p50 ms | p95 ms | p99 ms | max ms | "
             "matched | duplicates |", "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r, t in enumerate(trials["loop"], 1):
        for label, key in (("inbound ACK (baseline)", "ack"), ("SIU notification at receiver", "notification"),
                           ("  of which after the ACK", "after_ack")):
            p = t[key]
            matched = f"{t['matched']:,}/{t['referrals']:,}" if key == "notification" else ""
            dup = str(t["duplicates"]) if key == "notification" else ""
            lines.append(f"| {r} | {t['referrals']:,} | {t['offered_rate']:g} / {t['achieved_rate']} | {label} | "
                         f"{p['p50_ms']} | {p['p95_ms']} | {p['p99_ms']} | {p['max_ms']} | {matched} | {dup} |")
    lines += ["", "Where a SIU's time goes (engine timestamps: intake = frame read, queued = the writer "
                  "transaction applying the SIU):", "",
              "| round | stage | p50 ms | p95 ms | p99 ms | max ms |", "|---|---|---:|---:|---:|---:|"]
    for r, t in enumerate(trials["loop"], 1):
        for stage, p in t["stages"].items():
            lines.append(f"| {r} | {stage} | {p['p50_ms']} | {p['p95_ms']} | {p['p99_ms']} | {p['max_ms']} |")
    lines += ["", "| round | one-row commit ms (disk now) | engine writer transactions | items per transaction | "
                  "ms per transaction | engine warnings |", "|---|---:|---:|---:|---:|---|"]
    for r, t in enumerate(trials["loop"], 1):
        j = t["engine_journal"]
        lines.append(f"| {r} | {t['commit_fsync_ms']} | {j.get('transactions')} | "
                     f"{j.get('messages_per_transaction')} | {j.get('ms_per_transaction')} | "
                     f"{'; '.join(j['warning_events']) or 'none'} |")
    worst = max(t["notification"]["p99_ms"] or 0 for t in trials["loop"])
    ok = all(t["matched"] == t["referrals"] and not t["duplicates"] for t in trials["loop"])
    verdict = "met" if worst <= 100 else "NOT met"
    lines += ["", f"worst round p99 notification {worst} ms (target ≤ 100 ms: {verdict}); "
                  f"all matched, none duplicated: {ok}"]
    return "\n".join(lines)


RENDER: dict[str, Callable[[dict], str]] = {
    "sender_only": table, "queue": lambda t: table(t, "sender"), "loop": loop_table}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--serve-recorder" in argv:         # the receiver process (see _recorder_launch)
        def record_arg(p: argparse.ArgumentParser) -> None:
            p.add_argument("--record", required=True, help="file written at exit: time, MSH-10, SCH-26.1")
        server_main("recording canned-ACK receiver", _make_recorder, record_arg,
                    [a for a in argv if a != "--serve-recorder"])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--sender-only", action="store_true", help="MLLPSender vs a bare asyncio loop")
    mode.add_argument("--queue", action="store_true", help="durable queue + delivery service vs MLLPSender alone")
    mode.add_argument("--loop", action="store_true", help="engine: SIU in -> SIU notification out, latency")
    p.add_argument("-n", "--messages", type=int, default=20_000, help="--sender-only/--queue: rows per trial")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1000, help="--sender-only/--queue: warm-up rows per trial")
    p.add_argument("--batch", type=int, default=64, help="--queue: outbound.batch_size (rows per claim)")
    p.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL",
                   help="--queue: store.synchronous (FULL, as shipped: an fsync per commit)")
    p.add_argument("--rate", type=float, default=200.0, help="--loop: offered SIU rate, msg/s (open loop)")
    p.add_argument("--seconds", type=float, default=30.0, help="--loop: send for this long (K = rate x seconds)")
    p.add_argument("-c", "--connections", type=int, default=1, help="--loop: inbound connections for the SIUs")
    p.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop",
                   help="event loop of the bench process (and of --queue's delivery service)")
    p.add_argument("--json", action="store_true", help="print the trials as JSON instead of a table")
    args = p.parse_args(argv)
    chosen = next(name for name in MODES if getattr(args, name) is True)
    trials = MODES[chosen](args)
    if args.json:
        print(json.dumps(trials, indent=2))
        return
    what = (f"K = {args.rate:g} x {args.seconds:g} s referrals, {args.connections} connection(s)" if chosen == "loop"
            else f"{args.messages:,} messages, window 1")
    print(f"{chosen.replace('_', '-')}: {what}, {args.rounds} rounds, {aio.loop_name(args.event_loop == 'uvloop')}, "
          f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(RENDER[chosen](trials))


if __name__ == "__main__":
    main()
