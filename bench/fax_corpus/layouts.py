"""Training layouts: each `build(rng, r) -> list[Page]` draws one referral and marks
which contract fields it printed (r.present). Extractor authors may read these;
the held-out layouts live in layouts_holdout.py and must not be read by them.
"""
from __future__ import annotations

import random

from .canvas import MONO, PAGE_H, PAGE_W, PROPORTIONAL, Page
from .kit import Flow, label, letterhead, optional, show, wrap
from .record import (Referral, fmt_codes, fmt_date, fmt_dob, fmt_patient_name, fmt_phone, fmt_provider,
                     fmt_sex, fmt_specialty, fmt_urgency)

SPECIALTY_GRID = ["cardiology", "dermatology", "endocrinology", "gastroenterology", "neurology", "orthopedics",
                  "pulmonology", "rheumatology", "urology", "otolaryngology", "ophthalmology", "nephrology"]


def _title(page: Page, rng: random.Random, y: float, center: bool = True) -> float:
    t = rng.choice(["REFERRAL FORM", "Referral Request", "PATIENT REFERRAL", "Specialty Referral",
                    "OUTPATIENT REFERRAL ORDER", "Consultation Request"])
    size = rng.choice([13, 14, 16])
    w = page.width(t, size, True)
    page.text((PAGE_W - w) / 2 if center else 54, y + size, t, size, True)
    return y + size + 10


def _patient_pairs(rng: random.Random, r: Referral) -> list[tuple[str, str]]:
    """Label/value pairs for the patient block, in a shuffled-but-sensible order."""
    pairs = []
    if rng.random() < 0.3:
        pairs += [(label(rng, "family"), r.patient_family_name), (label(rng, "given"), r.patient_given_name)]
    elif rng.random() < 0.3:
        pairs.append((label(rng, "name_last_first"), fmt_patient_name(rng, r, "last, first")))
    else:
        pairs.append((label(rng, "patient_name"), fmt_patient_name(rng, r)))
    show(r, "patient_family_name", "patient_given_name", "patient_dob")
    rest = [(label(rng, "dob"), fmt_dob(rng, r.patient_dob))]
    if optional(rng, r, "patient_sex", 0.8):
        rest.append((label(rng, "sex"), fmt_sex(rng, r.patient_sex)))
    if optional(rng, r, "patient_phone", 0.8):
        rest.append((label(rng, "patient_phone"), fmt_phone(rng, r.patient_phone)))
    if optional(rng, r, "patient_mrn", 0.75):
        rest.append((label(rng, "mrn"), r.patient_mrn))
    if rng.random() < 0.3:
        rest.insert(rng.randrange(len(rest) + 1), ("Address:", f"{r.patient_address[0]}, {r.patient_address[1]}"))
    if len(rest) > 2 and rng.random() < 0.5:
        head, tail = rest[:1], rest[1:]
        rng.shuffle(tail)
        rest = head + tail
    return pairs + rest


def _insurance_pairs(rng: random.Random, r: Referral) -> list[tuple[str, str]]:
    out = []
    if optional(rng, r, "insurance_payer", 0.9):
        out.append((label(rng, "payer"), r.insurance_payer))
    if optional(rng, r, "insurance_member_id", 0.85):
        out.append((label(rng, "member_id"), r.insurance_member_id))
    if out and rng.random() < 0.4:
        out.append(("Group #:", r.group_number))
    return out


def _provider_pairs(rng: random.Random, r: Referral, with_phones: bool) -> list[tuple[str, str]]:
    show(r, "referring_provider_name")
    out = [(label(rng, "provider"), fmt_provider(rng, r))]
    if optional(rng, r, "referring_provider_npi", 0.9):
        out.append((label(rng, "npi"), r.referring_provider_npi))
    if with_phones:
        if optional(rng, r, "referring_practice_phone", 0.85):
            out.append((label(rng, "practice_phone"), fmt_phone(rng, r.referring_practice_phone)))
        if optional(rng, r, "referring_practice_fax", 0.9):
            out.append((label(rng, "practice_fax"), fmt_phone(rng, r.referring_practice_fax, False)))
    return out


