"""HELD-OUT layouts. Authors of the extractor (ocr/) must NOT read this module:
it stands in for the unseen layouts the judge scores, so the `holdout` split only
means something if no extraction rule was written while looking at it.

Same contract as layouts.py: build(rng, r) -> list[Page], marking r.present.
These layouts also use label wordings that layouts.py never prints.
"""
from __future__ import annotations

import random

from .canvas import MONO, PAGE_W, PROPORTIONAL, Page
from .kit import Flow, letterhead, optional, show, wrap
from .record import (Referral, fmt_codes, fmt_date, fmt_dob, fmt_patient_name, fmt_phone, fmt_provider,
                     fmt_sex, fmt_specialty, fmt_urgency)

HOLDOUT_LABELS = {
    "patient_name": ["Patient's Legal Name", "Client Name", "Patient Full Name", "Member Name"],
    "dob": ["Date of Birth (mm/dd/yyyy)", "Birth", "Born", "DOB/Age"],
    "sex": ["Sex at birth", "Gender Identity / Sex", "M/F"],
    "patient_phone": ["Best contact number", "Mobile", "Patient Tel.", "Phone (home)"],
    "mrn": ["Chart Number", "Patient Acct #", "EMR #", "Record No."],
    "payer": ["Carrier", "Plan Name", "Insurance Carrier", "Coverage"],
    "member_id": ["Insured ID", "Policy Number", "Subscriber #", "Cert #"],
    "provider": ["Requesting Clinician", "From Provider", "Referring Clinician", "Sending Provider"],
    "npi": ["Provider ID (NPI)", "Individual NPI", "NPI Number"],
    "practice_phone": ["Callback Number", "Office Tel.", "Clinic Phone"],
    "practice_fax": ["Return Fax", "Reply Fax #", "Clinic Fax", "Fax results to"],
    "specialty": ["Service Requested", "Referral For", "Dept.", "Specialty / Service"],
    "urgency": ["Acuity", "Request Type", "Timeframe"],
    "codes": ["Problem / ICD", "Diagnosis (ICD-10-CM)", "Codes", "Assessment codes"],
    "reason": ["Clinical Question", "Reason for Request", "Question for Consultant", "Notes"],
}


def hl(rng: random.Random, key: str) -> str:
    return rng.choice(HOLDOUT_LABELS[key])


# ---- H1. column-header table: labels in a header row, values in the row below ---------------------

def header_row_table(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(PROPORTIONAL))
    y = letterhead(page, rng, r, phone=True, fax=rng.random() < 0.5)
    title = rng.choice(["Referral / Authorization Request", "REQUEST FOR SPECIALTY CONSULTATION"])
    page.text(54, y + 18, title, 13, True)
    y += 34
    show(r, "patient_family_name", "patient_given_name", "patient_dob", "referring_provider_name",
         "referred_to_specialty")
    rows = [[("Last Name", r.patient_family_name), ("First Name", r.patient_given_name),
             (hl(rng, "dob").split(" (")[0], fmt_dob(rng, r.patient_dob))]]
    second = []
    if optional(rng, r, "patient_sex", 0.8):
        rows[0].append(("Sex", r.patient_sex))
    if optional(rng, r, "patient_mrn", 0.8):
        second.append((hl(rng, "mrn"), r.patient_mrn))
    if optional(rng, r, "patient_phone", 0.8):
        second.append((hl(rng, "patient_phone"), fmt_phone(rng, r.patient_phone, False)))
    if second:
        rows.append(second)
    ins = []
    if optional(rng, r, "insurance_payer", 0.9):
        ins.append((hl(rng, "payer"), r.insurance_payer))
    if optional(rng, r, "insurance_member_id", 0.9):
        ins.append((hl(rng, "member_id"), r.insurance_member_id))
    if ins:
        rows.append(ins)
    prov = [(hl(rng, "provider"), fmt_provider(rng, r, rng.choice([0, 1, 5])))]
    if optional(rng, r, "referring_provider_npi", 0.9):
        prov.append((hl(rng, "npi"), r.referring_provider_npi))
    if optional(rng, r, "referring_practice_fax", 0.7):
        prov.append((hl(rng, "practice_fax"), fmt_phone(rng, r.referring_practice_fax, False)))
    rows.append(prov)
    spec = [(hl(rng, "specialty"), fmt_specialty(rng, r.referred_to_specialty))]
    if optional(rng, r, "urgency", 0.85):
        spec.append((hl(rng, "urgency"), fmt_urgency(rng, r.urgency)))
    rows.append(spec)
    size = 9.5
    x0, w = 54, PAGE_W - 108
    for row in rows:
        cw = w / len(row)
        page.rect(x0, y, w, 16, fill=False)
        for j, (lab, val) in enumerate(row):
            cx = x0 + j * cw
            page.line(cx, y, cx, y + 36)
            page.text(cx + 4, y + 11.5, lab, 8, True)
            page.text(cx + 4, y + 30, val, size)
        page.rect(x0, y, w, 36)
        y += 44
    f = Flow(page, y=y + 4, size=10, leading=1.5)
    if optional(rng, r, "diagnosis_codes", 0.9):
        f.line(hl(rng, "codes"), bold=True)
        f.para("; ".join(fmt_codes(rng, r.diagnosis_codes)))
        f.skip(6)
    if optional(rng, r, "reason", 0.9):
        f.line(hl(rng, "reason"), bold=True)
        f.para(r.reason + rng.choice(["", ". Records attached.", ". Thank you."]))
    return [page]


