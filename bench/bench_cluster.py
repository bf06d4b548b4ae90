"""Store backends and nodes (issue 7): SQLite against PostgreSQL on one node, and one against two nodes
sharing one PostgreSQL store behind HAProxy.

Setups (SETUPS), each measured with the referral processing on (the channel's transformer: mappings/):

* ``sqlite``: one engine, SQLite in its data folder, senders connect to it directly;
* ``postgresql``: one engine on a fresh PostgreSQL database, directly;
* ``pg-1-haproxy`` / ``pg-2-haproxy``: one / two engines on one fresh PostgreSQL database, senders
  through HAProxy (deploy/haproxy/engine-mllp.cfg as shipped). HAProxy is in front of both, so the
  node comparison pays the proxy hop on both sides; the config's unused server slots point at closed
  loopback ports and the trial starts only once HAProxy has marked them DOWN.

Workloads (WORKLOADS), each a trial of its own: a fresh database or data folder, engines started
fresh (bench/procs.py), stopped with SIGTERM at the end (exit codes reported):

* ``closed``: N messages, closed loop, C=16 connections, window 1 (bench/loadgen.py): ingest msgs/s
  and ACK latency; then the time from the first message sent until no message is left in status
  `received`, i.e. processing throughput (N / that time), and the drain rate after the last ACK.
* ``rate R``: open loop at R msg/s for --seconds (latency from each message's scheduled send time,
  no coordinated omission): ACK p50/p99, and the backlog still `received` at the last ACK (whether
  processing keeps up with R).

Every message is a **new referral**: the 25-segment ORM^O01 of bench/message.py with its own placer
order number and MRN (NewReferrals). loadgen's own messages differ in MSH-10 only, which would make
every message after the first update one referral of one patient, and one patient's messages are
processed in order by one node at a time: no parallelism to measure.

Rounds interleave the setups (for each round, for each workload: every setup in turn), so a noisy
shared machine hits them alike; the tables show per-setup medians and ratios, not promises. The
PostgreSQL server is one throwaway cluster (tests/pg.py; fsync and synchronous_commit on, as the
SQLite store is synchronous=FULL) on the same 2 cores as everything else.

    .venv/bin/python -m bench.bench_cluster [--rounds 3] [-n 3000] [--rates 300,1000] [--seconds 4]
        [--setups sqlite,postgresql,pg-1-haproxy,pg-2-haproxy] [--out FILE] [--json FILE]

A setup that fails to start is reported as failed in its row, never silently dropped.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import aio, loadgen, procs
from bench.loadgen import format_result, run_load
from bench.message import REPO_ROOT, TEMPLATE_SOURCE
from engine.db import connect
from tests.pg import PostgresCluster

HAPROXY_CFG = REPO_ROOT / "deploy" / "haproxy" / "engine-mllp.cfg"
HAPROXY_SLOTS = 3                       # servers node1..node3 in the shipped config

# The referral pipeline alone: one MLLP channel with the shipped mappings, completeness and routing;
# no dashboard, payers, outbound rules or fax channel (their cost is issue 2's re-measure, not this).
ENGINE_CONFIG = """\
data_dir: {data_dir}
store:
  url: ${{ENGINE_STORE_URL:-sqlite:///{data_dir}/engine.db}}
  node: {node}
logging:
  level: INFO
  format: json
  file: {data_dir}/logs/engine.log
web:
  enabled: false
processing:
  isolation: process
channels:
  - name: ehr_inbound
    source:
      type: mllp
      host: 127.0.0.1
      port: ${{MLLP_PORT}}
      idle_timeout_seconds: 600
    message_types: [ORM^O01, OMG^O19, REF^I12, SIU, ORU^R01, MDM^T02, ADT]
    transformer: {{mappings: {repo}/mappings}}
referrals:
  completeness:
    - require: [patient_identifier, reason, referring_npi, diagnosis]
    - specialty: [cardiology, gastroenterology, orthopedics]
      require: [member_id]
  routing:
    - {{specialty: [cardiology], department: Riverbend Cardiology, destination: riverbend_cardiology}}
    - {{specialty: [orthopedics], department: Riverbend Orthopedics, destination: riverbend_orthopedics}}
"""

PLACER, MRN = b"RF250304-0481", b"10483726"      # in the bench25 sample's ORC-2/OBR-2 and PID-3


class NewReferrals(loadgen.Messages):
    """loadgen's messages, each also with its own placer order number and MRN: a new referral of a new
    patient per message (see the module doc). Raises ValueError if the template lacks either value."""

    def __init__(self, n: int, prefix: str, prebuild_mb: float = 256) -> None:
        head, tail = loadgen.orm_o01_parts()
        if PLACER not in head + tail or MRN not in head + tail:
            raise ValueError(f"template {TEMPLATE_SOURCE} has no placer {PLACER!r} / MRN {MRN!r} to vary")
        super().__init__(n, prefix, prebuild_mb)

    def _build(self, i: int) -> bytes:
        return super()._build(i).replace(PLACER, b"P" + self.control_id(i)).replace(MRN, b"M%09d" % i)


@dataclass(frozen=True)
class Setup:
    name: str
    backend: str        # sqlite | postgresql
    nodes: int
    haproxy: bool


SETUPS = {s.name: s for s in (Setup("sqlite", "sqlite", 1, False), Setup("postgresql", "postgresql", 1, False),
                              Setup("pg-1-haproxy", "postgresql", 1, True),
                              Setup("pg-2-haproxy", "postgresql", 2, True))}


@dataclass
class Deployment:
    port: int                    # where senders connect: a node, or HAProxy
    store: Path | str            # SQLite file or PostgreSQL URL
    nodes: list[procs.Server]
    log_problems: dict[str, int] = field(default_factory=dict)   # "LEVEL event" -> count, after the stop


def _log_problems(data_dirs: list[Path], into: dict[str, int]) -> None:
    """Count the WARNING/ERROR/CRITICAL entries of the engines' JSON logs (lines that are not JSON: skipped)."""
    for data_dir in data_dirs:
        log = data_dir / "logs" / "engine.log"
        for line in (log.read_text(errors="replace").splitlines() if log.exists() else []):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("WARNING", "ERROR", "CRITICAL"):
                key = f"{entry['level']} {entry.get('event')}"
                into[key] = into.get(key, 0) + 1


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    """os.environ with `values` set, restored after (procs passes os.environ to the engine)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _haproxy_states(stats_port: int) -> dict[str, str]:
    """Server name -> status (UP, DOWN, ...) of backend engine_nodes, from the stats page's CSV."""
    with urllib.request.urlopen(f"http://{procs.HOST}:{stats_port}/;csv", timeout=2) as resp:
        text = resp.read().decode().lstrip("# ")
    return {row["svname"]: row["status"] for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "engine_nodes" and row["svname"] not in ("BACKEND", "FRONTEND")}


@contextmanager
def haproxy(node_ports: list[int], timeout: float = 20.0) -> Iterator[int]:
    """HAProxy with the shipped config in front of node_ports; the free slots point at closed ports.
    Yields the front port once live nodes are UP and the free slots DOWN (RuntimeError otherwise)."""
    front, stats = procs.free_port(), procs.free_port()
    slots = node_ports + [procs.free_port() for _ in range(HAPROXY_SLOTS - len(node_ports))]
    env = {**os.environ, "MLLP_BIND": f"{procs.HOST}:{front}", "HAPROXY_STATS_BIND": f"{procs.HOST}:{stats}",
           **{f"ENGINE_NODE{i}": f"{procs.HOST}:{p}" for i, p in enumerate(slots, 1)}}
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(HAPROXY_CFG)], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    want = {f"node{i}": ("UP" if i <= len(node_ports) else "DOWN") for i in range(1, HAPROXY_SLOTS + 1)}
    try:
        deadline, states = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:      # bounded: fall 2 x inter 1s marks a closed port DOWN in ~2 s
            if proc.poll() is not None:
                raise RuntimeError(f"haproxy exited {proc.returncode}: {proc.stderr.read().decode()[-500:]}")
            try:
                states = _haproxy_states(stats)
            except OSError:
                states = {}
            if states == want:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"haproxy servers not as wanted after {timeout:g}s: {states} (want {want})")
        yield front
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def deployment(setup: Setup, cluster: PostgresCluster | None, tmp_root: str | None,
               ready_timeout: float) -> Iterator[Deployment]:
    """A fresh store, setup.nodes fresh engines (SIGTERM-stopped on exit, in reverse), HAProxy if asked."""
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{setup.name}-", dir=tmp_root)))
        problems: dict[str, int] = {}
        data_dirs = [root / f"node{i}" for i in range(1, setup.nodes + 1)]
        stack.callback(_log_problems, data_dirs, problems)     # runs after every engine stopped (LIFO)
        if setup.backend == "postgresql":
            url = cluster.new_database()
            stack.callback(cluster.drop_database, url)
            store: Path | str = url
        else:
            url, store = "", root / "node1" / "engine.db"
        nodes = []
        for i, data_dir in enumerate(data_dirs, 1):
            data_dir.mkdir()
            config = data_dir / "config.yaml"
            config.write_text(ENGINE_CONFIG.format(data_dir=data_dir, node=f"node{i}", repo=REPO_ROOT))
            env = {"BENCH_ENGINE_CONFIG": str(config)}
            if url:
                env["ENGINE_STORE_URL"] = url
            with _environ(**env):
                srv = procs.start("engine", data_dir, ready_timeout=ready_timeout)
            stack.callback(srv.stop)
            nodes.append(srv)
        port = stack.enter_context(haproxy([n.port for n in nodes])) if setup.haproxy else nodes[0].port
        yield Deployment(port, store, nodes, problems)


