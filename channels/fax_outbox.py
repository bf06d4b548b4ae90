"""Fax outbox: turns a fax-back request into a PDF in a folder the fax server sends from.

Payload (UTF-8 JSON):
    {"to_fax": "5551234567", "to_name": "...", "subject": "...",
     "kind": "consult_note" | "status_letter",
     "referral": {"patient_name": ..., "patient_dob": ..., "id": ..., "specialty": ..., "status": ...},
     "body": "text",
     "attachments": [{"content_type": "application/pdf", "base64": "..."}]}

The PDF (US Letter, DejaVu Sans so accented names render): a cover page (to/from
names and fax numbers, date, page count including the cover, subject, referral
summary, attachments, confidentiality notice), then the letter or note text,
wrapped over as many pages as it needs, each page footed "page i of n". PDF
attachments are appended page for page (poppler's `pdfunite`); PNG/JPEG images
get one page each. Rendering runs in a worker thread, off the event loop.

Files, for a fax server that watches the folder: `NAME.pdf` first (temp file,
fsync, rename), then the sidecar `NAME.json` naming the destination fax number —
so a server that triggers on sidecars never sees a half-written PDF. NAME is
`name_pattern` (default `{kind}-{id}`, the queue row id).

Outcomes:
- written -> sent; the sidecar already there -> sent (a resend is idempotent while
  the fax server has not collected the pair);
- payload not JSON / not an object, fax number missing or not a fax number
  (10-digit NANP, or + and 8-15 digits), no body and no attachment, an attachment
  that is not base64 / not a readable PDF / of another type -> dead, naming the
  field (never its value, except the fax number);
- disk error, `pdfunite` missing or failing -> retry.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fpdf import FPDF

from channels.file_writer import replace_atomic, safe_name, write_atomic
from channels.outbound import Delivery, DeliveryResult, dead, retry, sent

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
CONFIDENTIALITY_NOTICE = (
    "CONFIDENTIALITY NOTICE: This facsimile contains protected health information that is privileged and "
    "confidential under federal and state law. It is intended only for the use of the recipient named above. "
    "If you are not the intended recipient, any review, disclosure, copying or distribution is prohibited. "
    "If you received this fax in error, please notify the sender by telephone immediately and destroy all copies.")
KIND_TITLES = {"consult_note": "Consult note", "status_letter": "Referral status letter"}
REFERRAL_LABELS = {"patient_name": "Patient", "patient_dob": "Date of birth", "dob": "Date of birth",
                   "id": "Referral ID", "referral_id": "Referral ID", "specialty": "Specialty",
                   "department": "Department", "status": "Status", "referring_provider": "Referring provider",
                   "specialist": "Specialist", "appointment": "Appointment", "urgency": "Urgency"}
IMAGE_TYPES = {"image/png", "image/jpeg", "image/jpg"}


class FaxPayloadError(ValueError):
    """The request cannot become a fax; no resend can change that."""


def fax_number(text: object) -> str | None:
    """A dialable fax number: 10 NANP digits (a leading 1 dropped), or '+' and 8-15 digits; None if not one."""
    if not isinstance(text, (str, int)):
        return None
    raw = str(text).strip()
    international = raw.startswith("+")
    digits = re.sub(r"[\s().\-/]", "", raw.lstrip("+"))
    if not digits.isdigit():
        return None
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    elif international:
        return "+" + digits if 8 <= len(digits) <= 15 else None
    return digits if len(digits) == 10 and digits[0] not in "01" and digits[3] not in "01" else None


def shown_fax(number: str) -> str:
    return f"({number[:3]}) {number[3:6]}-{number[6:]}" if len(number) == 10 else number


@dataclass(frozen=True)
class Attachment:
    content_type: str
    data: bytes


@dataclass(frozen=True)
class FaxRequest:
    to_fax: str
    to_name: str
    subject: str
    kind: str
    referral: dict
    body: str
    attachments: tuple[Attachment, ...]

    @classmethod
    def from_payload(cls, payload: bytes) -> "FaxRequest":
        """Raises FaxPayloadError naming the field at fault."""
        try:
            doc = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FaxPayloadError(f"fax payload is not UTF-8 JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise FaxPayloadError("fax payload is not a JSON object")
        number = fax_number(doc.get("to_fax"))
        if number is None:
            given = doc.get("to_fax")
            raise FaxPayloadError("no destination fax number (to_fax)" if not given else
                                  f"to_fax {str(given)[:40]!r} is not a fax number "
                                  "(10 digits, or + and the international number)")
        attachments = []
        for i, item in enumerate(doc.get("attachments") or [], 1):
            if not isinstance(item, dict):
                raise FaxPayloadError(f"attachment {i} is not an object")
            ctype = str(item.get("content_type") or "").lower().strip()
            if ctype != "application/pdf" and ctype not in IMAGE_TYPES:
                raise FaxPayloadError(f"attachment {i} has content type {ctype or '(none)'!r}; a fax can carry "
                                      "application/pdf, image/png or image/jpeg")
            try:
                data = base64.b64decode(item.get("base64") or "", validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise FaxPayloadError(f"attachment {i} is not valid base64") from None
            if not data:
                raise FaxPayloadError(f"attachment {i} is empty")
            if ctype == "application/pdf" and not data.startswith(b"%PDF-"):
                raise FaxPayloadError(f"attachment {i} is not a PDF (no %PDF- header)")
            attachments.append(Attachment(ctype, data))
        body = doc.get("body") or ""
        if not isinstance(body, str):
            raise FaxPayloadError("body is not text")
        if not body.strip() and not attachments:
            raise FaxPayloadError("nothing to fax: no body and no attachments")
        referral = doc.get("referral") or {}
        if not isinstance(referral, dict):
            raise FaxPayloadError("referral is not an object")
        kind = str(doc.get("kind") or "status_letter")
        return cls(number, str(doc.get("to_name") or ""), str(doc.get("subject") or ""), kind, referral,
                   body, tuple(attachments))


class _FaxPDF(FPDF):
    def __init__(self, total_pages: int):
        super().__init__(format="Letter")
        self.total_pages = total_pages
        self.add_font("DejaVu", "", str(FONT_DIR / "DejaVuSans.ttf"))
        self.add_font("DejaVu", "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
        self.set_auto_page_break(True, margin=20)
        self.set_margins(20, 18, 20)

    def footer(self) -> None:
        self.set_y(-14)
        self.set_font("DejaVu", "", 8)
        self.cell(0, 6, f"Page {self.page_no()} of {self.total_pages}", align="C")


def render_pdf(request: FaxRequest, sender_name: str, sender_fax: str, sent_at: datetime,
               attachment_pages: int) -> tuple[bytes, int]:
    """(the generated PDF without appended PDF attachments, its page count). Two passes: the
    cover and every footer state the total, known only once the text has been laid out."""
    pages = 0
    for _ in range(2):
        pdf = _draw(request, sender_name, sender_fax, sent_at, pages + attachment_pages)
        if pdf.page == pages:
            break
        pages = pdf.page
    return bytes(pdf.output()), pdf.page


def _draw(request: FaxRequest, sender_name: str, sender_fax: str, sent_at: datetime, total: int) -> _FaxPDF:
    pdf = _FaxPDF(total)
    title = KIND_TITLES.get(request.kind, request.kind.replace("_", " ").capitalize())
    pdf.add_page()
    pdf.set_font("DejaVu", "B", 26)
    pdf.cell(0, 14, "FAX", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 11)
    pdf.cell(0, 7, sent_at.strftime("%B %d, %Y %H:%M"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    rows = [("To", request.to_name or "-"), ("Fax", shown_fax(request.to_fax)),
            ("From", sender_name), ("Fax", shown_fax(sender_fax) if sender_fax else "-"),
            ("Subject", request.subject or title), ("Pages", f"{total} (including this cover page)")]
    _table(pdf, rows)
    if request.referral:
        pdf.ln(4)
        pdf.set_font("DejaVu", "B", 12)
        pdf.cell(0, 8, "Referral", new_x="LMARGIN", new_y="NEXT")
        _table(pdf, _referral_rows(request.referral))
    if request.attachments:
        pdf.ln(4)
        pdf.set_font("DejaVu", "B", 12)
        pdf.cell(0, 8, "Attached", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", "", 10)
        for i, a in enumerate(request.attachments, 1):
            what = "PDF document" if a.content_type == "application/pdf" else "image"
            pdf.cell(0, 6, f"{i}. {what}, after the text pages", new_x="LMARGIN", new_y="NEXT")
    pdf.set_y(max(pdf.get_y() + 6, pdf.h - 62))
    pdf.set_font("DejaVu", "", 8.5)
    pdf.multi_cell(0, 4.5, CONFIDENTIALITY_NOTICE, border=1, padding=2, align="L")

    if request.body.strip():
        pdf.add_page()
        pdf.set_font("DejaVu", "B", 15)
        pdf.cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")
        summary = _referral_line(request.referral)
        if summary:
            pdf.set_font("DejaVu", "", 9.5)
            pdf.multi_cell(0, 5, summary, align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
        pdf.set_font("DejaVu", "", 11)
        pdf.multi_cell(0, 5.6, request.body.replace("\r\n", "\n").replace("\r", "\n"), align="L",
                       new_x="LMARGIN", new_y="NEXT")
    for a in request.attachments:
        if a.content_type in IMAGE_TYPES:
            pdf.add_page()
            pdf.image(io.BytesIO(a.data), x=pdf.l_margin, y=pdf.t_margin, w=pdf.epw,
                      h=pdf.h - pdf.t_margin - 22, keep_aspect_ratio=True)
    return pdf


def _table(pdf: FPDF, rows: list[tuple[str, str]]) -> None:
    for label, value in rows:
        pdf.set_font("DejaVu", "B", 11)
        pdf.cell(38, 7, label)
        pdf.set_font("DejaVu", "", 11)
        pdf.multi_cell(0, 7, str(value), align="L", new_x="LMARGIN", new_y="NEXT")


def _referral_rows(referral: dict) -> list[tuple[str, str]]:
    return [(REFERRAL_LABELS.get(k, k.replace("_", " ").capitalize()), str(v))
            for k, v in referral.items() if v not in (None, "", [], {})]


def _referral_line(referral: dict) -> str:
    keys = ("patient_name", "patient_dob", "dob", "referral_id", "id")
    return " · ".join(f"{REFERRAL_LABELS[k]}: {referral[k]}" for k in keys if referral.get(k))


def pdf_pages(data: bytes) -> int:
    """Page count of a PDF with poppler's pdfinfo. Raises FaxPayloadError if it is not readable."""
    with tempfile.NamedTemporaryFile(suffix=".pdf") as f:
        f.write(data)
        f.flush()
        done = subprocess.run(["pdfinfo", f.name], capture_output=True, timeout=60)
    match = re.search(rb"^Pages:\s+(\d+)", done.stdout, re.M)
    if done.returncode != 0 or not match:
        raise FaxPayloadError("an attached PDF cannot be read: "
                              + done.stderr.decode("utf-8", "replace").strip()[:200])
    return int(match.group(1))


