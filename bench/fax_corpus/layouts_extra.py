"""Extra training-side layouts (`generate --split extra`): forms written to look unlike the
nine in layouts.py, as the next practice's fax will. Extractor authors may read these;
they were written without looking at layouts_holdout.py.

Each `build(rng, r) -> list[Page]` marks the contract fields it prints in `r.present`.
What they add over layouts.py: key=value pairs in two columns of a hospital printout,
a letter whose facts sit inside sentences, a grid of small capitals over the values,
abbreviated labels with '-' / '=' separators in lower or upper case, a diagnosis table
with descriptions (codes with or without their dot, several on one line), providers
written "SMITH, JANE MD" / "Dr. Jane Smith, MD" / "Smith, Jane (NPI ...)", a member id
printed next to the group number, and a payer-style request whose servicing provider
(the specialist, with an NPI, phone and fax of its own) is not the referrer.
"""
from __future__ import annotations

import random

import simple_icd_10_cm as icd

from .canvas import MONO, PAGE_W, PROPORTIONAL, Page
from .kit import Flow, letterhead, optional, show, wrap
from .record import (Referral, fmt_date, fmt_dob, fmt_phone, fmt_sex, fmt_specialty, fmt_urgency)


def _code(rng: random.Random, c: str, dots: bool | None = None) -> str:
    """A code as the sending system prints it: dotted, or with the dot left out."""
    dots = rng.random() < 0.6 if dots is None else dots
    return c if dots else c.replace(".", "")


def _desc(c: str, limit: int = 48) -> str:
    d = icd.get_description(c)
    return d if len(d) <= limit else d[:limit - 3].rsplit(" ", 1)[0] + "..."


def _provider(rng: random.Random, r: Referral, style: int | None = None) -> str:
    """Referrer wordings layouts.py does not use (the full given name is always there)."""
    g, f, m, c = r.provider_given, r.provider_family, r.provider_middle, r.provider_credential
    mid = f" {m}" if m else ""
    styles = [f"{f.upper()}, {g.upper()} {c.replace('.', '').upper()}", f"Dr. {g} {f}, {c}",
              f"{f}, {g}{mid}", f"{g}{mid} {f}, {c}", f"{g.upper()} {f.upper()} {c.replace('.', '').upper()}",
              f"{f}, {g}{mid}, {c}"]
    return styles[rng.randrange(len(styles)) if style is None else style]


def _age(r: Referral) -> int:
    return (r.referral_date - r.patient_dob).days // 365


# ---- 1. hospital EHR "Referral Order": key=value pairs in two columns ---------------------------

def ehr_referral_order(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(MONO + ["LiberationSansNarrow"]))
    size = rng.choice([8.5, 9, 9.5])
    sep = rng.choice(["=", "=", ": ", " = "])
    upper = rng.random() < 0.5
    f = Flow(page, x=40, y=36, size=size, leading=1.55)
    system = rng.choice(["MERCY", "ST. LUKE'S", "UNITY", "VALLEY REGIONAL", "NORTHSHORE"]) + " HEALTH SYSTEM"
    f.line(f"{system}{' ' * 8}Ambulatory Referral Order", bold=True)
    f.line(f"Printed {fmt_date(rng, r.referral_date, 'mm/dd/yyyy')} {rng.randint(7, 18):02d}:{rng.randint(0, 59):02d}"
           f"   by {rng.choice(['KJONES', 'interface', 'RSMITH2', 'epicprint'])}   Page 1 of 1")
    f.line("_" * 92)

    def lab(s: str) -> str:
        return (s.upper() if upper else s) + sep

    left, right = [], []
    show(r, "patient_family_name", "patient_given_name", "patient_dob", "referring_provider_name",
         "referred_to_specialty")
    left.append((lab("Order #"), f"{rng.randint(10**7, 10**8 - 1)}"))
    right.append((lab("Order Date"), fmt_date(rng, r.referral_date, "mm/dd/yyyy")))
    name = f"{r.patient_family_name.upper()}, {r.patient_given_name.upper()}" + \
        (f" {r.patient_middle[0]}" if r.patient_middle and rng.random() < 0.5 else "")
    left.append((lab(rng.choice(["Patient", "Pt Name", "Patient Name"])), name))
    right.append((lab(rng.choice(["DOB", "Birth Date"])), f"{fmt_date(rng, r.patient_dob, 'mm/dd/yyyy')} ({_age(r)} y)"))
    if optional(rng, r, "patient_mrn", 0.9):
        left.append((lab(rng.choice(["MRN", "Hosp MRN", "EMR #"])), r.patient_mrn))
    if optional(rng, r, "patient_sex", 0.9):
        right.append((lab(rng.choice(["Sex", "Legal Sex", "Gender"])), {"M": "Male", "F": "Female"}[r.patient_sex]))
    left.append((lab("Enc #"), f"{rng.randint(10**9, 10**10 - 1)}"))
    if optional(rng, r, "patient_phone", 0.8):
        right.append((lab(rng.choice(["Home Ph", "Pt Phone", "Mobile"])), fmt_phone(rng, r.patient_phone, False)))
    if optional(rng, r, "insurance_payer", 0.9):
        left.append((lab(rng.choice(["Payor", "Primary Payor", "Coverage", "Plan"])), r.insurance_payer.upper()
                     if upper else r.insurance_payer))
    if optional(rng, r, "insurance_member_id", 0.9):
        right.append((lab(rng.choice(["Sub ID", "Subscriber #", "Mbr ID", "Member #"])), r.insurance_member_id))
    left.append((lab(rng.choice(["Group #", "Grp"])), r.group_number))
    right.append((lab("Auth #"), rng.choice(["PENDING", f"A{rng.randint(10**6, 10**7 - 1)}", "N/A"])))
    prov = [(lab(rng.choice(["Ordering Prov", "Ordering Provider", "Referring Prov", "Auth Prov"])),
             _provider(rng, r, rng.choice([0, 2, 4, 5])))]
    if optional(rng, r, "referring_provider_npi", 0.9):
        prov.append((lab(rng.choice(["Prov NPI", "NPI", "Ordering NPI"])), r.referring_provider_npi))
    if optional(rng, r, "referring_practice_phone", 0.85):
        prov.append((lab(rng.choice(["Dept Ph", "Clinic Phone", "Prov Phone"])),
                     fmt_phone(rng, r.referring_practice_phone, False)))
    if optional(rng, r, "referring_practice_fax", 0.85):
        prov.append((lab(rng.choice(["Dept Fax", "Clinic Fax", "Prov Fax"])),
                     fmt_phone(rng, r.referring_practice_fax, False)))
    spec = [(lab(rng.choice(["Refer To Spec", "Referral To", "Specialty", "Dept"])),
             fmt_specialty(rng, r.referred_to_specialty).upper()),
            (lab(rng.choice(["Refer To Prov", "Referred To Provider", "Svc Prov"])), f"{r.specialist_name.upper()}")]
    if optional(rng, r, "urgency", 0.9):
        spec.append((lab(rng.choice(["Priority", "Urgency", "Pri"])), fmt_urgency(rng, r.urgency)))
    spec.append((lab("Visits"), str(rng.randint(1, 6))))
    rows = max(len(left), len(right))
    for i in range(rows):
        f.skip(size * f.leading)
        for col, items in ((40, left), (320, right)):
            if i < len(items):
                end = page.text(col, f.y, items[i][0], size, True)
                page.text(end + (0 if sep.endswith(" ") else 2), f.y, items[i][1], size)
    f.line("_" * 92)
    for i in range(0, len(prov), 2):
        f.skip(size * f.leading)
        for j, (k, v) in enumerate(prov[i:i + 2]):
            end = page.text(40 + 280 * j, f.y, k, size, True)
            page.text(end + 2, f.y, v, size)
    for i in range(0, len(spec), 2):
        f.skip(size * f.leading)
        for j, (k, v) in enumerate(spec[i:i + 2]):
            end = page.text(40 + 280 * j, f.y, k, size, True)
            page.text(end + 2, f.y, v, size)
    f.line("_" * 92)
    if optional(rng, r, "diagnosis_codes", 0.95):
        dots = rng.random() < 0.5
        if rng.random() < 0.5:   # several on one line
            f.pair(lab(rng.choice(["Dx", "Diagnoses", "ICD10"])),
                   rng.choice([", ", "; ", " / "]).join(_code(rng, c, dots) for c in r.diagnosis_codes), bold_label=True)
        else:
            f.line(lab(rng.choice(["Dx", "Diagnoses", "Associated Dx"])).rstrip(" :="), bold=True)
            for c in r.diagnosis_codes:
                f.line(f"   {_code(rng, c, dots)}   {_desc(c, 60)}")
    if optional(rng, r, "reason", 0.9):
        f.pair(lab(rng.choice(["Reason", "Referral Reason", "Clinical Question"])), r.reason, bold_label=True)
    f.skip(10)
    f.line(f"Electronically signed: {_provider(rng, r, 1)} {fmt_date(rng, r.referral_date, 'mm/dd/yyyy')}",
           size=size - 0.5)
    return [page]


