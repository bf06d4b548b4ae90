"""Generate a seeded corpus of synthetic referral faxes with ground truth.

    python -m bench.fax_corpus.generate --seed 7 --count 60 --out /tmp/faxes
    python bench/fax_corpus/generate.py --seed 7 --count 60 --out /tmp/faxes [--split train|holdout|all|extra]

Writes NAME.{pdf,tif,png,jpg} with NAME.json beside it (the DESIGN.md extract
contract; null where the document does not say) and manifest.json listing every
file's layout, split, format and pages. The same seed and count give byte-identical
files. File names say nothing about the layout, so an extractor cannot
cheat by name.

Splits: `train` (layouts.py), `holdout` (layouts_holdout.py, never read by extractor
authors), `all` = train + holdout (as it always was, so old seeds give the same bytes),
`extra` (layouts_extra.py: more training-side layouts, only when asked for) and `extra2`
(layouts_extra.LAYOUTS_2, a second round of them, likewise).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make `bench.fax_corpus` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.fax_corpus import layouts, layouts_extra, layouts_holdout  # noqa: E402
from bench.fax_corpus.canvas import FIXED_DATE, render_pdf  # noqa: E402
from bench.fax_corpus.degrade import add_header, fax_header, faxed  # noqa: E402
from bench.fax_corpus.record import make_referral  # noqa: E402

FORMATS = {   # format -> weight
    "pdf_text": 2, "pdf_image": 3, "tiff_fine": 3, "tiff_standard": 3, "png": 1, "jpeg": 1,
}
FAX_FINE, FAX_STANDARD = (204, 196), (204, 98)


def all_layouts() -> dict[str, tuple[str, object]]:
    out = {name: ("train", fn) for name, fn in layouts.LAYOUTS.items()}
    out.update({name: ("holdout", fn) for name, fn in layouts_holdout.LAYOUTS.items()})
    out.update({name: ("extra", fn) for name, fn in layouts_extra.LAYOUTS.items()})
    out.update({name: ("extra2", fn) for name, fn in layouts_extra.LAYOUTS_2.items()})
    return out


def _in_split(layout_split: str, split: str) -> bool:
    # "all" keeps its old meaning (train + holdout): extra layouts join only when asked for
    return layout_split == split or (split == "all" and layout_split not in ("extra", "extra2"))


def write_document(rng: random.Random, layout_fn, fmt: str, base: Path) -> tuple[dict, str, int, str]:
    """Draw one referral with `layout_fn`, write it in `fmt`; returns (truth, file name, pages, format).

    A multi-page document asked for as PNG/JPEG is written as a fine TIFF instead."""
    r = make_referral(rng)
    pages = layout_fn(rng, r)
    header = fax_header(rng, r) if (fmt != "pdf_text" or rng.random() < 0.5) else None
    if fmt in ("png", "jpeg") and len(pages) > 1:
        fmt = "tiff_fine"
    if fmt == "pdf_text":
        path = base.with_suffix(".pdf")
        render_pdf(pages, path, header=header)
    else:
        dpi = {"tiff_standard": FAX_STANDARD, "png": (200, 200), "jpeg": (150, 150)}.get(fmt, FAX_FINE)
        if fmt == "pdf_image" and rng.random() < 0.4:
            dpi = (200, 200)
        imgs = []
        for n, p in enumerate(pages, 1):
            if header:
                p = add_header(p, header, n, len(pages))
            imgs.append(faxed(rng, p, dpi[0], dpi[1], bilevel=fmt != "jpeg"))
        if fmt.startswith("tiff"):
            path = base.with_suffix(".tif")
            imgs[0].save(path, save_all=True, append_images=imgs[1:], compression="group4", dpi=dpi)
        elif fmt == "png":
            path = base.with_suffix(".png")
            imgs[0].save(path, dpi=dpi, optimize=True)
        elif fmt == "jpeg":
            path = base.with_suffix(".jpg")
            imgs[0].save(path, quality=rng.randint(55, 80), dpi=dpi)
        else:
            path = base.with_suffix(".pdf")
            _image_pdf(imgs, path)
    return r.truth(), path.name, len(pages), fmt


def _image_pdf(imgs, path: Path) -> None:
    from fpdf import FPDF
    pdf = FPDF(unit="pt", format="letter")
    pdf.set_auto_page_break(False)
    pdf.set_creator("synthetic fax corpus")
    pdf.set_creation_date(FIXED_DATE)
    for img in imgs:
        pdf.add_page()
        pdf.image(img, x=0, y=0, w=612, h=792)   # page geometry fixes a non-square pixel aspect
    pdf.output(str(path))


def generate(seed: int, count: int, out: Path, split: str = "all", formats: list[str] | None = None) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    table = {k: v for k, v in all_layouts().items() if _in_split(v[0], split)}
    if not table:
        raise ValueError(f"no layouts for split {split!r} (valid: all, train, holdout, extra, extra2)")
    rng = random.Random(seed)
    names = sorted(table)
    order: list[str] = []
    while len(order) < count:   # every layout appears before any repeats
        batch = list(names)
        rng.shuffle(batch)
        order += batch
    fmts = formats or list(FORMATS)
    weights = [FORMATS.get(f, 1) for f in fmts]
    manifest = []
    for i, layout in enumerate(order[:count]):
        doc_rng = random.Random(f"{seed}:{i}")
        fmt = doc_rng.choices(fmts, weights)[0]
        name = f"fax_{seed}_{i:04d}"
        truth, file_name, n_pages, fmt = write_document(doc_rng, table[layout][1], fmt, out / name)
        (out / f"{name}.json").write_text(json.dumps(truth, indent=2) + "\n")
        manifest.append({"name": name, "file": file_name, "layout": layout, "split": table[layout][0],
                         "format": fmt, "pages": n_pages})
    (out / "manifest.json").write_text(json.dumps({"seed": seed, "count": count, "split": split,
                                                   "generated_for": dt.date(2026, 11, 23).isoformat(),
                                                   "documents": manifest}, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--split", choices=["all", "train", "holdout", "extra", "extra2"], default="all")
    ap.add_argument("--formats", help="comma-separated subset of " + ",".join(FORMATS))
    a = ap.parse_args(argv)
    fmts = a.formats.split(",") if a.formats else None
    if fmts and (bad := [f for f in fmts if f not in FORMATS]):
        ap.error(f"unknown format(s) {bad}; valid: {', '.join(FORMATS)}")
    m = generate(a.seed, a.count, a.out, a.split, fmts)
    print(f"wrote {len(m)} documents ({sum(d['pages'] for d in m)} pages) to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
