"""Parse + map throughput on one core, side by side with python-hl7's `hl7.parse` of the same message.

For each message (the 25-segment benchmark ORM and an SIU^S12) it times, in one
process pinned to one CPU, the median over `--repeat` rounds of `--number` calls:

- `hl7.parse(text)` (python-hl7 0.4.5): the baseline, parse only, no field read;
- `parse(text)` (engine.hl7v2.parse): the split-based tree, parse only;
- `parse + 5 reads`: parse and read MSH-10, PID-3[*].1, PID-5.1, ORC-2.1, DG1[*]-3.1;
- `parse + map`: `Mappings.map(text, type)` with the shipped mappings/ (pydantic model included).

and prints a markdown table and the command that produced it.

    .venv/bin/python bench/bench_mapping.py [--number 2000] [--repeat 15] [--cpu 0]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hl7

from engine.hl7v2.parse import get, get_all, parse
from engine.mapping import Mappings

REPO = Path(__file__).resolve().parent.parent
MESSAGES = [("ORM^O01, 25 segments", "ORM_O01_v2.5.1_bench25.hl7", "ORM^O01"),
            ("SIU^S12, 11 segments", "SIU_S12_v2.5.1.hl7", "SIU^S12")]


def per_call(fns: list[tuple], repeat: int) -> list[float]:
    """Median seconds per call of each (fn, number), rounds interleaved so that load on a shared
    machine hits every column alike (the ratio stays meaningful when absolute times drift)."""
    rounds: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, (fn, number) in enumerate(fns):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            rounds[i].append((time.perf_counter() - start) / number)
    return [statistics.median(r) for r in rounds]


def five_reads(text: str) -> None:
    m = parse(text)
    get(m, "MSH-10"), get_all(m, "PID-3[*].1"), get(m, "PID-5.1"), get(m, "ORC-2.1"), get_all(m, "DG1[*]-3.1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--number", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the first allowed)")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
    mappings = Mappings.load(REPO / "mappings")
    rows = []
    for label, filename, message_type in MESSAGES:
        text = (REPO / "sample_messages" / filename).read_text().replace("\n", "\r")
        mappings.map(text, message_type)                  # warm caches, fail early
        baseline, ours, reads, mapped = per_call([
            (lambda: hl7.parse(text), max(args.number // 20, 20)),
            (lambda: parse(text), args.number),
            (lambda: five_reads(text), args.number),
            (lambda: mappings.map(text, message_type), max(args.number // 4, 1))], args.repeat)
        rows.append((label, baseline, ours, reads, mapped))
    print(f"`{' '.join([Path(sys.executable).name, 'bench/bench_mapping.py'] + (argv or sys.argv[1:]))}` "
          f"(one core, median of {args.repeat} rounds)\n")
    print("| message | python-hl7 `hl7.parse` | our `parse` | `hl7.parse` / `parse` | parse + 5 reads "
          "| parse + map (`Mappings.map`) | parse + map msg/s | `hl7.parse` / parse + map |")
    print("|---|---|---|---|---|---|---|---|")
    for label, baseline, ours, reads, mapped in rows:
        print(f"| {label} | {baseline * 1e6:,.0f} µs | {ours * 1e6:,.1f} µs | {baseline / ours:,.0f}x "
              f"| {reads * 1e6:,.1f} µs | {mapped * 1e6:,.0f} µs | {1 / mapped:,.0f} | {baseline / mapped:,.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
