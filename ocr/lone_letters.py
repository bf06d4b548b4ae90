"""A lone "M" or "F" next to a sex label, read again on its own.

Tesseract's page layout analysis (psm 3) often drops a single letter standing in a box
or an otherwise empty cell as noise, so "Sex: [F]" comes back as "Sex:" alone. For each
sex label whose value zone (to its right on the same line, or the cell below it) holds no
word at all, the zone's ink is looked at: when it is one letter-sized blob, that blob is
cropped and read with psm 10 (one character) and a whitelist of M and F.

Bad paths: no ink, more than one blob, a blob not the size of a letter, or a psm 10 answer
that is not M/F with some confidence -> nothing is added (the field stays unread, as
before). Cost: one small tesseract call per empty sex zone, none on most pages.
"""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytesseract

from ocr.layout import is_noise
from ocr.model import Word

SEX_LABEL = re.compile(r"(?i)^(?:sex|gender|m/f|sex/gender|gender/sex)\s*(?:\(m/f\))?[:.;]?$")
SEX_VALUE = re.compile(r"(?i)^[\[(|lI]?(?:m|f|male|female|x|u)[\])|.,]?$")
MIN_CONF = 40.0            # psm 10 confidence (0..100) below which the letter is not believed
RIGHT_REACH = 12.0         # how far right of the label (in label heights) its value may stand
BELOW_REACH = 2.8          # how far below


def _zones(label: Word, words: list[Word]) -> list[tuple[str, tuple[float, float, float, float]]]:
    """("right" | "below", (x0, y0, x1, y1)) where the label's value would be: right of it up to the
    next word on its line, and under it up to the next word below."""
    h = label.height
    same_line = [w for w in words if w is not label and abs(w.cy - label.cy) < 0.6 * h and w.x0 > label.x1]
    right_end = min([w.x0 for w in same_line] + [label.x1 + RIGHT_REACH * h])
    zones = [("right", (label.x1 + 0.3 * h, label.y0 - 0.5 * h, right_end - 0.2 * h, label.y1 + 0.5 * h))]
    under = [w for w in words if w.y0 > label.y1 and w.x0 < label.x1 + 3 * h and w.x1 > label.x0 - h]
    below_end = min([w.y0 for w in under] + [label.y1 + BELOW_REACH * h])
    zones.append(("below", (label.x0 - 0.8 * h, label.y1 + 0.25 * h, label.x1 + 3 * h, below_end - 0.15 * h)))
    return [(k, z) for k, z in zones if z[2] - z[0] > 0.5 * h and z[3] - z[1] > 0.8 * h]


def _words_in(zone, words: list[Word]) -> bool:
    x0, y0, x1, y1 = zone
    return any(w.x1 > x0 and w.x0 < x1 and w.y1 > y0 and w.y0 < y1 for w in words)


def _letter_blob(image: np.ndarray, zone, h: float) -> tuple[int, int, int, int] | None:
    """The one letter-sized ink blob in the zone (x0, y0, x1, y1 in page pixels), or None."""
    H, W = image.shape
    x0, y0, x1, y1 = (max(0, int(zone[0])), max(0, int(zone[1])), min(W, int(zone[2])), min(H, int(zone[3])))
    if x1 - x0 < 3 or y1 - y0 < 3:
        return None
    ink = (image[y0:y1, x0:x1] < 128).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    zw, zh = x1 - x0, y1 - y0
    blobs = []
    for bx, by, bw, bh, area in stats[1:]:
        if area < 0.02 * h * h:
            continue                                                  # specks left by the fax
        if bw <= max(3, 0.18 * h) or bh <= max(3, 0.15 * h):
            continue                                                  # a box's side or a rule: not a letter
        if bx == 0 or by == 0 or bx + bw >= zw or by + bh >= zh:
            continue                                                  # cut by the zone's edge: part of something larger
        blobs.append((bx, by, bw, bh))
    # a closed box drawn round the letter is a blob that holds the letter: a frame, not a second mark
    blobs = [b for b in blobs if not any(o is not b and b[0] < o[0] and b[1] < o[1] and b[0] + b[2] > o[0] + o[2]
                                         and b[1] + b[3] > o[1] + o[3] for o in blobs)]
    if len(blobs) != 1:
        return None
    bx, by, bw, bh = blobs[0]
    if not (0.55 * h <= bh <= 1.7 * h and 0.25 * h <= bw <= 1.4 * h):
        return None
    return x0 + bx, y0 + by, x0 + bx + bw, y0 + by + bh


def read_letter(image: np.ndarray, box: tuple[int, int, int, int], timeout: float = 10.0) -> tuple[str, float] | None:
    """(letter, confidence) of one M/F blob read by tesseract psm 10, or None."""
    x0, y0, x1, y1 = box
    pad = max(6, (y1 - y0) // 2)
    crop = np.full((y1 - y0 + 2 * pad, x1 - x0 + 2 * pad), 255, np.uint8)
    crop[pad:pad + y1 - y0, pad:pad + x1 - x0] = image[y0:y1, x0:x1]
    try:
        data = pytesseract.image_to_data(crop, lang="eng", config="--psm 10 -c tessedit_char_whitelist=MF",
                                         output_type=pytesseract.Output.DICT, timeout=timeout)
    except (RuntimeError, pytesseract.TesseractError):
        return None
    for text, conf in zip(data["text"], data["conf"]):
        text = (text or "").strip()
        if text in ("M", "F") and float(conf) >= MIN_CONF:
            return text, float(conf)
    return None


def reread_sex_values(image: np.ndarray, words: list[Word]) -> list[Word]:
    """Words to add for sex labels whose value tesseract left out (see the module docstring)."""
    added: list[Word] = []
    # punctuation debris (a lone letter read as "." or "-") and what the layout drops as noise
    # (a lone letter at confidence 0-40) are not a reading of the value
    read = [w for w in words if not is_noise(w)]
    for label in read:
        if not SEX_LABEL.match(label.text) or label.height <= 4:
            continue
        zones = _zones(label, read)
        near = [w for w in read if w is not label and SEX_VALUE.match(w.text)
                and any(w.x1 > z[0] and w.x0 < z[2] and w.y1 > z[1] and w.y0 < z[3] for _, z in zones)]
        if near:
            continue
        for kind, zone in zones:
            if _words_in(zone, read):
                continue                  # something was read there: a value (garbled or not) or another label
            blob = _letter_blob(image, zone, label.height)
            if blob is None:
                continue
            got = read_letter(image, blob)
            if got:
                letter, conf = got
                line_key = label.line_key if kind == "right" else None     # same line: tesseract's grouping
                added.append(Word(letter, *map(float, blob), conf, line_key))
                break
    return added


def without_debris(words: list[Word], added: list[Word]) -> list[Word]:
    """The first pass's words less the debris ("." or a 0-confidence "F") that an added letter now reads."""
    def under(w: Word, a: Word) -> bool:
        return min(w.x1, a.x1) - max(w.x0, a.x0) > 0 and min(w.y1, a.y1) - max(w.y0, a.y0) > 0
    return [w for w in words if not is_noise(w) or not any(under(w, a) for a in added)]