def append_pdfs(first: bytes, others: list[bytes]) -> bytes:
    """`first` followed by every page of `others` (poppler's pdfunite). Raises OSError if it fails."""
    with tempfile.TemporaryDirectory(prefix="fax-") as tmp:
        paths = []
        for i, data in enumerate([first, *others]):
            path = Path(tmp, f"{i}.pdf")
            path.write_bytes(data)
            paths.append(str(path))
        out = Path(tmp, "out.pdf")
        done = subprocess.run(["pdfunite", *paths, str(out)], capture_output=True, timeout=120)
        if done.returncode != 0:
            raise OSError(f"pdfunite failed: {done.stderr.decode('utf-8', 'replace').strip()[:200]}")
        return out.read_bytes()


class FaxOutbox:
    """A connector (channels.outbound.Connector) writing fax PDFs and their sidecars into `directory`."""

    def __init__(self, directory: str | Path, *, sender_name: str = "Referral coordination",
                 sender_fax: str = "", name_pattern: str = "{kind}-{id}"):
        self.directory = Path(directory)
        self.sender_name = sender_name
        self.sender_fax = (fax_number(sender_fax) or "") if sender_fax else ""
        if sender_fax and not self.sender_fax:
            raise ValueError(f"sender_fax {sender_fax!r} is not a fax number (10 digits, or + and 8-15 digits)")
        self.name_pattern = name_pattern

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        try:
            request = FaxRequest.from_payload(delivery.payload)
        except FaxPayloadError as exc:
            return dead(str(exc))
        return await asyncio.to_thread(self._write, delivery, request)

    def base_name(self, delivery: Delivery, request: FaxRequest) -> str:
        return safe_name(self.name_pattern.format(kind=request.kind, id=delivery.id,
                                                  control_id=delivery.control_id or delivery.id,
                                                  destination=delivery.destination))

    def _write(self, delivery: Delivery, request: FaxRequest) -> DeliveryResult:
        name = self.base_name(delivery, request)
        pdf_path = self.directory / f"{name}.pdf"
        sidecar_path = self.directory / f"{name}.json"
        if sidecar_path.exists():
            return sent(detail="already in the fax outbox", ack=f"{sidecar_path.name} exists")
        try:
            appended = [a.data for a in request.attachments if a.content_type == "application/pdf"]
            extra = sum(pdf_pages(data) for data in appended)
            now = datetime.now().astimezone()
            document, pages = render_pdf(request, self.sender_name, self.sender_fax, now, extra)
            if appended:
                document = append_pdfs(document, appended)
        except FaxPayloadError as exc:
            return dead(str(exc))
        except (OSError, subprocess.SubprocessError) as exc:
            return retry(f"cannot build the fax PDF: {exc}")
        sidecar = {"fax_number": request.to_fax, "to_name": request.to_name, "from_name": self.sender_name,
                   "from_fax": self.sender_fax, "pdf": pdf_path.name, "pages": pages + extra,
                   "kind": request.kind, "subject": request.subject, "outbound_id": delivery.id,
                   "destination": delivery.destination, "created_at": now.isoformat(timespec="seconds")}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            replace_atomic(pdf_path, document)           # the PDF first: the sidecar is the fax server's cue
            write_atomic(sidecar_path, (json.dumps(sidecar, indent=2) + "\n").encode())
        except OSError as exc:
            return retry(f"cannot write to the fax outbox {self.directory}: {exc.strerror or exc}")
        return sent(ack=f"{pdf_path.name} ({pages + extra} pages) to fax {request.to_fax}")

    async def close(self) -> None:
        pass

