"""Tesseract: words with boxes and confidences, orientation detection, a worker pool.

Tesseract's own OpenMP threading is 2-4x slower on this kind of machine than one
single-threaded tesseract per worker (FACTS.md), so OMP_THREAD_LIMIT=1 is set for every
call and pages are spread over a process pool instead. A page that takes longer than
`timeout` seconds raises `OcrTimeout` (tesseract is killed).
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytesseract

from ocr.model import Word

os.environ["OMP_THREAD_LIMIT"] = "1"     # inherited by every tesseract this process starts

PAGE_TIMEOUT = 90.0


class OcrTimeout(Exception):
    """Tesseract did not finish a page in time."""


def ocr_words(image: np.ndarray, psm: int = 3, timeout: float = PAGE_TIMEOUT) -> list[Word]:
    """Words (text, box in image pixels, confidence 0..100) read by tesseract."""
    try:
        data = pytesseract.image_to_data(image, lang="eng", config=f"--psm {psm}",
                                         output_type=pytesseract.Output.DICT, timeout=timeout)
    except RuntimeError as exc:
        if "timeout" in str(exc).lower():
            raise OcrTimeout(f"tesseract took longer than {timeout:.0f} s") from None
        raise
    words = []
    for text, conf, x, y, w, h, b, p, ln in zip(data["text"], data["conf"], data["left"], data["top"], data["width"],
                                                data["height"], data["block_num"], data["par_num"], data["line_num"]):
        text = (text or "").strip()
        if not text or float(conf) < 0:
            continue
        words.append(Word(text, float(x), float(y), float(x + w), float(y + h), float(conf), (b, p, ln)))
    return words


def orientation(image: np.ndarray, timeout: float = 30.0) -> int:
    """Degrees clockwise the page must be turned to be upright (0, 90, 180, 270); 0 when OSD cannot tell."""
    try:
        osd = pytesseract.image_to_osd(image, config="--psm 0", output_type=pytesseract.Output.DICT,
                                       timeout=timeout)
    except (RuntimeError, pytesseract.TesseractError):
        return 0
    if float(osd.get("orientation_conf", 0)) < 1.5:
        return 0
    return int(osd.get("rotate", 0)) % 360


def _init_worker() -> None:
    os.environ["OMP_THREAD_LIMIT"] = "1"


def make_pool(workers: int = 2, start_method: str = "spawn") -> ProcessPoolExecutor:
    """A pool for OCR pages; the caller owns it and shuts it down.

    `spawn` by default, so it is safe to create from a process that runs threads (the
    engine daemon); a single-threaded caller (the CLI) may pass "fork", which starts
    workers in milliseconds instead of re-importing numpy/OpenCV in each."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(start_method),
                               initializer=_init_worker)