def _clinical_pairs(rng: random.Random, r: Referral) -> list[tuple[str, str]]:
    show(r, "referred_to_specialty")
    out = [(label(rng, "specialty"), fmt_specialty(rng, r.referred_to_specialty))]
    if optional(rng, r, "urgency", 0.85):
        out.append((label(rng, "urgency"), fmt_urgency(rng, r.urgency)))
    if optional(rng, r, "diagnosis_codes", 0.9):
        codes = fmt_codes(rng, r.diagnosis_codes, with_desc=False)
        out.append((label(rng, "codes"), rng.choice([", ", "; ", "  "]).join(codes)))
    if optional(rng, r, "reason", 0.9):
        out.append((label(rng, "reason"), r.reason))
    return out


# ---- 1. plain label: value form ----------------------------------------------------------------

def label_value_form(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(PROPORTIONAL))
    phones_in_head = rng.random() < 0.5
    y = letterhead(page, rng, r, phone=phones_in_head, fax=phones_in_head)
    y = _title(page, rng, y, center=rng.random() < 0.6)
    size = rng.choice([10, 10.5, 11])
    f = Flow(page, y=y, size=size, leading=rng.choice([1.5, 1.7, 1.9]))
    aligned = rng.random() < 0.5
    f.line(f"Date: {fmt_date(rng, r.referral_date)}")
    blocks = [("PATIENT INFORMATION", _patient_pairs(rng, r)), ("INSURANCE", _insurance_pairs(rng, r)),
              ("REFERRING PROVIDER", _provider_pairs(rng, r, with_phones=not phones_in_head)),
              ("REFERRAL", _clinical_pairs(rng, r))]
    if rng.random() < 0.3:
        blocks[2], blocks[3] = blocks[3], blocks[2]
    for head, pairs in blocks:
        if not pairs:
            continue
        f.skip(6)
        f.line(head if rng.random() < 0.6 else head.title(), size=size + 1, bold=True)
        for lab, val in pairs:
            if lab.startswith(("Reason", "Comments", "Clinical")) and page.width(val, size) > 300:
                f.line(lab, bold=True)
                f.para(val)
            else:
                f.pair(lab, val, value_x=54 + 150 if aligned else None)
    f.skip(20)
    f.line("Signature: ________________________    Date: ____________", size=9)
    return [page]


# ---- 2. two-column boxes, small label above the value --------------------------------------------

def two_column_boxes(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(PROPORTIONAL))
    y = letterhead(page, rng, r, phone=False, fax=False)
    y = _title(page, rng, y)
    left = [("PATIENT", _patient_pairs(rng, r)), ("INSURANCE", _insurance_pairs(rng, r))]
    right = [("REFERRING PROVIDER", _provider_pairs(rng, r, with_phones=True)),
             ("REFERRAL DETAILS", _clinical_pairs(rng, r))]
    if rng.random() < 0.5:
        left, right = right, left
    col_w = (PAGE_W - 108 - 12) / 2
    lab_size, val_size = rng.choice([(7, 10), (7.5, 10.5), (8, 11)])
    for ci, col in enumerate((left, right)):
        x = 54 + ci * (col_w + 12)
        cy = y + 6
        for head, pairs in col:
            if not pairs:
                continue
            page.text(x + 2, cy + 12, head, 10, True)
            page.line(x, cy + 16, x + col_w, cy + 16, 1.6)
            cy += 18
            for lab, val in pairs:
                lines = wrap(page, val, col_w - 10, val_size)
                h = 10 + len(lines) * val_size * 1.3 + 4
                page.rect(x, cy, col_w, h)
                page.text(x + 3, cy + 8, lab.rstrip(":").upper(), lab_size)
                for i, ln in enumerate(lines):
                    page.text(x + 5, cy + 8 + (i + 1) * val_size * 1.3, ln, val_size)
                cy += h
            cy += 10
    return [page]


# ---- 3. ruled table: label cell | value cell, two pairs per row ---------------------------------

