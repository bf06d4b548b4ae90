"""Shared pieces for layouts: label wordings, a text flow with wrapping, letterheads.

A layout marks every contract field it prints in `r.present`; a field it leaves
out is null in the truth. `optional(rng, r, key, p)` decides, reproducibly, whether
an optional field is printed at all.
"""
from __future__ import annotations

import random

from .canvas import PAGE_W, Page
from .record import Referral, fmt_phone

LABELS = {
    "patient_name": ["Patient Name", "PT NAME", "Patient", "Name", "Pt. Name", "PATIENT NAME", "Patient Name"],
    "name_last_first": ["Name (Last, First)", "Patient (Last, First)", "PATIENT NAME (LAST, FIRST)"],
    "family": ["Last Name", "Patient Last Name", "Surname", "LAST NAME", "Last"],
    "given": ["First Name", "Patient First Name", "Given Name", "FIRST NAME", "First"],
    "dob": ["DOB", "D.O.B.", "Date of Birth", "Birth Date", "Birthdate", "DOB", "DATE OF BIRTH"],
    "sex": ["Sex", "Gender", "Sex", "SEX"],
    "patient_phone": ["Phone", "Patient Phone", "Home Phone", "Cell", "Tel", "Contact #", "Primary Phone"],
    "mrn": ["MRN", "MRN#", "Medical Record #", "Chart #", "Patient ID", "MRN", "Med Rec No"],
    "payer": ["Insurance", "Ins. Carrier", "Primary Insurance", "Payer", "Insurance Plan", "Health Plan",
              "Insurance Company"],
    "member_id": ["Member ID", "Member #", "Subscriber ID", "Policy #", "ID #", "Insurance ID", "Member No."],
    "provider": ["Referring Provider", "Ref. Physician", "Referring Physician", "Ordering Provider",
                 "Referred By", "Referring MD", "PCP"],
    "npi": ["NPI", "NPI#", "NPI #", "Provider NPI", "Referring NPI", "NPI No."],
    "practice_phone": ["Phone", "Office Phone", "Tel", "Ph", "Practice Phone", "Office"],
    "practice_fax": ["Fax", "Fax #", "Office Fax", "Return Fax", "Fax Back #", "Fax No."],
    "specialty": ["Referred To", "Specialty", "Referral To", "Specialty Requested", "Refer To", "Consult"],
    "urgency": ["Urgency", "Priority", "Referral Priority", "Urgency"],
    "codes": ["Dx", "Dx:", "ICD-10", "Diagnosis", "Diagnosis Code(s)", "ICD-10 Code(s)", "Dx Codes", "ICD10"],
    "reason": ["Reason for Referral", "Reason", "Clinical Reason", "Reason for Consult", "Comments",
               "Clinical Indication"],
}


def label(rng: random.Random, key: str, colon: bool = True) -> str:
    s = rng.choice(LABELS[key])
    return s if (not colon or s.endswith(":")) else s + ":"


def optional(rng: random.Random, r: Referral, key: str, p_print: float) -> bool:
    """Whether an optional field is printed; records the answer in r.present."""
    shown = rng.random() < p_print
    # printed elsewhere already (a letterhead, a cover sheet) stays printed
    r.present[key] = r.present.get(key, False) or shown
    return shown


def show(r: Referral, *keys: str) -> None:
    for k in keys:
        r.present[k] = True


def wrap(page: Page, s: str, width: float, size: float, bold: bool = False) -> list[str]:
    words, lines, cur = s.split(), [], ""
    for w in words:
        trial = (cur + " " + w).strip()
        if cur and page.width(trial, size, bold) > width:
            lines.append(cur)
            cur = w
        else:
            cur = trial
    if cur:
        lines.append(cur)
    return lines


class Flow:
    """A cursor that moves down the page; `para` wraps, `pair` writes 'Label: value'."""

    def __init__(self, page: Page, x: float = 54, y: float = 72, size: float = 10, leading: float = 1.45):
        self.page, self.x, self.y, self.size, self.leading = page, x, y, size, leading

    def skip(self, pts: float) -> None:
        self.y += pts

    def line(self, s: str, size: float | None = None, bold: bool = False, x: float | None = None) -> None:
        size = size or self.size
        self.y += size * self.leading
        self.page.text(self.x if x is None else x, self.y, s, size, bold)

    def para(self, s: str, width: float | None = None, size: float | None = None) -> None:
        size = size or self.size
        for ln in wrap(self.page, s, width or (PAGE_W - 2 * self.x), size):
            self.line(ln, size)

    def pair(self, lab: str, value: str, x: float | None = None, bold_label: bool = True,
             value_x: float | None = None, newline: bool = True) -> float:
        if newline:
            self.y += self.size * self.leading
        x0 = self.x if x is None else x
        end = self.page.text(x0, self.y, lab, self.size, bold_label)
        return self.page.text(value_x if value_x is not None else end + 5, self.y, value, self.size)


def letterhead(page: Page, rng: random.Random, r: Referral, y: float = 50, center: bool | None = None,
               phone: bool = True, fax: bool = True) -> float:
    """Practice name, address and (optionally) phone/fax; returns the y below it."""
    center = rng.random() < 0.5 if center is None else center
    size = rng.choice([14, 15, 16, 18])
    lines = [(r.practice_name.upper() if rng.random() < 0.5 else r.practice_name, size, True),
             (r.practice_address[0] + ", " + r.practice_address[1], 9, False)]
    contact = []
    if phone:
        contact.append(f"{rng.choice(['Phone', 'Tel', 'Ph', 'P'])}: {fmt_phone(rng, r.referring_practice_phone)}")
        show(r, "referring_practice_phone")
    if fax:
        contact.append(f"{rng.choice(['Fax', 'F', 'Fax'])}: {fmt_phone(rng, r.referring_practice_fax, False)}")
        show(r, "referring_practice_fax")
    if contact:
        lines.append(("   |   ".join(contact) if rng.random() < 0.6 else "    ".join(contact), 9, False))
    for s, sz, b in lines:
        y += sz * 1.35
        w = page.width(s, sz, b)
        page.text((PAGE_W - w) / 2 if center else 54, y, s, sz, b)
    y += 8
    page.line(54, y, PAGE_W - 54, y, 1.2)
    return y + 6
