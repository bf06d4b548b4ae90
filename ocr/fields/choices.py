"""Urgency and sex: words, abbreviations and ticked checkboxes.

A checkbox group is read as marks and option words in order: "☒ Urgent ☐ Routine",
"[X] STAT [ ] Routine", "Routine [ ]  Urgent [X]". Whether a mark belongs to the word
after it or before it is decided by what the group starts with.
"""
from __future__ import annotations

import re

from ocr.model import CHECKED, UNCHECKED

URGENCY_WORDS = [
    (r"non[\s\-]?urgent|not\s+urgent|routine|normal|standard|elective|regular|non[\s\-]?emergent", "routine"),
    (r"stat|emergent|emergency|immediate(?:ly)?|same[\s\-]day", "stat"),
    (r"urgent(?:ly)?|asap|expedite(?:d)?|high\s+priority|soon|rush|2[\s\-]?week|within\s+\d+\s+(?:days|weeks)", "urgent"),
]
SEX_WORDS = [(r"female|woman|f", "F"), (r"male|man|m", "M"), (r"unknown|other|undifferentiated|u|x|nonbinary|non-binary", "U")]

# printed marks: ticked and empty boxes as OCR and text layers produce them
TICKED = re.compile(r"^(?:\u2612|\u2611|\u2713|\u2714|\u25a0|\u25cf|\[\s*[xX\u00d7vV/\\*]\s*\]|\(\s*[xX\u00d7*]\s*\)|[xX]\]|\[[xX]|X|x|\u00d7)$")
EMPTY = re.compile(r"^(?:\u2610|\u25a1|\u25cb|\[\s*\]|\(\s*\)|\[|\]|\[\]|\[_\]|\(_\)|O|o|0|\u25ef)$")


def _classify(word: str, table) -> str | None:
    w = word.strip(" :;,.()[]").lower()
    for pattern, value in table:
        if re.fullmatch(pattern, w):
            return value
    return None


def _mark(token: str) -> bool | None:
    if TICKED.match(token) or token == CHECKED:
        return True
    if EMPTY.match(token) or token == UNCHECKED:
        return False
    return None


def checkbox_choice(tokens: list[str], table) -> tuple[str, bool] | None:
    """(value, unambiguous) from a token sequence with marks; None when no mark is ticked."""
    items: list[tuple[str, object]] = []     # ("mark", bool) | ("opt", value)
    for tok in tokens:
        # "[X]Urgent" / "☒Urgent" glued together
        m = re.match(r"^(\u2612|\u2610|\u2611|\u25a0|\u25a1|\[\s*[xX]?\s*\]|\(\s*[xX]?\s*\))(.+)$", tok)
        parts = [m.group(1), m.group(2)] if m else [tok]
        for p in parts:
            mk = _mark(p)
            if mk is not None and not (p in ("X", "x", "O", "o", "0") and _classify(p, table)):
                items.append(("mark", mk))
                continue
            v = _classify(p, table)
            if v is not None:
                items.append(("opt", v))
    marks = [i for i, it in enumerate(items) if it[0] == "mark"]
    opts = [i for i, it in enumerate(items) if it[0] == "opt"]
    if not marks or not opts:
        return None
    before = items[0][0] == "mark"           # "☒ Urgent" style: a mark precedes its option
    chosen = []
    for i in marks:
        if not items[i][1]:
            continue
        j = i + 1 if before else i - 1
        if 0 <= j < len(items) and items[j][0] == "opt":
            chosen.append(items[j][1])
    if not chosen:
        return None
    return chosen[0], len(set(chosen)) == 1


def word_choice(text: str, table) -> str | None:
    """The first option word in free text (no checkboxes)."""
    for tok in re.findall(r"[A-Za-z][A-Za-z\-]*(?:\s+(?:urgent|priority|day|week|access))?", text):
        v = _classify(tok, table)
        if v:
            return v
    return None


def parse_urgency(text: str) -> str | None:
    tokens = text.split()
    picked = checkbox_choice(tokens, URGENCY_WORDS)
    if picked:
        return picked[0]
    if any(_mark(t) is not None and t not in ("X", "x", "O", "o", "0") for t in tokens):
        return None                      # a checkbox group with nothing ticked says nothing
    low = text.lower()
    for pattern, value in URGENCY_WORDS:
        if re.search(r"(?<![a-z])(?:" + pattern + r")(?![a-z])", low):
            return value
    return _garbled_urgency_word(low)


def _garbled_urgency_word(low: str) -> str | None:
    """ "foutine", "Urgemt": the first word, one OCR slip from "routine" / "urgent" (six letters or
    more, so no short word is stretched into one). Anything else -> None."""
    from rapidfuzz.distance import Levenshtein
    first = re.findall(r"[a-z]+", low)[:1]
    if not first or len(first[0]) < 6:
        return None
    for word, value in (("routine", "routine"), ("urgent", "urgent")):
        if Levenshtein.distance(first[0], word) <= 1:
            return value
    return None


def parse_sex(text: str) -> str | None:
    tokens = text.split()
    if any(t in (CHECKED, UNCHECKED) or TICKED.match(t) and t not in ("X", "x") for t in tokens):
        # "MB ☒  F ☐", "MO ☐ F ☒": the box's outline glued to the option letter as B/O/0/[
        tokens = [re.sub(r"^([MF])[OoB0D\[\]|]$", r"\1", t) for t in tokens]
    picked = checkbox_choice(tokens, SEX_WORDS)
    if picked:
        return picked[0]
    if any(_mark(t) is not None and t not in ("X", "x", "O", "o", "0", "M", "F") for t in tokens):
        return None
    first = re.sub(r"^[^A-Za-z0-9\u2610\u2612]+", "", text).split()
    if not first:
        return None
    word = re.split(r"[/(]", first[0])[0]
    got = _classify(word, SEX_WORDS)
    if got is None and re.fullmatch(r"[Il1|\[oO0({'\u2018\u201c][MF]", word):
        got = _classify(word[1], SEX_WORDS)    # "IF", "oF": a cell's rule or a speck read as a mark before the value
    if got is None:
        got = _garbled_sex_word(word)
    return got


def _garbled_sex_word(word: str) -> str | None:
    """ "FRMAI", "FEMAIE", "MAIE": a sex word that faxing garbled keeps its first letter and most of
    its length; F or M first and within a few edits of "female" / "male" is that word. Anything else
    (a name, another label) -> None."""
    from rapidfuzz.distance import Levenshtein
    w = word.lower()
    if not re.fullmatch(r"[a-z]{4,7}", w) or w[0] not in "fm":
        return None
    target, limit = ("female", 3 if len(w) >= 5 else 1) if w[0] == "f" else ("male", 1)
    return w[0].upper() if Levenshtein.distance(w, target) <= limit else None
