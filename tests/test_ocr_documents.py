"""Reading real files with real poppler and tesseract: formats, fax resolution, bad files, CLI.

Pages are drawn here with PIL (DejaVu fonts) or fpdf2, kept to a handful of OCR pages
(about 1.5-3 s each on this machine).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from ocr import DocumentError, extract_document, read_document
from ocr.documents import open_document

REPO = Path(__file__).resolve().parent.parent
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FORM = [
    "REFERRAL FORM",
    "Patient Name: GARCIA, LUIS",
    "Date of Birth: 07/14/1962",
    "Sex: Male",
    "MRN: 889123",
    "Insurance: Aetna",
    "Referring Physician: Maria Lopez, MD",
    "NPI: 1234567893",
    "Refer to: Cardiology",
    "Reason: Chest pain on exertion",
]


def draw_page(lines: list[str], dpi: int = 200, size_pt: int = 12) -> Image.Image:
    """A letter-size page at `dpi` with one text line per entry, black on white."""
    img = Image.new("L", (int(8.5 * dpi), int(11 * dpi)), 255)
    d = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, int(size_pt * dpi / 72))
    y = int(0.8 * dpi)
    for line in lines:
        d.text((int(0.8 * dpi), y), line, font=font, fill=0)
        y += int(size_pt * 2.0 * dpi / 72)
    return img


def fax_standard(img: Image.Image) -> Image.Image:
    """What a standard-resolution fax machine sends: 204x98 dpi (about every other row), bilevel."""
    return img.resize((1728, round(img.height * 1728 / img.width * 98 / 204))).convert("1")


# ---- formats ---------------------------------------------------------------------------------

def test_text_layer_pdf_is_read_without_ocr(tmp_path):
    from fpdf import FPDF
    pdf = FPDF(format="letter")
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    for line in FORM:
        pdf.cell(0, 10, line, new_x="LMARGIN", new_y="NEXT")
    path = tmp_path / "form.pdf"
    pdf.output(str(path))
    doc = read_document(path)
    assert doc.kind == "pdf" and doc.source == "text_layer" and len(doc.pages) == 1
    got = extract_document(path)
    assert got["source"] == "text_layer"
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Luis", "Garcia")
    assert got["patient_dob"] == "1962-07-14" and got["referring_provider_npi"] == "1234567893"
    assert got["referred_to_specialty"] == "cardiology" and got["insurance_payer"] == "Aetna"


def test_png_page_is_ocred(tmp_path):
    path = tmp_path / "page.png"
    draw_page(FORM, dpi=200).save(path, dpi=(200, 200))
    got = extract_document(path)
    assert got["source"] == "ocr" and got["kind"] == "png" and got["pages"] == 1
    assert got["patient_family_name"] == "Garcia" and got["patient_dob"] == "1962-07-14"
    assert got["patient_sex"] == "M" and got["referring_provider_name"] == "Maria Lopez"
    assert got["confidence"]["patient_dob"] > 0.5


def test_standard_fax_tiff_is_stretched_to_square_pixels(tmp_path):
    """Two G4 pages at 204x98 dpi: pixels twice as tall as wide must be stretched before OCR."""
    path = tmp_path / "fax.tif"
    first = fax_standard(draw_page(FORM[:5], dpi=204))
    second = fax_standard(draw_page(FORM[5:], dpi=204))
    first.save(path, compression="group4", dpi=(204, 98), save_all=True, append_images=[second])
    kind, jobs = open_document(path)
    assert kind == "tiff" and len(jobs) == 2
    doc = read_document(path)
    assert [p.number for p in doc.pages] == [1, 2] and doc.source == "ocr"
    page = doc.pages[0]
    assert abs(page.height / page.width - 11 / 8.5) < 0.05          # letter proportions again
    text = doc.text.lower()
    assert "garcia" in text and "cardiology" in text
    got = extract_document(path)
    assert got["patient_dob"] == "1962-07-14" and got["referred_to_specialty"] == "cardiology"


def test_image_only_pdf_is_rasterized_and_ocred(tmp_path):
    path = tmp_path / "scan.pdf"
    draw_page(FORM, dpi=150).convert("1").save(path, resolution=150)
    doc = read_document(path, pages_dir=tmp_path / "pages")
    assert doc.kind == "pdf" and doc.source == "ocr"
    assert "garcia" in doc.text.lower()
    assert Path(doc.pages[0].image_path).is_file()               # kept for the reviewer


def test_upside_down_page_is_turned(tmp_path):
    path = tmp_path / "upside.png"
    draw_page(FORM * 2, dpi=200).rotate(180).save(path, dpi=(200, 200))
    doc = read_document(path)
    assert doc.pages[0].rotation == 180
    assert "garcia" in doc.text.lower()


# ---- bad files: one exception type, one reason each -------------------------------------------

def _reason(path, **kw) -> str:
    with pytest.raises(DocumentError) as exc:
        read_document(path, **kw)
    return exc.value.reason


def test_empty_file(tmp_path):
    (tmp_path / "empty.pdf").write_bytes(b"")
    assert _reason(tmp_path / "empty.pdf") == "empty"


def test_not_a_document(tmp_path):
    (tmp_path / "notes.pdf").write_text("just some text, named like a PDF")
    assert _reason(tmp_path / "notes.pdf") == "not_a_document"


def test_missing_file(tmp_path):
    assert _reason(tmp_path / "nope.tif") == "unreadable"


def test_corrupt_pdf_and_truncated_image(tmp_path):
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage\n%%EOF")
    assert _reason(tmp_path / "bad.pdf") == "corrupt"
    draw_page(["hello"], dpi=100).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    assert _reason(tmp_path / "cut.png") == "corrupt"


def test_password_protected_pdf(tmp_path):
    from fpdf import FPDF
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner", user_password="secret")
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(0, 10, "Patient Name: DOE, JANE")
    pdf.output(str(tmp_path / "locked.pdf"))
    assert _reason(tmp_path / "locked.pdf") == "encrypted"


def test_too_many_pages(tmp_path):
    from fpdf import FPDF
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for i in range(3):
        pdf.add_page()
        pdf.cell(0, 10, f"page {i + 1}")
    pdf.output(str(tmp_path / "long.pdf"))
    assert _reason(tmp_path / "long.pdf", max_pages=2) == "too_many_pages"
    frames = [Image.new("1", (64, 64), 1) for _ in range(3)]
    frames[0].save(tmp_path / "long.tif", save_all=True, append_images=frames[1:])
    assert _reason(tmp_path / "long.tif", max_pages=2) == "too_many_pages"


# ---- the CLI contract ------------------------------------------------------------------------

@pytest.mark.slow
def test_extract_cli_prints_one_json_object(tmp_path):
    path = tmp_path / "page.png"
    draw_page(FORM, dpi=200).save(path, dpi=(200, 200))
    p = subprocess.run([sys.executable, str(REPO / "run_engine.py"), "extract", str(path)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)                       # exactly one JSON document, nothing else
    keys = {"patient_family_name", "patient_given_name", "patient_dob", "patient_sex", "patient_phone",
            "patient_mrn", "insurance_payer", "insurance_member_id", "referring_provider_name",
            "referring_provider_npi", "referring_practice_phone", "referring_practice_fax",
            "referred_to_specialty", "urgency", "diagnosis_codes", "reason", "confidence"}
    assert keys <= set(doc)
    assert doc["patient_family_name"] == "Garcia" and doc["source"] == "ocr"


def test_extract_cli_bad_file_is_one_line_and_exit_1(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    p = subprocess.run([sys.executable, str(REPO / "run_engine.py"), "extract", str(tmp_path / "empty.tif")],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert json.loads(p.stdout) == {"error": "empty", "message": "the file is empty (0 bytes)"}
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_drawn_checkboxes_are_read_from_the_image(tmp_path):
    """Boxes drawn as outlines (OCR reads them as anything); one ticked with an X, one with a
    check stroke that runs out of its box."""
    dpi = 200
    img = draw_page(["Patient Name: DOE, JANE", "Referral urgency:", "", "Refer to:"], dpi=dpi)
    d = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, int(12 * dpi / 72))
    size = int(0.13 * dpi)
    y = int(0.8 * dpi) + 2 * int(24 * dpi / 72)
    x = int(0.8 * dpi)
    for word, ticked in (("Routine", False), ("Urgent", True), ("STAT", False)):
        d.rectangle([x, y, x + size, y + size], outline=0, width=3)
        if ticked:
            d.line([x + 4, y + 4, x + size - 4, y + size - 4], fill=0, width=3)
            d.line([x + 4, y + size - 4, x + size - 4, y + 4], fill=0, width=3)
        d.text((x + size + 15, y - 4), word, font=font, fill=0)
        x += int(2.0 * dpi)
    y += 2 * int(24 * dpi / 72)
    x = int(0.8 * dpi)
    for word, ticked in (("Cardiology", False), ("Neurology", True)):
        d.rectangle([x, y, x + size, y + size], outline=0, width=3)
        if ticked:      # a check mark that starts far left of the box and ends inside it
            d.line([x - 60, y + size - 10, x + size - 6, y + 6], fill=0, width=5)
        d.text((x + size + 15, y - 4), word, font=font, fill=0)
        x += int(2.8 * dpi)
    path = tmp_path / "boxes.png"
    img.save(path, dpi=(dpi, dpi))
    got = extract_document(path)
    assert got["urgency"] == "urgent"
    assert got["referred_to_specialty"] == "neurology"
