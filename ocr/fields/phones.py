"""Phone and fax numbers: 10 NANP digits, from any printed form.

Accepts (555) 123-4567, 555.123.4567, 555-123-4567 x12, +1 555 123 4567, 5551234567,
(555) 1234567 / 555-1234567, [555] or {555} (brackets OCR swapped), dashes read as en/em
dashes, and the same with letters OCR mistook for digits. Rejects numbers whose area code or
exchange starts with 0 or 1 (not valid NANP), which also screens out most misreads.
"""
from __future__ import annotations

import re

from ocr.fields.digits import TO_DIGIT

_D = r"[0-9OoIlSB|]"
_SEP = r"[\s.\-\u2013\u2014~]"      # faxes turn hyphens into en/em dashes or tildes
PHONE_RE = re.compile(
    # area code in (), [] or {} (OCR swaps the brackets), or bare; then 3 + 4 digits, apart or as one run of 7
    rf"(?<![0-9A-Za-z])(?:\+?1{_SEP}*)?[(\[{{]?\s*({_D}{{3}})\s*[)\]}}]?(?:{_SEP}|/)*({_D}{{3}})\s*{_SEP}\s*({_D}{{4}})(?![0-9])"
    rf"|(?<![0-9A-Za-z])(?:\+?1{_SEP}*)?(?:[(\[{{]\s*([0-9]{{3}})\s*[)\]}}]\s*{_SEP}?|([0-9]{{3}})\s*{_SEP}\s*)([0-9]{{7}})(?![0-9])"
    rf"|(?<![0-9])(?:1)?([0-9]{{10}})(?![0-9])")


def valid_nanp(digits: str) -> bool:
    return len(digits) == 10 and digits[0] not in "01" and digits[3] not in "01"


def find_phones(text: str) -> list[tuple[str, int, int]]:
    """(10 digits, start, end) for each valid phone number in the text, in order."""
    out = []
    for m in PHONE_RE.finditer(text):
        raw = "".join(g for g in m.groups() if g)
        digits = raw.translate(TO_DIGIT)
        if sum(c.isdigit() for c in raw) < 8:      # at most 2 letters read as digits
            continue
        if valid_nanp(digits):
            out.append((digits, m.start(), m.end()))
    return out


def parse_phone(text: str) -> str | None:
    found = find_phones(text)
    return found[0][0] if found else None