# ---- 2. clinic letter: the facts inside sentences ------------------------------------------------

def sentence_letter(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(["LiberationSerif", "DejaVuSerif", "LiberationSans"]))
    y = letterhead(page, rng, r, phone=rng.random() < 0.7, fax=rng.random() < 0.7)
    size = rng.choice([10.5, 11, 11.5])
    f = Flow(page, y=y + 14, size=size, leading=1.5)
    f.line(fmt_date(rng, r.referral_date, rng.choice(["Month d, yyyy", "mm/dd/yyyy", "d Mon yyyy"])))
    f.skip(10)
    f.line(rng.choice(["To Whom It May Concern:", "Dear Colleague,", "Dear Referral Coordinator:"]))
    f.skip(6)
    show(r, "patient_family_name", "patient_given_name", "patient_dob", "referring_provider_name",
         "referred_to_specialty")
    title = {"M": "Mr.", "F": rng.choice(["Ms.", "Mrs."])}[r.patient_sex]
    name = f"{r.patient_given_name} {r.patient_family_name}"
    dob = fmt_dob(rng, r.patient_dob)
    spec = fmt_specialty(rng, r.referred_to_specialty)
    spec_txt = spec.lower() if spec not in ("GI", "ENT", "PT", "ID", "OB/GYN", "OBGYN") else spec
    he, his = ("he", "his") if r.patient_sex == "M" else ("she", "her")
    sexed = optional(rng, r, "patient_sex", 0.7)
    reason = optional(rng, r, "reason", 0.9)
    opening = rng.randrange(3)
    who = f"{title} {name}" if sexed else name
    if opening == 0:
        s = f"I am referring {who} (DOB {dob}) to your {spec_txt} practice"
    elif opening == 1:
        s = f"Thank you for seeing my patient, {who}, date of birth {dob}, in {spec_txt} consultation"
    else:
        s = f"I would appreciate your {spec_txt} evaluation of {who}, born {dob}"
    if sexed and opening != 0 and rng.random() < 0.5:
        s += f". {he.capitalize()} is a {_age(r)}-year-old {'man' if r.patient_sex == 'M' else 'woman'}"
    s += "." if not reason else f". Reason for referral: {r.reason}."
    f.para(s)
    f.skip(6)
    body = []
    if optional(rng, r, "diagnosis_codes", 0.85):
        dots = rng.random() < 0.7
        if rng.random() < 0.5:
            body.append("Diagnoses: " + "; ".join(f"{_desc(c, 40)} ({_code(rng, c, dots)})" for c in r.diagnosis_codes) + ".")
        else:
            body.append(f"Active problems for this visit: {', '.join(_code(rng, c, dots) for c in r.diagnosis_codes)}.")
    if optional(rng, r, "urgency", 0.6):
        body.append({"routine": "This is a routine request.",
                     "urgent": f"Please see {his} patient urgently, ideally within one week.".replace(f"{his} patient", "the patient"),
                     "stat": "This is a STAT request; please call our office on receipt."}[r.urgency])
    ins = optional(rng, r, "insurance_payer", 0.75)
    mem = optional(rng, r, "insurance_member_id", 0.65 if ins else 0.0)
    if ins and mem:
        body.append(rng.choice([f"{he.capitalize()} is insured by {r.insurance_payer} (member ID {r.insurance_member_id}).",
                                f"Insurance: {r.insurance_payer}, ID# {r.insurance_member_id}."]))
    elif ins:
        body.append(f"{he.capitalize()} is covered by {r.insurance_payer}.")
    if optional(rng, r, "patient_phone", 0.6):
        body.append(f"{he.capitalize()} can be reached at {fmt_phone(rng, r.patient_phone, False)}.")
    if optional(rng, r, "patient_mrn", 0.4):
        body.append(f"Our chart number is {r.patient_mrn}.")
    if body:
        f.para(" ".join(body))
        f.skip(6)
    f.para("Recent office notes and labs are enclosed. Please fax your consultation report back to our office.")
    f.skip(12)
    f.line(rng.choice(["Sincerely,", "Respectfully,", "With thanks,"]))
    f.skip(22)
    f.line(_provider(rng, r, rng.choice([1, 3])))
    if optional(rng, r, "referring_provider_npi", 0.8):
        f.line(rng.choice(["NPI ", "NPI: ", "NPI# "]) + r.referring_provider_npi)
    f.line(r.practice_name)
    if not r.present.get("referring_practice_fax") and optional(rng, r, "referring_practice_fax", 0.6):
        f.line(f"Direct fax {fmt_phone(rng, r.referring_practice_fax, False)}", size=9)
    return [page]