# ---- H2. SOAP-style clinic note with the referral embedded ---------------------------------------

def clinic_note(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(["LiberationSerif", "DejaVuSans", "LiberationSans"]))
    y = letterhead(page, rng, r, phone=True, fax=True, center=False)
    f = Flow(page, y=y + 6, size=10, leading=1.45)
    show(r, "patient_family_name", "patient_given_name", "patient_dob", "referring_provider_name",
         "referred_to_specialty")
    head = f"{hl(rng, 'patient_name')}: {fmt_patient_name(rng, r)}     {hl(rng, 'dob').split(' (')[0]}: " \
           f"{fmt_dob(rng, r.patient_dob)}"
    if optional(rng, r, "patient_sex", 0.7):
        head += f"     {rng.choice(['Sex', 'M/F'])}: {fmt_sex(rng, r.patient_sex)}"
    f.line(head, bold=True)
    bits = []
    if optional(rng, r, "patient_mrn", 0.7):
        bits.append(f"{hl(rng, 'mrn')}: {r.patient_mrn}")
    if optional(rng, r, "insurance_payer", 0.8):
        bits.append(f"{hl(rng, 'payer')}: {r.insurance_payer}")
    if optional(rng, r, "insurance_member_id", 0.7 if r.present.get("insurance_payer") else 0.0):
        bits.append(f"{hl(rng, 'member_id')}: {r.insurance_member_id}")
    if bits:
        f.line("     ".join(bits))
    f.line(f"Visit date: {fmt_date(rng, r.referral_date)}     Provider: {fmt_provider(rng, r, 0)}")
    f.skip(6)
    page.line(54, f.y + 4, PAGE_W - 54, f.y + 4)
    f.skip(6)
    age = (r.referral_date - r.patient_dob).days // 365
    f.line("SUBJECTIVE", bold=True)
    f.para(f"{age} y/o presenting for follow-up. " + rng.choice([
        "Reports symptoms for several months, worse with activity.",
        "Symptoms unchanged since last visit despite treatment.",
        "Here with family member; history reviewed and updated."]))
    f.line("OBJECTIVE", bold=True)
    f.para(f"BP 1{rng.randint(10, 58)}/{rng.randint(60, 95)}, HR {rng.randint(55, 99)}, SpO2 {rng.randint(93, 99)}%. "
           "Exam otherwise as documented in chart.")
    f.line("ASSESSMENT", bold=True)
    if optional(rng, r, "diagnosis_codes", 0.9):
        for c in fmt_codes(rng, r.diagnosis_codes, with_desc=True):
            f.line("  " + c)
    else:
        f.para("See problem list.")
    f.line("PLAN", bold=True)
    spec = fmt_specialty(rng, r.referred_to_specialty)
    plan = f"Referral placed to {spec}"
    if optional(rng, r, "urgency", 0.8):
        plan += f" ({hl(rng, 'urgency').lower()}: {fmt_urgency(rng, r.urgency)})"
    plan += "."
    if optional(rng, r, "reason", 0.9):
        plan += f" {hl(rng, 'reason')}: {r.reason}."
    f.para(plan)
    f.para("Continue current medications. Return to clinic in 3 months or sooner as needed.")
    f.skip(12)
    sig = f"Electronically signed: {fmt_provider(rng, r, 0)}"
    if optional(rng, r, "referring_provider_npi", 0.8):
        sig += f"   {hl(rng, 'npi')}: {r.referring_provider_npi}"
    f.line(sig, size=9)
    if optional(rng, r, "patient_phone", 0.5):
        f.line(f"Patient contact: {fmt_phone(rng, r.patient_phone)}", size=9)
    return [page]


