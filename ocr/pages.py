"""Run one page job: load the raster, clean it, OCR it, find its checkboxes.

`read_page` is a top-level function of picklable arguments so a process pool can run it.
A page whose OCR looks wrong (low confidence, few words) is checked with tesseract's
orientation detection and read again turned upright; OSD is slow, so only then.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from ocr import checkboxes, cleanup, lone_letters, second_look, tesseract
from ocr.documents import DocumentError, PageJob
from ocr.model import Page

PSM = 3                  # automatic layout; psm 4/6/11 measured no better on referral forms
SUSPECT_CONF = 55.0      # mean word confidence below this: maybe upside down or sideways
SUSPECT_WORDS = 12


def load_raster(job: PageJob) -> tuple[np.ndarray, float | None, float | None]:
    """(grayscale array, xdpi, ydpi) of the job's page. Raises DocumentError when it does not decode."""
    if job.kind == "pdf":
        from pdf2image import convert_from_path
        from pdf2image.exceptions import PDFPageCountError, PDFSyntaxError
        try:
            images = convert_from_path(job.path, dpi=job.dpi, first_page=job.index + 1, last_page=job.index + 1,
                                       grayscale=True, timeout=120)
        except (PDFPageCountError, PDFSyntaxError) as exc:
            raise DocumentError("corrupt", f"page {job.index + 1} does not render: {exc}") from None
        if not images:
            raise DocumentError("corrupt", f"page {job.index + 1} does not render")
        return np.asarray(images[0].convert("L")), float(job.dpi), float(job.dpi)
    try:
        with Image.open(job.path) as im:
            im.seek(job.index)
            dpi = im.info.get("dpi") or (None, None)
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            gray = np.asarray(im.convert("L"))
    except (OSError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise DocumentError("corrupt", f"page {job.index + 1} does not decode: {exc}") from None
    xdpi, ydpi = (float(dpi[0]) if dpi[0] else None), (float(dpi[1]) if len(dpi) > 1 and dpi[1] else None)
    return gray, xdpi, ydpi


def read_page(job: PageJob, pages_dir: str | None = None, timeout: float = tesseract.PAGE_TIMEOUT) -> Page:
    """OCR one page. Raises DocumentError (corrupt page) or tesseract.OcrTimeout."""
    start = time.monotonic()
    gray, xdpi, ydpi = load_raster(job)
    image, facts = cleanup.clean_page(gray, xdpi, ydpi)      # grayscale, ~300 dpi, deskewed
    dpi = facts["dpi"]
    words, boxes, rotation = _ocr(image, dpi, timeout)
    warnings = []
    if _suspect(words):
        turn = tesseract.orientation(image)
        if turn:
            turned = np.ascontiguousarray(np.rot90(image, k=-turn // 90))
            words2, boxes2, _ = _ocr(turned, dpi, timeout)
            if _quality(words2) > _quality(words):
                image, words, boxes, rotation = turned, words2, boxes2, turn
                warnings.append(f"page {job.index + 1} was turned {turn} degrees")
    words = checkboxes.merge_boxes(words, boxes)
    image_path = None
    if pages_dir:
        Path(pages_dir).mkdir(parents=True, exist_ok=True)
        image_path = str(Path(pages_dir) / f"page-{job.index + 1:03d}.png")
        Image.fromarray(image).save(image_path, optimize=True)
    h, w = image.shape
    return Page(job.index + 1, float(w), float(h), words, "ocr", round(time.monotonic() - start, 3), rotation,
                warnings, image_path)


def _ocr(image: np.ndarray, dpi: float, timeout: float):
    boxes = checkboxes.find_boxes(cleanup.binarize(image), dpi)
    unruled = cleanup.remove_rules(image, dpi)
    words = tesseract.ocr_words(unruled, psm=PSM, timeout=timeout)
    words += second_look.missed_words(unruled, words, boxes)     # blocks psm 3 dropped as "not text"
    letters = lone_letters.reread_sex_values(unruled, words)   # "Sex: [F]": psm 3 drops a lone letter
    words = lone_letters.without_debris(words, letters) + letters
    return words, boxes, 0


def _quality(words) -> float:
    good = [w for w in words if w.conf >= 60 and len(w.text) >= 3 and w.text.isalpha()]
    return len(good)


def _suspect(words) -> bool:
    if len(words) < SUSPECT_WORDS:
        return True
    mean = sum(w.conf for w in words) / len(words)
    return mean < SUSPECT_CONF
