"""Evidence that does not hang off a label: letters, checkbox rows, fax headers, signatures.

Referral letters say "I am referring Mrs. Jane Doe, DOB 3/4/1951, to cardiology for
evaluation of palpitations"; dense printouts scatter NPIs and codes; fax machines
stamp the sender's number on the top line. These candidates score below a labelled
value of the same field, so they fill gaps rather than override a form.

The letter patterns run on a spaCy `blank("en")` tokenizer with a `Matcher` (no model
is downloaded): token patterns survive OCR spacing quirks better than one regex.
"""
from __future__ import annotations

import re
from functools import lru_cache

import datetime as dt

from ocr.fields import choices, dates, icd10, identifiers, names, payers, phones, specialty
from ocr.model import CHECKED, UNCHECKED

TITLE_SEX = {"mr": "M", "mrs": "F", "ms": "F", "miss": "F"}


@lru_cache(maxsize=1)
def _nlp():
    import spacy
    from spacy.matcher import Matcher
    nlp = spacy.blank("en")
    matcher = Matcher(nlp.vocab)
    name_tok = {"IS_TITLE": True, "IS_ALPHA": True}
    upper_tok = {"IS_UPPER": True, "IS_ALPHA": True, "LENGTH": {">=": 2}}
    initial = {"TEXT": {"REGEX": r"^[A-Z]\.?$"}}
    title = {"LOWER": {"IN": ["mr", "mrs", "ms", "miss", "mr.", "mrs.", "ms."]}}
    dot = {"TEXT": ".", "OP": "?"}
    lead = [{"LOWER": {"IN": ["referring", "refer", "referred", "seeing", "see", "sending", "evaluate",
                              "regarding", "re", "patient", "pt", "consult"]}},
            {"LOWER": {"IN": ["my", "our", "this", "the", "a", "your", "mutual"]}, "OP": "?"},
            {"LOWER": {"IN": ["patient", "pt", "pleasant"]}, "OP": "?"},
            {"LOWER": {"IN": ["patient", "pt"]}, "OP": "?"},
            {"TEXT": {"IN": [",", ":"]}, "OP": "?"}]
    # "your cardiology evaluation of Jane Doe", "assessment of my patient, John Smith"
    lead_of = [{"LOWER": {"IN": ["evaluation", "evaluate", "assessment", "consultation", "exam", "examination"]}},
               {"LOWER": {"IN": ["of", "for"]}},
               {"LOWER": {"IN": ["my", "our", "this", "the", "a", "your", "mutual"]}, "OP": "?"},
               {"LOWER": {"IN": ["patient", "pt", "pleasant"]}, "OP": "?"},
               {"TEXT": {"IN": [",", ":"]}, "OP": "?"}]
    for tok in (name_tok, upper_tok):
        full = [tok, initial, dot, tok] , [tok, tok], [tok, tok, tok]
        for body in full:
            body = [b for b in body]
            matcher.add("PATIENT_LEAD", [lead + [title, dot] + body, lead + body, lead_of + [title, dot] + body,
                                         lead_of + body])
            matcher.add("PATIENT_TITLE", [[title, dot] + body])
            matcher.add("PATIENT_AGE", [body + [{"TEXT": ",", "OP": "?"}, {"LOWER": {"IN": ["a", "an"]}},
                                                {"LIKE_NUM": True}]])
    return nlp, matcher


def _spans_by_label(text: str):
    nlp, matcher = _nlp()
    doc = nlp(text)
    out: dict[str, list] = {}
    for match_id, start, end in matcher(doc):
        out.setdefault(nlp.vocab.strings[match_id], []).append(doc[start:end])
    return doc, out


def _person_from_span(span) -> tuple[tuple[str, str] | None, str | None]:
    """((given, family), sex from a title) from a matched span."""
    toks = [t.text for t in span]
    sex = None
    # keep the tail after lead words: the name is the title-cased run at the end
    lowered = [t.lower().strip(".") for t in toks]
    for i, t in enumerate(lowered):
        if t in TITLE_SEX:
            sex = TITLE_SEX[t]
    body = []
    for t in reversed(toks):
        if t.lower().strip(".") in TITLE_SEX or t in (",", ":") or t.lower() in (
                "referring", "refer", "referred", "seeing", "see", "sending", "evaluate", "regarding", "re",
                "patient", "pt", "my", "our", "this", "the", "a", "an", "your", "mutual", "pleasant", "consult", "of", "for"):
            break
        body.append(t)
    body.reverse()
    if body and body[-1].isdigit():
        body = body[:-1]
    while body and body[-1].lower() in ("a", "an", ","):
        body = body[:-1]
    got = names.split_name(" ".join(body).replace(" .", "."))
    return got, sex


