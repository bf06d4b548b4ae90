"""Soak test: does the server's memory stay flat over a long run?

Sends M messages (default 1,000,000) at a moderate window and samples the
server's resident set size (RSS of the process plus all its children, via
psutil, by pid): at start, every ``--sample-interval`` seconds, at each 10 % of
messages completed, and at the end (after a short settle). Reports the RSS
table, the growth from the 10 % mark (after warm-up) to the end, and a verdict
(FLAT if growth <= ``--max-growth-pct`` percent and <= ``--max-growth-mb``),
plus the usual throughput/latency/error summary of the load.

Either launches a server exactly like run_ingest (fresh temp data dir, SIGTERM
at the end) or attaches to a running one:

    python -m bench.soak --server engine -m 1000000
    python -m bench.soak --server sqlite -m 50000 -c 4 -w 8
    python -m bench.soak --port 2575 --pid 12345 -m 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from time import perf_counter

import psutil

from bench import aio, procs
from bench.loadgen import format_result, run_load


def rss_mb(proc: psutil.Process) -> float:
    """RSS of proc and its children, in MiB (0 for processes that vanished)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


async def soak(port: int, pid: int, args) -> dict:
    proc = psutil.Process(pid)
    t0 = perf_counter()
    marks = [("start", 0, 0.0, rss_mb(proc))]  # (label, messages done, elapsed s, RSS MiB)
    samples: list[tuple[float, float]] = []

    def on_progress(done: int) -> None:
        marks.append((f"{round(100 * done / args.messages)}%", done, perf_counter() - t0, rss_mb(proc)))

    async def sampler() -> None:
        for _ in range(int(args.timeout / args.sample_interval) + 1):  # bounded in count and time
            samples.append((perf_counter() - t0, rss_mb(proc)))
            await asyncio.sleep(args.sample_interval)

    task = asyncio.ensure_future(sampler())
    try:
        res = await run_load(procs.HOST, port, args.messages, args.connections, args.window, args.rate,
                             args.timeout, progress=on_progress, progress_every=max(1, args.messages // 10))
        await asyncio.sleep(args.settle)
        marks.append(("end", res["ok"], perf_counter() - t0, rss_mb(proc)))
    finally:
        task.cancel()
    res.update(marks=marks, samples=samples)
    return res


def report(res: dict, args) -> bool:
    """Print the RSS table and verdict; True if memory stayed flat."""
    print(format_result(res))
    print("\n| point | messages | elapsed s | RSS MiB |\n|---|---:|---:|---:|")
    for label, done, t, rss in res["marks"]:
        print(f"| {label} | {done} | {t:.1f} | {rss:.1f} |")
    rss_vals = [r for _, r in res["samples"]]
    if rss_vals:
        print(f"\nperiodic samples: {len(rss_vals)} every {args.sample_interval:g}s, "
              f"min {min(rss_vals):.1f} MiB, max {max(rss_vals):.1f} MiB")
    marks = res["marks"]
    base = marks[1][3] if len(marks) > 2 else marks[0][3]  # the 10 % mark: past warm-up
    growth = marks[-1][3] - base
    pct = 100 * growth / base if base else 0.0
    flat = growth <= args.max_growth_mb and pct <= args.max_growth_pct
    print(f"growth from {marks[1][0] if len(marks) > 2 else 'start'} to end: {growth:+.1f} MiB ({pct:+.1f}%) "
          f"-> {'FLAT' if flat else 'GROWING'} (limits {args.max_growth_pct:g}% / {args.max_growth_mb:g} MiB)")
    return flat


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--server", choices=list(procs.SERVERS), help="launch this server (like run_ingest)")
    src.add_argument("--pid", type=int, help="attach: pid of an already running server (needs --port)")
    p.add_argument("--port", type=int, help="attach: its MLLP port")
    p.add_argument("-m", "--messages", type=int, default=1_000_000)
    p.add_argument("-c", "--connections", type=int, default=4)
    p.add_argument("-w", "--window", type=int, default=8)
    p.add_argument("-r", "--rate", type=float, default=None, help="offered msgs/s (open loop); default closed loop")
    p.add_argument("--sample-interval", type=float, default=5.0)
    p.add_argument("--settle", type=float, default=2.0, help="seconds to wait before the end sample")
    p.add_argument("--timeout", type=float, default=4 * 3600.0, help="whole-run limit, seconds")
    p.add_argument("--max-growth-pct", type=float, default=10.0)
    p.add_argument("--max-growth-mb", type=float, default=50.0)
    p.add_argument("--ready-timeout", type=float, default=30.0)
    p.add_argument("--tmp-root", default=None)
    args = p.parse_args(argv)
    if args.pid and not args.port:
        p.error("--pid needs --port")

    if args.server:
        with tempfile.TemporaryDirectory(prefix=f"soak-{args.server}-", dir=args.tmp_root) as d, \
                procs.running(args.server, Path(d), args.ready_timeout) as srv:
            print(f"{args.server} pid {srv.pid} port {srv.port}", file=sys.stderr)
            res = aio.run(soak(srv.port, srv.pid, args))
        print(f"{args.server} stopped with exit code {srv.exit_code}")
    else:
        res = aio.run(soak(args.port, args.pid, args))
    flat = report(res, args)
    return 0 if flat and not res["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