def _left(conn) -> int:
    """Messages acknowledged but not processed yet."""
    return conn.execute("SELECT count(*) FROM messages WHERE status='received'").fetchone()[0]


def _wait_processed(conn, timeout: float) -> float | None:
    """perf_counter() when no message is left `received`, or None after timeout."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if _left(conn) == 0:
            return time.perf_counter()
        time.sleep(0.05)
    return None


def _by_node(conn, column: str) -> dict[str, int]:
    return {str(k): v for k, v in conn.execute(f"SELECT {column}, count(*) FROM messages GROUP BY 1").fetchall()}


def trial(setup: Setup, workload: str, args, cluster: PostgresCluster | None) -> dict:
    """One workload on a fresh deployment of setup. Never raises: a failure is {'failed': why}."""
    rate = None if workload == "closed" else float(workload.split()[1])
    n = args.messages if rate is None else int(rate * args.seconds)
    try:
        with deployment(setup, cluster, args.tmp_root, args.ready_timeout) as dep:
            conn = connect(dep.store, readonly=True)
            try:
                t0 = time.perf_counter()
                res = aio.run(run_load(procs.HOST, dep.port, n, args.connections, 1, rate, args.timeout))
                t_acked = time.perf_counter()
                res["left_at_last_ack"] = _left(conn)
                if rate is None:
                    done = _wait_processed(conn, args.process_timeout)
                    if done is None:
                        res["processing_timeout"] = True
                    else:
                        res["processed_msgs_per_s"] = round(n / (done - t0), 1)
                        res["drain_msgs_per_s"] = (round(res["left_at_last_ack"] / (done - t_acked), 1)
                                                   if res["left_at_last_ack"] and done > t_acked else None)
                if setup.backend == "postgresql":
                    res["received_by"] = _by_node(conn, "received_by")
                    res["claimed_by"] = _by_node(conn, "claimed_by")
                res["statuses"] = _by_node(conn, "status")
            finally:
                conn.close()
        res["stop_exit_codes"] = [srv.exit_code for srv in dep.nodes]
        res["log_problems"] = dep.log_problems
        return res
    except (RuntimeError, ValueError, OSError) as exc:
        return {"failed": f"{type(exc).__name__}: {exc}"}


def summarise(trials: list[dict]) -> dict:
    good = [t for t in trials if "failed" not in t]
    if not good:
        return {"failed": trials[0]["failed"] if trials else "no trials"}

    def med(key: str):
        values = [t[key] for t in good if t.get(key) is not None]
        return statistics.median(values) if values else None
    return {"msgs_per_s": med("msgs_per_s"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
            "processed_msgs_per_s": med("processed_msgs_per_s"), "drain_msgs_per_s": med("drain_msgs_per_s"),
            "left_at_last_ack": med("left_at_last_ack"),
            "rounds": [t["msgs_per_s"] for t in good], "rounds_processed": [t.get("processed_msgs_per_s") for t in good],
            "errors": sum(t["errors"] for t in good), "failed_rounds": len(trials) - len(good),
            "processing_timeouts": sum(1 for t in good if t.get("processing_timeout")),
            "stop_exit_codes": sorted({c for t in good for c in t["stop_exit_codes"]}),
            "received_by": _add(t.get("received_by", {}) for t in good),
            "claimed_by": _add(t.get("claimed_by", {}) for t in good),
            "log_problems": _add(t.get("log_problems", {}) for t in good)}


def _add(counts) -> dict[str, int]:
    total: dict[str, int] = {}
    for per_node in counts:
        for node, count in per_node.items():
            total[node] = total.get(node, 0) + count
    return dict(sorted(total.items()))


def _f(value, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(a: dict, b: dict, key: str) -> str:
    if "failed" in a or "failed" in b or not a.get(key) or not b.get(key):
        return "n/a"
    return f"{a[key] / b[key]:.2f}x"


def render(args, setups: list[Setup], workloads: list[str], summary: dict, command: str) -> str:
    msg = NewReferrals(1, "B" + "0" * 8).frame(0)[1:-2]
    segments = msg.count(b"\r")
    closed = {s.name: summary[s.name]["closed"] for s in setups}
    out = [f"Command: `{command}`", "",
           f"Measured {time.strftime('%Y-%m-%d %H:%M')}: {os.cpu_count()} shared CPUs, {platform.system()} "
           f"{platform.release()}, Python {platform.python_version()}, client loop {aio.loop_name()}, load average "
           f"at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}. Loadgen, engines, PostgreSQL and HAProxy "
           f"on the same host. Message: ORM^O01 v2.5.1, {segments} segments, {len(msg)} bytes, a new referral "
           f"of a new patient each. Closed loop: N={args.messages}, C={args.connections}, window 1. Open loop: "
           f"{args.seconds:g} s at each rate. {args.rounds} interleaved rounds, fresh store and engines per trial; "
           "medians (per-round values in brackets).", "",
           "| setup | ingest msgs/s | p50 / p99 ms | processed msgs/s (first send → none `received`) "
           "| drain msgs/s after last ACK | errors | SIGTERM exit |",
           "|---|---:|---:|---:|---:|---:|---|"]
    for s in setups:
        c = closed[s.name]
        if "failed" in c:
            out.append(f"| {s.name} | failed: {c['failed'].splitlines()[0]} | | | | | |")
            continue
        note = f" ({c['failed_rounds']} failed)" if c["failed_rounds"] else ""
        note += f" ({c['processing_timeouts']} timed out)" if c["processing_timeouts"] else ""
        out.append(f"| {s.name} | {_f(c['msgs_per_s'])} [{', '.join(_f(v) for v in c['rounds'])}]{note} "
                   f"| {_f(c['p50_ms'], 1)} / {_f(c['p99_ms'], 1)} "
                   f"| {_f(c['processed_msgs_per_s'])} [{', '.join(_f(v) for v in c['rounds_processed'])}] "
                   f"| {_f(c['drain_msgs_per_s'])} | {c['errors']} | {c['stop_exit_codes']} |")
    rates = [w for w in workloads if w != "closed"]
    if rates:
        out += ["", "ACK latency at a fixed offered rate (open loop, from each message's scheduled send time); "
                "`backlog` = messages still `received` at the last ACK (processing behind by that many):", "",
                "| setup | " + " | ".join(f"{w.split()[1]} msg/s: p50 / p99 ms, backlog" for w in rates) + " |",
                "|---|" + "---:|" * len(rates)]
        for s in setups:
            cells = []
            for w in rates:
                r = summary[s.name][w]
                cells.append("failed" if "failed" in r else
                             f"{_f(r['p50_ms'], 1)} / {_f(r['p99_ms'], 1)}, {_f(r['left_at_last_ack'])}"
                             + (f" ({r['errors']} errors)" if r["errors"] else ""))
            out.append(f"| {s.name} | " + " | ".join(cells) + " |")
    pairs = [("postgresql", "sqlite"), ("pg-2-haproxy", "pg-1-haproxy"), ("pg-1-haproxy", "postgresql")]
    lines = [f"{a} / {b}: ingest {_ratio(closed[a], closed[b], 'msgs_per_s')}, processed "
             f"{_ratio(closed[a], closed[b], 'processed_msgs_per_s')}"
             for a, b in pairs if a in closed and b in closed]
    if lines:
        out += ["", "Ratios of medians: " + "; ".join(lines) + "."]
    logged = {f"{s.name} {w}": summary[s.name][w]["log_problems"] for s in setups for w in workloads
              if summary[s.name][w].get("log_problems")}
    out += ["", "Engine log warnings/errors, all trials: " + (json.dumps(logged) if logged else "none") + "."]
    split = [f"{s.name}: received {closed[s.name]['received_by']}, processed (claimed) {closed[s.name]['claimed_by']}"
             for s in setups if s.nodes > 1 and "failed" not in closed[s.name]]
    if split:
        out += ["", "Closed-loop messages per node, all rounds: " + "; ".join(split) + "."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated subset of {','.join(SETUPS)}")
    p.add_argument("-n", "--messages", type=int, default=3000, help="messages per closed-loop trial")
    p.add_argument("-c", "--connections", type=int, default=16)
    p.add_argument("--rates", default="300,1000", help="offered rates (msg/s) of the open-loop trials; '' for none")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each open-loop trial")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timeout", type=float, default=180.0, help="per load run, seconds")
    p.add_argument("--process-timeout", type=float, default=180.0, help="wait for processing, seconds")
    p.add_argument("--ready-timeout", type=float, default=60.0)
    p.add_argument("--tmp-root", default=None, help="parent dir for per-trial data dirs (default: system temp)")
    p.add_argument("--out", default=None, help="also write the markdown to this file")
    p.add_argument("--json", default=None, help="also write every trial's raw results to this file")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = set(names) - set(SETUPS)
    if unknown:
        p.error(f"unknown setup(s): {', '.join(sorted(unknown))}")
    setups = [SETUPS[n] for n in names]
    workloads = ["closed"] + [f"rate {float(r):g}" for r in args.rates.split(",") if r.strip()]
    if any(s.haproxy for s in setups) and shutil.which("haproxy") is None:
        p.error("haproxy not found (scripts/setup.sh installs it)")
    command = shlex.join([".venv/bin/python", "-m", "bench.bench_cluster", *(sys.argv[1:] if argv is None else argv)])

    loadgen.Messages = NewReferrals     # run_load builds its messages through this module-level name
    cluster = None
    if any(s.backend == "postgresql" for s in setups):
        cluster = PostgresCluster.start(Path(tempfile.mkdtemp(prefix="bench-pg-")))   # runuser needs /tmp
    trials: dict[str, dict[str, list[dict]]] = {s.name: {w: [] for w in workloads} for s in setups}
    started = time.monotonic()
    try:
        for rnd in range(1, args.rounds + 1):
            for w in workloads:
                for s in setups:
                    res = trial(s, w, args, cluster)
                    trials[s.name][w].append(res)
                    extra = "" if "failed" in res else (
                        f" processed {res.get('processed_msgs_per_s', 'n/a')}/s left@ack {res['left_at_last_ack']}"
                        f" by {res.get('received_by', '')} claims {res.get('claimed_by', '')} exit {res['stop_exit_codes']}"
                        f" log {res['log_problems'] or 'clean'}")
                    print(f"[{time.monotonic() - started:5.0f}s] round {rnd} {w:9s} {s.name:13s} "
                          + (res["failed"] if "failed" in res else format_result(res)) + extra,
                          file=sys.stderr, flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    summary = {s: {w: summarise(t) for w, t in per.items()} for s, per in trials.items()}
    md = render(args, setups, workloads, summary, command)
    print(md)
    if args.out:
        Path(args.out).write_text(md)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "trials": trials, "summary": summary}, indent=2))
    bad = any("failed" in r or r["errors"] or r.get("processing_timeouts") for per in summary.values()
              for r in per.values())
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