def ruled_table(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(PROPORTIONAL))
    y = letterhead(page, rng, r, phone=rng.random() < 0.5, fax=False)
    y = _title(page, rng, y)
    pairs = (_patient_pairs(rng, r) + _insurance_pairs(rng, r)
             + _provider_pairs(rng, r, with_phones=True))
    clinical = _clinical_pairs(rng, r)
    size = rng.choice([9, 9.5, 10])
    row_h = size * 2.1
    x0, total_w = 54, PAGE_W - 108
    per_row = rng.choice([1, 2, 2])
    cell_w = total_w / per_row
    lab_w = cell_w * (0.42 if per_row == 2 else 0.32)
    short = [p for p in pairs + clinical if page.width(p[1], size) < cell_w - lab_w - 8]
    long_ = [p for p in pairs + clinical if p not in short]
    cy = y + 8
    for i in range(0, len(short), per_row):
        for j, (lab, val) in enumerate(short[i:i + per_row]):
            cx = x0 + j * cell_w
            page.rect(cx, cy, lab_w, row_h, fill=False)
            page.rect(cx + lab_w, cy, cell_w - lab_w, row_h)
            page.text(cx + 4, cy + row_h * 0.68, lab.rstrip(":"), size, True)
            page.text(cx + lab_w + 5, cy + row_h * 0.68, val, size)
        cy += row_h
    for lab, val in long_:
        lines = wrap(page, val, total_w - lab_w - 10, size)
        h = max(row_h, len(lines) * size * 1.35 + 8)
        page.rect(x0, cy, lab_w, h)
        page.rect(x0 + lab_w, cy, total_w - lab_w, h)
        page.text(x0 + 4, cy + row_h * 0.68, lab.rstrip(":"), size, True)
        for k, ln in enumerate(lines):
            page.text(x0 + lab_w + 5, cy + row_h * 0.68 + k * size * 1.35, ln, size)
        cy += h
    return [page]


# ---- 4. narrative letter -------------------------------------------------------------------------

def narrative_letter(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(["LiberationSerif", "DejaVuSerif", "LiberationSans", "DejaVuSans"]))
    y = letterhead(page, rng, r, phone=True, fax=rng.random() < 0.8)
    size = rng.choice([10.5, 11, 11.5])
    f = Flow(page, y=y + 10, size=size, leading=1.45)
    f.line(fmt_date(rng, r.referral_date, rng.choice(["Month d, yyyy", "mm/dd/yyyy"])))
    f.skip(8)
    f.line(f"Dr. {r.specialist_name}")
    f.line(r.specialist_practice)
    f.skip(8)
    name = fmt_patient_name(rng, r, rng.choice(["first last", "First M Last"]))
    dob = fmt_dob(rng, r.patient_dob)
    f.line(f"RE: {name}    DOB: {dob}" if rng.random() < 0.6 else f"Re: {name} (DOB {dob})", bold=True)
    show(r, "patient_family_name", "patient_given_name", "patient_dob", "referred_to_specialty",
         "referring_provider_name")
    f.skip(8)
    f.line(f"Dear Dr. {r.specialist_name.split()[-1]},")
    f.skip(4)
    sex_word = {"M": rng.choice(["male", "man", "gentleman"]), "F": rng.choice(["female", "woman", "lady"])}
    age = (r.referral_date - r.patient_dob).days // 365
    spec = fmt_specialty(rng, r.referred_to_specialty)
    if optional(rng, r, "patient_sex", 0.7):
        who = f"{name}, a {age}-year-old {sex_word[r.patient_sex]},"
    else:
        who = f"my patient {name}"
    body = (f"I am referring {who} to your {spec.lower() if len(spec) > 4 else spec} service for evaluation. ")
    if optional(rng, r, "reason", 0.95):
        body += f"Reason for referral: {r.reason}. "
    if optional(rng, r, "diagnosis_codes", 0.8):
        body += "Relevant diagnoses: " + ", ".join(fmt_codes(rng, r.diagnosis_codes, with_desc=True)) + ". "
    if optional(rng, r, "urgency", 0.6):
        body += {"routine": "This is a routine referral; please schedule at your earliest convenience. ",
                 "urgent": "This referral is URGENT; please see the patient within the week. ",
                 "stat": "Please treat this referral as STAT. "}[r.urgency]
    f.para(body)
    f.skip(6)
    extra = []
    if optional(rng, r, "patient_phone", 0.6):
        extra.append(f"The patient can be reached at {fmt_phone(rng, r.patient_phone, False)}.")
    ins = []
    if optional(rng, r, "insurance_payer", 0.7):
        ins.append(f"Insurance: {r.insurance_payer}")
    if optional(rng, r, "insurance_member_id", 0.6 if ins else 0.0):
        ins.append(f"Member ID {r.insurance_member_id}")
    if ins:
        extra.append(", ".join(ins) + ".")
    if optional(rng, r, "patient_mrn", 0.4):
        extra.append(f"Our MRN: {r.patient_mrn}.")
    if extra:
        f.para(" ".join(extra))
        f.skip(6)
    f.para("Please send your consultation note to our office by fax. Thank you for seeing this patient.")
    f.skip(14)
    f.line(rng.choice(["Sincerely,", "Best regards,", "Thank you,"]))
    f.skip(24)
    f.line(fmt_provider(rng, r, rng.choice([0, 3])))
    if optional(rng, r, "referring_provider_npi", 0.8):
        f.line(f"NPI: {r.referring_provider_npi}")
    f.line(r.practice_name)
    return [page]


