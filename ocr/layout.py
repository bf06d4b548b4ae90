"""Geometry: words -> lines -> segments (the cells of a form).

A *line* is words whose vertical centres agree within half a word height; a *segment*
is a run of words in a line with no gap wider than `GAP` word heights, i.e. one cell of
a form or one column of a two-column box. Built the same way for OCR and text-layer
pages, so the extractor never cares where the words came from. Cost O(n log n) in words.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

from ocr.model import Page, Word

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
    """The page's lines top to bottom, each split into segments left to right."""
    words = [w for w in page.words if not is_noise(w)]
    if not words:
        return []
    h = typical_height(words)
    rows: list[list[Word]] = []
    centres: list[float] = []
    for w in sorted(words, key=lambda w: (w.cy, w.x0)):
        # the nearest row whose centre agrees and that has no word overlapping this one
        best = None
        for i in range(len(rows) - 1, -1, -1):
            if centres[i] < w.cy - 2 * h:
                break
            if abs(centres[i] - w.cy) <= 0.5 * h and not any(_overlap_x(w, o) for o in rows[i]):
                best = i
                break
        if best is None:
            rows.append([w])
            centres.append(w.cy)
        else:
            rows[best].append(w)
            centres[best] = sum(o.cy for o in rows[best]) / len(rows[best])
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
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 0.3 * min(a.x1 - a.x0, b.x1 - b.x0)


def document_lines(pages: list[Page]) -> list[Line]:
    out: list[Line] = []
    for p in pages:
        out.extend(page_lines(p, len(out)))
    return out