def add_evidence(x) -> None:
    from ocr.extract import Candidate, mean_conf
    ev = x.ev
    pages_text: dict[int, str] = {}
    for line in x.lines:
        pages_text.setdefault(line.page, [])
        pages_text[line.page].append(line)

    codes_seen: list[str] = []
    code_conf: list[float] = []
    for line in x.lines:
        text = line.text
        order = line.number * 10000
        section = x.section_at(line, line.words[0].x0)
        conf = mean_conf(line.words)
        tokens = [w.text for w in line.words]
        # checkbox rows without a label ("☒ Routine ☐ Urgent ☐ STAT")
        has_marks = any(choices._mark(t) is not None and t not in ("X", "x", "O", "o", "0", "M", "F")
                        for t in tokens) or CHECKED in text or UNCHECKED in text
        if has_marks:
            for chosen in _ticked_texts(tokens):
                found = specialty.find_specialties(chosen)
                if found and found[0][1] <= 2:
                    ev.add(Candidate("referred_to_specialty", found[0][0], 0.95, 1.0, conf, order, "checkbox"))
            got = choices.checkbox_choice(tokens, choices.URGENCY_WORDS)
            if got:
                ev.add(Candidate("urgency", got[0], 0.95 if got[1] else 0.6, 1.0, conf, order, "checkbox"))
            got = choices.checkbox_choice(tokens, choices.SEX_WORDS)
            if got and sum(1 for t in tokens if choices._classify(t, choices.SEX_WORDS)) >= 2:
                ev.add(Candidate("patient_sex", got[0], 0.9 if got[1] else 0.5, 1.0, conf, order, "checkbox"))
        else:
            low = text.lower()
            # only words that say it outright; "soon", "within 2 weeks", "Urgent Care" do not
            m = re.search(r"(?<![a-z\-])(non[\s\-]?urgent|routine|urgent(?:ly)?|asap|stat|emergent)(?![a-z])(?!\s+care)",
                          low)
            if m:
                word = m.group(1)
                value = ("routine" if word.startswith(("non", "routine")) else
                         "stat" if word in ("stat", "emergent") else "urgent")
                isolated = len(text.split()) <= 4
                ev.add(Candidate("urgency", value, 0.5 if isolated else 0.3, 0.8, conf, order, "word"))
        # birth dates by shape: a past date on a patient line whose label OCR garbled
        if section in ("patient", None) and not re.search(
                r"\b(?:date|dated|signed|visit|dos|printed|received|sent|service|appointment|page)\b", text, re.I):
            for iso, s, e in dates.find_dates(text, past=True):
                if int(iso[:4]) <= dt.date.today().year - 2:
                    ev.add(Candidate("patient_dob", iso, 0.3, 0.8, conf, order + s, "date_shape"))
                    break
        # NPIs anywhere (not the specialist's)
        if section != "to":
            for npi, s, e in identifiers.find_npis(text):
                near = text[max(0, s - 25):s].lower()
                score = 0.6 if "npi" in near else 0.35
                ev.add(Candidate("referring_provider_npi", npi, score, 1.0, conf, order, "anywhere"))
        # ICD-10 codes with a dot anywhere
        for code in icd10.find_codes(text):
            if code not in codes_seen:
                codes_seen.append(code)
                code_conf.append(conf)
        # specialty mentions
        prev = x.lines[line.number - 1].text if line.number > 0 else ""
        for canon, s, e in specialty.find_specialties(text, strong_only=True):
            context = (prev + " " + text[:s]).lower()[-90:]
            if re.search(r"refer|consult|evaluation by|to see|appointment with|specialist|your (?:office|clinic|practice)", context):
                score = 0.6
            elif section == "to":
                score = 0.55
            elif section == "referring":
                score = 0.15
            else:
                score = 0.3
            ev.add(Candidate("referred_to_specialty", canon, score, 1.0, conf, order + s, "mention"))
    if codes_seen:
        ev.add(Candidate("diagnosis_codes", codes_seen, 0.5, 1.0, sum(code_conf) / len(code_conf), 0, "anywhere"))

    _fax_header(x)
    _signature(x)
    for page, lines in pages_text.items():
        _letter(x, lines)


