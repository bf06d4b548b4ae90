"""Person names: "DOE, JANE Q", "Jane Q. Doe", "Dr. John A. Smith, MD" -> (given, family).

Titles (Dr., Mrs.), credentials (MD, DO, NP, PA-C...) and generational suffixes are
dropped; middle names and initials are dropped too (the contract has given + family).
Without a comma the order is Given [Middle] Family. ALL-CAPS names are title-cased
(O'Brien, McAllister, Smith-Jones). Text that is not a plausible name (digits, a
practice name, a label) gives None.
"""
from __future__ import annotations

import re

TITLES = {"dr", "doctor", "mr", "mrs", "ms", "miss", "mx", "prof", "patient", "pt", "name"}
CREDENTIALS = {"md", "do", "np", "pa", "pa-c", "pac", "rn", "fnp", "fnp-c", "fnp-bc", "dnp", "phd", "facc", "facp",
               "faafp", "mph", "aprn", "dds", "dpm", "od", "mbbs", "facs", "crnp", "anp", "agnp", "cnm", "mba",
               "lcsw", "psyd", "dc", "ms", "msn", "bsn", "np-c", "m.d", "d.o", "faap", "facog", "facg", "acnp",
               "arnp", "cnp", "pmhnp", "pmhnp-bc", "msw", "agnp-c", "whnp", "fnp-bc", "aprn-bc", "cns", "pharmd",
               "facep", "fasn", "fccp", "facr", "frcpc", "mrcp", "md,", "do,", "m.d.,", "apn", "ph.d"}
GENERATIONAL = {"jr", "sr", "ii", "iii", "iv"}
NOT_NAME = {"patient", "information", "date", "birth", "dob", "sex", "gender", "phone", "fax", "address",
            "insurance", "referral", "referring", "provider", "physician", "medical", "clinic", "center",
            "associates", "group", "health", "hospital", "practice", "family", "medicine", "care", "office",
            "llc", "inc", "pc", "department", "cardiology", "street", "st.", "ave", "road", "suite", "member",
            "id", "mrn", "npi", "signature", "signed", "urgent", "routine", "stat", "the", "and", "for", "of",
            "to", "from", "with", "re", "page", "fax", "tel", "male", "female", "unknown", "none", "n/a", "na",
            "diagnosis", "reason", "specialty", "primary", "plan", "number", "no", "first", "last", "middle",
            "notes", "comments", "please", "thank", "you", "dear", "sincerely", "regards", "colleague",
            "partners", "services", "network", "university", "county", "general", "internal", "pediatrics",
            "subscriber", "policy", "group", "payer", "carrier", "cell", "home", "work", "mobile", "email",
            "street", "city", "state", "zip", "age", "years", "old", "year", "yo", "y/o", "a", "an", "is", "was",
            "our", "my", "your", "this", "that", "sent", "by", "on", "at", "in", "cc", "attn", "attention"}
PARTICLES = {"van", "von", "de", "del", "della", "da", "di", "la", "le", "st", "st.", "bin", "al", "el", "dos", "du"}

_TOKEN = re.compile(r"^[A-Za-z][A-Za-z'\u2019\-\.]*$")


def _clean_token(tok: str) -> str:
    return tok.strip(" ,;:()[]{}\"*_|")


def proper_case(word: str) -> str:
    """Title-case an ALL-CAPS or all-lower name part, keeping Mc/O'/hyphen rules."""
    if not (word.isupper() or word.islower()):
        return word
    parts = re.split(r"([\-'\u2019 ])", word.lower())
    out = []
    for p in parts:
        if p.startswith("mc") and len(p) > 3:
            out.append("Mc" + p[2:].capitalize())
        elif p in ("-", "'", "\u2019", " "):
            out.append(p)
        else:
            out.append(p.capitalize())
    return "".join(out)


def _strip_credentials(tokens: list[str]) -> list[str]:
    out = []
    for t in tokens:
        low = t.lower().strip(".,")
        if low in CREDENTIALS or low.replace(".", "") in CREDENTIALS:
            continue
        out.append(t)
    return out


