"""Open a fax file by its magic bytes (never the extension) and list its pages as jobs.

PDF: the text layer (poppler `pdftotext -bbox-layout`) is used when a page has one;
pages without it are rasterized one at a time (pdf2image) by whoever runs the job.
TIFF (multi-page, G3/G4), PNG, JPEG: one job per frame, loaded by the job itself, so
memory holds one raster per worker, not the whole document.

Every failure is a `DocumentError` with a `reason`: `encrypted`, `corrupt`, `empty`,
`too_many_pages`, `not_a_document`, `unreadable` (the file cannot be opened at all).
"""
from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ocr.model import Page, Word

MAX_PAGES = 200
TEXT_LAYER_MIN_WORDS = 15       # fewer words than this on a page: a stamp or header, OCR the page instead
POPPLER_TIMEOUT = 120


class DocumentError(Exception):
    """A file that cannot be read as a fax; `reason` says which kind of bad file it is."""

    REASONS = ("encrypted", "corrupt", "empty", "too_many_pages", "not_a_document", "unreadable", "timeout")

    def __init__(self, reason: str, message: str):
        assert reason in self.REASONS, reason
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PageJob:
    """One page to rasterize/OCR: picklable, so a worker process can run it."""
    path: str
    kind: str            # "pdf" | "tiff" | "png" | "jpeg"
    index: int           # 0-based page/frame
    dpi: int = 300       # PDF rasterization


def sniff(head: bytes) -> str | None:
    """The document kind from its first bytes, or None."""
    if head.startswith(b"%PDF") or b"%PDF-" in head[:1024]:
        return "pdf"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def open_document(path: str | Path, max_pages: int = MAX_PAGES, dpi: int = 300) -> tuple[str, list[Page | PageJob]]:
    """(kind, pages): each entry is a finished text-layer `Page` or a `PageJob` still to OCR.

    Raises DocumentError for a missing/unreadable file, 0 bytes, unknown format, a
    password-protected or corrupt PDF, an image that does not decode, 0 pages, or more
    than `max_pages` pages.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2048)
    except OSError as exc:
        raise DocumentError("unreadable", f"cannot open: {exc.strerror or exc}") from None
    if not head:
        raise DocumentError("empty", "the file is empty (0 bytes)")
    kind = sniff(head)
    if kind is None:
        raise DocumentError("not_a_document", "not a PDF, TIFF, PNG or JPEG file")
    if kind == "pdf":
        return kind, _pdf_pages(path, max_pages, dpi)
    count = _image_frame_count(path, kind)
    if count == 0:
        raise DocumentError("empty", "the image has no pages")
    if count > max_pages:
        raise DocumentError("too_many_pages", f"{count} pages, more than the limit of {max_pages}")
    return kind, [PageJob(str(path), kind, i) for i in range(count)]


def _image_frame_count(path: Path, kind: str) -> int:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            n = getattr(im, "n_frames", 1)
            im.seek(n - 1)
            im.load()          # decode the last frame: a truncated file fails here, not in a worker
            return n
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DocumentError("corrupt", f"the {kind.upper()} image does not decode: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise DocumentError("corrupt", f"the image is implausibly large: {exc}") from None


def _poppler(args: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, timeout=POPPLER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DocumentError("timeout", f"{args[0]} took longer than {POPPLER_TIMEOUT} s") from None


def _pdf_pages(path: Path, max_pages: int, dpi: int) -> list[Page | PageJob]:
    info = _poppler(["pdfinfo", str(path)])
    err = info.stderr.decode("utf-8", "replace")
    if info.returncode != 0:
        if "password" in err.lower() or "encrypt" in err.lower():
            raise DocumentError("encrypted", "the PDF is password-protected")
        raise DocumentError("corrupt", "the PDF cannot be read: " + (err.strip().splitlines() or ["?"])[-1][:200])
    m = re.search(rb"^Pages:\s+(\d+)", info.stdout, re.M)
    count = int(m.group(1)) if m else 0
    if count == 0:
        raise DocumentError("empty", "the PDF has no pages")
    if count > max_pages:
        raise DocumentError("too_many_pages", f"{count} pages, more than the limit of {max_pages}")
    layer = _pdf_text_layer(path)
    out: list[Page | PageJob] = []
    for i in range(count):
        page = layer.get(i + 1)
        if page is not None and len(page.words) >= TEXT_LAYER_MIN_WORDS and _readable(page):
            out.append(page)
        else:
            out.append(PageJob(str(path), "pdf", i, dpi))
    return out


def _readable(page: Page) -> bool:
    """A text layer worth trusting: most words hold real letters (fonts without a Unicode map
    come out as symbol soup, and then the page is OCRed instead)."""
    wordy = sum(1 for w in page.words if re.search(r"[A-Za-z]{2}|\d{2}", w.text))
    return wordy >= 0.5 * len(page.words)


def _pdf_text_layer(path: Path) -> dict[int, Page]:
    """Pages with words from the PDF's text layer (empty dict when there is none or it fails)."""
    res = _poppler(["pdftotext", "-bbox", "-enc", "UTF-8", str(path), "-"])
    if res.returncode != 0 or not res.stdout:
        return {}
    text = res.stdout.decode("utf-8", "replace")
    # poppler writes XHTML; strip the doctype and namespace so ElementTree reads it plainly
    text = re.sub(r"<!DOCTYPE[^>]*>", "", text).replace('xmlns="http://www.w3.org/1999/xhtml"', "")
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return {}
    pages: dict[int, Page] = {}
    for n, p in enumerate(root.iter("page"), start=1):
        words = [Word(w.text or "", float(w.get("xMin")), float(w.get("yMin")), float(w.get("xMax")),
                      float(w.get("yMax")), 100.0)
                 for w in p.iter("word") if (w.text or "").strip()]
        pages[n] = Page(n, float(p.get("width")), float(p.get("height")), words, "text_layer")
    return pages
