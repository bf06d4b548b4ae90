"""Dashboard page and API response times over a big store: 1,000,000 messages and 100,000 referrals.

The store is made with the engine's own migrations (Journal) and bulk INSERTs shaped like real
traffic: 60 days of messages (ORM/SIU/ADT/ORU/MDM, a rare REF^I12, 1 % errors, a few waiting),
one patient per referral (so a patient id or family name finds a handful of messages), referrals
spread over statuses, specialties, urgencies, owners, payers and ages, with status history, and an
outbound queue with some dead letters. Then the real web process (engine.web.server: uvicorn in its
own process, as the daemon runs it) is started and each page / API call is requested `--rounds`
times over HTTP with a logged-in session (every request pays its auth check and its audit-row
commit), with random parameters; p50 / p95 per page are printed as a Markdown table.

    .venv/bin/python bench/bench_web.py [--messages 1000000] [--referrals 100000] [--rounds 60]
                                        [--store PATH  (reuse a store built earlier)]
Target (issue 6): list and search pages p95 <= 200 ms. SQLite only: the build writes the file directly.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from engine.config import load_config
from engine.store import Journal

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "bench password 123"
TYPES = (["ORM^O01"] * 30 + ["SIU^S12"] * 25 + ["SIU^S14"] * 10 + ["ADT^A04"] * 15 + ["ORU^R01"] * 10 +
         ["MDM^T02"] * 9 + ["ADT^A08"] * 1)
SPECIALTIES = ["cardiology", "orthopedics", "dermatology", "gastroenterology", "neurology", "oncology",
               "endocrinology", "pulmonology", "urology", "rheumatology", "ophthalmology", "ent"]
STATUSES = (["closed"] * 40 + ["completed"] * 15 + ["scheduled"] * 15 + ["ready"] * 8 + ["incomplete"] * 6 +
            ["needs_review"] * 4 + ["received"] * 3 + ["canceled"] * 5 + ["no_show"] * 2 + ["leaked"] * 2)
PAYERS = ["CASCADIA MUTUAL", "NORTHWIND HEALTH", "MEDICARE", "MEDICAID", "SELF PAY", "BLUE RIDGE PPO"]
FAMILIES = ["FAIRWEATHER", "OKONKWO", "LINDQVIST", "BARRETO", "NAKAMURA", "DELACROIX", "MBEKI", "HALVORSEN",
            "ABERNATHY", "QUISPE", "VASQUEZ", "OYELARAN", "KOWALSKI", "ACHTERBERG", "SORENSEN", "TRAN"]
RAW = ("MSH|^~\\&|EHR|FAC|REFHUB|RGH|{ts}||{type}|{cid}|P|2.5.1|||AL|NE\r"
       "PID|1||{mrn}^^^GENHOSP^MR||{family}^PAT^Q||19600101|F\rPV1|1|O\r")


def build(path: Path, messages: int, referrals: int) -> None:
    Journal(path).close()                   # the engine's own schema (all migrations)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    rnd = random.Random(7)
    now = datetime.now(timezone.utc)
    start = now - timedelta(days=60)
    step = timedelta(days=60) / messages
    conn.execute("BEGIN")
    for base in range(0, messages, 20_000):
        rows = []
        for i in range(base, min(base + 20_000, messages)):
            at = (start + step * i).isoformat(timespec="microseconds")
            mtype = "REF^I12" if i % 1000 == 999 else rnd.choice(TYPES)
            patient = rnd.randrange(referrals)
            mrn, cid = f"M{patient:09d}", f"C{i:010d}"
            roll = rnd.random()
            status = "error" if roll < 0.01 else "filtered" if roll < 0.03 else \
                "received" if i > messages - 50 else "transformed"
            raw = RAW.format(ts=at[:19].replace("-", "").replace(":", "").replace("T", ""), type=mtype, cid=cid,
                             mrn=mrn, family=FAMILIES[patient % len(FAMILIES)]).encode()
            rows.append((i + 1, "ehr_inbound", at, "127.0.0.1:5000", cid, "EHR", mtype, "2.5.1", "UTF-8", mrn, raw,
                         f"h{i}", status, "CA", "mapping failed: no PV1-3" if status == "error" else None, at))
        conn.executemany("INSERT INTO messages (id, channel, received_at, peer, control_id, sender, message_type, "
                         "version, charset, patient_id, raw, content_hash, status, ack_code, error, updated_at) "
                         "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    ref_start = now - timedelta(days=365)
    for base in range(0, referrals, 10_000):
        rows, ids, hist = [], [], []
        for i in range(base, min(base + 10_000, referrals)):
            created_dt = ref_start + timedelta(minutes=rnd.randrange(365 * 24 * 60))
            created = created_dt.isoformat(timespec="seconds")
            status = rnd.choice(STATUSES)
            rows.append((i + 1, status, rnd.choice(["routine"] * 8 + ["urgent"] * 2 + ["stat"]),
                         rnd.choice(SPECIALTIES), f"M{i:09d}", f"{FAMILIES[i % len(FAMILIES)]}{i % 997}", "PAT",
                         rnd.choice(PAYERS), f"owner{rnd.randrange(40)}", created, created))
            ids.append((i + 1, f"M{i:09d}", "GENHOSP", "MR"))
            hist.append((i + 1, None, "received", created, "message", str(i + 1)))
            if status in ("scheduled", "completed", "closed", "no_show"):
                booked = created_dt + timedelta(hours=rnd.randrange(2, 400))
                hist.append((i + 1, "ready", "scheduled", booked.isoformat(timespec="seconds"), "message", None))
                if status in ("completed", "closed", "no_show"):
                    seen = booked + timedelta(days=rnd.randrange(1, 30))
                    hist.append((i + 1, "scheduled", "no_show" if status == "no_show" else "completed",
                                 seen.isoformat(timespec="seconds"), "message", None))
                    if status == "closed":
                        hist.append((i + 1, "completed", "closed",
                                     (seen + timedelta(days=2)).isoformat(timespec="seconds"), "message", None))
        conn.executemany("INSERT INTO referrals (id, status, urgency, specialty, patient_mrn, patient_family_name, "
                         "patient_given_name, payer, owner, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                         rows)
        conn.executemany("INSERT INTO referral_identifiers (referral_id, identifier, authority, type) "
                         "VALUES (?,?,?,?)", ids)
        conn.executemany("INSERT INTO status_history (referral_id, from_status, to_status, at, cause_kind, cause_id)"
                         " VALUES (?,?,?,?,?,?)", hist)
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name='outbound'").fetchone():
        rows = []
        for i in range(50_000):
            status = "dead" if i % 500 == 0 else "error" if i % 97 == 0 else "sent"
            at = (now - timedelta(minutes=50_000 - i)).isoformat(timespec="microseconds")
            rows.append((rnd.choice(["referring_ehr", "specialist_ehr", "fax_outbox"]), "referring_ehr",
                         rnd.randrange(1, referrals), rnd.randrange(1, messages), "SIU^S12", f"O{i}", b"MSH|",
                         status, 1 if status == "sent" else 5, at, "AE: refused" if status != "sent" else None, at, at))
        conn.executemany("INSERT INTO outbound (destination, order_key, referral_id, source_message_id, message_type, "
                         "control_id, payload, status, attempts, next_attempt_at, last_error, created_at, updated_at) "
                         "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def cases(rnd: random.Random, messages: int, referrals: int) -> dict:
    now = datetime.now(timezone.utc)
    day = lambda: (now - timedelta(days=rnd.randrange(1, 59))).strftime("%Y-%m-%dT%H:%M")   # noqa: E731
    return {
        "messages: newest 50": lambda: "/messages",
        "messages: a deep page (before=random id)": lambda: f"/messages?before={rnd.randrange(1000, messages)}",
        "messages: by control id": lambda: f"/messages?control_id=C{rnd.randrange(messages):010d}",
        "messages: by patient id": lambda: f"/messages?patient_id=M{rnd.randrange(referrals):09d}",
        "messages: by family name": lambda: f"/messages?name={FAMILIES[rnd.randrange(16)]}{rnd.randrange(997)}",
        "messages: type ORM (common)": lambda: "/messages?message_type=ORM",
        "messages: type REF^I12 (rare, 0.1 %)": lambda: "/messages?message_type=REF%5EI12",
        "messages: status error": lambda: "/messages?status=error",
        "messages: type + 1-day window": lambda: (lambda d: f"/messages?message_type=SIU&since={d}&until="
                                                  f"{d[:11]}23:59")(day()),
        "message: one, raw + breakdown": lambda: f"/messages/{rnd.randrange(1, messages)}",
        "worklist: default (oldest 50)": lambda: "/referrals",
        "worklist: status x specialty": lambda: f"/referrals?status={rnd.choice(['ready', 'incomplete'])}"
                                                 f"&specialty={rnd.choice(SPECIALTIES)}",
        "worklist: owner + status": lambda: f"/referrals?owner=owner{rnd.randrange(40)}&status=scheduled",
        "worklist: payer": lambda: f"/referrals?payer={rnd.choice(PAYERS).replace(' ', '+')}",
        "worklist: ready, older than 30 d": lambda: "/referrals?status=ready&min_age=30",
        "referral: one timeline": lambda: f"/referrals/{rnd.randrange(1, referrals)}",
        "channels": lambda: "/channels",
        "outbound queues": lambda: "/outbound",
        "KPIs: 30 days": lambda: "/kpis",
        "KPIs: 365 days": lambda: f"/kpis?start={(now - timedelta(days=364)).date()}",
        "API: messages by control id": lambda: f"/api/messages?control_id=C{rnd.randrange(messages):010d}",
        "API: worklist ready": lambda: "/api/referrals?status=ready",
        "metrics (loopback scrape)": lambda: "/metrics",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--referrals", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--store", type=Path, default=None, help="folder of a store built before (skips the build)")
    ap.add_argument("--port", type=int, default=18575)
    args = ap.parse_args(argv)
    data = args.store or Path(tempfile.mkdtemp(prefix="bench-web-"))
    config = load_config(REPO / "config.yaml", env={"ENGINE_DATA_DIR": str(data), "WEB_PORT": str(args.port)})
    if not isinstance(config.store_location, Path):    # a postgresql:// URL: the bulk build is SQLite's
        ap.error(f"config.yaml's store.url {config.store.url!r} is not a SQLite file; this bench builds one")
    if args.store is None or not config.store_location.exists():
        started = time.perf_counter()
        build(config.store_location, args.messages, args.referrals)
        print(f"Store: {args.messages:,} messages, {args.referrals:,} referrals, built in "
              f"{time.perf_counter() - started:.0f} s ({config.store_location.stat().st_size / 2**20:,.0f} MiB) "
              f"in {data}\n")
    from engine.web import users
    conn = sqlite3.connect(config.store_location, isolation_level=None)
    if users.by_name(conn, "bench") is None:
        users.add(conn, "bench", "admin", PASSWORD)
    conn.close()
    from engine.web.server import serve
    proc = multiprocessing.get_context("spawn").Process(target=serve, args=(config, os.getpid()), daemon=True)
    proc.start()
    base = f"http://127.0.0.1:{args.port}"
    try:
        client = httpx.Client(base_url=base, timeout=30)
        for _ in range(200):
            try:
                client.get("/health")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        form = client.get("/login").text
        token = form.split('name="csrf_token" value="')[1].split('"')[0]
        r = client.post("/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token})
        assert r.status_code in (200, 303), r.text
        rnd = random.Random(3)
        print(f"Command: `.venv/bin/python bench/bench_web.py {' '.join(argv or sys.argv[1:])}`; "
              f"{args.rounds} requests per row over HTTP (uvicorn, one worker process), session login, "
              f"audit row per request.\n")
        print("| page | p50 ms | p95 ms | max ms | rows on page |\n|---|---:|---:|---:|---:|")
        for label, make in cases(rnd, args.messages, args.referrals).items():
            client.get(make())       # warm the page cache as a running dashboard would be
            times, size = [], 0
            for _ in range(args.rounds):
                url = make()
                t = time.perf_counter()
                resp = client.get(url)
                times.append((time.perf_counter() - t) * 1000)
                assert resp.status_code == 200, (url, resp.status_code, resp.text[:300])
                size = resp.text.count("<tr") - 1 if "<tr" in resp.text else len(resp.content)
            times.sort()
            p95 = times[max(0, int(len(times) * 0.95) - 1)]
            print(f"| {label} | {statistics.median(times):.1f} | {p95:.1f} | {times[-1]:.1f} | {size} |", flush=True)
    finally:
        proc.terminate()
        proc.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
