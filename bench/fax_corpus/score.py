"""Score the fax extractor against a generated corpus, field by field.

    python bench/fax_corpus/score.py DIR [--via api|cli|cached] [--split all|train|holdout|extra|extra2]
                                         [--workers N] [--limit N] [--json OUT] [--cache DIR]

For every NAME.{pdf,tif,tiff,png,jpg} with NAME.json beside it, runs the extractor
(`ocr.extract_document(path)` in-process, or `run_engine.py extract FILE` as a
subprocess, which is how the held-out corpus is judged) and compares each contract
field with the truth after normalization (`normalize`). A field both sides leave
null counts as right; a value where the truth is null counts as wrong. Prints
per-field accuracy, overall field accuracy, accuracy on the fields the document
does state, per-layout accuracy, crashes and seconds per page. An extractor that
crashes, times out or prints something that is not one JSON object scores every
field of that document wrong and is counted as a crash.

`--via cached` is for working on the extraction rules: each document's OCR
(`ocr.read_document`) is kept as a pickle in `--cache DIR` (default DIR/.ocr_cache) and
only `ocr.extract_fields` runs again, seconds instead of minutes. It refuses held-out
documents: their OCR is never kept where an author could read it, and the held-out
figure is always measured through the CLI.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.fax_corpus.record import CONTRACT_KEYS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DOC_SUFFIXES = (".pdf", ".tif", ".tiff", ".png", ".jpg", ".jpeg")
REASON_MIN_SIMILARITY = 85   # rapidfuzz ratio (0..100): wording may differ by OCR noise, not by content


class ExtractorMissing(RuntimeError):
    """The extractor the scorer was asked to use is not there (yet)."""


# ---- pure scoring ---------------------------------------------------------------------------------

def _alnum(v: str) -> str:
    return re.sub(r"[^0-9a-z]", "", v.casefold())


def normalize(key: str, value):
    """The comparable form of a field value; None stays None, '' counts as None."""
    if value is None or value == "" or value == []:
        return None
    if key == "diagnosis_codes":
        vals = value if isinstance(value, list) else re.split(r"[,;\s]+", str(value))
        return frozenset(re.sub(r"[^0-9A-Z]", "", str(c).upper()) for c in vals if str(c).strip())
    v = str(value)
    if key.endswith(("_phone", "_fax")) or key == "referring_provider_npi":
        digits = re.sub(r"\D", "", v)
        return digits[-10:] if len(digits) >= 10 else digits
    if key in ("patient_sex",):
        return v.strip().upper()[:1]
    if key in ("patient_dob",):
        return v.strip()
    if key in ("referred_to_specialty", "urgency"):
        return " ".join(v.casefold().split())
    if key == "reason":
        return " ".join(re.sub(r"[^0-9a-z ]", " ", v.casefold()).split())
    return _alnum(v)   # names, payer, member id, MRN: case, spaces and punctuation do not matter


def field_correct(key: str, truth, pred) -> bool:
    t, p = normalize(key, truth), normalize(key, pred)
    if t is None or p is None:
        return t is None and p is None
    if key == "reason":
        from rapidfuzz import fuzz
        return fuzz.ratio(t, p) >= REASON_MIN_SIMILARITY
    return t == p


def score_document(truth: dict, pred: dict | None) -> dict[str, bool]:
    """Field -> right? for one document; a missing prediction (crash) gets every field wrong."""
    if pred is None:
        return {k: False for k in CONTRACT_KEYS}
    return {k: field_correct(k, truth.get(k), pred.get(k)) for k in CONTRACT_KEYS}


def summarize(rows: list[dict]) -> dict:
    """rows: {name, layout, split, pages, seconds, crashed, fields: {key: bool}, truth}."""
    def acc(pairs):
        pairs = list(pairs)
        return (sum(pairs) / len(pairs)) if pairs else None

    per_field = {k: acc(r["fields"][k] for r in rows) for k in CONTRACT_KEYS}
    stated = {k: acc(r["fields"][k] for r in rows if r["truth"].get(k) not in (None, [], ""))
              for k in CONTRACT_KEYS}
    layouts = sorted({r["layout"] for r in rows})
    per_layout = {lay: acc(v for r in rows if r["layout"] == lay for v in r["fields"].values()) for lay in layouts}
    splits = sorted({r["split"] for r in rows})
    per_split = {s: acc(v for r in rows if r["split"] == s for v in r["fields"].values()) for s in splits}
    pages = sum(r["pages"] or 1 for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    per_page = sorted(r["seconds"] / (r["pages"] or 1) for r in rows)
    return {
        "documents": len(rows), "pages": pages,
        "overall_field_accuracy": acc(v for r in rows for v in r["fields"].values()),
        "stated_field_accuracy": acc(v for r in rows for k, v in r["fields"].items()
                                     if r["truth"].get(k) not in (None, [], "")),
        "per_field": per_field, "per_field_stated": stated, "per_layout": per_layout, "per_split": per_split,
        "crashes": [r["name"] for r in rows if r["crashed"]],
        "seconds_per_page_mean": seconds / pages if pages else None,
        "seconds_per_page_median": per_page[len(per_page) // 2] if per_page else None,
        "perfect_documents": sum(all(r["fields"].values()) for r in rows),
    }


# ---- running the extractor --------------------------------------------------------------------------

def find_documents(folder: Path, split: str = "all") -> list[dict]:
    manifest = {}
    mpath = folder / "manifest.json"
    if mpath.exists():
        manifest = {d["file"]: d for d in json.loads(mpath.read_text())["documents"]}
    docs = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in DOC_SUFFIXES or not path.with_suffix(".json").exists():
            continue
        meta = manifest.get(path.name, {})
        d = {"path": path, "name": path.stem, "layout": meta.get("layout", "unknown"),
             "split": meta.get("split", "unknown"), "pages": meta.get("pages")}
        if split == "all" or d["split"] == split:
            docs.append(d)
    return docs


def api_extractor():
    try:
        import ocr  # noqa: F401
        from ocr import extract_document
    except ImportError as e:
        raise ExtractorMissing(f"the OCR API is not available yet (import ocr.extract_document failed: {e}); "
                               "use --via cli once run_engine.py extract exists") from e
    return lambda path: extract_document(str(path))


def cli_extractor(timeout: float):
    probe = subprocess.run([sys.executable, str(REPO / "run_engine.py"), "extract", "--help"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        words = [ln.strip(" │╭╮╰╯─") for ln in probe.stderr.splitlines()]
        raise ExtractorMissing("`run_engine.py extract` is not available yet: "
                               + " ".join(w for w in words if re.search(r"\w", w))[-300:])

    def run(path: Path) -> dict:
        p = subprocess.run([sys.executable, str(REPO / "run_engine.py"), "extract", str(path)], cwd=REPO,
                           capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "OMP_THREAD_LIMIT": "1"})
        if p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: {p.stderr.strip()[-300:]}")
        return json.loads(p.stdout)
    return run


def cached_extractor(cache: Path):
    """read_document once per file (pickled in `cache`), extract_fields every time."""
    import pickle
    from ocr import extract_fields, read_document
    cache.mkdir(parents=True, exist_ok=True)

    def run(path: Path) -> dict:
        pkl = cache / (path.name + ".pkl")
        if pkl.exists():
            doc = pickle.loads(pkl.read_bytes())
        else:
            doc = read_document(path)
            pkl.write_bytes(pickle.dumps(doc))
        out = extract_fields(doc.pages)
        out["pages"] = len(doc.pages)
        return out
    return run


def run_one(extract, doc: dict) -> dict:
    truth = json.loads(doc["path"].with_suffix(".json").read_text())
    t0 = time.perf_counter()
    crashed, error, pred = False, None, None
    try:
        pred = extract(doc["path"])
        if not isinstance(pred, dict):
            raise TypeError(f"extractor returned {type(pred).__name__}, not a JSON object")
    except Exception as e:   # a crash is a result to report, not a reason to stop scoring
        crashed, error, pred = True, f"{type(e).__name__}: {e}"[:500], None
    seconds = time.perf_counter() - t0
    pages = doc["pages"] or (pred or {}).get("pages") or 1
    if isinstance(pages, list):
        pages = len(pages)
    return {"name": doc["name"], "layout": doc["layout"], "split": doc["split"], "pages": int(pages),
            "seconds": seconds, "crashed": crashed, "error": error, "truth": truth,
            "prediction": {k: (pred or {}).get(k) for k in CONTRACT_KEYS} if pred else None,
            "fields": score_document(truth, pred)}


def _pct(v) -> str:
    return "   n/a" if v is None else f"{100 * v:6.1f}%"


def report(summary: dict, out=sys.stdout) -> None:
    w = out.write
    w(f"documents: {summary['documents']}   pages: {summary['pages']}   "
      f"perfect documents: {summary['perfect_documents']}\n")
    w(f"overall field accuracy: {_pct(summary['overall_field_accuracy'])}   "
      f"(fields the document states: {_pct(summary['stated_field_accuracy'])})\n\n")
    w(f"{'field':<28}{'all':>8}{'stated':>9}\n")
    for k in CONTRACT_KEYS:
        w(f"{k:<28}{_pct(summary['per_field'][k]):>8}{_pct(summary['per_field_stated'][k]):>9}\n")
    w("\nper layout:\n")
    for lay, v in summary["per_layout"].items():
        w(f"  {lay:<26}{_pct(v)}\n")
    w("per split: " + "   ".join(f"{s} {_pct(v).strip()}" for s, v in summary["per_split"].items()) + "\n")
    w(f"crashes: {len(summary['crashes'])}" + (f" ({', '.join(summary['crashes'][:10])})" if summary["crashes"]
                                                else "") + "\n")
    if summary["seconds_per_page_mean"] is not None:
        w(f"seconds per page: mean {summary['seconds_per_page_mean']:.2f}, "
          f"median {summary['seconds_per_page_median']:.2f}\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Score the fax extractor against a generated corpus.")
    ap.add_argument("folder", type=Path)
    ap.add_argument("--via", choices=["api", "cli", "cached"], default="cli")
    ap.add_argument("--split", choices=["all", "train", "holdout", "extra", "extra2"], default="all")
    ap.add_argument("--cache", type=Path, help="where --via cached keeps each document's OCR (default DIR/.ocr_cache)")
    ap.add_argument("--workers", type=int, default=1, help="documents scored at once")
    ap.add_argument("--limit", type=int, help="score only the first N documents")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per document (cli)")
    ap.add_argument("--json", type=Path, help="write the summary and every document's result here")
    ap.add_argument("--show-errors", action="store_true", help="print each wrong field (contains synthetic PHI)")
    a = ap.parse_args(argv)
    docs = find_documents(a.folder, a.split)[: a.limit]
    if not docs:
        print(f"no documents with truth JSON in {a.folder} (split {a.split})", file=sys.stderr)
        return 2
    if a.via == "cached" and any(d["split"] == "holdout" for d in docs):
        print("score.py: --via cached refuses held-out documents (their OCR is not to be kept or read); "
              "score them with --via cli", file=sys.stderr)
        return 2
    try:
        if a.via == "cached":
            extract = cached_extractor(a.cache or a.folder / ".ocr_cache")
        else:
            extract = api_extractor() if a.via == "api" else cli_extractor(a.timeout)
    except ExtractorMissing as e:
        print(f"score.py: {e}", file=sys.stderr)
        return 2
    with ThreadPoolExecutor(max(1, a.workers)) as ex:   # threads: each cli run is its own process
        rows = list(ex.map(lambda d: run_one(extract, d), docs))
    summary = summarize(rows)
    report(summary)
    if a.show_errors:
        for r in rows:
            for k, ok in r["fields"].items():
                if not ok:
                    print(f"  {r['name']} [{r['layout']}] {k}: truth={r['truth'].get(k)!r} "
                          f"got={(r['prediction'] or {}).get(k)!r}" + (f" ({r['error']})" if r["error"] else ""))
    if a.json:
        a.json.write_text(json.dumps({"summary": summary, "documents": rows}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
