"""Dates as printed on referrals -> YYYY-MM-DD.

Numeric dates are month first (US) unless the first number cannot be a month;
two-digit years are put in the past for birth dates (a DOB is never in the future).
Month names, ISO dates and 8-digit dates are read too. Digits OCR printed as
letters (O, l, S...) are repaired inside date-shaped tokens.
"""
from __future__ import annotations

import datetime as dt
import re

from ocr.fields.digits import TO_DIGIT

MONTHS = {m: i for i, names in enumerate(
    [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",), ("jun", "june"),
     ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
     ("dec", "december")], start=1) for m in names}

_D = r"[0-9OoIlSB]"
_MON = r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
NUMERIC = re.compile(rf"(?<![0-9])({_D}{{1,2}})\s?[/\-.]\s?({_D}{{1,2}})\s?[/\-.]\s?({_D}{{4}}|{_D}{{2}})(?![0-9])")
ISO = re.compile(rf"(?<![0-9])({_D}{{4}})[/\-.]({_D}{{1,2}})[/\-.]({_D}{{1,2}})(?![0-9])")
MONTH_FIRST = re.compile(rf"\b{_MON}[\s\-/,]+(\d{{1,2}})(?:st|nd|rd|th)?[\s,\-/]+(\d{{4}}|\d{{2}})\b", re.I)
DAY_FIRST = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?[\s\-/]+{_MON}[\s,\-/]+(\d{{4}}|\d{{2}})\b", re.I)
COMPACT = re.compile(r"(?<![0-9])((?:19|20)\d{6}|\d{8})(?![0-9])")


def _year(y: str, today: dt.date, past: bool) -> int:
    if len(y) == 4:
        return int(y)
    yy = int(y)
    if past:
        return 2000 + yy if 2000 + yy <= today.year else 1900 + yy
    return 2000 + yy


def _make(y: int, m: int, d: int, today: dt.date, past: bool) -> dt.date | None:
    try:
        date = dt.date(y, m, d)
    except ValueError:
        return None
    if past and (date > today or date.year < today.year - 120):
        return None
    return date


def find_dates(text: str, past: bool = False, today: dt.date | None = None) -> list[tuple[str, int, int]]:
    """(YYYY-MM-DD, start, end) for each plausible date in the text, in order of position."""
    today = today or dt.date.today()
    found: list[tuple[str, int, int]] = []

    def add(date, m):
        if date and not any(s <= m.start() < e for _, s, e in found):
            found.append((date.isoformat(), m.start(), m.end()))

    for m in ISO.finditer(text):
        y, mo, d = (g.translate(TO_DIGIT) for g in m.groups())
        add(_make(int(y), int(mo), int(d), today, past), m)
    for m in NUMERIC.finditer(text):
        a, b, y = (g.translate(TO_DIGIT) for g in m.groups())
        if not (a.isdigit() and b.isdigit() and y.isdigit()):
            continue
        a, b = int(a), int(b)
        mo, d = (a, b) if a <= 12 else (b, a)
        add(_make(_year(y, today, past), mo, d, today, past), m)
    for m in MONTH_FIRST.finditer(text):
        add(_make(_year(m.group(3), today, past), MONTHS[m.group(1).lower()],
                  int(m.group(2)), today, past), m)
    for m in DAY_FIRST.finditer(text):
        add(_make(_year(m.group(3), today, past), MONTHS[m.group(2).lower()], int(m.group(1)), today, past), m)
    for m in COMPACT.finditer(text):
        s = m.group(1)
        date = _make(int(s[:4]), int(s[4:6]), int(s[6:]), today, past) if s[:2] in ("19", "20") else None
        date = date or _make(int(s[4:]), int(s[:2]), int(s[2:4]), today, past)
        add(date, m)
    return sorted(found, key=lambda t: t[1])


def parse_date(text: str, past: bool = False, today: dt.date | None = None) -> str | None:
    found = find_dates(text, past, today)
    return found[0][0] if found else None
