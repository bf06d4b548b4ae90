"""What a read document is made of: pages of words with boxes and confidences.

Coordinates are in the page's own unit (pixels for OCR pages, PDF points for text-layer
pages); only ratios to the word height matter to the layout code, so the two never mix.
A word's `conf` is tesseract's 0..100 (100 for text-layer words).
"""
from __future__ import annotations

from dataclasses import dataclass, field

CHECKED = "\u2612"     # ☒ — also what the image checkbox detector inserts for a ticked box
UNCHECKED = "\u2610"   # ☐


@dataclass(slots=True)
class Word:
    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    conf: float = 100.0
    line_key: tuple | None = None     # tesseract's (block, paragraph, line): words it read as one line

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2


@dataclass
class Page:
    number: int                      # 1-based
    width: float
    height: float
    words: list[Word]
    source: str                      # "text_layer" | "ocr"
    seconds: float = 0.0
    rotation: int = 0                # degrees turned to make the page upright
    warnings: list[str] = field(default_factory=list)
    image_path: str | None = None    # the cleaned page image, when the caller asked for page images

    @property
    def mean_conf(self) -> float:
        confs = [w.conf for w in self.words if w.text.strip()]
        return sum(confs) / len(confs) if confs else 0.0


@dataclass
class Document:
    path: str
    kind: str                        # "pdf" | "tiff" | "png" | "jpeg"
    pages: list[Page]
    warnings: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        kinds = {p.source for p in self.pages}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def text(self) -> str:
        """Plain text, page by page, lines rebuilt from the word boxes."""
        from ocr.layout import page_lines
        return "\n\f".join("\n".join(line.text for line in page_lines(p)) for p in self.pages)