def _ticked_texts(tokens: list[str]) -> list[str]:
    """The words after each ticked box of a line ("☐ Cardiology ☒ Neurology" -> ["Neurology"])."""
    out, current, ticked = [], [], False
    for tok in tokens + [UNCHECKED]:
        mark = choices._mark(tok) if tok not in ("X", "x", "O", "o", "0") else None
        if mark is not None:
            if ticked and current:
                out.append(" ".join(current))
            current, ticked = [], mark
        else:
            current.append(tok)
    return out


def _fax_header(x) -> None:
    """The fax machine's stamp on a page's first line: its number is the sender's fax."""
    from ocr.extract import Candidate, mean_conf
    seen = set()
    for line in x.lines:
        if line.page in seen:
            continue
        seen.add(line.page)
        text = line.text
        if not re.search(r"\bfrom\b|\bpage\b|\bp\.\s*\d|\d{1,2}:\d{2}|\bfax\b", text, re.I):
            continue
        m = re.search(r"\bfrom\b[:\s]*", text, re.I)
        found = phones.find_phones(text[m.end():] if m else text)
        if found:
            ev_score = 0.45 if m else 0.3
            x.ev.add(Candidate("referring_practice_fax", found[0][0], ev_score, 1.0, mean_conf(line.words),
                               line.number * 10000, "fax_header"))


_NAME_WORD = r"(?:[A-Z][a-z][A-Za-z'\-]*|[A-Z]{2,}[A-Z'\-]*)"
NAME_BEFORE_DOB = re.compile(
    r"(?<![A-Za-z.])(" + _NAME_WORD + r"(?:\s+[A-Z]\.?)?\s+" + _NAME_WORD + r"|" + _NAME_WORD + r",\s*" + _NAME_WORD
    + r"(?:\s+[A-Z]\.?)?)\s*[,(]?\s*(?:DOB|D\.O\.B\.?|born|date of birth)\b")

REFERRED_BY = re.compile(
    r"\b(?:referred|sent)\s+(?:to\s+(?:you|us)\s+)?by\s+(?:(?:Dr\.?|Doctor|DR\.?)\s+)?"
    r"((?:[A-Z][a-zA-Z'\-]+|[A-Z]\.)(?:\s+(?:[A-Z][a-zA-Z'\-]+|[A-Z]\.)){1,2}(?:,?\s+(?:M\.?D|D\.?O|NP|PA-C|FNP)\b)?)")


def _signature(x) -> None:
    """"Sincerely, / Jane Roe, MD" and "Electronically signed by Dr. ..." -> referring provider."""
    from ocr.extract import Candidate, _provider_name, mean_conf
    for i, line in enumerate(x.lines):
        if not re.match(r"^\s*(sincerely|regards|best regards|kind regards|warm regards|with regards|respectfully|"
                        r"thank you|thanks|yours truly|cordially|best wishes|with thanks)\b", line.text, re.I):
            continue
        for nxt in x.lines[i + 1:i + 4]:
            if nxt.page != line.page:
                break
            got = _provider_name(nxt.segments[0].text)
            if got:
                x.ev.add(Candidate("referring_provider_name", got[0], 0.6, got[1], mean_conf(nxt.words),
                                   nxt.number * 10000, "signature"))
                break
    cred = re.compile(r"(?<![A-Za-z])(?:M\.?D\.?|D\.?O\.?|NP|N\.P\.|PA-C|PA|FNP(?:-C|-BC)?|DNP|APRN|MBBS|CRNP)(?![A-Za-z])")
    for line in x.lines:
        for seg in line.segments:
            # "WU, SUSAN DO", "Dr. Alan Brooks MD" in a cell whose label OCR lost: a name with credentials
            m = cred.search(seg.text)
            if not m or m.start() < 4:
                continue
            section = x.section_at(line, seg.x0)
            if section in ("to", "other", "patient"):
                continue
            got = _provider_name(seg.text[:m.end()])
            if got:
                x.ev.add(Candidate("referring_provider_name", got[0], 0.4 if section else 0.3, got[1],
                                   mean_conf(seg.words), line.number * 10000 + seg.x0, "credentials"))
    for line in x.lines:
        # "was referred by Dr. Alan Brooks for ...": the sentence names the referrer wherever it stands
        m = REFERRED_BY.search(line.text)
        if m:
            got = _provider_name(m.group(1))
            if got:
                x.ev.add(Candidate("referring_provider_name", got[0], 0.55, got[1], mean_conf(line.words),
                                   line.number * 10000 + m.start(), "referred_by"))
        m = re.search(r"\b(?:Dr\.?|Doctor|DR\.?)\s+((?:[A-Z][a-zA-Z'\-]+|[A-Z]\.)(?:\s+(?:[A-Z][a-zA-Z'\-]+|[A-Z]\.)){1,2})", line.text)
        if m:
            section = x.section_at(line, line.words[0].x0)
            if section in ("referring", None):
                got = _provider_name(m.group(1))
                if got:
                    x.ev.add(Candidate("referring_provider_name", got[0], 0.35 if section else 0.25, got[1],
                                       mean_conf(line.words), line.number * 10000, "title"))
        m = re.search(r"\b([A-Z][a-z]+(?:\s+[A-Z]\.)?\s+[A-Z][a-zA-Z'\-]+),?\s+(?:M\.?D\.?|D\.?O\.?|NP|PA-C|FNP|MD)\b", line.text)
        if m:
            section = x.section_at(line, line.words[0].x0)
            if section in ("referring", None):
                got = _provider_name(m.group(1))
                if got:
                    x.ev.add(Candidate("referring_provider_name", got[0], 0.4 if section else 0.3, got[1],
                                       mean_conf(line.words), line.number * 10000, "credentials"))