# ---- 5. fax cover sheet + form ------------------------------------------------------------------

def cover_sheet(rng: random.Random, r: Referral, pages_total: int) -> Page:
    """A fax cover sheet. FROM = the referring practice, TO = the specialist."""
    page = Page(rng.choice(PROPORTIONAL))
    big = rng.choice(["FAX", "Fax Cover Sheet", "FACSIMILE TRANSMITTAL", "FAX TRANSMISSION"])
    page.text(54, 90, big, rng.choice([26, 30, 34]), True)
    page.line(54, 104, PAGE_W - 54, 104, 1.5)
    size = 11
    rows = [("TO:", f"{r.specialist_practice}"), ("ATTN:", f"Referral Coordinator / Dr. {r.specialist_name}"),
            ("FAX:", fmt_phone(rng, r.specialist_fax, False)), ("PHONE:", fmt_phone(rng, r.specialist_phone)),
            ("FROM:", r.practice_name), ("FAX:", fmt_phone(rng, r.referring_practice_fax, False)),
            ("PHONE:", fmt_phone(rng, r.referring_practice_phone)),
            ("DATE:", fmt_date(rng, r.referral_date)), ("PAGES:", f"{pages_total} (including cover)"),
            ("RE:", "Patient referral")]
    show(r, "referring_practice_fax", "referring_practice_phone")
    side = rng.random() < 0.5
    if side:   # TO block left, FROM block right
        for i, (lab, val) in enumerate(rows[:4]):
            page.text(54, 140 + i * 22, lab, size, True)
            page.text(110, 140 + i * 22, val, size)
        for i, (lab, val) in enumerate(rows[4:7]):
            page.text(54, 240 + i * 22, lab, size, True)
            page.text(110, 240 + i * 22, val, size)
        for i, (lab, val) in enumerate(rows[7:]):
            page.text(54, 320 + i * 22, lab, size, True)
            page.text(110, 320 + i * 22, val, size)
    else:
        for i, (lab, val) in enumerate(rows):
            page.text(54, 140 + i * 22, lab, size, True)
            page.text(120, 140 + i * 22, val, size)
    boxes = ["Urgent", "For Review", "Please Comment", "Please Reply"]
    tick_urgent = r.urgency == "urgent" and rng.random() < 0.5
    if tick_urgent:
        show(r, "urgency")
    x = 54
    for b in boxes:
        x = page.checkbox(x, 400, tick_urgent and b == "Urgent") + 4
        x = page.text(x, 400, b, 10) + 18
    f = Flow(page, y=440, size=8.5)
    f.para("CONFIDENTIALITY NOTICE: This facsimile contains protected health information that is privileged "
           "and confidential. If you are not the intended recipient, please notify the sender immediately at "
           "the phone number above and destroy this document. Re-disclosure is prohibited.")
    return page


