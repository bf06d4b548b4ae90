"""OCR throughput: median seconds per page on one worker, pages per minute with 1 vs 2 workers.

    .venv/bin/python bench/bench_ocr.py [--docs 12] [--seed 31] [--workers 1,2] [--mode documents|pages]

Generates single-page fax-fine G4 TIFFs (the FACTS.md reference page: ~300 words,
204x196 dpi) with the corpus generator, then runs the real pipeline
(`ocr.extract_document`, one single-threaded tesseract per worker process):

- `documents` (default, how the fax channel works): each worker process reads and
  extracts whole documents; N workers take N documents at a time.
- `pages`: the caller's thread extracts while `ocr.make_pool(N)` OCRs the pages
  (N documents in flight from N threads).

Prints one line per worker count and the scaling ratio (target >= 1.7x on 2 cores)
to stdout; field accuracy is score.py's job, not this one's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fax_corpus.generate import generate  # noqa: E402


def _cpu() -> float:
    t = os.times()     # tesseract runs as a child process: its CPU counts too
    return t.user + t.system + t.children_user + t.children_system


def _extract_whole(path: str) -> tuple[float, int, float]:
    """In a worker process: read and extract one document, its pages one after another."""
    from channels.fax.worker import extract_in_worker
    t0, c0 = time.perf_counter(), _cpu()
    result = extract_in_worker(path)
    return time.perf_counter() - t0, int(result.get("pages") or 1), _cpu() - c0


def _warm(_: int) -> int:
    import ocr  # noqa: F401  (import spaCy and friends before the clock starts)
    return 0


def run_documents(paths: list[str], workers: int) -> dict:
    from ocr.tesseract import _init_worker
    import multiprocessing
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker) as pool:
        list(pool.map(_warm, range(workers * 2)))
        t0 = time.perf_counter()
        results = list(pool.map(_extract_whole, paths))
        wall = time.perf_counter() - t0
    pages = sum(p for _, p, _ in results)
    return {"workers": workers, "pages": pages, "wall_seconds": wall, "pages_per_minute": 60 * pages / wall,
            "median_seconds_per_page": statistics.median(s / p for s, p, _ in results),
            "cpu_seconds_per_page": sum(c for _, _, c in results) / pages}


def run_pages(paths: list[str], workers: int) -> dict:
    import ocr
    pool = ocr.make_pool(workers)
    try:
        list(pool.map(_warm, range(workers * 2)))
        per_doc = []

        def one(path: str) -> None:
            t = time.perf_counter()
            r = ocr.extract_document(path, pool=pool)
            per_doc.append(((time.perf_counter() - t), int(r.get("pages") or 1)))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as threads:
            list(threads.map(one, paths))
        wall = time.perf_counter() - t0
    finally:
        pool.shutdown()
    pages = sum(p for _, p in per_doc)
    return {"workers": workers, "pages": pages, "wall_seconds": wall, "pages_per_minute": 60 * pages / wall,
            "median_seconds_per_page": statistics.median(s / p for s, p in per_doc)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="OCR pipeline throughput, 1 vs 2 workers.")
    ap.add_argument("--docs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--mode", choices=["documents", "pages"], default="documents")
    ap.add_argument("--formats", default="tiff_fine", help="corpus formats to generate (comma-separated)")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    a = ap.parse_args(argv)
    try:
        import ocr
        ocr.extract_document  # noqa: B018
    except (ImportError, AttributeError) as e:
        print(f"bench_ocr.py: the OCR pipeline is not available yet ({e})", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate(a.seed, a.docs, Path(tmp), split="all", formats=a.formats.split(","))
        paths = [str(Path(tmp) / d["file"]) for d in manifest]
        runner = run_documents if a.mode == "documents" else run_pages
        rows = [runner(paths, int(w)) for w in a.workers.split(",")]
    base = rows[0]["pages_per_minute"]
    out = {"mode": a.mode, "documents": a.docs, "runs": rows,
           "scaling": {r["workers"]: r["pages_per_minute"] / base for r in rows}}
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"OCR pipeline, mode={a.mode}, {a.docs} documents ({rows[0]['pages']} pages, {a.formats})")
    for r in rows:
        print(f"  {r['workers']} worker(s): {r['pages_per_minute']:6.1f} pages/min   median "
              f"{r['median_seconds_per_page']:.2f} s/page   "
              + (f"cpu {r['cpu_seconds_per_page']:.2f} s/page   " if "cpu_seconds_per_page" in r else "")
              + f"wall {r['wall_seconds']:.1f} s   "
              f"scaling {r['pages_per_minute'] / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
