"""Referral pipeline throughput on one core, and worklist / patient queries over 1,000,000 referrals.

Part 1 — what the post-ACK path costs per message, in one process on one CPU:
`decide_batch` (decode, parse, filters, mappings -> Mapped) then `Journal.write`
(the writer applies each Mapped to its referral: match, create/update, status
history, one transaction per batch). N distinct referral orders (ORM^O01, 25
segments) create N referrals; then one SIU^S12 per order books an appointment on
its matched referral. The messages are journaled first (not timed).

Part 2 — a store with `--referrals` referrals (default 1,000,000), generated with
plain INSERTs (statuses, specialties, urgencies, owners and ages spread like a
real worklist; one MRN per referral), then p50/p95 of the queries coordinators
and analysts run: the worklist by status × specialty (oldest first), by status
alone, by owner, a patient lookup by identifier, and one referral's timeline.

    .venv/bin/python bench/bench_referrals.py [--messages 2000] [--referrals 1000000] [--cpu 0]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import load_config
from engine.intake import take_frame
from engine.hl7v2 import parse
from engine.processor import decide_batch, map_message
from engine.referral_store import ReferralStore
from engine.store import Journal

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_messages"
PLACER, MRN = "RF250304-0481", "10483726"


def wire(name: str) -> str:
    return (SAMPLES / name).read_text().replace("\r\n", "\r").replace("\n", "\r")


def story(n: int) -> tuple[list[bytes], list[bytes]]:
    """n orders and n bookings, each pair with its own placer order number, MRN and control ids."""
    orm, siu = wire("ORM_O01_v2.5.1_bench25.hl7"), wire("SIU_S12_v2.5.1.hl7")
    orders, bookings = [], []
    for i in range(n):
        placer, mrn = f"RFB{i:07d}", f"B{i:08d}"
        orders.append(_with_control_id(orm.replace(PLACER, placer).replace(MRN, mrn), f"BO{i}").encode())
        bookings.append(_with_control_id(siu.replace(PLACER, placer).replace(MRN, mrn), f"BS{i}").encode())
    return orders, bookings


def _with_control_id(message: str, control_id: str) -> str:
    msh, rest = message.split("\r", 1)
    fields = msh.split("|")
    fields[9] = control_id
    return "|".join(fields) + "\r" + rest


def pipeline(messages: int, batch: int) -> list[tuple[str, float, int]]:
    config = load_config(REPO / "config.yaml", env={"ENGINE_DATA_DIR": tempfile.mkdtemp(prefix="bench-ref-")})
    journal = Journal(config.store_location, referral_rules=config.referrals)
    reader = Journal(config.store_location, readonly=True)
    import simple_icd_10_cm  # noqa: F401  loaded once at start-up by the daemon too
    orders, bookings = story(messages)
    map_message(config.channel("ehr_inbound"), parse(orders[0].decode()), "ORM^O01")   # load the mappings once
    results = []
    for label, raws in (("ORM^O01 -> new referral", orders), ("SIU^S12 -> booked on its referral", bookings)):
        journal.write([take_frame(raw, "ehr_inbound", "127.0.0.1:1").messages() for raw in raws])
        started = time.perf_counter()
        done = 0
        while True:
            changes = decide_batch(reader, config, batch)
            if not changes:
                break
            journal.write([changes])
            done += len(changes)
        seconds = time.perf_counter() - started
        results.append((label, seconds, done))
    statuses = dict(journal.conn.execute("SELECT status, count(*) FROM referrals GROUP BY status").fetchall())
    assert statuses == {"scheduled": messages}, statuses
    return results


SPECIALTIES = ["cardiology", "orthopedics", "dermatology", "gastroenterology", "neurology", "oncology",
               "endocrinology", "pulmonology", "urology", "rheumatology", "ophthalmology", "ent"]
STATUSES = (["closed"] * 40 + ["completed"] * 15 + ["scheduled"] * 15 + ["ready"] * 8 + ["incomplete"] * 6 +
            ["needs_review"] * 4 + ["received"] * 3 + ["canceled"] * 5 + ["no_show"] * 2 + ["leaked"] * 2)


def fill(store_path: Path, referrals: int) -> None:
    journal = Journal(store_path)
    conn = journal.conn
    rnd = random.Random(1)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    conn.execute("BEGIN")
    for base in range(0, referrals, 10_000):
        rows, ids, hist = [], [], []
        for i in range(base, min(base + 10_000, referrals)):
            created = (start + timedelta(minutes=rnd.randrange(2 * 365 * 24 * 60))).isoformat()
            status = rnd.choice(STATUSES)
            rows.append((i + 1, status, rnd.choice(["routine"] * 8 + ["urgent"] * 2 + ["stat"]),
                         rnd.choice(SPECIALTIES), f"M{i:09d}", f"owner{rnd.randrange(40)}", created, created))
            ids.append((i + 1, f"M{i:09d}", "GENHOSP", "MR"))
            hist.append((i + 1, None, status, created, "message", str(i + 1)))
        conn.executemany("INSERT INTO referrals (id, status, urgency, specialty, patient_mrn, owner, created_at, "
                         "updated_at) VALUES (?,?,?,?,?,?,?,?)", rows)
        conn.executemany("INSERT INTO referral_identifiers (referral_id, identifier, authority, type) "
                         "VALUES (?,?,?,?)", ids)
        conn.executemany("INSERT INTO status_history (referral_id, from_status, to_status, at, cause_kind, cause_id)"
                         " VALUES (?,?,?,?,?,?)", hist)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    journal.close()


def queries(store_path: Path, referrals: int, rounds: int) -> list[tuple[str, float, float]]:
    reader = Journal(store_path, readonly=True)
    store = ReferralStore(reader.conn)
    rnd = random.Random(2)
    cases = {
        "worklist: status × specialty, oldest 50": lambda: store.search(
            status=rnd.choice(["ready", "incomplete", "scheduled"]), specialty=rnd.choice(SPECIALTIES), limit=50),
        "worklist: status, oldest 50": lambda: store.search(status=rnd.choice(["ready", "needs_review"]), limit=50),
        "worklist: owner's open referrals": lambda: store.search(owner=f"owner{rnd.randrange(40)}",
                                                                 status="scheduled", limit=50),
        "patient lookup by MRN": lambda: store.search(patient_id=f"M{rnd.randrange(referrals):09d}"),
        "one referral's timeline": lambda: store.timeline(rnd.randrange(1, referrals + 1)),
    }
    out = []
    for label, fn in cases.items():
        fn()   # warm the page cache the way a running dashboard would be
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out.append((label, statistics.median(times), times[int(len(times) * 0.95) - 1]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=200, help="messages per decide/apply round (the daemon's batch)")
    ap.add_argument("--referrals", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--cpu", type=int, default=None)
    args = ap.parse_args(argv)
    cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    print(f"Command: `.venv/bin/python bench/bench_referrals.py {' '.join(argv or sys.argv[1:])}` (pinned to CPU {cpu})\n")
    print("| pipeline (decide + apply, one core) | messages | seconds | messages/s |\n|---|---:|---:|---:|")
    for label, seconds, done in pipeline(args.messages, args.batch):
        print(f"| {label} | {done} | {seconds:.2f} | {done / seconds:,.0f} |")
    path = Path(tempfile.mkdtemp(prefix="bench-1m-")) / "engine.db"
    started = time.perf_counter()
    fill(path, args.referrals)
    print(f"\nStore with {args.referrals:,} referrals generated in {time.perf_counter() - started:.0f} s "
          f"({path.stat().st_size / 2**20:,.0f} MiB).\n")
    print("| query | p50 ms | p95 ms |\n|---|---:|---:|")
    for label, p50, p95 in queries(path, args.referrals, args.rounds):
        print(f"| {label} | {p50:.2f} | {p95:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
