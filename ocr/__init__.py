"""Fax reading and field extraction. The public surface:

    read_document(path, pool=None, pages_dir=None) -> Document   # pages of words with boxes
    extract_document(path, pool=None, pages_dir=None) -> dict    # the DESIGN.md extract contract
    extract_fields(pages) -> dict                                # the same from pages already read
    DocumentError                                                # .reason: encrypted, corrupt, empty, ...
    make_pool(workers=2)                                         # a process pool for OCR pages

See ocr/README.md.
"""
from __future__ import annotations

import time
from concurrent.futures import Executor
from pathlib import Path

from ocr.documents import MAX_PAGES, DocumentError
from ocr.extract import CONTRACT_FIELDS, extract_fields
from ocr.model import Document, Page, Word
from ocr.reader import read_document
from ocr.tesseract import make_pool

__all__ = ["read_document", "extract_document", "extract_fields", "DocumentError", "make_pool", "Document",
           "Page", "Word", "CONTRACT_FIELDS", "MAX_PAGES"]


def extract_document(path: str | Path, pool: Executor | None = None, pages_dir: str | Path | None = None,
                     max_pages: int = MAX_PAGES) -> dict:
    """Read a fax file and extract the referral fields.

    Returns the contract dict: the 16 fields (None / [] when the document does not say),
    `confidence` (field -> 0..1), and extras: `pages`, `source` (text_layer | ocr | mixed),
    `kind`, `seconds`, `seconds_per_page`, `warnings`, `page_images` (when pages_dir is
    given), `evidence` (field -> how it was found). Raises DocumentError for a bad file.
    """
    start = time.monotonic()
    doc = read_document(path, pool=pool, pages_dir=pages_dir, max_pages=max_pages)
    result = extract_fields(doc.pages)
    elapsed = time.monotonic() - start
    result.update({
        "pages": len(doc.pages), "source": doc.source, "kind": doc.kind,
        "seconds": round(elapsed, 2), "seconds_per_page": round(elapsed / max(1, len(doc.pages)), 2),
        "warnings": doc.warnings,
    })
    if pages_dir:
        result["page_images"] = [p.image_path for p in doc.pages if p.image_path]
    if not any(p.words for p in doc.pages):
        result["warnings"].append("no text found on any page")
    return result