# ---- 3. ruled grid, small capitals over the values, three or four cells a row -------------------

def small_caps_grid(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(PROPORTIONAL))
    y = letterhead(page, rng, r, phone=False, fax=False)
    t = rng.choice(["REQUEST FOR SPECIALTY CONSULTATION", "Referral Authorization Form", "SPECIALIST REFERRAL"])
    page.text(54, y + 16, t, 13, True)
    y += 26
    lsize, vsize = rng.choice([(6, 10), (6.5, 10), (7, 10.5)])
    show(r, "patient_family_name", "patient_given_name", "patient_dob", "referring_provider_name",
         "referred_to_specialty")
    rows: list[list[tuple[str, str]]] = []
    rows.append([("PATIENT LAST NAME", r.patient_family_name.upper()), ("FIRST NAME", r.patient_given_name.upper()),
                 ("MI", r.patient_middle[:1]), ("DATE OF BIRTH", fmt_date(rng, r.patient_dob, "mm/dd/yyyy"))])
    row = []
    if optional(rng, r, "patient_sex", 0.85):
        row.append(("SEX", r.patient_sex))
    if optional(rng, r, "patient_phone", 0.8):
        row.append(("PATIENT PHONE", fmt_phone(rng, r.patient_phone)))
    if optional(rng, r, "patient_mrn", 0.8):
        row.append(("MEDICAL RECORD #", r.patient_mrn))
    row.append(("SSN (LAST 4)", f"XXX-XX-{rng.randint(1000, 9999)}"))
    rows.append(row)
    row = []
    if optional(rng, r, "insurance_payer", 0.9):
        row.append(("PRIMARY INSURANCE", r.insurance_payer))
    if optional(rng, r, "insurance_member_id", 0.85):
        row.append(("MEMBER ID", r.insurance_member_id))
    row.append(("GROUP #", r.group_number))
    rows.append(row)
    row = [("REFERRING PHYSICIAN", _provider(rng, r, rng.choice([1, 3, 5])))]
    if optional(rng, r, "referring_provider_npi", 0.9):
        row.append(("NPI", r.referring_provider_npi))
    if optional(rng, r, "referring_practice_phone", 0.85):
        row.append(("PHONE", fmt_phone(rng, r.referring_practice_phone, False)))
    if optional(rng, r, "referring_practice_fax", 0.85):
        row.append(("FAX", fmt_phone(rng, r.referring_practice_fax, False)))
    rows.append(row)
    row = [("SPECIALTY", fmt_specialty(rng, r.referred_to_specialty))]
    if optional(rng, r, "urgency", 0.85):
        row.append(("URGENCY", fmt_urgency(rng, r.urgency)))
    if optional(rng, r, "diagnosis_codes", 0.9):
        row.append(("DIAGNOSIS (ICD-10)", ", ".join(_code(rng, c) for c in r.diagnosis_codes)))
    rows.append(row)
    if optional(rng, r, "reason", 0.9):
        rows.append([("REASON FOR REFERRAL / CLINICAL QUESTION", r.reason)])
    x0, w = 54, PAGE_W - 108
    cy = y + 6
    for row in rows:
        weights = [2.2 if "NAME" in k or "PHYSICIAN" in k or "INSURANCE" in k or "DIAGNOSIS" in k or "REASON" in k
                   else 1.0 for k, _ in row]
        total = sum(weights)
        h = lsize + vsize + 10
        cx = x0
        for (k, v), wt in zip(row, weights):
            cw = w * wt / total
            page.rect(cx, cy, cw, h, 0.7)
            page.text(cx + 3, cy + lsize + 2, k, lsize)
            lines = wrap(page, v, cw - 8, vsize) or [""]
            page.text(cx + 5, cy + lsize + vsize + 5, lines[0], vsize)
            cx += cw
        cy += h
    page.text(54, cy + 30, "Physician signature ____________________________   Date ____________", 9)
    return [page]


# ---- 4. intake sheet of abbreviations, '-' / '=' separators, one case per document -----------------

