"""ICD-10-CM diagnosis codes as printed, validated against simple_icd_10_cm.

OCR confusions (1/I, 0/O, 5/S, 8/B, 2/Z) are repaired only when the repaired code is
valid and the printed one is not. Codes without a dot are accepted only when the
caller says the text is a diagnosis field (free text is full of "A1C", "B12").
"""
from __future__ import annotations

import gzip
import re
from functools import lru_cache

CODE_RE = re.compile(r"(?<![A-Za-z0-9])([A-Z0-9$\u00a3\u20ac\[|][0-9OoIlSZB&][0-9A-Z&](?:\s?\.\s?[0-9A-Z]{1,4}|,(?=\S)[0-9A-Z]{1,4}|[0-9A-Z]{1,4})?)(?![A-Za-z0-9])")
LETTER_FOR = {"1": "I", "0": "O", "5": "S", "8": "B", "2": "Z", "6": "G", "[": "I", "|": "I"}
FIRST_ALTERNATIVES = {"[": "IJ", "|": "IJ", "$": "JS", "\u00a3": "E", "\u20ac": "E", "1": "ILJ", "0": "OD", "5": "S", "8": "B", "2": "Z", "6": "G", "I": "J", "J": "I",
                      "S": "J", "3": "J", "7": "T", "4": "A"}     # a faxed J's hook lost reads 3; T as 7, A as 4
SPLIT_TAIL = re.compile(r" ([0-9]{1,4})(?![A-Za-z0-9.]|,\S)")
DIGIT_FOR = {"O": "0", "o": "0", "I": "1", "l": "1", "S": "5", "Z": "2", "B": "8", "&": "8"}


@lru_cache(maxsize=1)
def _table() -> dict[str, bool]:
    """code (dotted) -> is a leaf (billable); from ocr/icd10cm.txt.gz, made by ocr/build_icd10_table.py."""
    from ocr.build_icd10_table import TABLE
    out = {}
    for line in gzip.decompress(TABLE.read_bytes()).decode("ascii").split():
        out[line.rstrip("*")] = not line.endswith("*")
    return out


def _dotted(code: str) -> str:
    return code if "." in code or len(code) <= 3 else code[:3] + "." + code[3:]


def is_valid(code: str) -> bool:
    return _dotted(code.upper()) in _table()


def is_leaf(code: str) -> bool:
    return _table().get(_dotted(code.upper()), False)


def repair(code: str) -> str | None:
    """The printed code if valid, else a valid code one OCR confusion away, else None."""
    code = re.sub(r"\s", "", code).replace(",", ".")
    if is_leaf(code):
        return code
    first = LETTER_FOR.get(code[0], code[0])
    body = "".join(DIGIT_FOR.get(c, c) for c in code[1:3])
    rest = code[3:].replace("&", "8")
    fixed_rest = rest[:1] + "".join(DIGIT_FOR.get(c, c) if c.isalpha() and c in "OolIS" else c for c in rest[1:]) \
        if rest.startswith(".") else rest
    cands = [first + body + rest, first + body + fixed_rest, first + code[1:], code[0] + body + rest]
    cands += [alt + tail for alt in FIRST_ALTERNATIVES.get(code[0], "") for tail in (body + rest, body + fixed_rest)]
    cands = [c for c in cands if c[0].isalpha()]
    # a billable code beats a category: referrals carry billable codes, and it settles $44.9 -> J44.9
    for c in cands:
        if is_leaf(c):
            return c
    if is_valid(code):
        return code
    for c in cands:
        if is_valid(c):
            return c
    return None


def find_codes(text: str, labelled: bool = False) -> list[str]:
    """Valid codes in order of appearance, each once."""
    out: list[str] = []
    skip_to = 0
    for m in CODE_RE.finditer(text):
        if m.start() < skip_to:
            continue
        raw = m.group(1)
        has_dot = "." in raw or "," in raw
        split = SPLIT_TAIL.match(text, m.end()) if labelled and len(raw) == 3 and not has_dot else None
        if split and not is_leaf(raw) and repair(raw + "." + split.group(1)):
            raw, has_dot = raw + "." + split.group(1), True    # "G47 00": the dot read as a space
            skip_to = split.end()
        in_parens = m.start() > 0 and text[m.start() - 1] == "(" and text[m.end():m.end() + 1] == ")"
        boxed = in_parens and raw[0].isalpha() and raw[1:3].isdigit() and is_valid(raw)
        if in_parens and not has_dot and not raw[0].isalpha() and labelled and raw[1:3].isdigit():
            fixed = repair(raw)                 # "(110)" under a diagnosis label: I10 with 1/I confused
            if fixed and len(fixed) == 3 and fixed not in out:
                out.append(fixed)
            continue
        if not has_dot and not labelled and not boxed:
            continue                      # "(I10)" is a code; a bare "I10" in prose may not be
        if not has_dot and not re.search(r"[A-Z]", raw[0]) and not (labelled or boxed):
            continue
        code = repair(raw) if has_dot else (raw if is_valid(raw) and raw[0].isalpha() else None)
        if code is None and not has_dot and labelled and len(raw) >= (5 if raw.isdigit() else 4) \
                and not re.match(r"[/\-.:]", text[m.end():m.end() + 1]) and not (m.start() and text[m.start() - 1] in "/-.:"):
            code = repair(raw)            # "64733" under a diagnosis label: G4733 with G/6 confused, dot left out
        if code and (has_dot or len(code) >= 3) and code not in out:
            if not has_dot and not code[0].isalpha():
                continue
            out.append(code)
    return out
