"""NPI (check-digit validated), MRN and insurance member id."""
from __future__ import annotations

import re

from ocr.fields.digits import TO_DIGIT


def npi_valid(npi: str) -> bool:
    """10 digits whose last is the Luhn check digit of "80840" + the first nine (CMS rule)."""
    if not re.fullmatch(r"\d{10}", npi):
        return False
    total = 0
    for i, ch in enumerate(reversed("80840" + npi[:9])):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10 == int(npi[9])


NPI_RE = re.compile(r"(?<![0-9A-Za-z])([0-9OoIlSB|]{3}[\s\-]?[0-9OoIlSB|]{3}[\s\-]?[0-9OoIlSB|]{4})(?![0-9])")


def find_npis(text: str) -> list[tuple[str, int, int]]:
    """(npi, start, end) for each 10-digit number that passes the check digit, OCR look-alikes repaired."""
    out = []
    for m in NPI_RE.finditer(text):
        raw = re.sub(r"[\s\-]", "", m.group(1))
        if sum(c.isdigit() for c in raw) < 8:
            continue
        digits = raw.translate(TO_DIGIT)
        if npi_valid(digits):
            out.append((digits, m.start(), m.end()))
    return out


def parse_npi(text: str) -> str | None:
    found = find_npis(text)
    return found[0][0] if found else None


_ID_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9]|[0-9]")
NOT_A_PREFIX = {"ID", "NO", "MR", "MRN", "GRP", "DOB", "PH", "TEL", "FAX", "NPI", "SSN", "DR", "MD", "DO"}
_NOT_ID = {"none", "n/a", "na", "unknown", "pending", "self", "same"}


def parse_identifier(text: str, min_len: int = 4) -> str | None:
    """An id as printed: the first token with a digit in it (MRN, member id), separators kept.

    "#", "No." and stray punctuation around it are dropped. Ids printed in groups
    ("W 1234 5678") are joined when every group is short and alphanumeric.
    """
    text = re.sub(r"^\s*(?:#|no\.?|number|num)\s*[:.]?\s*", "", text.strip(" :#.|"), flags=re.I)
    tokens = [t.strip(".,;:()[]|_\u2018\u2019\u201c\u201d'\"") for t in text.split()]
    # "$92096248": a fax's 5 (or S) read as a dollar sign at the start of an id
    tokens = [("5" if t[1:2].isdigit() else "S") + t[1:] if t.startswith("$") and len(t) > 4 else t for t in tokens]
    tokens = [t for t in tokens if t]
    for i, tok in enumerate(tokens[:4]):
        if tok.lower() in _NOT_ID:
            return None
        if re.fullmatch(r"[A-Z]{1,3}", tok) and tok not in NOT_A_PREFIX and i + 1 < len(tokens) \
                and re.fullmatch(r"[0-9]{2,9}", tokens[i + 1]):
            tok = tok + tokens.pop(i + 1)          # "W 1234 5678", "ABC 123456789": a letter prefix printed apart
        if not _ID_TOKEN.fullmatch(tok) or not re.search(r"\d", tok):
            continue
        ident = tok
        # a grouped id: "W123 4567 89" -> the groups that follow directly, all alnum with digits
        last = tok
        for nxt in tokens[i + 1:i + 4]:
            # "4183 5333 1": the last group of a card's 4-4-... print may be shorter, down to one digit;
            # "7UB6 P3MM 20K": a card prints letters and digits in groups of four
            card = len(last) == 4 and re.fullmatch(r"[A-Z0-9]{1,4}", nxt) is not None and re.search(r"\d", nxt) \
                and re.fullmatch(r"[A-Z0-9]{4}", tok) is not None
            if len(tok) <= 5 and (re.fullmatch(r"[0-9]{2,5}", nxt)
                                  or (ident == tok and re.fullmatch(r"[A-Z]{1,3}[0-9]?|[A-Z]{2,3}[0-9]{1,2}", tok)
                                      and re.fullmatch(r"[0-9]{6,9}", nxt))   # "YNW6 73483230": two card groups run together
                                  or (re.fullmatch(r"[0-9]{1,3}", nxt) and len(last) == 4 and ident != tok) or card):
                ident += nxt
                last = nxt
            else:
                break
        if len(ident) >= min_len:
            return ident
    return None


def fix_id_ocr(ident: str) -> str:
    """Digits where an id is mostly digits (O->0, l->1 in '12O45l7'); letters kept in a leading prefix."""
    m = re.match(r"^([A-Za-z]{0,4})(.*)$", ident)
    prefix, rest = m.group(1), m.group(2)
    # "MROS9591": digit look-alikes at the end of a letter prefix, right before the digits
    tail = re.search(r"[OoSIlB]+$", prefix)
    if tail and rest[:1].isdigit() and len(prefix) - len(tail.group(0)) >= 2:
        prefix, rest = prefix[:tail.start()], tail.group(0).translate(TO_DIGIT) + rest
    if rest and sum(c.isdigit() for c in rest) >= 0.7 * len(rest.replace("-", "")):
        rest = rest.translate(TO_DIGIT)
    return prefix + rest


MBI_SHAPE = re.compile(r"[1-9][A-Z0-9]{10}")


def fix_mbi(ident: str) -> str:
    """A Medicare Beneficiary Identifier (11 characters, a digit 1-9 first) never holds the letters
    O or I (CMS leaves them out because they read as 0 and 1), so in an MBI they are 0 and 1.
    Anything not of the MBI's shape is returned unchanged."""
    flat = ident.replace("-", "").upper()
    if not MBI_SHAPE.fullmatch(flat) or not re.search(r"[OI]", flat):
        return ident
    return flat.replace("O", "0").replace("I", "1")
