"""Text the page read left out: a second, sparse-text pass over the ink no word covers.

Tesseract's page layout analysis (psm 3) sometimes drops a whole block as "not text": a
column of small bold labels ("DOB", "Tel", "ID #") beside their values, a head printed
apart from its table. The values are read, their labels are not, and the field is lost.
After the first pass, the ink that no read word (and no detected checkbox) covers is
kept, everything else is blanked, and that image is read once more with psm 11 (sparse
text, no layout analysis to drop blocks). New words that do not overlap a first-pass word
are added, with a line key of their own so tesseract's two runs never merge lines.

Bounds: nothing runs unless at least `MIN_PIECES` letter-sized pieces of ink are left
(most pages: none, so no second call); one extra tesseract call per page otherwise, on the
crop that holds the left-over ink. Bad path: a second pass that finds nothing, or only
low-confidence debris (fax specks, a stray rule), adds nothing.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytesseract

from ocr.layout import typical_height
from ocr.model import Word

MIN_PIECES = 3          # letter-sized pieces of uncovered ink before a second pass is worth its cost
MIN_CONF = 60.0         # a second-pass word below this confidence is debris
PAD = 0.35              # word heights around a read word that count as covered (its ascenders, its dots)


def uncovered_ink(image: np.ndarray, words: list[Word], boxes, h: float) -> tuple[np.ndarray, list[tuple]]:
    """(binary ink no word/checkbox covers, the letter-sized pieces of it as (x, y, w, h))."""
    ink = (image < 128).astype(np.uint8)
    H, W = ink.shape
    pad = int(PAD * h) + 1
    for w in words:
        ink[max(0, int(w.y0) - pad):min(H, int(w.y1) + pad), max(0, int(w.x0) - pad):min(W, int(w.x1) + pad)] = 0
    for b in boxes or []:
        x, y, bw, bh = (int(v) for v in b[:4])
        ink[max(0, y - pad):min(H, y + bh + pad), max(0, x - pad):min(W, x + bw + pad)] = 0
    n, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    pieces = [tuple(int(v) for v in s[:4]) for s in stats[1:]
              if 0.3 * h <= s[3] <= 2.2 * h and s[2] <= 6 * h and s[4] >= 0.04 * h * h]
    return ink, pieces


def _overlaps(a: Word, words: list[Word]) -> bool:
    for b in words:
        ix = min(a.x1, b.x1) - max(a.x0, b.x0)
        iy = min(a.y1, b.y1) - max(a.y0, b.y0)
        if ix > 0 and iy > 0 and ix * iy > 0.3 * min((a.x1 - a.x0) * (a.y1 - a.y0), (b.x1 - b.x0) * (b.y1 - b.y0)):
            return True
    return False


def missed_words(image: np.ndarray, words: list[Word], boxes=None, timeout: float = 30.0) -> list[Word]:
    """Words a second, sparse pass reads in the ink the first pass left uncovered (see module doc)."""
    if len(words) < 5:
        return []                      # a blank or unreadable page: nothing to compare with
    h = typical_height(words)
    ink, pieces = uncovered_ink(image, words, boxes, h)
    if len(pieces) < MIN_PIECES:
        return []
    H, W = ink.shape
    keep = np.zeros_like(ink)
    pad = int(0.2 * h) + 1
    for x, y, bw, bh in pieces:
        keep[max(0, y - pad):min(H, y + bh + pad), max(0, x - pad):min(W, x + bw + pad)] = 1
    x0 = max(0, min(p[0] for p in pieces) - int(h))
    y0 = max(0, min(p[1] for p in pieces) - int(h))
    x1 = min(W, max(p[0] + p[2] for p in pieces) + int(h))
    y1 = min(H, max(p[1] + p[3] for p in pieces) + int(h))
    sparse = np.where(keep[y0:y1, x0:x1] > 0, image[y0:y1, x0:x1], 255).astype(np.uint8)
    try:
        data = pytesseract.image_to_data(sparse, lang="eng", config="--psm 11",
                                         output_type=pytesseract.Output.DICT, timeout=timeout)
    except (RuntimeError, pytesseract.TesseractError):
        return []                      # a second look that fails costs only what it would have added
    out: list[Word] = []
    for text, conf, x, y, w, hh, b, p, ln in zip(data["text"], data["conf"], data["left"], data["top"],
                                                 data["width"], data["height"], data["block_num"],
                                                 data["par_num"], data["line_num"]):
        text = (text or "").strip()
        if not text or float(conf) < MIN_CONF or not any(c.isalnum() for c in text):
            continue
        if len(text) == 1 and float(conf) < 85:
            continue                   # a lone character from a sparse pass is usually a speck or a rule's end
        if not (0.5 * h <= hh <= 2.2 * h):
            continue
        word = Word(text, float(x + x0), float(y + y0), float(x + x0 + w), float(y + y0 + hh), float(conf),
                    ("second_look", b, p, ln))
        if not _overlaps(word, words) and not _overlaps(word, out):
            out.append(word)
    return out
