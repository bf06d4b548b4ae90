"""Side-by-side MLLP ingest benchmark: the engine against three baselines.

What it measures:

1. Throughput (msgs/s) and ACK latency (p50/p99, closed loop: from write to
   ACK) of each server for N ~2 KB ORM^O01 messages over C connections with
   window W, after a warm-up run. Every trial starts the server fresh in a new
   temp data dir and stops it with SIGTERM. Rounds are interleaved
   (ABCD ABCD ABCD) so slow drift of a noisy machine hits all servers alike;
   the table shows per-server medians across rounds.
2. Latency under a fixed offered load (open loop, default 2,000 msg/s) against
   one target (default: the engine), measured from each message's scheduled
   send time, so queueing is not hidden (no coordinated omission).

Servers: engine, python-hl7, sqlite, canned (see bench/procs.py).

    python -m bench.run_ingest                                   # all four, incl. engine
    python -m bench.run_ingest --servers python-hl7,sqlite,canned -n 5000 \\
        --latency-target sqlite --out bench/BENCHMARKS-section.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import aio, procs
from bench.loadgen import format_result, run_load
from bench.message import TEMPLATE_SOURCE, orm_o01


def _load(srv: procs.Server, args, n: int, rate: float | None = None) -> dict:
    return aio.run(run_load(procs.HOST, srv.port, n, args.connections, args.window, rate, args.timeout))


def trial(name: str, args, rate: float | None = None, n: int | None = None) -> dict:
    """Fresh server in a fresh temp dir: warm-up, measured load, SIGTERM. Never raises."""
    try:
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-", dir=args.tmp_root) as d, \
                procs.running(name, Path(d), args.ready_timeout) as srv:
            warm = _load(srv, args, args.warmup) if args.warmup else {"errors": 0}
            srv.settle()
            res = _load(srv, args, n or args.messages, rate)
            res["warmup_errors"] = warm["errors"]
            res["startup_s"] = round(srv.startup_s, 2)
        res["stop_exit_code"] = srv.exit_code
        return res
    except RuntimeError as e:  # server failed to start
        return {"failed": str(e)}


def summarise(trials: list[dict]) -> dict:
    good = [t for t in trials if "failed" not in t]
    if not good:
        return {"failed": trials[0]["failed"] if trials else "no trials"}
    med = lambda key: statistics.median(t[key] for t in good)  # noqa: E731
    return {
        "msgs_per_s": med("msgs_per_s"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
        "rounds_msgs_per_s": [t["msgs_per_s"] for t in good],
        "errors": sum(t["errors"] + t["warmup_errors"] for t in good),
        "failed_rounds": len(trials) - len(good),
        "stop_exit_codes": sorted({t["stop_exit_code"] for t in good}),
    }


def _ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or "failed" in a or "failed" in b or not b["msgs_per_s"]:
        return "n/a"
    return f"{a['msgs_per_s'] / b['msgs_per_s']:.2f}x"


def render(args, summary: dict[str, dict], latency: dict | None, command: str) -> str:
    msg = orm_o01("B" + "0" * 17)  # control ids are 18 chars (see loadgen.make_prefix)
    segments = msg.count(b"\r")
    out = [
        f"### MLLP ingest benchmark ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"Command: `{command}`",
        "",
        f"Setup: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}, client loop {aio.loop_name()}; load generator and server on the same "
        f"host (loopback). Message: ORM^O01 v2.5.1, {segments} segments, {len(msg)} bytes "
        f"({TEMPLATE_SOURCE} template). N={args.messages} per trial after {args.warmup} warm-up, "
        f"C={args.connections} connections, window {args.window}, closed loop; {args.rounds} interleaved "
        f"rounds, fresh server + temp data dir per trial; medians shown.",
        "",
        "| server | msgs/s | p50 ms | p99 ms | msgs/s per round | errors | SIGTERM exit | vs python-hl7 | vs sqlite |",
        "|---|---:|---:|---:|---|---:|---|---:|---:|",
    ]
    for name, s in summary.items():
        if "failed" in s:
            first = s["failed"].splitlines()[0] if s["failed"] else "failed"
            out.append(f"| {name} | failed: {first} | | | | | | | |")
            continue
        rounds = ", ".join(f"{v:.0f}" for v in s["rounds_msgs_per_s"])
        fails = f" ({s['failed_rounds']} failed rounds)" if s["failed_rounds"] else ""
        out.append(f"| {name} | {s['msgs_per_s']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {rounds}{fails} "
                   f"| {s['errors']} | {s['stop_exit_codes']} | {_ratio(s, summary.get('python-hl7'))} "
                   f"| {_ratio(s, summary.get('sqlite'))} |")
    if "engine" in summary:
        out += ["", f"Engine throughput ratios: engine/python-hl7 = {_ratio(summary['engine'], summary.get('python-hl7'))}, "
                    f"engine/sqlite = {_ratio(summary['engine'], summary.get('sqlite'))}."]
    if latency is not None:
        out += [""]
        if "failed" in latency:
            out.append(f"Latency run against {args.latency_target} failed: {latency['failed'].splitlines()[0]}")
        else:
            out.append(
                f"Latency at offered load {args.latency_rate:g} msg/s (open loop, latency from scheduled send "
                f"time, {args.latency_messages} msgs, C={args.connections}, window {args.window}) against "
                f"**{args.latency_target}**: p50 {latency['p50_ms']:.2f} ms, p90 {latency['p90_ms']:.2f} ms, "
                f"**p99 {latency['p99_ms']:.2f} ms**, max {latency['max_ms']:.2f} ms; achieved "
                f"{latency['msgs_per_s']:.0f} msg/s, errors {latency['errors']}.")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", default="engine,python-hl7,sqlite,canned",
                   help=f"comma-separated subset of {','.join(procs.SERVERS)}")
    p.add_argument("-n", "--messages", type=int, default=10000, help="measured messages per trial")
    p.add_argument("--warmup", type=int, default=500, help="warm-up messages per trial (0: none)")
    p.add_argument("-c", "--connections", type=int, default=16)
    p.add_argument("-w", "--window", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--latency-target", default=None,
                   help="server for the fixed-rate run (default: engine if selected, else none; 'none' skips)")
    p.add_argument("--latency-rate", type=float, default=2000.0)
    p.add_argument("--latency-messages", type=int, default=20000)
    p.add_argument("--timeout", type=float, default=300.0, help="per load run, seconds")
    p.add_argument("--ready-timeout", type=float, default=30.0)
    p.add_argument("--tmp-root", default=None, help="parent dir for per-trial data dirs (default: system temp)")
    p.add_argument("--out", default=None, help="also write the markdown section to this file")
    p.add_argument("--json", default=None, help="also write all raw results as JSON to this file")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.latency_target is None:
        args.latency_target = "engine" if "engine" in names else "none"
    unknown = set(names) - set(procs.SERVERS) | ({args.latency_target} - set(procs.SERVERS) - {"none"})
    if unknown:
        p.error(f"unknown server(s): {', '.join(sorted(unknown))}")
    command = shlex.join([Path(sys.executable).name, "-m", "bench.run_ingest", *(sys.argv[1:] if argv is None else argv)])

    trials: dict[str, list[dict]] = {n: [] for n in names}
    for rnd in range(1, args.rounds + 1):
        for name in names:
            res = trial(name, args)
            trials[name].append(res)
            print(f"round {rnd} {name:10s} " + (res["failed"] if "failed" in res else format_result(res)),
                  file=sys.stderr, flush=True)
    latency = None
    if args.latency_target != "none":
        latency = trial(args.latency_target, args, rate=args.latency_rate, n=args.latency_messages)
        print(f"latency {args.latency_target:10s} " + (latency["failed"] if "failed" in latency
                                                        else format_result(latency)), file=sys.stderr, flush=True)

    summary = {n: summarise(t) for n, t in trials.items()}
    md = render(args, summary, latency, command)
    print(md)
    if args.out:
        Path(args.out).write_text(md)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "trials": trials, "summary": summary,
                                               "latency": latency}, indent=2))
    bad = any("failed" in s or s["errors"] for s in summary.values()) or bool(latency and ("failed" in latency or latency["errors"]))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