def _letter(x, lines) -> None:
    """Patient name, sex, specialty and reason from the sentences of a referral letter."""
    from ocr.extract import Candidate, mean_conf
    text = " ".join(l.text for l in lines)
    text = re.sub(r"\s+", " ", text)
    conf = sum(mean_conf(l.words) for l in lines) / max(1, len(lines))
    order0 = lines[0].number * 10000 if lines else 0
    doc, spans = _spans_by_label(text)
    title_sex = None
    for label, score in (("PATIENT_LEAD", 0.65), ("PATIENT_AGE", 0.55), ("PATIENT_TITLE", 0.3)):
        for span in sorted(spans.get(label, []), key=lambda s: (s.start, -len(s))):
            got, sex = _person_from_span(span)
            if not got:
                continue
            order = order0 + span.start_char
            x.ev.add(Candidate("patient_given_name", got[0], score, 1.0, conf, order, "letter"))
            x.ev.add(Candidate("patient_family_name", got[1], score, 1.0, conf, order, "letter"))
            if sex and title_sex is None:
                title_sex = sex
            break
    if title_sex:
        x.ev.add(Candidate("patient_sex", title_sex, 0.3, 0.8, conf, order0, "title"))
    m = re.search(r"\b\d{1,3}[\s\-]*(?:year|yr)s?[\s\-]*old\s+(woman|female|lady|girl|man|male|gentleman|boy)\b", text, re.I)
    if m:
        sex = "F" if m.group(1).lower() in ("woman", "female", "lady", "girl") else "M"
        x.ev.add(Candidate("patient_sex", sex, 0.6, 1.0, conf, order0 + m.start(), "letter"))
    she = len(re.findall(r"\b(?:she|her|hers|herself)\b", text, re.I))
    he = len(re.findall(r"\b(?:he|him|his|himself)\b", text, re.I))
    if abs(she - he) >= 2:
        x.ev.add(Candidate("patient_sex", "F" if she > he else "M", 0.2, 0.7, conf, order0, "pronouns"))
    # specialty: "referring ... to cardiology", "to your cardiology clinic", "for a GI consult"
    for m in re.finditer(r"\b(?:refer\w*|send\w*|consult\w*|evaluation\s+by|appointment\s+with|to\s+see)\b(.{0,80})", text, re.I):
        found = specialty.find_specialties(m.group(1))
        if found:
            x.ev.add(Candidate("referred_to_specialty", found[0][0], 0.62, 1.0, conf, order0 + m.start(), "letter"))
            break
    # reason: "for evaluation of palpitations and ..."
    m = re.search(r"\b(?:for|regarding)\s+((?:further\s+|an?\s+|specialist\s+|the\s+)?(?:evaluation|assessment|"
                  r"management|consultation|consult|work-?up|treatment|follow-?up|opinion|recommendations?|"
                  r"input|care)\b[^.;]{3,200})", text, re.I)
    if m:
        reason = re.split(r"\b(?:reason|diagnos\w*|dx|icd|insurance|relevant|please|thank)\b", m.group(1), flags=re.I)[0]
        if len(reason.strip(" ,")) > 3:
            x.ev.add(Candidate("reason", reason.strip(" ,"), 0.45, 1.0, conf, order0 + m.start(), "letter"))
    # labels a sentence carries over a line break ("... Reason / for referral: ...")
    m = re.search(r"\breason\s+for\s+(?:referral|consult\w*|visit)\s*[:;\-\u2019]\s*([^.;]{3,200})", text, re.I)
    if m:
        x.ev.add(Candidate("reason", m.group(1).strip(" ,"), 0.8, 1.0, conf, order0 + m.start(), "letter_label"))
    # the colon may come out of the fax as a full stop: "Relevant diagnoses. H35.30 ..."
    m = re.search(r"\b(?:diagnos[ie]s|dx|icd[\s\-]*10(?:\s+codes?)?)\s*(?:[:;\-]|\.(?=\s*[A-Z$][0-9OIl]{2}))\s*(.{3,400}?)(?:\.\s+[A-Z]|$)", text, re.I)
    if not m:
        # "Dx N83209 N920 N946." with no colon: only the run of codes right after the word
        m = re.search(r"\b(?i:dx|icd[\s\-]*10)\s+((?:[A-Z$0-9][0-9OIlSB]{2}[0-9A-Z.]{0,5}(?:[\s,;/]+|\.?$|\.(?=\s)))+)", text)
    if m:
        codes = icd10.find_codes(m.group(1), labelled=True)
        if codes:
            x.ev.add(Candidate("diagnosis_codes", codes, 0.9 + 0.01 * len(codes), 1.0, conf, order0 + m.start(),
                               "letter_label"))
    # "She is insured by Blue Cross Blue Shield (member ID ...)", "covered through Aetna."
    m = re.search(r"\b(?:insured|covered|enrolled)\s+(?:by|through|with|under|in)\s+(?:the\s+)?([A-Z][^.;:(]{2,60}?)"
                  r"(?=\s*\(|\s*[.,;]|\s+(?:plan\s+)?(?:member|id|policy|subscriber|#)\b|$)", text)
    if m:
        got = payers.match_payer(m.group(1))
        if got and got[1] >= 0.85:
            x.ev.add(Candidate("insurance_payer", got[0], 0.6, got[1], conf, order0 + m.start(), "letter"))
    m = re.search(r"\b(?:patient|she|he|they)\b[^.]{0,40}?\b(?:reached|contacted|called)\s+(?:at|on)\s+", text, re.I)
    if m:
        found = phones.find_phones(text[m.end():m.end() + 25])
        if found:
            x.ev.add(Candidate("patient_phone", found[0][0], 0.6, 1.0, conf, order0 + m.start(), "letter"))
    m = re.search(r"\b(?:refer\w*|consult\w*)\b[^.;]{0,60}?\bfor\s+(?!evaluation|assessment|management|consult)"
                  r"([^.;]{3,150})", text, re.I)
    if m:
        reason = re.split(r"\b(?:reason|diagnos\w*|dx|icd|insurance|relevant|please|thank|priority)\b", m.group(1),
                          flags=re.I)[0].strip(" ,")
        if len(reason) > 3:
            x.ev.add(Candidate("reason", reason, 0.4, 1.0, conf, order0 + m.start(), "letter"))
    # "for ABIGAIL PHILLIPS, DOB 10-8-99", "RE: John Q. Smith (DOB ...)": the name just before a birth date
    m = NAME_BEFORE_DOB.search(text)
    if m and not re.search(r"\b(?:Dr|Doctor)\.?\s*$", text[:m.start(1)]):
        got = names.split_name(m.group(1))
        if got:
            x.ev.add(Candidate("patient_given_name", got[0], 0.6, 1.0, conf, order0 + m.start(), "before_dob"))
            x.ev.add(Candidate("patient_family_name", got[1], 0.6, 1.0, conf, order0 + m.start(), "before_dob"))
    m = re.search(r"\b(?:DOB|D\.O\.B\.?|born(?:\s+on)?|date\s+of\s+birth)[:\s]+([^,;()]{6,20})", text, re.I)
    if m:
        from ocr.fields import dates
        d = dates.parse_date(m.group(1), past=True)
        if d:
            x.ev.add(Candidate("patient_dob", d, 0.7, 1.0, conf, order0 + m.start(), "letter"))
