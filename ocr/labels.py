"""The label lexicon: how referral forms name each field, and which section a label opens.

Each entry is (pattern, field, opens, strength):
- `pattern` is a regex over the label's words (case-insensitive; OCR-tolerant where
  tesseract is known to slip: 0/o in DOB, 1/l in "Tel").
- `field` is a contract field, or a generic one (`name`, `phone`, `fax`, `npi`, `id`,
  `address`) that the section decides (Phone under PATIENT is the patient's), or
  None for a pure section header.
- `opens` is the section the label starts for what follows below/right of it:
  patient, referring, to (the specialist, whose details are not ours), insurance,
  clinical, other (subscriber, emergency contact: nobody we report).
- `strength` 2 = unmistakable anywhere ("D.O.B.", "NPI"), 1 = specific but needs a
  colon or its own cell, 0 = a common word ("Name", "Phone") that is a label only
  with a colon or alone in its cell.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_ = None
PT = r"(?:patient'?s?|pt\.?|client|member)"
REF = r"(?:referring|ref\.?|referral|requesting|ordering|sending)(?:\s*(?:/|\()\s*(?:referring|ordering|requesting)\s*\)?)?"
DOC = r"(?:provider|prov\.?|physician|phys\.?|doctor|dr\.?|md\s*/\s*do|md|clinician|practitioner|prescriber)"
PRACT = r"(?:direct|practice|office|ofc\.?|clinic|provider|prov\.?|physician|doctor|facility|dept\.?|department|sender'?s?|return|reply|callback|call\s*back)"

LEXICON: list[tuple[str, str | None, str | None, int]] = [
    # --- patient
    (rf"{PT}\s*(?:full\s+|legal\s+)?name(?:\s*\(\s*last\s*,\s*first\s*\))?", "patient_name", "patient", 1),
    # "Patient Last First", "Patient (Last / First)": the head says the order of the value
    (rf"{PT}\s*(?:name\s*)?\(?\s*last(?:\s+name)?\s*[,/&]?\s*first(?:\s+name)?\s*\)?", "patient_name", "patient", 1),
    (r"name\s+of\s+patient|patient\s+/\s+member\s+name|member\s+name|patient\s+information\s+name", "patient_name", "patient", 1),
    (rf"name\s+of\s+(?:the\s+)?{REF}\s*{DOC}(?:\s+or\s+other\s+source)?|{REF}\s*{DOC}\s+or\s+other\s+source", "referring_provider_name", "referring", 1),
    (rf"(?:{PT}\s*)?(?:last|family|sur)\s*name", "patient_family_name", "patient", 1),
    (rf"(?:{PT}\s*)?(?:(?:first|given)\s*name|forename)", "patient_given_name", "patient", 1),
    # "Surname: Kelly / First: Robert", "Last Name | Jackson | First | Juan": the bare word
    # counts only with its colon or alone in its cell (strength 1, one word)
    (r"first|given", "patient_given_name", "patient", 1),
    (r"m\.?\s?i\.?|middle(?:\s+(?:name|initial|init\.?))?|suffix", "middle", _, 1),
    (r"last|surname", "patient_family_name", "patient", 1),
    (rf"{PT}\s*\(\s*last\s*,\s*first(?:\s+name)?\s*\)", "patient_name", "patient", 2),
    (r"(?:re|regarding|subject|patient\s+re)", "patient_name", "patient", 0),
    (r"(?:patient|pt\.?)(?!\s*(?:#|no\b|number\b|num\b|nbr\b))", "patient_name", "patient", 0),   # "Patient #" is an id
    (rf"(?:{PT}\s*)?(?:d\.?\s?[o0]\.?\s?b\.?|date\s+of\s+birth|birth\s*date|birth\s+dt|bdate|dob)", "patient_dob", "patient", 2),
    (r"born(?:\s+on)?", "patient_dob", _, 0),
    (rf"(?:{PT}\s*)?(?:sex\s*/\s*gender|gender\s*/\s*sex|(?:birth\s+|legal\s+|assigned\s+)?sex(?:\s+(?:assigned\s+)?at\s+birth)?|gender(?:\s+identity)?|m\s*/\s*f)", "patient_sex", "patient", 1),
    (rf"(?:{PT}\s*)(?:phone|tel\.?|telephone|contact|ph\.?|cell|mobile)(?:\s+(?:number|no\.?|#))?", "patient_phone", "patient", 1),
    (r"(?:home|hm|cell|mobile|primary|best|daytime|evening)\s*(?:phone|tel\.?|telephone|number|ph\.?|#)|(?:best|preferred|primary)\s+contact(?:\s*(?:#|no\.?|number|phone))?", "patient_phone", _, 1),
    (r"contact\s*(?:phone|tel\.?|telephone|number|ph\.?|#|no\.?)|contact", "phone", _, 1),
    (r"phone\s*\((?:home|cell|mobile|h|c)\)|cell|mobile|home", "patient_phone", _, 0),
    (rf"(?:{PT}\s*)?(?:mrn[e£]?|m\.r\.n\.?|mr\s*#|mr\s+(?:no|number)|medical\s+record(?:\s+(?:number|no\.?|#))?|med\.?\s*rec\.?(?:\s*#)?|chart(?:\s+(?:number|no\.?|#|id))?|record\s*(?:#|no\b\.?|number\b))", "patient_mrn", "patient", 2),
    # a record number under another name (hospital, unit, EMR): never an insurance id
    (r"(?:hosp\.?|hospital|unit|emr|ehr|clinic|facility|enterprise)\s*(?:id|#|no\b\.?|number\b|mrn)", "patient_mrn", "patient", 1),
    (r"(?:patient'?s?|pt\.?|client)\s*(?:id|identifier|account|acct\.?\s*(?:no\b\.?|#|number\b)?|#|no\.?|number)|mr\s+no\.?|hospital\s*(?:#|no\.?|number)|pid|acct\.?|account(?:\s+(?:#|no\.?|number))?", "patient_mrn", "patient", 1),
    # --- insurance
    (r"(?:primary\s+|secondary\s+|pri\.?\s*|prim\.?\s*|sec\.?\s*)?(?:(?:health|medical)\s+)?(?:insurance|ins\.?)(?!\s*(?:#|no\b|number\b|num\b|type\b))\s*(?:carrier|company|plan|name|provider|payer|payor|co\.?)?(?:\s+name)?", "insurance_payer", "insurance", 1),
    (r"plan|ins(?:urance)?\s*/\s*plan", "insurance_payer_known", "insurance", 0),   # "Plan:" is also a treatment plan
    (r"(?:(?:insurance|health)\s+)?plan\s+name(?:\s+or\s+program(?:\s+name)?)?|health\s+plan(?:\s+name)?|(?:payer|payor|carrier)(?:\s+name)?|coverage|insurer", "insurance_payer", "insurance", 1),
    (r"(?:(?:member|mbr\.?|subscriber|sub\.?|policy)\s*/\s*)?(?:member|mem\.?|mbr\.?|subscriber|sub\.?|subs\.?|policy|insurance|ins\.?|insured'?s?|beneficiary|medicaid|medicare|plan|certificate|cert\.?|contract|recipient|enrollee|(?:id\s+|insurance\s+|member\s+)?card|policy\s*/)\s*(?:id|[i1l|]\.\s?d\.?|[|l]\s?d|identification|#|no\.?|number|num)(?:\s*(?:#|no\.?|number))?|mbi|hicn|medicare\s+beneficiary\s+identifier", "insurance_member_id", "insurance", 2),
    (r"id\s*(?:#|no\.?|number)?|identification\s+(?:#|no\.?|number)", "id", _, 0),
    (r"cert\.?|certificate|(?:id|insurance|member|medical)\s+card", "insurance_member_id", "insurance", 1),      # "Cert" with its "#" lost; alone in its cell
    (r"group\s*(?:#|no\.?|number|id)?|grp\s*#?", None, "insurance", 1),
    # --- referring provider
    (rf"{REF}\s*{DOC}(?:\s*name)?|referred\s+by|referral\s+from|{REF}\s+(?:provider|physician)\s*/\s*practice", "referring_provider_name", "referring", 1),
    (r"(?:pcp|primary\s+care\s+(?:provider|physician|doctor)|authoriz(?:ing|ed)\s+(?:provider|physician|prov\.?)|auth\.?\s+prov(?:ider)?\.?|ordered\s+by|requestor|requester|submitted\s+by|prescriber|ordering|requested\s+by|req(?:\.|uested)?\s+by|signed\s+by|electronically\s+signed(?:\s+by)?|signed|signature|attending|rendering\s+provider|author|authored\s+by|seen\s+by|dictated\s+by|note\s+by|provider\s+of\s+record|from\s+(?:provider|physician|dr\.?))", "referring_provider_name", "referring", 1),
    (rf"(?:{REF}\s*)?{DOC}\s+npi|{REF}\s+npi|npi\s*(?:#|no\.?|number|num)?|n\.p\.i\.?", "npi", _, 2),
    (rf"{REF}\s+(?:practice|office|clinic|facility)(?:\s+name)?|practice\s+name|clinic\s+name|office\s+name|facility", None, "referring", 1),
    (r"office|clinic|practice|call\s*back", "referring_practice_phone", "referring", 1),     # "Office: 555-..." (a name fails the phone parser)
    (rf"{REF}\s+(?:practice\s+|office\s+|clinic\s+|provider\s+|physician\s+)?(?:phone|tel\.?|telephone|ph\.?)|(?:billing\s+|rendering\s+)?(?:office|ofc\.?|practice|clinic|provider|prov\.?|physician|doctor'?s?|dept\.?|department|callback|call\s*back)\s+(?:phone|tel\.?|telephone|ph\.?|#)", "referring_practice_phone", "referring", 1),
    (rf"{REF}\s+(?:practice\s+|office\s+|clinic\s+|provider\s+|physician\s+)?fax|{PRACT}\s+fax(?:\s*(?:#|no\.?|number))?|fax\s+back(?:\s+to)?|please\s+fax\s+(?:back|results|response)(?:\s+to)?|fax\s+(?:results|response|reply)\s+to", "referring_practice_fax", "referring", 1),
    (r"(?:provider|physician|doctor|practitioner|clinician)(?:\s+name)?", "name", "referring", 0),
    (r"referring|referred\s+by|ref\.?\s+by|ref\.?\s+dr\.?|referral\s+source|ordering\s*/\s*referring", "referring_provider_name", "referring", 1),
    # "Ref: Dr. Wu" on a dense intake line; a bare "Ref" is a label only with its colon (strength 1)
    (r"ref\.?|pcp\s+name|(?:primary|family|treating|attending|sending|requesting)\s+(?:(?:provider|physician|doctor|md)|clinician|practitioner)(?:\s+name)?", "referring_provider_name", "referring", 1),
    # --- generic contact fields: the section decides whose they are
    (r"(?:phone|telephone|tel\.?|ph\.?|p|t|o|voice)(?:\s*(?:#|no\.?|number))?", "phone", _, 0),
    # "Work: ...", "Main #", "Direct line", "H: / C: / W:" (a colon needed, and the number must parse)
    (r"(?:work|wk|business|main|direct|alt\.?|alternate|other|preferred|daytime|day)\s*(?:phone|tel\.?|telephone|ph\.?|line|#|no\.?|number)|(?:work|main|direct|h|c|w|m)(?=\s*:)|(?:main|direct)(?=\s*[(\d]|\s*$)", "phone", _, 0),
    (r"(?:fax|facsimile|f|fx)(?:\s*(?:#|no\.?|number))?", "fax", _, 0),
    (r"name|full\s+name", "name", _, 0),
    (r"address|street|city|state|zip|e-?mail", "address", _, 0),
    # --- referral
    (r"(?:referred|refer|referral|referring)\s+to(?:\s+(?:specialty|specialist|department|service|provider|clinic))?|consult(?:ation)?\s+(?:to|with|requested\s+with)", "referred_to_specialty", "to", 1),
    (r"(?:requested\s+)?special(?:i)?ty(?:\s+(?:requested|needed|referred\s+to|type))?|speciality|(?:requested\s+)?service(?:\s+requested)?|department|dept\.?|referral\s+type|consult\s+type|consultation\s+type|type\s+of\s+(?:referral|consult(?:ation)?|specialist)|spec\.?|svc\.?|referral(?:\s+for)?|consult(?:ation)?(?:\s+for)?", "referred_to_specialty", _, 1),
    (r"(?:referral\s+|request\s+)?(?:urgency|priority)(?:\s+level)?|urgency\s*/\s*priority|pri\.?|urg\.?|acuity", "urgency", _, 1),
    (r"assessment(?:\s*(?:and|&|/)\s*plan)?|impression|(?:active\s+)?problems?(?:\s+list)?|(?:medical\s+)?conditions?", "diagnosis_codes", "clinical", 1),
    (r"(?:primary\s+|secondary\s+|working\s+|admitting\s+|additional\s+|other\s+|associated\s+|related\s+)?(?:diagnos[ie]s(?:\s+or\s+nature\s+of\s+illness(?:\s+or\s+injury)?)?|dx|icd[\s\-]*10(?:[\s\-]*cm)?(?:\s+dx)?|icd(?:\s+dx)?)(?:\s*#?\s*[1-9](?![0-9.]))?(?:\s*(?:codes?|\(s\)|/\s*icd[\s\-]*10|/\s*codes?))?(?:\s*\(\s*icd[\s\-]*10\s*\))?", "diagnosis_codes", "clinical", 1),
    (r"(?:billing\s+|dx\s+|diagnostic\s+)?codes?", "diagnosis_codes", _, 1),    # "Codes: E11.9, I10" (a colon or its own cell)
    (r"(?:hx|history)\s*/\s*reason|reason\s*/\s*(?:hx|history|indication)|rsn|reason\s+for\s+(?:referral|consult(?:ation)?|visit|request)|referral\s+reason|reason(?:\s+for\s+referral)?|clinical\s+(?:indication|indications|question|summary|notes?|information|history|reason)|indications?(?:\s+for\s+referral)?|chief\s+complaint|presenting\s+problem|question\s+for\s+(?:the\s+)?(?:consultant|specialist)|(?:services?|evaluation)\s+requested|comments?|notes?|additional\s+(?:claim\s+)?information(?:\s*/?\s*reason\s+for\s+referral)?|(?:clinical\s+)?questions?", "reason", "clinical", 1),
    # --- sections without a field of their own
    (rf"{PT}\s+(?:information|info|demographics|details|data)|demographics|patient\s+/\s+member", None, "patient", 1),
    (rf"{REF}\s+(?:provider|physician|practice|office|clinic|source)(?:\s+information)?|{REF}\s+information", None, "referring", 1),
    (r"(?:provider|physician|prescriber|practitioner|clinician)\s+(?:information|info|details)|referred\s+from", None, "referring", 1),
    (r"from|sender|sent\s+by", "cover_from", "referring", 1),     # cover sheet: a provider's name, or a practice's
    (r"(?:servicing|receiving|accepting|consulting|rendering\s+specialist|referred[\s\-]+to)\s+(?:provider|physician|practitioner|doctor|specialist|practice|facility|md)(?:\s+(?:information|info|name|details))?", None, "to", 1),
    (r"to|recipient|attn\.?|attention|consultant|specialist|receiving\s+(?:provider|practice|clinic)|referred\s+to\s+provider|(?:specialist|consultant)\s+information", None, "to", 1),
    (r"(?:insurance|coverage|payer|billing)\s+(?:information|info|details)", None, "insurance", 1),
    (r"subscriber|insured|policy\s*holder", "subscriber", "other", 1),
    (r"(?:subscriber|policy\s*holder|guarantor|insured|responsible\s+party|emerg(?:ency|\.)?\s+contact|next\s+of\s+kin|contact\s+person|caregiver|parent|guardian)(?:\s+(?:information|name|info))?", None, "other", 1),
    (r"clinical\s+(?:information|details|summary)|medical\s+history|history|medications?|allergies|vitals", None, "clinical", 1),
]

# generic field -> contract field, by section
GENERIC = {
    "name": {"patient": "patient_name", "referring": "referring_provider_name", None: "patient_name",
             "letterhead": "patient_name", "clinical": "patient_name"},
    "phone": {"patient": "patient_phone", "referring": "referring_practice_phone",
              "letterhead": "referring_practice_phone"},
    "fax": {"referring": "referring_practice_fax", "letterhead": "referring_practice_fax",
            None: "referring_practice_fax", "patient": "referring_practice_fax", "clinical": "referring_practice_fax"},
    # (a patient has no fax: one printed among the patient's or clinical lines is the sender's)
    "npi": {"referring": "referring_provider_npi", "patient": "referring_provider_npi",
            "clinical": "referring_provider_npi", "insurance": "referring_provider_npi",
            "letterhead": "referring_provider_npi", None: "referring_provider_npi"},
    "id": {"patient": "patient_mrn", "insurance": "insurance_member_id"},
}

TAIL = r"(?:\s*\(\s*s\s*\))?(?:\s*\((?:last|first|mm|dd|yyyy|m/f|if|home|cell|print|name|npi|icd)[^)]{0,30}\))?\s*(?:#|no\b\.?|number\b|num\b\.?|nbr\b)?\s*([:;=\u2019]|\.{2,}|-{2,}|_{3,}|\.(?=\s)|-(?=\s)|#)?"


@dataclass(frozen=True)
class Label:
    field: str | None
    opens: str | None
    strength: int
    start: int          # character offsets in the segment text
    end: int            # end of the label including its colon
    colon: bool


_COMPILED = [(re.compile(r"(?:" + p + r")(?![A-Za-z0-9])" + TAIL, re.I), f, o, s) for p, f, o, s in LEXICON]
_STARTS = re.compile(r"(?:^|(?<=[\s|(\[/]))[\"'\u201c\u2018\u2019\u201d|_~.,:;\u2014\-]*(?=\S)")


# labels whose value is a number: "Ph (503) 555-0111", "Fax 555..." need no colon
NUMERIC_FIELDS = {"phone", "fax", "patient_phone", "referring_practice_phone", "referring_practice_fax", "npi",
                  "patient_mrn", "insurance_member_id", "patient_dob"}

# "Sex F" on a dense line: a sex label needs no colon when a sex value follows it
SEX_VALUE = re.compile(r"(?:m|f|male|female|x|u|unknown)\b", re.I)

# "T 555.234.5678   F 555.234.5679" in a footer: a one-letter phone/fax label needs no colon when a
# whole phone number follows it
PHONE_VALUE = re.compile(r"\s*(?:\+?1[\s.\-]*)?[(\[]?\d{3}[)\]]?[\s.\-]*\d{3}[\s.\-]\d{4}\b")

# "Dx M10.9", "ICD E119": a diagnosis label needs no colon when a code follows it
CODE_VALUE = re.compile(r"[\s|=\-]*[A-Z$][0-9OIlSB]{2}(?:\.[0-9A-Z]{1,4}|[0-9A-Z]{1,4})?\b")

# two-letter heads that stand alone in a table cell ("ID", "MI", "Dx"): labels, not values
SHORT_HEADS = {"id", "mi", "dx", "ph"}

# "Pt MILLER, JOHN" on a dense line: a patient label needs no colon when "FAMILY, Given" follows
NAME_VALUE = re.compile(r"[A-Z][A-Za-z'\-]+,\s*[A-Z][A-Za-z'\-]+")


def _known_payer(text: str) -> bool:
    """ "Ins Highmark": what follows a colon-less insurance label is a payer the list knows."""
    from ocr.fields.payers import match_payer       # deferred: the payer list loads on first use
    text = re.split(r"\s*[#(,;]|\.\s|\s\d", text[:60])[0]    # "Ins Ambetter #3358...", "Ins Cigna, ID ..."
    got = match_payer(text) if text[:1].isupper() else None
    return bool(got and got[1] >= 0.9)


JUNK = " \"'\u201c\u2018\u2019\u201d|_~.,:;\u2014-"


# "17b. NPI", "1a. INSURED'S I.D. NUMBER", "33 PROVIDER PH #": a claim-style form numbers its boxes;
# the item number before a label is not part of it (nor a value)
ITEM_NUMBER = re.compile(r"^[\s\"'\u2018\u201c~_|\u2014\-]*(?:\d{1,3}|[lI|]\d?)[a-z\u00a2]?(?:[.,]\s*|\s+)(?=[A-Za-z])")     # "11c" read "116", "1a" read "la"


def find_labels(text: str) -> list[Label]:
    """Labels in a segment, or, for a table's header row ("Patient Name  DOB  Sex  MRN" read
    as one cell), every label in it even without colons."""
    item = ITEM_NUMBER.match(text)
    if item and find_labels_plain(text[item.end():]):
        text = " " * item.end() + text[item.end():]      # offsets stay those of the segment's text
    return find_labels_plain(text)


def find_labels_plain(text: str) -> list[Label]:
    found = _find_labels(text)
    header = _header_row(text)
    return header if header and len(header) > len(found) else found


def _header_row(text: str) -> list[Label] | None:
    """All words covered by labels, left to right, none with a value: a header row."""
    out: list[Label] = []
    pos = 0
    while True:
        m = re.compile(r"[\s" + re.escape(JUNK) + r"]*").match(text, pos)
        pos = m.end()
        if pos >= len(text):
            return out if len(out) >= 2 else None
        best = None
        for rx, field, opens, strength in _COMPILED:
            mm = rx.match(text, pos)
            if mm and mm.end(0) - pos > 2 and (best is None or mm.end() > best.end):
                best = Label(field, opens, strength, pos, mm.end(), bool(mm.group(1)))
        if best is None or best.colon:
            return None
        out += _split_head(text, best)
        pos = best.end
        if len(out) == 2 and pos >= len(text.rstrip(JUNK)) and any(l.field is None for l in out):
            return None      # "SPECIALIST REFERRAL", "PATIENT INFORMATION": a title, not two column heads


def _split_head(text: str, lab: Label) -> list[Label]:
    """A column head that swallowed the next one: "Referring Provider NPI" in a header row is
    "Referring Provider" over the name and "NPI" over the number, when the last word alone is
    an unmistakable label (NPI, DOB, MRN) and the words before it are a label of their own."""
    words = list(re.finditer(r"\S+", text[lab.start:lab.end]))
    if len(words) < 2:
        return [lab]
    cut = lab.start + words[-1].start()
    tail = _whole_label(text[cut:lab.end])
    head = _whole_label(text[lab.start:cut])
    if tail is None or head is None or tail[2] < 2:
        return [lab]
    return [Label(head[0], head[1], head[2], lab.start, cut, False),
            Label(tail[0], tail[1], tail[2], cut, lab.end, False)]


def _whole_label(t: str) -> tuple[str | None, str | None, int] | None:
    t = t.strip(JUNK)
    for rx, field, opens, strength in _COMPILED:
        mm = rx.match(t)
        if mm and mm.end() == len(t) and len(t) > 2:
            return field, opens, strength
    return None


def _find_labels(text: str) -> list[Label]:
    """Labels in a segment's text, left to right, not overlapping.

    At the start of the segment any label counts (weak ones only when followed by a
    colon, or alone in the segment). Further in, a label must end with a colon, or
    be strong (DOB, MRN, NPI) — so prose words like "patient" or "name" are not labels.
    """
    out: list[Label] = []
    pos_limit = 0
    for m in _STARTS.finditer(text):
        pos = m.end()
        if pos < pos_limit:
            continue
        best = None
        for rx, field, opens, strength in _COMPILED:
            mm = rx.match(text, pos)
            if not mm:
                continue
            colon = bool(mm.group(1))
            end = mm.end()
            at_start = pos == 0 or text[:pos].strip(JUNK) == ""
            comma = re.match(r"\s*,(?=\s*\S)", text[end:]) if not colon and at_start else None
            if comma and len(re.sub(r"[^A-Za-z]", "", mm.group(0))) <= 3:
                colon, end = True, end + comma.end()    # "Pt, CHAVEZ": a fax turned the colon of a short label into a comma
            rest = text[end:].strip()
            # a label without its colon still counts when what follows has the value's shape:
            # "Ph 555-...", "Sex F", "ID# J392..." on a dense intake line
            after = text[end:]
            shaped = (field in NUMERIC_FIELDS and re.match(r"\s*[(+]?\d", after) is not None) \
                or (field == "patient_sex" and SEX_VALUE.match(rest) is not None) \
                or (field == "insurance_payer" and _known_payer(rest)) \
                or (field == "patient_name" and at_start and NAME_VALUE.match(rest) is not None) \
                or (mm.group(0).rstrip().endswith("#") and (field in NUMERIC_FIELDS or field == "id")
                    and re.match(r"\s*[A-Za-z0-9\-]*\d", after) is not None) \
                or (field == "diagnosis_codes" and CODE_VALUE.match(after) is not None)
            if strength == 0 and not (colon or (at_start and not rest)) and not shaped:
                continue
            if mm.end(0) - pos <= 2 and not colon and not (re.sub(r"[^a-z]", "", mm.group(0).lower()) in SHORT_HEADS
                                                           and at_start and not rest) \
                    and not (field == "diagnosis_codes" and shaped) \
                    and not (field in ("phone", "fax") and PHONE_VALUE.match(after)):
                continue                       # "F", "P", "T" are labels only as "F:" (else a value); "ID", "MI", "Dx" alone in their cell are column heads
            if strength == 1 and not (colon or at_start or shaped):
                continue
            if not at_start and strength < 2 and mm.group(1) not in (":", ";", "=", "#", "\u2019") and not shaped:
                continue                       # mid-sentence "by fax." is prose, not a label
            if strength == 1 and at_start and not colon and rest and field is None and opens is not None:
                continue                       # "Clinic hours are..." is prose, not a header
            reason_head = field == "reason" and at_start and not colon and re.match(r"[A-Z][a-z]", rest) is not None \
                and " " not in text[pos:mm.end(0)].strip() and text[pos:pos + 1].isupper()
            if strength == 1 and not colon and rest and " " not in text[pos:mm.end(0)].strip() and not shaped \
                    and not reason_head:
                continue                       # "Priority Health", "Contact lens": a value, not a label
            if not at_start and not colon and re.fullmatch(r"(?i)office|clinic|practice", mm.group(0).strip()):
                continue                       # "GREENWAY FAMILY PRACTICE 1-327-...": a name in a fax header
            if best is None or end > best.end:
                best = Label(field, opens, strength, pos, end, colon)
        if best is None and (pos == 0 or text[:pos].strip(JUNK) == ""):
            best = _fuzzy_label(text, pos)
        if best is not None:
            out.append(best)
            pos_limit = best.end
    return out


# OCR garbles small label print ("BIAGNOSIS", "REFERRINGMD"): at the start of a cell, the
# letters of these phrases are compared with spaces removed and a little fuzz allowed.
FUZZY_LABELS: list[tuple[str, str | None, str | None, int]] = [
    ("patient name", "patient_name", "patient", 1), ("patient", "patient_name", "patient", 0),
    ("date of birth", "patient_dob", "patient", 2), ("birth date", "patient_dob", "patient", 2),
    ("dob", "patient_dob", "patient", 2), ("gender", "patient_sex", "patient", 1), ("sex", "patient_sex", "patient", 1),
    ("last name", "patient_family_name", "patient", 1), ("first name", "patient_given_name", "patient", 1),
    ("patient last name", "patient_family_name", "patient", 1), ("patient first name", "patient_given_name", "patient", 1),
    ("given name", "patient_given_name", "patient", 1), ("family name", "patient_family_name", "patient", 1),
    ("medical record number", "patient_mrn", "patient", 2), ("medical record", "patient_mrn", "patient", 2),
    ("mrn", "patient_mrn", "patient", 2), ("chart", "patient_mrn", "patient", 1), ("chart number", "patient_mrn", "patient", 1),
    ("home phone", "patient_phone", None, 1), ("patient phone", "patient_phone", "patient", 1),
    ("cell phone", "patient_phone", None, 1), ("contact", "phone", None, 1),
    ("insurance", "insurance_payer", "insurance", 1), ("insurance carrier", "insurance_payer", "insurance", 1),
    ("insurance plan", "insurance_payer", "insurance", 1), ("ins carrier", "insurance_payer", "insurance", 1),
    ("health plan", "insurance_payer", "insurance", 1), ("payer", "insurance_payer", "insurance", 1),
    ("member id", "insurance_member_id", "insurance", 2), ("subscriber id", "insurance_member_id", "insurance", 2),
    ("insurance id", "insurance_member_id", "insurance", 2), ("policy number", "insurance_member_id", "insurance", 2),
    ("member number", "insurance_member_id", "insurance", 2), ("policy", "insurance_member_id", "insurance", 1),
    ("referring provider", "referring_provider_name", "referring", 1),
    ("referring physician", "referring_provider_name", "referring", 1),
    ("referring md", "referring_provider_name", "referring", 1),
    ("referring doctor", "referring_provider_name", "referring", 1),
    ("ordering provider", "referring_provider_name", "referring", 1), ("referred by", "referring_provider_name", "referring", 1),
    ("ordering physician", "referring_provider_name", "referring", 1),
    ("requesting provider", "referring_provider_name", "referring", 1),
    ("requesting physician", "referring_provider_name", "referring", 1),
    ("referring clinician", "referring_provider_name", "referring", 1),
    ("primary care provider", "referring_provider_name", "referring", 1),
    ("primary care physician", "referring_provider_name", "referring", 1),
    ("provider name", "name", "referring", 1), ("physician name", "name", "referring", 1),
    ("npi", "npi", None, 2), ("npi no", "npi", None, 2), ("npi number", "npi", None, 2),
    ("office phone", "referring_practice_phone", "referring", 1), ("office fax", "referring_practice_fax", "referring", 1),
    ("practice phone", "referring_practice_phone", "referring", 1), ("practice fax", "referring_practice_fax", "referring", 1),
    ("fax back", "referring_practice_fax", "referring", 1), ("return fax", "referring_practice_fax", "referring", 1),
    ("phone", "phone", None, 0), ("fax", "fax", None, 0), ("fax no", "fax", None, 0), ("fax number", "fax", None, 0),
    ("phone no", "phone", None, 0), ("phone number", "phone", None, 0), ("pt name", "patient_name", "patient", 1),
    ("referred to", "referred_to_specialty", "to", 1), ("refer to", "referred_to_specialty", "to", 1),
    ("specialty", "referred_to_specialty", None, 1), ("urgency", "urgency", None, 1), ("priority", "urgency", None, 1),
    ("referral priority", "urgency", None, 1),
    ("diagnosis", "diagnosis_codes", "clinical", 1), ("diagnosis codes", "diagnosis_codes", "clinical", 1),
    ("diagnosis code", "diagnosis_codes", "clinical", 1), ("icd10 codes", "diagnosis_codes", "clinical", 1),
    ("icd10 code", "diagnosis_codes", "clinical", 1),
    ("reason for referral", "reason", "clinical", 1), ("clinical reason", "reason", "clinical", 1),
    ("clinical indication", "reason", "clinical", 1), ("reason for consult", "reason", "clinical", 1),
    ("reason", "reason", "clinical", 1),
    ("telephone", "phone", None, 0), ("facsimile", "fax", None, 0), ("address", "address", None, 0),
    ("patient information", None, "patient", 1), ("referring provider information", None, "referring", 1),
    ("insurance information", None, "insurance", 1), ("referral details", None, None, 1),
    # claim-style box heads in small print, garbled ("PALIENI's LELEPHONE", "33a OFFICE TbLEPHONE")
    ("patients telephone", "patient_phone", "patient", 1), ("patient telephone", "patient_phone", "patient", 1),
    ("office telephone", "referring_practice_phone", "referring", 1), ("provider phone", "referring_practice_phone", "referring", 1),
    ("patient account no", "patient_mrn", "patient", 1), ("medical record no", "patient_mrn", "patient", 2),
    ("insureds id number", "insurance_member_id", "insurance", 2), ("member id number", "insurance_member_id", "insurance", 2),
    ("type of service", "referred_to_specialty", None, 1), ("reason for referral", "reason", "clinical", 1),
    ("patients name", "patient_name", "patient", 1), ("patients birth date", "patient_dob", "patient", 2),
    ("plan name", "insurance_payer", "insurance", 1), ("insurance plan name", "insurance_payer", "insurance", 1),
]
_FUZZY = [(re.sub(r"[^a-z]", "", p), f, o, s) for p, f, o, s in FUZZY_LABELS]
_SINGLE_WORD = {re.sub(r"[^a-z]", "", p) for p, *_ in FUZZY_LABELS if " " not in p}


def looks_like_label(text: str) -> bool:
    """A cell that is only a label, maybe garbled ("Ordering Physiclan", "Referring MD:"):
    never a value, however much it looks like a name."""
    t = text.strip(JUNK)
    if not t:
        return False
    found = find_labels(t)
    if found and found[0].start == 0 and not t[found[-1].end:].strip(JUNK):
        return True
    lab = _fuzzy_label(t, 0)
    return lab is not None and not t[lab.end:].strip(JUNK)


def flat_phrase_single(phrase: str) -> str | None:
    return phrase if phrase in _SINGLE_WORD else None


# values that look like a label one letter away ("Urgent" ~ "Urgency"): never fuzzy labels
VALUE_WORDS = {"urgent", "routine", "stat", "male", "female", "other", "unknown", "yes", "no", "none", "fox",
               "pending", "patients", "specialist", "payers", "referral", "referrals", "dates"}


def d_skip(letters: str) -> bool:
    return letters in VALUE_WORDS


def _fuzzy_label(text: str, pos: int) -> Label | None:
    """A garbled label at `pos` (the start of a cell): Levenshtein over letters, spaces ignored.

    Allowed edits grow with the phrase (about one in five letters); a phrase of three
    or four letters ("Sex", "NPI") only matches when it is the whole cell."""
    from rapidfuzz.distance import Levenshtein
    letters = [(i, c.lower()) for i, c in enumerate(text) if c.isalpha() and i >= pos]
    if len(letters) < 3:
        return None
    flat = "".join(c for _, c in letters)
    best = None
    for phrase, field, opens, strength in _FUZZY:
        n = len(phrase)
        allowed = int(n * 0.22 + 0.5) if n >= 6 else (1 if n >= 3 else 0)
        if allowed == 0:
            continue
        for L in sorted({n, n - 1, n + 1, n - 2, n + 2}, key=lambda k: abs(k - n)):
            if L > len(flat) or L < 3:
                continue
            if d_skip(flat[:L]):
                continue
            d = Levenshtein.distance(phrase, flat[:L])
            if d > allowed:
                continue
            end = letters[L - 1][0] + 1
            if sum(c.isdigit() for c in text[pos:end]) >= 3:
                continue                      # "1-610-593-3952 REFERRAL DETAILS": a value before a label, not a label
            if end < len(text) and text[end].isalpha():
                continue                      # the label must end where a word ends
            if end < len(text) and text[end] == ")" and text[pos:end].count("(") > text[pos:end].count(")"):
                end += 1                      # "Code(s)": the bracket closes inside the label
            tail = re.compile(TAIL, re.I).match(text, end)
            colon = bool(tail and tail.group(1))
            end = tail.end() if tail else end
            rest = text[end:].strip(JUNK)
            if n < 6 and rest and not colon:
                continue
            if not colon and rest and (strength == 0 or phrase == flat_phrase_single(phrase)):
                continue                      # one word then more text: a value ("Priority Health")
            cand = (2 * d - L, d, Label(field, opens, strength, pos, end, colon))
            if best is None or cand[:2] < best[:2]:
                best = cand
            break
    return best[2] if best else None