# ---- H3. compact monospace intake sheet with key=value runs ------------------------------------

def compact_intake(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(MONO))
    f = Flow(page, x=40, y=46, size=9, leading=1.6)
    f.line(f"*** REFERRAL INTAKE *** {r.practice_name}", bold=True)
    contact = []
    if optional(rng, r, "referring_practice_phone", 0.85):
        contact.append(f"{hl(rng, 'practice_phone')}: {fmt_phone(rng, r.referring_practice_phone, False)}")
    if optional(rng, r, "referring_practice_fax", 0.9):
        contact.append(f"{hl(rng, 'practice_fax')}: {fmt_phone(rng, r.referring_practice_fax, False)}")
    if contact:
        f.line("  ".join(contact))
    f.line("-" * 90)
    show(r, "patient_family_name", "patient_given_name", "patient_dob", "referring_provider_name",
         "referred_to_specialty")
    items = [(hl(rng, "patient_name").upper(), fmt_patient_name(rng, r, "LAST, FIRST")),
             ("DOB", fmt_dob(rng, r.patient_dob))]
    if optional(rng, r, "patient_sex", 0.8):
        items.append(("SEX", fmt_sex(rng, r.patient_sex)))
    if optional(rng, r, "patient_mrn", 0.8):
        items.append(("CHART", r.patient_mrn))
    if optional(rng, r, "patient_phone", 0.7):
        items.append(("PH", fmt_phone(rng, r.patient_phone, False)))
    if optional(rng, r, "insurance_payer", 0.85):
        items.append(("CARRIER", r.insurance_payer.upper()))
    if optional(rng, r, "insurance_member_id", 0.85):
        items.append(("POLICY", r.insurance_member_id))
    items.append(("REQ BY", fmt_provider(rng, r, 4)))
    if optional(rng, r, "referring_provider_npi", 0.9):
        items.append(("NPI", r.referring_provider_npi))
    items.append(("SERVICE", fmt_specialty(rng, r.referred_to_specialty).upper()))
    if optional(rng, r, "urgency", 0.9):
        items.append(("ACUITY", r.urgency.upper()))
    if optional(rng, r, "diagnosis_codes", 0.9):
        items.append(("ICD", ",".join(r.diagnosis_codes)))
    line = ""
    for k, v in items:
        piece = f"{k}={v}"
        if line and page.width(line + " | " + piece, 9) > PAGE_W - 80:
            f.line(line)
            line = piece
        else:
            line = (line + " | " + piece) if line else piece
    if line:
        f.line(line)
    f.line("-" * 90)
    if optional(rng, r, "reason", 0.9):
        for ln in wrap(page, "NOTE: " + r.reason, PAGE_W - 80, 9):
            f.line(ln)
    return [page]


LAYOUTS = {
    "header_row_table": header_row_table,
    "clinic_note": clinic_note,
    "compact_intake": compact_intake,
}