def split_name(text: str) -> tuple[str, str] | None:
    """(given, family) from a printed person name, or None when it is not one."""
    if not text or re.search(r"\d", text):
        return None
    text = re.sub(r"\s+", " ", text.replace("\u2019", "'")).strip(" ,;:-|")
    text = re.sub(r"\b([A-Z])\.(?=[A-Z][a-z])", r"\1. ", text)          # "K.Wood" -> "K. Wood"
    text = re.sub(r"\([^)]*\)|\"[^\"]{1,15}\"|\u201c[^\u201d]{1,15}\u201d", " ", text)   # nicknames "Bob", (patient)
    text = re.sub(r"\s+,", ",", text)                                     # "Brooks , Alan"
    text = re.sub(r"^(?:dr|doctor)\s*[.,]\s*(?=[A-Z])", "", text, flags=re.I)   # "Dr,Alan Brooks", "Dr.Alan Brooks"
    first = re.match(r"([A-Za-z'\-]{2,})\.\s+(?=[A-Za-z])", text)
    if first and "," not in text and first.group(1).lower() not in TITLES | PARTICLES:
        text = first.group(1) + ", " + text[first.end():]            # "BROOKS. ALAN": a fax made the comma a full stop
    if len(text) < 3 or len(text) > 60:
        return None
    comma = "," in text
    if comma:
        family_part, _, given_part = text.partition(",")
        family = [_clean_token(t) for t in family_part.split() if _clean_token(t)]
        given = [_clean_token(t) for t in given_part.replace(",", " ").split() if _clean_token(t)]
        family = [t for t in family if t.lower().strip(".") not in TITLES]
        given = _strip_credentials([t for t in given if t.lower().strip(".") not in TITLES])
        given = [t for t in given if t.lower().strip(".") not in GENERATIONAL]
        if not family or not given:
            # "John Smith, MD": the comma only separated credentials
            if family and not given:
                return _ordered(family)
            return None
        if len(family) > 3:
            return None
        given_name = given[0]
        family_name = " ".join(family)
        if len(given_name.strip(".")) == 1 and len(given) > 1:   # "DOE, J. JANE" is rare; keep first full word
            given_name = next((g for g in given if len(g.strip(".")) > 1), given_name)
    else:
        tokens = [_clean_token(t) for t in text.split() if _clean_token(t)]
        return _ordered(tokens)
    return _finish(given_name, family_name)


def _ordered(tokens: list[str]) -> tuple[str, str] | None:
    tokens = [t for t in tokens if t.lower().strip(".") not in TITLES]
    tokens = _strip_credentials(tokens)
    tokens = [t for t in tokens if t.lower().strip(".") not in GENERATIONAL]
    if len(tokens) < 2 or len(tokens) > 5:
        return None
    if 2 <= len(tokens) <= 3 and len(tokens[0]) > 1 and tokens[0].isupper() and tokens[1][:1].isupper() \
            and tokens[1][1:].islower() and len(tokens[1]) > 1 and tokens[0].lower() not in PARTICLES:
        return _finish(tokens[1], tokens[0])   # "BROOKS Alan": the family name in capitals, given in title case
    if len(tokens) == 3 and len(tokens[2].strip(".")) == 1 and all(len(t.strip(".")) > 1 for t in tokens[:2]) \
            and tokens[0].lower() not in PARTICLES:
        return _finish(tokens[1], tokens[0])   # "BROOKS ALAN K": a trailing middle initial puts the family first
    given = tokens[0]
    # family: the last token plus particles before it (Van Dyke, St. Pierre, de la Cruz)
    i = len(tokens) - 1
    while i - 1 >= 1 and tokens[i - 1].lower() in PARTICLES:
        i -= 1
    family = " ".join(tokens[i:])
    middle = tokens[1:i]
    if any(len(m.strip(".")) > 1 and not m[0].isupper() for m in middle):
        return None
    if len(middle) > 2:
        return None
    return _finish(given, family)


def _finish(given: str, family: str) -> tuple[str, str] | None:
    given, family = given.strip(".,"), family.strip(",")
    if family.endswith(".") and not family.lower().endswith("st."):
        family = family.rstrip(".")
    for part in (given, *family.split()):
        if not _TOKEN.match(part) or part.lower().strip(".") in NOT_NAME:
            return None
    if len(given) < 2 or len(family.replace(" ", "")) < 2:
        return None
    if not given[0].isalpha() or not family[0].isalpha():
        return None
    return proper_case(given), " ".join(proper_case(p) for p in family.split(" "))


def looks_like_org(text: str) -> bool:
    words = {w.strip(".,").lower() for w in text.split()}
    return bool(words & {"clinic", "center", "associates", "group", "health", "hospital", "practice", "medicine",
                         "medical", "care", "office", "llc", "inc", "pc", "partners", "services", "network",
                         "physicians", "specialists", "institute", "department", "pllc", "llp"})
