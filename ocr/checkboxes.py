"""Find drawn checkboxes on a page image and say whether each is ticked.

Tesseract reads a box as anything from "[]" to "O" or drops it; an X inside becomes
"&", "K" or nothing. So boxes are found in the image instead: closed, roughly square
outlines about as tall as a line of text; ticked when enough ink sits inside the
outline. Each box becomes a word ☒ / ☐ at its place, replacing what OCR made of it,
so label-value pairing treats drawn and typed checkboxes alike.
"""
from __future__ import annotations

import cv2
import numpy as np

from ocr.model import CHECKED, UNCHECKED, Word

TICK_INK = 0.12      # share of dark pixels inside the box (margins excluded) that makes it ticked


def find_boxes(binary: np.ndarray, dpi: float) -> list[tuple]:
    """(x, y, w, h, ticked, sure) for each checkbox-like square outline.

    `sure` is False for boxes found from their sides only (a tick ran out of the box):
    letters such as D or H can look like that, so `merge_boxes` keeps those only where
    OCR read no real word."""
    inv = 255 - binary
    lo, hi = dpi * 0.05, dpi * 0.28            # ~ 4 to 20 points
    # outlines from straight strokes only: a tick or cross that runs out of its box (or a
    # diagonal stroke through it) would otherwise merge with the box into one odd shape
    k = max(3, int(lo * 0.6))
    straight = cv2.bitwise_or(
        cv2.morphologyEx(inv, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (k, 1))),
        cv2.morphologyEx(inv, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, k))))
    contours, hierarchy = cv2.findContours(straight, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    boxes = []
    for i, c in enumerate(contours):
        if hierarchy[0][i][3] != -1:           # outer outlines only
            continue
        x, y, w, h = cv2.boundingRect(c)
        if not (lo <= w <= hi and lo <= h <= hi and 0.75 <= w / h <= 1.33):
            continue
        if hierarchy[0][i][2] == -1:           # no hole: a filled blob (■) or a letter stroke
            if cv2.contourArea(c) > 0.8 * w * h and w >= dpi * 0.07:
                boxes.append((x, y, w, h, True, True))
            continue
        approx = cv2.approxPolyDP(c, 0.06 * cv2.arcLength(c, True), True)
        if len(approx) != 4 or not _outline_is_straight(inv, x, y, w, h):
            continue
        boxes.append((x, y, w, h, _ticked(inv, x, y, w, h), True))
    for box in _boxes_from_bars(inv, lo, hi):
        if not any(_iou(box, b) > 0.3 for b in boxes):
            boxes.append(box)
    return boxes


def _ticked(inv: np.ndarray, x: int, y: int, w: int, h: int) -> bool:
    m = max(2, int(min(w, h) * 0.2))
    inner = inv[y + m:y + h - m, x + m:x + w - m]
    return bool(inner.size) and float((inner > 0).mean()) >= TICK_INK


def _iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter) if inter else 0.0


def _boxes_from_bars(inv: np.ndarray, lo: float, hi: float) -> list[tuple[int, int, int, int, bool]]:
    """Boxes whose outline touches a tick that runs out of them: two vertical bars of the
    box's height, a box-width apart, joined by straight ink along the top and the bottom."""
    kv = max(6, int(lo * 0.8))
    vert = cv2.morphologyEx(inv, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, kv)))
    horiz = cv2.morphologyEx(inv, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (kv, 1)))
    n, _, stats, _ = cv2.connectedComponentsWithStats(vert, connectivity=8)
    bars = [tuple(int(v) for v in stats[i][:4]) for i in range(1, n)
            if lo <= stats[i][3] <= hi and stats[i][2] <= max(3, stats[i][3] / 6)]
    bars.sort(key=lambda b: (b[1], b[0]))
    out = []
    for i, (x1, y1, w1, h1) in enumerate(bars):
        for x2, y2, w2, h2 in bars[i + 1:]:
            if y2 - y1 > 0.2 * h1:
                break
            d = x2 - x1
            if abs(h2 - h1) > 0.2 * h1 or not (0.75 * h1 <= d + w2 <= 1.33 * h1):
                continue
            t = max(2, w1 + 1)
            top = horiz[max(0, y1 - 1):y1 + t, x1:x2 + w2]
            bottom = horiz[y1 + h1 - t:y1 + h1 + 1, x1:x2 + w2]
            if top.size and bottom.size and (top.max(axis=0) > 0).mean() > 0.8 \
                    and (bottom.max(axis=0) > 0).mean() > 0.8:
                w, h = d + w2, h1
                out.append((x1, y1, w, h, _ticked(inv, x1, y1, w, h), False))
    return out


def _outline_is_straight(inv: np.ndarray, x: int, y: int, w: int, h: int) -> bool:
    """All four sides mostly inked: a box, not a letter like O or D."""
    t = max(1, min(w, h) // 8)
    sides = [inv[y:y + t, x:x + w], inv[y + h - t:y + h, x:x + w], inv[y:y + h, x:x + t], inv[y:y + h, x + w - t:x + w]]
    return all(s.size and (s.max(axis=0 if s.shape[0] < s.shape[1] else 1) > 0).mean() > 0.8 for s in sides)


def merge_boxes(words: list[Word], boxes: list[tuple], conf: float = 90.0) -> list[Word]:
    """Words with each box inserted as ☒/☐ and OCR words that were mostly the box dropped."""
    if not boxes:
        return words
    boxes = [b for b in boxes if not _inside_word(b, words) and (b[5] or not _on_real_word(b, words))]
    out = []
    for w in words:
        area = max(1.0, (w.x1 - w.x0) * (w.y1 - w.y0))
        covered = 0.0
        for x, y, bw, bh, _, _ in boxes:
            ix = max(0.0, min(w.x1, x + bw) - max(w.x0, x))
            iy = max(0.0, min(w.y1, y + bh) - max(w.y0, y))
            covered = max(covered, ix * iy / area)
        if covered < 0.5 and not (covered > 0 and sum(c.isalnum() for c in w.text) < 2):
            out.append(w)     # words that were mostly the box, or tick scrawl touching it, go
    out.extend(Word(CHECKED if ticked else UNCHECKED, x, y, x + bw, y + bh, conf) for x, y, bw, bh, ticked, _ in boxes)
    return out


def _inside_word(box, words: list[Word]) -> bool:
    """The "box" is a letter (O, 0, D) inside a word OCR read well: not a checkbox."""
    x, y, bw, bh = box[:4]
    for w in words:
        if w.conf < 50 or sum(c.isalnum() for c in w.text) < 3:
            continue
        ix = max(0.0, min(w.x1, x + bw) - max(w.x0, x))
        iy = max(0.0, min(w.y1, y + bh) - max(w.y0, y))
        if ix * iy > 0.6 * bw * bh and (w.x1 - w.x0) > 2.5 * bw:
            return True
    return False


def _on_real_word(box, words: list[Word]) -> bool:
    x, y, bw, bh = box[:4]
    for w in words:
        if w.conf < 60 or sum(c.isalpha() for c in w.text) < 2:
            continue
        ix = max(0.0, min(w.x1, x + bw) - max(w.x0, x))
        iy = max(0.0, min(w.y1, y + bh) - max(w.y0, y))
        if ix * iy > 0.3 * bw * bh:
            return True
    return False
