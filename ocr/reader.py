"""read_document: a file -> Document (pages of words), text layer first, OCR otherwise.

Pages to OCR go to a process pool (the caller's, or a 2-worker pool made for this
document when it has more than one such page); results are collected in page order.
A page that times out becomes an empty page with a warning, the rest still count;
a page that does not decode makes the whole document `corrupt`.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Executor
from pathlib import Path

from ocr import tesseract
from ocr.documents import MAX_PAGES, DocumentError, PageJob, open_document
from ocr.model import Document, Page
from ocr.pages import read_page

log = logging.getLogger("ocr")


def read_document(path: str | Path, pool: Executor | None = None, pages_dir: str | Path | None = None,
                  max_pages: int = MAX_PAGES, dpi: int = 300,
                  page_timeout: float = tesseract.PAGE_TIMEOUT) -> Document:
    """Read every page of a fax file. Raises DocumentError (see ocr.documents for the reasons)."""
    start = time.monotonic()
    kind, entries = open_document(path, max_pages=max_pages, dpi=dpi)
    jobs = [e for e in entries if isinstance(e, PageJob)]
    pages_dir = str(pages_dir) if pages_dir else None
    results: dict[int, Page] = {}
    warnings: list[str] = []
    own_pool = None
    if len(jobs) > 1 and pool is None:
        own_pool = pool = tesseract.make_pool(2, "fork" if threading.active_count() == 1 else "spawn")
    try:
        if pool is not None and jobs:
            futures = [(job, pool.submit(read_page, job, pages_dir, page_timeout)) for job in jobs]
            for job, fut in futures:
                results[job.index] = _collect(job, fut.result, warnings)
        else:
            for job in jobs:
                results[job.index] = _collect(job, lambda job=job: read_page(job, pages_dir, page_timeout), warnings)
    finally:
        if own_pool is not None:
            own_pool.shutdown(cancel_futures=True)
    pages = [e if isinstance(e, Page) else results[e.index] for e in entries]
    if kind == "pdf" and len(pages) <= TEXT_LAYER_BOX_PAGES:
        for p in pages:
            if p.source == "text_layer":
                _text_layer_boxes(str(path), p)
    for p in pages:
        warnings.extend(p.warnings)
    log.debug("document read", extra={"fields": {"pages": len(pages), "kind": kind, "ocr_pages": len(jobs),
                                                 "seconds": round(time.monotonic() - start, 2)}})
    return Document(str(path), kind, pages, warnings)


TEXT_LAYER_BOX_PAGES = 20   # longer text-layer PDFs are not checked for drawn checkboxes
BOX_DPI = 150


def _text_layer_boxes(path: str, page: Page) -> None:
    """Drawn checkboxes of a text-layer page (vector boxes have no text): rasterize small, find them,
    add them as ☒/☐ words in PDF points. A page that does not render is left as it is."""
    from pdf2image import convert_from_path
    import numpy as np
    from ocr import checkboxes, cleanup
    try:
        images = convert_from_path(path, dpi=BOX_DPI, first_page=page.number, last_page=page.number,
                                   grayscale=True, timeout=60)
    except Exception:             # a rendering failure only costs the checkboxes
        return
    if not images:
        return
    binary = cleanup.binarize(np.asarray(images[0].convert("L")))
    f = 72.0 / BOX_DPI
    boxes = [(x * f, y * f, w * f, h * f, ticked, sure)
             for x, y, w, h, ticked, sure in checkboxes.find_boxes(binary, BOX_DPI)]
    page.words = checkboxes.merge_boxes(page.words, boxes)


def _collect(job: PageJob, get, warnings: list[str]) -> Page:
    try:
        return get()
    except tesseract.OcrTimeout as exc:
        warnings.append(f"page {job.index + 1}: {exc}")
        return Page(job.index + 1, 0, 0, [], "ocr", warnings=[])
