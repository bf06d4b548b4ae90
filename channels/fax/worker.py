"""What a fax worker process runs: read one document and extract its fields (ocr package).

`extract_in_worker(path, ...)` is a plain function so a ProcessPoolExecutor can run it:
the whole document is read in that one process, its pages one after another (an
`InlineExecutor` stands in for the page pool), so N workers read N faxes at once with
one single-threaded tesseract each and the engine's event loop never waits on OCR.

Bad path: `ocr.DocumentError` (reason: encrypted, corrupt, empty, too_many_pages,
not_a_document, unreadable, timeout) propagates to the caller, which files the fax in
error/. Anything else raised is a bug in the reader and is reported as `internal`.
"""
from __future__ import annotations

import os
from concurrent.futures import Executor, Future

os.environ.setdefault("OMP_THREAD_LIMIT", "1")   # tesseract's own threads are 2-4x slower here (FACTS.md)


class InlineExecutor(Executor):
    """Runs each submitted call at once in the calling thread: pages of one fax, in order."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:   # the reader collects it through future.result(), like a pool's
            future.set_exception(exc)
        return future


def page_text(words) -> str:
    """Words in reading order, one line per visual line (for the reviewer, not for extraction)."""
    words = sorted(words, key=lambda w: (w.y0 + w.y1) / 2)
    heights = sorted(w.y1 - w.y0 for w in words) or [1.0]
    tolerance = heights[len(heights) // 2] * 0.6
    lines: list[list] = []
    for w in words:
        cy = (w.y0 + w.y1) / 2
        if lines and abs(cy - lines[-1][0]) <= tolerance:
            lines[-1][1].append(w)
        else:
            lines.append([cy, [w]])
    return "\n".join(" ".join(x.text for x in sorted(ws, key=lambda w: w.x0)) for _, ws in lines)


def extract_in_worker(path: str, max_pages: int = 200, pages_dir: str | None = None) -> dict:
    """The extract contract for one file (ocr.extract_fields) plus what the store keeps for the
    reviewer: `pages`, `source`, `warnings`, `page_images`, `ocr_text` (pages separated by form feeds).

    Composed from read_document + extract_fields rather than extract_document so the words read
    once serve both the fields and the reviewer's text (no second OCR)."""
    import time

    import ocr
    start = time.monotonic()
    doc = ocr.read_document(path, pool=InlineExecutor(), pages_dir=pages_dir, max_pages=max_pages)
    result = ocr.extract_fields(doc.pages)
    seconds = time.monotonic() - start
    warnings = list(doc.warnings)
    if not any(p.words for p in doc.pages):
        warnings.append("no text found on any page")
    result.update({
        "pages": len(doc.pages), "source": doc.source, "kind": doc.kind, "warnings": warnings,
        "seconds": round(seconds, 2), "seconds_per_page": round(seconds / max(1, len(doc.pages)), 2),
        "page_images": [p.image_path for p in doc.pages if p.image_path],
        "page_confidence": [round(p.mean_conf / 100, 3) for p in doc.pages],
        "ocr_text": "\f".join(page_text(p.words) for p in doc.pages),
    })
    return result


def init_worker(nice: int = 10) -> None:
    """Pool initializer: single-threaded tesseract, and a lower priority than the MLLP listener."""
    os.environ["OMP_THREAD_LIMIT"] = "1"
    try:
        os.nice(nice)
    except OSError:   # not allowed here: run at normal priority
        pass


def read_for_channel(path: str, max_pages: int, pages_dir: str | None) -> dict:
    """`extract_in_worker` for the fax channel: a bad file comes back as {"error_reason", "error"}.

    Errors are returned, not raised, because ocr.DocumentError does not survive pickling back
    from a worker process with its `reason`."""
    import ocr
    try:
        return {"extraction": extract_in_worker(path, max_pages, pages_dir)}
    except ocr.DocumentError as exc:
        return {"error_reason": exc.reason, "error": str(exc)}
    except Exception as exc:   # a reader bug on this file: file it in error/, keep the engine running
        return {"error_reason": "internal", "error": f"{type(exc).__name__}: {exc}"[:1000]}