def abbreviated_intake(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(PROPORTIONAL + MONO))
    y = letterhead(page, rng, r, phone=rng.random() < 0.4, fax=False)
    case = rng.choice([str.upper, str.lower, lambda s: s])
    sep = rng.choice([" - ", "- ", ": ", " = ", ":"])
    size = rng.choice([10, 10.5, 11])
    f = Flow(page, y=y + 8, size=size, leading=1.8)
    f.line(case("Referral Intake"), size=size + 2, bold=True)
    show(r, "patient_family_name", "patient_given_name", "patient_dob", "referring_provider_name",
         "referred_to_specialty")

    def row(*pairs: tuple[str, str]) -> None:
        f.skip(size * f.leading)
        x = 54.0
        for k, v in pairs:
            end = page.text(x, f.y, case(k) + sep, size, rng.random() < 0.3)
            x = page.text(end + 1, f.y, v, size) + 28

    name = rng.choice([f"{r.patient_family_name}, {r.patient_given_name}",
                       f"{r.patient_family_name.upper()}, {r.patient_given_name}"])
    row((rng.choice(["Pt", "Pt Name", "Pt."]), name),
        (rng.choice(["DOB", "D.O.B."]), fmt_dob(rng, r.patient_dob)))
    p = []
    if optional(rng, r, "patient_sex", 0.8):
        p.append(("Sex", fmt_sex(rng, r.patient_sex)))
    if optional(rng, r, "patient_phone", 0.75):
        p.append((rng.choice(["Pt Ph", "Ph", "Cell"]), fmt_phone(rng, r.patient_phone, False)))
    if optional(rng, r, "patient_mrn", 0.7):
        p.append((rng.choice(["MR#", "Acct", "Chart"]), r.patient_mrn))
    if p:
        row(*p)
    p = []
    if optional(rng, r, "insurance_payer", 0.9):
        p.append((rng.choice(["Ins", "Ins.", "Pri Ins"]), r.insurance_payer))
    if optional(rng, r, "insurance_member_id", 0.85):
        p.append((rng.choice(["Ins ID#", "Mbr", "Sub ID", "Mbr #", "ID#"]), r.insurance_member_id))
    if p:
        if rng.random() < 0.5:
            p.append(("Grp", r.group_number))
        row(*p)
    p = [(rng.choice(["Ref MD", "Ref Prov", "Prov", "Ref Dr"]), _provider(rng, r, rng.choice([0, 1, 2, 3])))]
    if optional(rng, r, "referring_provider_npi", 0.85):
        p.append(("NPI", r.referring_provider_npi))
    row(*p)
    p = []
    if optional(rng, r, "referring_practice_phone", 0.8):
        p.append((rng.choice(["Ofc Ph", "Ref Ph", "Office"]), fmt_phone(rng, r.referring_practice_phone, False)))
    if optional(rng, r, "referring_practice_fax", 0.85):
        p.append((rng.choice(["Ofc Fax", "Ref Fax", "Fax Back"]), fmt_phone(rng, r.referring_practice_fax, False)))
    if p:
        row(*p)
    p = [(rng.choice(["Spec", "To", "Refer To", "Svc"]), fmt_specialty(rng, r.referred_to_specialty))]
    if optional(rng, r, "urgency", 0.85):
        p.append((rng.choice(["Pri", "Urg", "Priority"]), fmt_urgency(rng, r.urgency)))
    row(*p)
    if optional(rng, r, "diagnosis_codes", 0.9):
        row((rng.choice(["Dx", "Dx Codes", "ICD"]), rng.choice([", ", " ", "; "]).join(_code(rng, c) for c in r.diagnosis_codes)))
    if optional(rng, r, "reason", 0.9):
        row((rng.choice(["Rsn", "Reason", "Hx/Reason", "Indication"]), r.reason))
    f.skip(20)
    f.line(case("Taken by") + sep + rng.choice(["MK", "front desk", "J. Ortiz"]) + "    " + case("Date") + sep
           + fmt_date(rng, r.referral_date), size=9)
    return [page]


# ---- 5. sectioned form with a diagnosis table (code | description) ------------------------------

def diagnosis_table_form(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(PROPORTIONAL))
    y = letterhead(page, rng, r, phone=True, fax=rng.random() < 0.5)
    size = rng.choice([9.5, 10, 10.5])
    f = Flow(page, y=y + 6, size=size, leading=1.7)
    f.line(rng.choice(["Consultation Referral", "NEW PATIENT REFERRAL", "Specialty Care Referral"]),
           size=size + 3, bold=True)
    show(r, "patient_family_name", "patient_given_name", "patient_dob", "referring_provider_name",
         "referred_to_specialty")

    def head(s: str) -> None:
        f.skip(4)
        f.line(s if rng.random() < 0.5 else s.upper(), size=size + 1, bold=True)
        page.line(54, f.y + 3, PAGE_W - 54, f.y + 3, 0.6)

    head("Patient")
    f.pair("Name:", f"{r.patient_given_name} {r.patient_middle + ' ' if len(r.patient_middle) > 1 else ''}"
                    f"{r.patient_family_name}")
    x = f.pair("Date of Birth:", fmt_dob(rng, r.patient_dob))
    if optional(rng, r, "patient_sex", 0.8):
        f.pair("Gender:", fmt_sex(rng, r.patient_sex), x=x + 30, newline=False)
    line = []
    if optional(rng, r, "patient_phone", 0.8):
        line.append(("Phone:", fmt_phone(rng, r.patient_phone)))
    if optional(rng, r, "patient_mrn", 0.75):
        line.append(("Patient ID:", r.patient_mrn))
    if line:
        x = f.pair(*line[0])
        if len(line) > 1:
            f.pair(*line[1], x=x + 30, newline=False)
    head("Insurance")
    ins = optional(rng, r, "insurance_payer", 0.9)
    mem = optional(rng, r, "insurance_member_id", 0.85)
    if ins:
        f.pair(rng.choice(["Carrier:", "Plan:", "Insurance:"]), r.insurance_payer)
    f.pair("Subscriber:", rng.choice(["Self", r.emergency_contact[0]]))
    if mem:
        if rng.random() < 0.5:
            f.pair("Member ID / Group:", f"{r.insurance_member_id} / {r.group_number}")
        else:
            x = f.pair("Group:", r.group_number)
            f.pair("Member:", r.insurance_member_id, x=x + 30, newline=False)
    head("Referring Provider")
    f.pair(rng.choice(["Provider:", "Physician:", "Referred by:"]), _provider(rng, r, rng.choice([1, 2, 3, 5])))
    if optional(rng, r, "referring_provider_npi", 0.9):
        f.pair("NPI:", r.referring_provider_npi)
    if not r.present.get("referring_practice_fax") and optional(rng, r, "referring_practice_fax", 0.8):
        f.pair(rng.choice(["Fax results to:", "Return fax:"]), fmt_phone(rng, r.referring_practice_fax, False))
    head("Consultant")
    f.pair("Specialty:", fmt_specialty(rng, r.referred_to_specialty))
    f.pair("Physician:", f"Dr. {r.specialist_name}")
    f.pair("Phone:", fmt_phone(rng, r.specialist_phone, False))
    if optional(rng, r, "urgency", 0.85):
        f.skip(4)
        x = page.text(54, f.y + size * 1.7, "Priority:", size, True) + 10
        for u in ["routine", "urgent", "stat"]:
            x = page.checkbox(x, f.y + size * 1.7, u == r.urgency, mark=rng.choice(["X", "check"])) + 4
            x = page.text(x, f.y + size * 1.7, fmt_urgency(rng, u), size) + 18
        f.skip(size * 1.7)
    if optional(rng, r, "diagnosis_codes", 0.95):
        head("Diagnoses")
        dots = rng.random() < 0.6
        f.skip(size * 1.6)
        page.text(60, f.y, rng.choice(["ICD-10", "Code", "ICD-10 Code"]), size, True)
        page.text(160, f.y, "Description", size, True)
        page.line(54, f.y + 3, PAGE_W - 54, f.y + 3, 0.5)
        for c in r.diagnosis_codes:
            f.skip(size * 1.5)
            page.text(60, f.y, _code(rng, c, dots), size)
            page.text(160, f.y, _desc(c, 62), size)
    if optional(rng, r, "reason", 0.9):
        head(rng.choice(["Reason for Consultation", "Clinical Summary"]))
        f.para(r.reason + ". " + rng.choice(["Please evaluate and treat.", "Thank you.", ""]))
    return [page]


