"""What the fax line does to a page: fax header, skew, blur, threshold, speckle,
and the 204x98 "standard" resolution that makes pixels twice as tall as wide.

Pure image functions over PIL images; the random generator is passed in so a seed
reproduces the same damage. Geometry (skew) is applied at square resolution,
before the vertical squash, because a real scanner skews the paper, not the pixels.
"""
from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageFilter

from .canvas import Page, render_image
from .record import Referral, fmt_phone

MONTHS3 = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]


def fax_header(rng: random.Random, r: Referral) -> str:
    """A fax machine's top line with {page}/{pages} placeholders; marks the practice fax if it shows it."""
    d = r.referral_date
    hh, mm = rng.randint(7, 18), rng.randint(0, 59)
    style = rng.randrange(4)
    if style in (0, 1):
        r.present["referring_practice_fax"] = True
    if style == 0:
        return (f"{MONTHS3[d.month - 1]}-{d.day:02d}-{d.year} {hh:02d}:{mm:02d} FROM: {r.referring_practice_fax}"
                f"  TO: {r.specialist_fax}  P.{{page}}/{{pages}}")
    if style == 1:
        return (f"{d.month:02d}/{d.day:02d}/{d.year} {hh % 12 or 12}:{mm:02d}{'AM' if hh < 12 else 'PM'}  "
                f"{r.practice_name[:24].upper()}  {fmt_phone(rng, r.referring_practice_fax, False)}  p.{{page}}")
    if style == 2:
        return f"{d.month:02d}/{d.day:02d}/{d.year % 100:02d} {hh:02d}:{mm:02d}  {r.practice_name.upper()}  PAGE {{page}} OF {{pages}}"
    return f"Received: {MONTHS3[d.month - 1].title()} {d.day} {d.year} {hh:02d}:{mm:02d}; Page {{page}}/{{pages}}"


def add_header(page: Page, header: str, n: int, total: int) -> Page:
    p = Page(page.family, list(page.ops))
    p.text(20, 14, header.replace("{page}", str(n)).replace("{pages}", str(total)), 8, family="LiberationMono")
    return p


def faxed(rng: random.Random, page: Page, xdpi: float, ydpi: float, bilevel: bool = True,
          noise: float | None = None, skew: float | None = None) -> Image.Image:
    """Render and damage one page; returns mode '1' when bilevel, else 'L'."""
    img = render_image(page, xdpi, xdpi)
    skew = rng.uniform(-2.0, 2.0) if skew is None and rng.random() < 0.75 else (skew or 0.0)
    if abs(skew) > 0.05:
        img = img.rotate(skew, resample=Image.Resampling.BILINEAR, fillcolor=255)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    if ydpi != xdpi:
        img = img.resize((img.width, round(img.height * ydpi / xdpi)), Image.Resampling.BOX)
    a = np.asarray(img, dtype=np.uint8)
    noise = rng.uniform(0.0003, 0.003) if noise is None else noise
    nrng = np.random.default_rng(rng.getrandbits(32))
    if bilevel:
        a = np.where(a < rng.randint(140, 200), 0, 255).astype(np.uint8)
    speck = nrng.random(a.shape) < noise
    a = a.copy()
    a[speck] = 0
    drop = nrng.random(a.shape) < noise / 2   # lost black pixels inside strokes
    a[drop] = 255
    if rng.random() < 0.25:   # a streak from a dirty scanner glass
        x = nrng.integers(0, a.shape[1])
        a[:, x:x + 1 + int(nrng.integers(0, 2))] = 0
    out = Image.fromarray(a, "L")
    return out.convert("1", dither=Image.Dither.NONE) if bilevel else out