def cover_plus_form(rng: random.Random, r: Referral) -> list[Page]:
    form = label_value_form(rng, r) if rng.random() < 0.5 else ruled_table(rng, r)
    return [cover_sheet(rng, r, 1 + len(form))] + form


# ---- 6. dense EHR printout -----------------------------------------------------------------------

def ehr_printout(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(MONO))
    size = rng.choice([8, 8.5, 9])
    f = Flow(page, x=36, y=40, size=size, leading=1.3)
    f.line(f"{r.practice_name.upper()}  -  OUTGOING REFERRAL  -  Printed {fmt_date(rng, r.referral_date, 'mm/dd/yyyy')} 09:{rng.randint(10, 59)}")
    f.line("=" * 96)
    name = f"{r.patient_family_name.upper()}, {r.patient_given_name.upper()}"
    show(r, "patient_family_name", "patient_given_name", "patient_dob", "referring_provider_name",
         "referred_to_specialty")
    age = (r.referral_date - r.patient_dob).days // 365
    line = f"PATIENT: {name:<28} DOB: {fmt_date(rng, r.patient_dob, 'mm/dd/yyyy')} ({age}y)"
    if optional(rng, r, "patient_sex", 0.9):
        line += f"  SEX: {r.patient_sex}"
    f.line(line)
    parts = []
    if optional(rng, r, "patient_mrn", 0.95):
        parts.append(f"MRN: {r.patient_mrn}")
    if optional(rng, r, "patient_phone", 0.8):
        parts.append(f"HM PH: {fmt_phone(rng, r.patient_phone, False)}")
    parts.append(f"ADDR: {r.patient_address[0]}, {r.patient_address[1]}")
    f.line("   ".join(parts))
    f.line(f"EMERG CONTACT: {r.emergency_contact[0]}  PH: {fmt_phone(rng, r.emergency_contact[1], False)}")
    ins = []
    if optional(rng, r, "insurance_payer", 0.95):
        ins.append(f"PRIMARY INS: {r.insurance_payer.upper()}")
    if optional(rng, r, "insurance_member_id", 0.9):
        ins.append(f"SUBSCRIBER ID: {r.insurance_member_id}")
    if ins:
        f.line("   ".join(ins) + f"   GRP: {r.group_number}")
    f.line("-" * 96)
    prov = f"REFERRING: {fmt_provider(rng, r, rng.choice([2, 4]))}"
    if optional(rng, r, "referring_provider_npi", 0.95):
        prov += f"   NPI {r.referring_provider_npi}"
    f.line(prov)
    ph = []
    if optional(rng, r, "referring_practice_phone", 0.9):
        ph.append(f"OFFICE PH {fmt_phone(rng, r.referring_practice_phone, False)}")
    if optional(rng, r, "referring_practice_fax", 0.9):
        ph.append(f"OFFICE FAX {fmt_phone(rng, r.referring_practice_fax, False)}")
    if ph:
        f.line("   ".join(ph))
    f.line(f"REFER TO: {fmt_specialty(rng, r.referred_to_specialty).upper()} - {r.specialist_name.upper()}"
           f"   ({r.specialist_practice})")
    if optional(rng, r, "urgency", 0.95):
        f.line(f"PRIORITY: {r.urgency.upper()}     REFERRAL TYPE: CONSULT AND TREAT     VISITS: {rng.randint(1, 6)}")
    f.line("-" * 96)
    if optional(rng, r, "diagnosis_codes", 0.95):
        f.line("DIAGNOSES:")
        for i, d in enumerate(fmt_codes(rng, r.diagnosis_codes, with_desc=True), 1):
            f.line(f"  {i}. {d}")
    if optional(rng, r, "reason", 0.9):
        f.line("REASON FOR REFERRAL:")
        f.para("  " + r.reason, width=PAGE_W - 72)
    f.line("-" * 96)
    f.line("VITALS: BP 13%d/8%d  HR %d  T 98.%d F  WT %d lb  HT 5'%d\"" % (
        rng.randint(0, 9), rng.randint(0, 9), rng.randint(58, 96), rng.randint(0, 9), rng.randint(110, 260),
        rng.randint(0, 11)))
    f.line("ACTIVE MEDICATIONS:")
    for med in rng.sample(["lisinopril 10 mg daily", "metformin 500 mg BID", "atorvastatin 40 mg qHS",
                           "levothyroxine 75 mcg daily", "amlodipine 5 mg daily", "omeprazole 20 mg daily",
                           "sertraline 50 mg daily", "albuterol HFA 2 puffs q4h PRN"], k=4):
        f.line("  - " + med)
    f.line("ALLERGIES: " + rng.choice(["NKDA", "Penicillin (rash)", "Sulfa drugs", "Latex"]))
    f.line("PROBLEM LIST: " + rng.choice(["HTN, HLD", "T2DM, obesity", "GERD", "Asthma, allergic rhinitis"]))
    f.line("=" * 96)
    f.line(f"Electronically signed by {fmt_provider(rng, r, 0)} on {fmt_date(rng, r.referral_date, 'mm/dd/yyyy')}")
    return [page]