# ---- 6. payer-style referral request: the servicing provider is not the referrer ------------------

def payer_request_form(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(PROPORTIONAL))
    size = 9.5
    payer = r.insurance_payer
    page.text(54, 52, payer.upper() if rng.random() < 0.5 else payer, 16, True)
    page.text(54, 70, rng.choice(["Referral / Prior Authorization Request", "Specialist Referral Request Form"]),
              12, True)
    show(r, "patient_family_name", "patient_given_name", "patient_dob", "referring_provider_name",
         "referred_to_specialty", "insurance_payer")
    cy = 90.0
    col = (PAGE_W - 108) / 2

    def block(title: str, pairs: list[tuple[str, str]], y: float) -> float:
        page.rect(54, y, PAGE_W - 108, 15, 1.2)
        page.text(58, y + 11, title, 9.5, True)
        y += 18
        for i in range(0, len(pairs), 2):
            y += size * 1.8
            for j, (k, v) in enumerate(pairs[i:i + 2]):
                end = page.text(58 + j * col, y, k, size, True)
                page.text(end + 4, y, v, size)
        return y + 8

    member = [("Member Name:", f"{r.patient_family_name}, {r.patient_given_name}"),
              ("Date of Birth:", fmt_date(rng, r.patient_dob, rng.choice(["mm/dd/yyyy", "m/d/yyyy"])))]
    if optional(rng, r, "insurance_member_id", 0.95):
        member.append(("Member ID:", r.insurance_member_id))
    if optional(rng, r, "patient_sex", 0.7):
        member.append(("Gender:", fmt_sex(rng, r.patient_sex)))
    if optional(rng, r, "patient_phone", 0.7):
        member.append(("Member Phone:", fmt_phone(rng, r.patient_phone, False)))
    member.append(("Plan:", payer))
    requesting = [("Requesting Provider:", _provider(rng, r, rng.choice([1, 2, 3])))]
    if optional(rng, r, "referring_provider_npi", 0.95):
        requesting.append(("NPI:", r.referring_provider_npi))
    if optional(rng, r, "referring_practice_phone", 0.9):
        requesting.append(("Phone:", fmt_phone(rng, r.referring_practice_phone, False)))
    if optional(rng, r, "referring_practice_fax", 0.9):
        requesting.append(("Fax:", fmt_phone(rng, r.referring_practice_fax, False)))
    servicing = [("Servicing Provider:", f"{r.specialist_name}"),
                 ("Specialty:", fmt_specialty(rng, r.referred_to_specialty)),
                 ("NPI:", r.other_npi), ("Phone:", fmt_phone(rng, r.specialist_phone, False)),
                 ("Fax:", fmt_phone(rng, r.specialist_fax, False))]
    cy = block("MEMBER INFORMATION", member, cy)
    order = [("REQUESTING (REFERRING) PROVIDER", requesting), ("SERVICING PROVIDER", servicing)]
    if rng.random() < 0.3:
        order.reverse()
    for title, pairs in order:
        cy = block(title, pairs, cy)
    service = []
    if optional(rng, r, "diagnosis_codes", 0.95):
        service.append(("Diagnosis Code(s):", "  ".join(_code(rng, c) for c in r.diagnosis_codes)))
    if optional(rng, r, "urgency", 0.85):
        service.append(("Request Type:", {"routine": "Routine", "urgent": "Urgent", "stat": "STAT"}[r.urgency]))
    service.append(("Number of Visits:", str(rng.randint(1, 12))))
    cy = block("SERVICE REQUESTED", service, cy)
    if optional(rng, r, "reason", 0.9):
        f = Flow(page, x=58, y=cy, size=size, leading=1.6)
        f.line("Clinical information supporting the request:", bold=True)
        f.para(r.reason, width=PAGE_W - 116)
        cy = f.y + 10
    page.text(58, cy + 30, "By signing I attest the information above is accurate.  Signature ______________", 8)
    return [page]



