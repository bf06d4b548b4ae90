"""Geometry: words -> lines -> segments (the cells of a form).

A *line* is words whose vertical centres agree within half a word height; a *segment*
is a run of words in a line with no gap wider than `GAP` word heights, i.e. one cell of
a form or one column of a two-column box. Built the same way for OCR and text-layer
pages, so the extractor never cares where the words came from. Cost O(n log n) in words.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

from ocr.model import CHECKED, UNCHECKED, Page, Word

GAP = 1.4          # a gap wider than this many (median) word heights starts a new segment


@dataclass
class Segment:
    words: list[Word]
    line_no: int
    page: int = 1

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def x0(self) -> float:
        return self.words[0].x0

    @property
    def x1(self) -> float:
        return max(w.x1 for w in self.words)

    @property
    def y0(self) -> float:
        return min(w.y0 for w in self.words)

    @property
    def y1(self) -> float:
        return max(w.y1 for w in self.words)

    @property
    def conf(self) -> float:
        return sum(w.conf for w in self.words) / len(self.words)


@dataclass
class Line:
    words: list[Word]
    number: int
    page: int
    segments: list[Segment] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "   ".join(s.text for s in self.segments)

    @property
    def y0(self) -> float:
        return min(w.y0 for w in self.words)

    @property
    def y1(self) -> float:
        return max(w.y1 for w in self.words)


def typical_height(words: list[Word]) -> float:
    hs = [w.height for w in words if w.text.strip() and w.height > 0]
    return median(hs) if hs else 10.0


def page_lines(page: Page, first_number: int = 0) -> list[Line]:
    """The page's lines top to bottom, each split into segments left to right.

    Words tesseract read as one line stay together (its line knows better than a box
    that a stray quote mark made too tall); those pieces, and text-layer words, are then
    put in rows by the closest vertical centre that agrees within half a word height,
    where a row never holds two words on top of each other. Low-confidence debris does
    not move a row's centre."""
    words = [w for w in page.words if not is_noise(w)]
    if not words:
        return []
    h = typical_height(words)
    # a sliver far flatter than any text ("BO", "Oo" a pixel tall) is a ruling line OCR read as letters
    words = [w for w in words if not (w.height < 0.25 * h and w.conf < 60 and w.text.strip() not in _MARKS)] or words
    pieces: dict[object, list[Word]] = {}
    for i, w in enumerate(words):
        pieces.setdefault(w.line_key if w.line_key is not None else ("word", i), []).append(w)
    units = []
    for ws in pieces.values():
        ws.sort(key=lambda w: w.x0)
        # a tesseract "line" that wanders over several rows is split where its words stop
        # agreeing; a word whose box is merely too tall (merged with a speck) still covers the line
        c = _centre(ws)
        inside = [w for w in ws if abs(w.cy - c) <= 0.5 * h or (w.y0 <= c <= w.y1 and w.height < 3 * h)]
        units.append(inside)
        units.extend([w] for w in ws if not any(w is o for o in inside))
    rows: list[list[Word]] = []
    centres: list[float] = []
    for unit in sorted(units, key=_centre):
        c = _centre(unit)
        best, best_d = None, None
        for i in range(len(rows) - 1, -1, -1):
            if centres[i] < c - 2 * h:
                break
            d = abs(centres[i] - c)
            if d <= 0.5 * h and not any(_overlap_x(w, o) for w in unit for o in rows[i]) \
                    and (best_d is None or d < best_d):
                best, best_d = i, d
        if best is None:
            rows.append(list(unit))
            centres.append(c)
        else:
            rows[best].extend(unit)
            centres[best] = _centre(rows[best])
    order = sorted(range(len(rows)), key=lambda i: centres[i])
    lines = []
    for n, i in enumerate(order):
        ws = sorted(rows[i], key=lambda w: w.x0)
        line = Line(ws, first_number + n, page.number)
        current = [ws[0]]
        for prev, w in zip(ws, ws[1:]):
            if w.x0 - prev.x1 > GAP * h:
                line.segments.append(Segment(current, line.number, page.number))
                current = [w]
            else:
                current.append(w)
        line.segments.append(Segment(current, line.number, page.number))
        lines.append(line)
    return lines


def _centre(ws: list[Word]) -> float:
    good = [w.cy for w in ws if w.conf >= 50] or [w.cy for w in ws]
    good.sort()
    return good[len(good) // 2]


_MARKS = set("\u2612\u2610\u2611\u2713\u2714\u25a0\u25a1xX")


def is_noise(w: Word) -> bool:
    """OCR debris: rule fragments and specks read as punctuation or a lone low-confidence letter."""
    t = w.text.strip()
    if not t:
        return True
    if t in _MARKS or t.startswith("[") or t.startswith("("):
        return False
    if not any(c.isalnum() for c in t):
        return w.conf < 60 or len(t) == 1
    # a lone low-confidence letter is mostly speckle; short junk words are left to the parsers
    return len(t) == 1 and w.conf < 40


def _overlap_x(a: Word, b: Word) -> bool:
    if a.text in (CHECKED, UNCHECKED) or b.text in (CHECKED, UNCHECKED):
        return False          # a box next to the scrawl OCR made of its tick still shares the row
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 0.3 * min(a.x1 - a.x0, b.x1 - b.x0)


def document_lines(pages: list[Page]) -> list[Line]:
    out: list[Line] = []
    for p in pages:
        out.extend(page_lines(p, len(out)))
    return out
