"""Insurance payer: the printed plan name matched to a canonical payer list (ocr/payers.txt).

Matched with rapidfuzz against the canonical names and their aliases; a printed name
that matches nothing well is returned as printed (cleaned), so an unknown plan is kept,
not lost. Plan/product words after a known payer ("Aetna PPO", "Cigna Open Access")
do not stop the match.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from rapidfuzz import fuzz, process

PAYERS_FILE = Path(__file__).resolve().parent.parent / "payers.txt"
# words of form titles and box heads, never of an unknown plan's name
NOT_A_PLAN = re.compile(r"(?i)(?:form|referral|request|authorization|information|number|name|group|insured|"
                        r"patient|date|provider|physician|signature|address|telephone|phone|fax)(?![a-z])|"
                        r"(?i:insured|number|group)")
PLAN_WORDS = r"\b(ppo|hmo|epo|pos|hdhp|plan|choice|plus|select|open access|gold|silver|bronze|platinum|part [abcd]|commercial|group|individual|primary|secondary)\b"


@lru_cache(maxsize=1)
def payer_aliases() -> dict[str, str]:
    """alias (lowercase) -> canonical name, from payers.txt: `Canonical Name | alias | alias`."""
    out: dict[str, str] = {}
    for line in PAYERS_FILE.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        names = [n.strip() for n in line.split("|") if n.strip()]
        for n in names:
            out[n.lower()] = names[0]
    return out


def _norm(text: str) -> str:
    text = text.lower().replace("&", " and ")
    text = re.sub(r"[^a-z0-9 ]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def match_payer(text: str) -> tuple[str, float] | None:
    """(payer name, match score 0..1) for printed text, or None when it is no payer name."""
    if not text:
        return None
    raw = re.split(r"\s{3,}|\b(?:member|subscriber|policy|id|group|grp)\b\s*[#:]", text, flags=re.I)[0]
    raw = raw.strip(" :;,.-|")
    if not re.fullmatch(r"[\d\W]+", raw):
        raw = re.sub(r"(?:\s+[#\d][\w\-]*)+$", "", raw)     # "Harvard Pilgrim 945951": the next box's number read along
    if not raw or re.fullmatch(r"[\d\W]+", raw) or len(raw) > 80:
        return None
    aliases = payer_aliases()
    norm = _norm(raw)
    if not norm:
        return None
    keys = {_norm(k): v for k, v in aliases.items()}
    if norm in keys:
        return keys[norm], 1.0
    # longest alias that the text starts with: "Aetna PPO" -> Aetna, "Medicare Advantage" stays itself
    starts = [k for k in keys if norm.startswith(k + " ") or norm == k]
    if starts:
        best = max(starts, key=len)
        rest = norm[len(best):].strip()
        if not rest or re.fullmatch(rf"(?:{PLAN_WORDS}|\s)+", rest):
            return keys[best], 0.95
    hit = process.extractOne(norm, list(keys), scorer=fuzz.ratio, score_cutoff=86)
    if hit:
        return keys[hit[0]], hit[1] / 100
    stripped = re.sub(PLAN_WORDS, " ", norm).strip()
    hit = process.extractOne(stripped, list(keys), scorer=fuzz.ratio, score_cutoff=88) if stripped else None
    if hit:
        return keys[hit[0]], hit[1] / 100 * 0.95
    if NOT_A_PLAN.search(raw):
        return None          # "REFERRAL FORM", "INSURED'S GROUP NUMBER": a title or the next box's head, no plan
    if re.search(r"[A-Za-z]{3}", raw) and len(raw.split()) <= 6 and not re.search(r"\d", raw) \
            and sum(c.isalpha() for c in raw) >= 0.7 * len(raw.replace(" ", "")):
        return re.sub(r"\s+", " ", raw), 0.5
    return None