# ---- 7. numbered claim-style boxes ("1. PATIENT'S NAME", "1a. INSURED'S I.D. NUMBER") ---------------

PAYER_PRINTED = {   # canonical -> other ways a form prints it (aliases in ocr/payers.txt, plan words after it)
    "Blue Cross Blue Shield": ["BCBS", "Blue Cross & Blue Shield", "BCBS PPO"],
    "UnitedHealthcare": ["UHC", "United Healthcare", "UnitedHealthcare Choice Plus"],
    "Aetna": ["Aetna PPO", "AETNA HMO", "Aetna Open Access"],
    "Cigna": ["CIGNA HealthCare", "Cigna Open Access Plus"],
    "Medicare": ["Medicare Part B", "MEDICARE PART B"],
    "Kaiser Permanente": ["Kaiser", "KAISER PERMANENTE HMO"],
    "Humana": ["Humana Gold Plus", "HUMANA PPO"],
}


def _payer_printed(rng: random.Random, payer: str) -> str:
    if payer in PAYER_PRINTED and rng.random() < 0.5:
        return rng.choice(PAYER_PRINTED[payer])
    return payer.upper() if rng.random() < 0.4 else payer


def numbered_claim_form(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(PROPORTIONAL))
    y = 40.0
    page.text(54, y + 14, rng.choice(["HEALTH INSURANCE REFERRAL FORM", "UNIFORM REFERRAL REQUEST",
                                      "OUTPATIENT REFERRAL / PRIOR AUTHORIZATION"]), 13, True)
    page.text(54, y + 28, f"{r.practice_name}   {r.practice_address[1]}", 8)
    y += 40
    lsize, vsize = rng.choice([(6.5, 10), (7, 10), (7, 11)])
    show(r, "patient_family_name", "patient_given_name", "patient_dob", "referring_provider_name",
         "referred_to_specialty")
    mi = f", {r.patient_middle[0]}" if r.patient_middle else ""
    rows: list[list[tuple[str, str, float]]] = []
    rows.append([("2. PATIENT'S NAME (Last Name, First Name, Middle Initial)",
                  f"{r.patient_family_name.upper()}, {r.patient_given_name.upper()}{mi.upper()}", 2.4),
                 ("3. PATIENT'S BIRTH DATE", fmt_date(rng, r.patient_dob, rng.choice(["mm/dd/yyyy", "mm-dd-yyyy"])), 1.2),
                 ("SEX", "", 0.8)])
    sex_shown = optional(rng, r, "patient_sex", 0.9)
    row = []
    if optional(rng, r, "patient_phone", 0.85):
        row.append((rng.choice(["5. TELEPHONE (Include Area Code)", "5. PATIENT'S TELEPHONE", "5. PATIENT PHONE #"]),
                    fmt_phone(rng, r.patient_phone, False), 1.4))
    if optional(rng, r, "patient_mrn", 0.8):
        row.append((rng.choice(["6. PATIENT ACCOUNT NO.", "6. MEDICAL RECORD NO.", "6. PATIENT ID #"]), r.patient_mrn, 1.2))
    row.append(("7. PATIENT'S ADDRESS (No., Street)", r.patient_address[0], 1.6))
    rows.append(row)
    row = []
    if optional(rng, r, "insurance_member_id", 0.9):
        row.append((rng.choice(["1a. INSURED'S I.D. NUMBER", "1a. MEMBER I.D. NUMBER", "1a. INSURED ID NO."]),
                    r.insurance_member_id, 1.3))
    if optional(rng, r, "insurance_payer", 0.9):
        row.append((rng.choice(["11c. INSURANCE PLAN NAME OR PROGRAM NAME", "11c. PLAN NAME", "1. CARRIER"]),
                    _payer_printed(rng, r.insurance_payer), 2.0))
    row.append(("11. INSURED'S GROUP NUMBER", r.group_number, 1.0))
    rows.append(row)
    row = [(rng.choice(["17. NAME OF REFERRING PROVIDER OR OTHER SOURCE", "17. REFERRING PROVIDER",
                        "17. NAME OF REFERRING PHYSICIAN"]), _provider(rng, r, rng.choice([0, 1, 3, 5])), 2.2)]
    if optional(rng, r, "referring_provider_npi", 0.9):
        row.append(("17b. NPI", r.referring_provider_npi, 1.0))
    rows.append(row)
    row = []
    if optional(rng, r, "referring_practice_phone", 0.85):
        row.append((rng.choice(["33. PROVIDER PH #", "33. BILLING PROVIDER PH #", "33a. OFFICE TELEPHONE"]),
                    fmt_phone(rng, r.referring_practice_phone, False), 1.3))
    if optional(rng, r, "referring_practice_fax", 0.85):
        row.append((rng.choice(["33b. FAX #", "33b. RETURN FAX", "33b. OFFICE FAX NO."]),
                    fmt_phone(rng, r.referring_practice_fax, False), 1.3))
    row.append(("32. SERVICE FACILITY", r.specialist_practice, 2.0))
    rows.append(row)
    row = [(rng.choice(["24. SPECIALTY REQUESTED", "24. REFERRED TO (SPECIALTY)", "24. TYPE OF SERVICE"]),
            fmt_specialty(rng, r.referred_to_specialty), 1.6)]
    if optional(rng, r, "urgency", 0.85):
        row.append(("25. PRIORITY", fmt_urgency(rng, r.urgency), 1.0))
    rows.append(row)
    codes_shown = optional(rng, r, "diagnosis_codes", 0.9)
    x0, w = 54, PAGE_W - 108
    cy = y
    for row in rows:
        total = sum(wt for *_, wt in row)
        h = lsize + vsize + 10
        cx = x0
        for k, v, wt in row:
            cw = w * wt / total
            page.rect(cx, cy, cw, h, 0.7)
            page.text(cx + 3, cy + lsize + 2, k, lsize)
            if k == "SEX" and sex_shown:
                if rng.random() < 0.5:    # "M [ ]  F [X]"
                    sx = cx + 8
                    for opt in "MF":
                        sx = page.text(sx, cy + lsize + vsize + 5, opt, vsize) + 3
                        sx = page.checkbox(sx, cy + lsize + vsize + 5, r.patient_sex == opt, 8) + 10
                else:                     # a lone letter, as a printer fills the cell
                    page.text(cx + 8, cy + lsize + vsize + 5, r.patient_sex, vsize)
            elif v:
                lines = wrap(page, v, cw - 8, vsize) or [""]
                page.text(cx + 5, cy + lsize + vsize + 5, lines[0], vsize)
            cx += cw
        cy += h
    if codes_shown:
        h = lsize + 2 * (vsize + 4) + 8
        page.rect(x0, cy, w, h, 0.7)
        page.text(x0 + 3, cy + lsize + 2, "21. DIAGNOSIS OR NATURE OF ILLNESS OR INJURY (ICD-10)", lsize)
        cx = x0 + 10
        for i, c in enumerate(r.diagnosis_codes):
            cx = page.text(cx, cy + lsize + vsize + 6, f"{'ABCD'[i]}. ", vsize) + 2
            cx = page.text(cx, cy + lsize + vsize + 6, _code(rng, c), vsize) + 40
        cy += h
    if optional(rng, r, "reason", 0.85):
        h = lsize + vsize + 12
        page.rect(x0, cy, w, h, 0.7)
        page.text(x0 + 3, cy + lsize + 2, rng.choice(["19. ADDITIONAL CLAIM INFORMATION / REASON FOR REFERRAL",
                                                      "19. REASON FOR REFERRAL"]), lsize)
        page.text(x0 + 5, cy + lsize + vsize + 5, r.reason, vsize)
        cy += h
    page.text(54, cy + 30, "31. SIGNATURE OF PHYSICIAN ______________________   DATE " +
              fmt_date(rng, r.referral_date, "mm/dd/yyyy"), 8)
    return [page]