# ---- 7. checkbox grid for specialty and urgency -------------------------------------------------

def checkbox_grid(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(PROPORTIONAL))
    y = letterhead(page, rng, r, phone=True, fax=True)
    y = _title(page, rng, y)
    size = 10
    f = Flow(page, y=y, size=size, leading=1.75)
    for lab, val in _patient_pairs(rng, r) + _insurance_pairs(rng, r) + _provider_pairs(rng, r, False):
        f.pair(lab, val)
    mark = rng.choice(["X", "check", "fill", "X", "slash"])
    f.skip(12)
    f.line(rng.choice(["Specialty requested (check one):", "REFER TO:", "Specialty:"]), bold=True)
    grid = list(SPECIALTY_GRID)
    if r.referred_to_specialty not in grid:
        grid[rng.randrange(len(grid))] = r.referred_to_specialty
    show(r, "referred_to_specialty")
    cols = 3
    for i, spec in enumerate(grid):
        if i % cols == 0:
            f.skip(size * 1.8)
        x = 64 + (i % cols) * 165
        x = page.checkbox(x, f.y, spec == r.referred_to_specialty, mark=mark) + 5
        page.text(x, f.y, spec.title() if spec != "otolaryngology" else "ENT", size)
    f.skip(14)
    f.line("Other: ____________________", size=9)
    if optional(rng, r, "urgency", 0.9):
        f.skip(8)
        x = page.text(54, f.y + 20, rng.choice(["Priority:", "Urgency:", "PRIORITY"]), size, True) + 12
        for u in rng.choice([["routine", "urgent", "stat"], ["stat", "urgent", "routine"]]):
            x = page.checkbox(x, f.y + 20, u == r.urgency, mark=mark) + 5
            x = page.text(x, f.y + 20, fmt_urgency(rng, u) if u != "stat" else "STAT", size) + 22
        f.skip(20)
    if optional(rng, r, "diagnosis_codes", 0.9):
        f.skip(8)
        f.line(label(rng, "codes"), bold=True)
        for c in fmt_codes(rng, r.diagnosis_codes):
            f.line("   " + c)
    if optional(rng, r, "reason", 0.9):
        f.skip(4)
        f.line(label(rng, "reason"), bold=True)
        f.para(r.reason)
    return [page]


# ---- 8. underlined fill-in form, labels under the line ------------------------------------------

