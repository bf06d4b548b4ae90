"""A page as a list of drawing operations in points (1/72 in), rendered two ways.

Layouts draw onto `Page` objects (text at a baseline, lines, boxes, checkboxes);
`render_image` rasterizes a page with PIL at any x/y resolution (fax standard is
204x98 dpi, so pixels are twice as tall as wide), and `render_pdf` writes the same
pages as a vector PDF with a real text layer (fpdf2). Both use the same TrueType
files, so the two renderings agree. Fonts missing from the machine raise
FileNotFoundError naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PAGE_W, PAGE_H = 612.0, 792.0   # US Letter in points
FIXED_DATE = datetime(2026, 11, 23, tzinfo=timezone.utc)

FONT_DIR = Path("/usr/share/fonts/truetype")
FONTS = {
    # family -> (regular, bold)
    "DejaVuSans": ("dejavu/DejaVuSans.ttf", "dejavu/DejaVuSans-Bold.ttf"),
    "DejaVuSerif": ("dejavu/DejaVuSerif.ttf", "dejavu/DejaVuSerif-Bold.ttf"),
    "DejaVuSansMono": ("dejavu/DejaVuSansMono.ttf", "dejavu/DejaVuSansMono-Bold.ttf"),
    "DejaVuSansCondensed": ("dejavu/DejaVuSansCondensed.ttf", "dejavu/DejaVuSansCondensed-Bold.ttf"),
    "LiberationSans": ("liberation/LiberationSans-Regular.ttf", "liberation/LiberationSans-Bold.ttf"),
    "LiberationSerif": ("liberation/LiberationSerif-Regular.ttf", "liberation/LiberationSerif-Bold.ttf"),
    "LiberationMono": ("liberation/LiberationMono-Regular.ttf", "liberation/LiberationMono-Bold.ttf"),
    "LiberationSansNarrow": ("liberation/LiberationSansNarrow-Regular.ttf",
                             "liberation/LiberationSansNarrow-Bold.ttf"),
}
PROPORTIONAL = ["DejaVuSans", "DejaVuSerif", "LiberationSans", "LiberationSerif", "DejaVuSansCondensed",
                "LiberationSansNarrow"]
MONO = ["DejaVuSansMono", "LiberationMono"]


def font_path(family: str, bold: bool) -> Path:
    path = FONT_DIR / FONTS[family][1 if bold else 0]
    if not path.exists():
        raise FileNotFoundError(f"font file {path} (family {family}) is not installed")
    return path


@lru_cache(maxsize=256)
def pil_font(family: str, bold: bool, size_px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path(family, bold)), max(size_px, 4))


@lru_cache(maxsize=256)
def _measure_font(family: str, bold: bool) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path(family, bold)), 1000)


def text_width(s: str, family: str, size: float, bold: bool = False) -> float:
    """Width of s in points at size (points)."""
    return _measure_font(family, bold).getlength(s) * size / 1000.0


@dataclass
class Op:
    kind: str            # text | line | rect | check
    args: tuple
    style: dict = field(default_factory=dict)


@dataclass
class Page:
    family: str = "LiberationSans"
    ops: list[Op] = field(default_factory=list)

    def text(self, x: float, y: float, s: str, size: float = 10, bold: bool = False,
             family: str | None = None) -> float:
        """Draw s with its baseline at y; returns the x just after it."""
        fam = family or self.family
        self.ops.append(Op("text", (x, y, s), {"size": size, "bold": bold, "family": fam}))
        return x + text_width(s, fam, size, bold)

    def width(self, s: str, size: float = 10, bold: bool = False, family: str | None = None) -> float:
        return text_width(s, family or self.family, size, bold)

    def line(self, x1: float, y1: float, x2: float, y2: float, w: float = 0.8) -> None:
        self.ops.append(Op("line", (x1, y1, x2, y2), {"w": w}))

    def rect(self, x: float, y: float, w: float, h: float, lw: float = 0.8, fill: bool = False) -> None:
        self.ops.append(Op("rect", (x, y, w, h), {"w": lw, "fill": fill}))

    def checkbox(self, x: float, y: float, checked: bool, size: float = 9, mark: str = "X") -> float:
        """A square with its bottom at baseline y; mark is X, check, fill or slash. Returns x after it."""
        self.ops.append(Op("check", (x, y - size, size), {"checked": checked, "mark": mark}))
        return x + size


def _px(v: float, dpi: float) -> float:
    return v * dpi / 72.0


def render_image(page: Page, xdpi: float, ydpi: float) -> Image.Image:
    """Grayscale image of the page. Drawn at xdpi square, then squashed to ydpi like a fax scanner."""
    dpi = xdpi
    w, h = round(_px(PAGE_W, dpi)), round(_px(PAGE_H, dpi))
    img = Image.new("L", (w, h), 255)
    d = ImageDraw.Draw(img)
    for op in page.ops:
        if op.kind == "text":
            x, y, s = op.args
            f = pil_font(op.style["family"], op.style["bold"], round(_px(op.style["size"], dpi)))
            d.text((_px(x, dpi), _px(y, dpi)), s, fill=0, font=f, anchor="ls")
        elif op.kind == "line":
            x1, y1, x2, y2 = op.args
            d.line([(_px(x1, dpi), _px(y1, dpi)), (_px(x2, dpi), _px(y2, dpi))], fill=0,
                   width=max(1, round(_px(op.style["w"], dpi))))
        elif op.kind == "rect":
            x, y, rw, rh = op.args
            box = [_px(x, dpi), _px(y, dpi), _px(x + rw, dpi), _px(y + rh, dpi)]
            if op.style["fill"]:
                d.rectangle(box, fill=0)
            else:
                d.rectangle(box, outline=0, width=max(1, round(_px(op.style["w"], dpi))))
        elif op.kind == "check":
            x, y, s = op.args
            box = [_px(x, dpi), _px(y, dpi), _px(x + s, dpi), _px(y + s, dpi)]
            lw = max(1, round(_px(0.8, dpi)))
            d.rectangle(box, outline=0, width=lw)
            if op.style["checked"]:
                _draw_mark(d, box, op.style["mark"], max(1, round(_px(1.3, dpi))))
    if ydpi != xdpi:
        img = img.resize((w, round(h * ydpi / xdpi)), Image.Resampling.BOX)
    return img


def _draw_mark(d: ImageDraw.ImageDraw, box: list[float], mark: str, lw: int) -> None:
    x0, y0, x1, y1 = box
    inset = (x1 - x0) * 0.18
    a, b, c, e = x0 + inset, y0 + inset, x1 - inset, y1 - inset
    if mark == "fill":
        d.rectangle([a, b, c, e], fill=0)
    elif mark == "check":
        d.line([(a, (b + e) / 2), ((a + c) / 2.2, e), (c, b)], fill=0, width=lw)
    elif mark == "slash":
        d.line([(a, e), (c, b)], fill=0, width=lw)
    else:
        d.line([(a, b), (c, e)], fill=0, width=lw)
        d.line([(a, e), (c, b)], fill=0, width=lw)


def render_pdf(pages: list[Page], path: Path, header: str | None = None) -> None:
    """A vector PDF with a text layer; `header` (a fax header line) is printed atop every page."""
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format="letter")
    pdf.set_auto_page_break(False)
    pdf.set_creator("synthetic fax corpus")
    pdf.set_creation_date(FIXED_DATE)   # the file id hashes the date: pin it so a seed gives the same bytes
    added: set[str] = set()

    def use(family: str, bold: bool, size: float) -> None:
        key = family + ("B" if bold else "")
        if key not in added:
            pdf.add_font(family, "B" if bold else "", str(font_path(family, bold)))
            added.add(key)
        pdf.set_font(family, "B" if bold else "", size)

    for n, page in enumerate(pages, 1):
        pdf.add_page()
        if header:
            use("LiberationMono", False, 8)
            pdf.text(20, 14, header.replace("{page}", str(n)).replace("{pages}", str(len(pages))))
        for op in page.ops:
            if op.kind == "text":
                x, y, s = op.args
                use(op.style["family"], op.style["bold"], op.style["size"])
                pdf.text(x, y, s)
            elif op.kind == "line":
                pdf.set_line_width(op.style["w"])
                pdf.line(*op.args)
            elif op.kind == "rect":
                x, y, w, h = op.args
                pdf.set_line_width(op.style["w"])
                pdf.rect(x, y, w, h, style="F" if op.style["fill"] else "D")
            elif op.kind == "check":
                x, y, s = op.args
                pdf.set_line_width(0.8)
                pdf.rect(x, y, s, s)
                if op.style["checked"]:
                    i = s * 0.18
                    pdf.set_line_width(1.3)
                    if op.style["mark"] == "fill":
                        pdf.rect(x + i, y + i, s - 2 * i, s - 2 * i, style="F")
                    elif op.style["mark"] == "check":
                        pdf.line(x + i, y + s / 2, x + s / 2.2, y + s - i)
                        pdf.line(x + s / 2.2, y + s - i, x + s - i, y + i)
                    elif op.style["mark"] == "slash":
                        pdf.line(x + i, y + s - i, x + s - i, y + i)
                    else:
                        pdf.line(x + i, y + i, x + s - i, y + s - i)
                        pdf.line(x + i, y + s - i, x + s - i, y + i)
    pdf.output(str(path))