# ---- 8. a ruled two-column sheet: label cells on the left, wordings this corpus has not used ------

def label_column_sheet(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(PROPORTIONAL + MONO))
    y = letterhead(page, rng, r, phone=False, fax=False)
    page.text(54, y + 16, rng.choice(["Patient Referral", "REFERRAL FOR CONSULTATION", "New Patient Referral Sheet"]),
              13, True)
    size = rng.choice([9.5, 10, 10.5])
    show(r, "patient_family_name", "patient_given_name", "referring_provider_name", "referred_to_specialty",
         "patient_dob")
    rows: list[tuple[str, str]] = []
    style = rng.randrange(3)
    if style == 0:      # family first, no comma, the label says so
        rows.append((rng.choice(["Patient (Last First)", "Name (Last First)", "Patient Last / First"]),
                     f"{r.patient_family_name.upper()} {r.patient_given_name.upper()}"))
    elif style == 1:
        rows.append((rng.choice(["Patient", "Client Name", "Member Name"]), f"{r.patient_given_name} {r.patient_family_name}"))
    else:
        rows.append((rng.choice(["Surname", "Family Name"]), r.patient_family_name))
        rows.append((rng.choice(["Given Name", "Forename", "First"]), r.patient_given_name))
    rows.append((rng.choice(["Birth Date", "DOB (mm/dd/yyyy)", "Date of Birth"]), fmt_dob(rng, r.patient_dob)))
    if optional(rng, r, "patient_sex", 0.85):
        rows.append((rng.choice(["Gender", "Sex at Birth", "Sex (M/F)"]), fmt_sex(rng, r.patient_sex)))
    if optional(rng, r, "patient_phone", 0.85):
        rows.append((rng.choice(["Pt. Tel", "Home #", "Cell #", "Phone (H)", "Contact No.", "Best Contact #",
                                 "Primary #"]), fmt_phone(rng, r.patient_phone, False)))
    if optional(rng, r, "patient_mrn", 0.75):
        rows.append((rng.choice(["Acct #", "Patient Acct No.", "Chart No.", "PID"]), r.patient_mrn))
    if optional(rng, r, "insurance_payer", 0.9):
        rows.append((rng.choice(["Carrier", "Insurance Co.", "Plan Name", "Payer Name", "Insurer", "Health Insurance"]),
                     _payer_printed(rng, r.insurance_payer)))
    if optional(rng, r, "insurance_member_id", 0.9):
        ident = r.insurance_member_id
        if rng.random() < 0.3 and len(ident) >= 9:     # printed in groups, as on the card
            ident = " ".join(ident[i:i + 4] for i in range(0, len(ident), 4))
        rows.append((rng.choice(["Policy No.", "Cert #", "Recipient ID", "Ins ID#", "ID Card #", "Enrollee ID",
                                 "Policy Number"]), ident))
    rows.append((rng.choice(["Group No.", "Grp #"]), r.group_number))
    rows.append((rng.choice(["Referring Clinician", "Sending Provider", "Requested By", "Primary Care Physician"]),
                 _provider(rng, r, rng.choice([1, 2, 3, 5]))))
    if optional(rng, r, "referring_provider_npi", 0.9):
        rows.append((rng.choice(["NPI No.", "Provider NPI #", "Individual NPI"]), r.referring_provider_npi))
    if optional(rng, r, "referring_practice_phone", 0.85):
        rows.append((rng.choice(["Office #", "Main #", "Practice Tel", "Callback #", "Office Tel", "Clinic Phone"]),
                     fmt_phone(rng, r.referring_practice_phone, False)))
    if optional(rng, r, "referring_practice_fax", 0.85):
        rows.append((rng.choice(["Office Fax #", "Return Fax", "Fax Results To", "Practice Fax"]),
                     fmt_phone(rng, r.referring_practice_fax, False)))
    rows.append((rng.choice(["Specialty Needed", "Refer To", "Service Requested"]),
                 fmt_specialty(rng, r.referred_to_specialty)))
    if optional(rng, r, "urgency", 0.85):
        rows.append((rng.choice(["Urgency", "Priority Level", "Acuity"]), fmt_urgency(rng, r.urgency)))
    if optional(rng, r, "diagnosis_codes", 0.9):
        rows.append((rng.choice(["ICD-10 Dx", "Diagnosis Codes", "Dx Code(s)"]),
                     rng.choice([", ", "; ", "  "]).join(_code(rng, c) for c in r.diagnosis_codes)))
    if optional(rng, r, "reason", 0.9):
        rows.append((rng.choice(["Reason for Visit", "Clinical Question", "Presenting Problem"]), r.reason))
    x0, split, x1 = 54, 54 + rng.choice([150, 170, 190]), PAGE_W - 54
    cy = y + 28
    h = size * 2.0
    for k, v in rows:
        page.rect(x0, cy, split - x0, h, 0.7)
        page.rect(split, cy, x1 - split, h, 0.7)
        page.text(x0 + 4, cy + h * 0.68, k, size, rng.random() < 0.5)
        lines = wrap(page, v, x1 - split - 10, size) or [""]
        page.text(split + 6, cy + h * 0.68, lines[0], size)
        cy += h
    page.text(54, cy + 40, "Contact our referral coordinator with questions.", 9)
    return [page]