def underline_form(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(PROPORTIONAL))
    y = letterhead(page, rng, r, phone=False, fax=False)
    y = _title(page, rng, y)
    pairs = (_patient_pairs(rng, r) + _insurance_pairs(rng, r) + _provider_pairs(rng, r, True)
             + _clinical_pairs(rng, r))
    vsize, lsize = rng.choice([(11, 7), (10.5, 7.5), (11.5, 8)])
    x0, w = 54, PAGE_W - 108
    per_row = 2
    cy = y + 20
    i = 0
    while i < len(pairs):
        lab, val = pairs[i]
        long_val = page.width(val, vsize) > w / 2 - 12
        n = 1 if long_val else per_row
        row = [pairs[i]]
        if n == 2 and i + 1 < len(pairs) and page.width(pairs[i + 1][1], vsize) <= w / 2 - 12:
            row.append(pairs[i + 1])
        cw = w / len(row)
        cy += vsize + 8
        for j, (lab, val) in enumerate(row):
            cx = x0 + j * cw
            lines = wrap(page, val, cw - 14, vsize)
            page.text(cx + 4, cy, lines[0], vsize)
            page.line(cx, cy + 3, cx + cw - 12, cy + 3, 0.6)
            page.text(cx, cy + 3 + lsize + 2, lab.rstrip(":"), lsize)
            for k, extra in enumerate(lines[1:], 1):
                page.text(cx + 4, cy + 14 + lsize + k * vsize * 1.3, extra, vsize)
        cy += lsize + 10 + (len(wrap(page, row[0][1], w / len(row) - 14, vsize)) - 1) * vsize * 1.3 + 4
        i += len(row)
    return [page]


# ---- 9. two pages: demographics, then clinical with the name repeated -----------------------------

def multi_page_form(rng: random.Random, r: Referral) -> list[Page]:
    fam = rng.choice(PROPORTIONAL)
    p1 = Page(fam)
    y = letterhead(p1, rng, r, phone=True, fax=True)
    y = _title(p1, rng, y)
    f = Flow(p1, y=y, size=10.5, leading=1.8)
    f.line("Section 1 - Patient Demographics", bold=True)
    for lab, val in _patient_pairs(rng, r):
        f.pair(lab, val, value_x=200)
    f.skip(8)
    f.line("Section 2 - Insurance", bold=True)
    for lab, val in _insurance_pairs(rng, r):
        f.pair(lab, val, value_x=200)
    f.skip(8)
    f.line("Section 3 - Referring Provider", bold=True)
    for lab, val in _provider_pairs(rng, r, False):
        f.pair(lab, val, value_x=200)
    p1.text(PAGE_W - 120, PAGE_H - 40, "Page 1 of 2", 9)
    p2 = Page(fam)
    p2.text(54, 60, f"Patient: {r.patient_family_name}, {r.patient_given_name}    "
                    f"DOB: {fmt_date(rng, r.patient_dob, 'mm/dd/yyyy')}", 9)
    p2.line(54, 66, PAGE_W - 54, 66)
    f = Flow(p2, y=80, size=10.5, leading=1.8)
    f.line("Section 4 - Referral Information", bold=True)
    for lab, val in _clinical_pairs(rng, r):
        if page_wide(p2, val):
            f.line(lab, bold=True)
            f.para(val)
        else:
            f.pair(lab, val, value_x=200)
    f.skip(10)
    f.line("Section 5 - Attachments", bold=True)
    f.para(rng.choice(["Last office note, recent labs and imaging report attached.",
                       "Please see attached medication list and problem list.", "None."]))
    f.skip(30)
    f.line(f"Provider signature: {fmt_provider(rng, r, 0)}    Date: {fmt_date(rng, r.referral_date)}", size=9)
    p2.text(PAGE_W - 120, PAGE_H - 40, "Page 2 of 2", 9)
    return [p1, p2]


def page_wide(page: Page, val: str) -> bool:
    return page.width(val, 10.5) > 340


LAYOUTS = {
    "label_value_form": label_value_form,
    "two_column_boxes": two_column_boxes,
    "ruled_table": ruled_table,
    "narrative_letter": narrative_letter,
    "cover_plus_form": cover_plus_form,
    "ehr_printout": ehr_printout,
    "checkbox_grid": checkbox_grid,
    "underline_form": underline_form,
    "multi_page_form": multi_page_form,
}