# ---- 9. a compact slip: values after wide gaps, no colons, the practice's numbers in the footer ----

def referral_slip(rng: random.Random, r: Referral) -> list[Page]:
    page = Page(rng.choice(PROPORTIONAL))
    size = rng.choice([9.5, 10, 10.5])
    page.text(54, 60, r.practice_name.upper(), 14, True)
    page.text(54, 74, rng.choice(["Referral Slip", "Outgoing Referral", "Specialty Referral"]), 10)
    page.line(54, 80, PAGE_W - 54, 80, 1.0)
    show(r, "patient_family_name", "patient_given_name", "referring_provider_name", "referred_to_specialty",
         "patient_dob")
    y = 100.0
    gap = rng.choice([60, 75, 90])

    def pair(k: str, v: str, x: float = 54) -> float:
        end = page.text(x, y, k, size - 1, True)
        return page.text(max(end + 12, x + gap), y, v, size)

    name = rng.choice([f"{r.patient_family_name}, {r.patient_given_name}", f"{r.patient_given_name} {r.patient_family_name}",
                       f"{r.patient_family_name.upper()}, {r.patient_given_name.upper()}"])
    pair(rng.choice(["Patient", "PATIENT", "Pt Name"]), name)
    pair(rng.choice(["DOB", "Born"]), fmt_dob(rng, r.patient_dob), 330)
    y += size * 2
    if optional(rng, r, "patient_sex", 0.8):
        pair(rng.choice(["Sex", "Gender"]), fmt_sex(rng, r.patient_sex))
    if optional(rng, r, "patient_phone", 0.8):
        pair(rng.choice(["Home", "Cell", "Mobile", "Tel"]), fmt_phone(rng, r.patient_phone, False), 330)
    y += size * 2
    if optional(rng, r, "insurance_payer", 0.9):
        pair(rng.choice(["Insurance", "Plan", "Carrier"]), _payer_printed(rng, r.insurance_payer))
    if optional(rng, r, "insurance_member_id", 0.85):
        pair(rng.choice(["Member ID", "ID #", "Policy #", "Subscriber #"]), r.insurance_member_id, 330)
    y += size * 2
    if optional(rng, r, "patient_mrn", 0.7):
        pair(rng.choice(["MRN", "Chart #", "Acct"]), r.patient_mrn)
        y += size * 2
    pair(rng.choice(["Refer to", "Specialty", "Consult"]), fmt_specialty(rng, r.referred_to_specialty))
    if optional(rng, r, "urgency", 0.85):
        pair(rng.choice(["Priority", "Urgency"]), fmt_urgency(rng, r.urgency), 330)
    y += size * 2
    if optional(rng, r, "diagnosis_codes", 0.9):
        pair(rng.choice(["Dx", "ICD-10", "Diagnosis"]), ", ".join(_code(rng, c) for c in r.diagnosis_codes))
        y += size * 2
    if optional(rng, r, "reason", 0.9):
        pair(rng.choice(["Reason", "Indication", "Question"]), r.reason)
        y += size * 2
    y += size * 2
    pair(rng.choice(["Referring", "Provider", "Ordering"]), _provider(rng, r, rng.choice([1, 3, 5])))
    if optional(rng, r, "referring_provider_npi", 0.85):
        pair("NPI", r.referring_provider_npi, 330)
    y += size * 3
    page.line(54, y - size, PAGE_W - 54, y - size, 0.8)
    foot = [r.practice_address[0] + ", " + r.practice_address[1]]
    if optional(rng, r, "referring_practice_phone", 0.85):
        foot.append(f"{rng.choice(['T', 'P', 'Tel', 'Ph', 'Main'])} {fmt_phone(rng, r.referring_practice_phone, False)}")
    if optional(rng, r, "referring_practice_fax", 0.85):
        foot.append(f"{rng.choice(['F', 'Fax'])} {fmt_phone(rng, r.referring_practice_fax, False)}")
    page.text(54, y + 4, "   ".join(foot), 8.5)
    return [page]

LAYOUTS = {
    "ehr_referral_order": ehr_referral_order,
    "sentence_letter": sentence_letter,
    "small_caps_grid": small_caps_grid,
    "abbreviated_intake": abbreviated_intake,
    "diagnosis_table_form": diagnosis_table_form,
    "payer_request_form": payer_request_form,
}

# second round (`generate --split extra2`), kept apart so that the seeds of `--split extra` above still
# give the same documents: numbered claim-style boxes, a label column with wordings no other layout
# uses (Carrier, Cert #, Recipient ID, Main #, Pt. Tel, "Patient (Last First)" without a comma), a
# slip whose practice numbers sit in the footer ("T 555...  F 555..."); payers printed by alias or
# with plan words (BCBS, UHC, Aetna PPO)
LAYOUTS_2 = {
    "numbered_claim_form": numbered_claim_form,
    "label_column_sheet": label_column_sheet,
    "referral_slip": referral_slip,
}
