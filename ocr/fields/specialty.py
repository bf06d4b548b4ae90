"""Referred-to specialty: canonical lowercase name from how forms and letters say it.

"Cardiology Clinic", "cardiac", "cardiologist", "GI", "Ortho", "ENT", "Heme/Onc"...
Whole words only, longest synonym first, so "neurosurgery" is not "neurology".
"""
from __future__ import annotations

import re

SYNONYMS: dict[str, list[str]] = {
    "cardiology": ["cardiology", "cardiologist", "cardiac", "cardiovascular", "cardiovascular medicine",
                   "cardiovascular disease", "heart clinic", "heart and vascular", "cardio", "electrophysiology"],
    "dermatology": ["dermatology", "dermatologist", "derm", "skin clinic"],
    "endocrinology": ["endocrinology", "endocrinologist", "endocrine", "endo", "diabetes clinic",
                      "diabetes and endocrinology"],
    "gastroenterology": ["gastroenterology", "gastroenterologist", "gastro", "gi", "digestive health",
                         "hepatology", "gastrointestinal"],
    "neurology": ["neurology", "neurologist", "neuro", "neurological"],
    "neurosurgery": ["neurosurgery", "neurosurgeon", "neurological surgery", "spine surgery"],
    "nephrology": ["nephrology", "nephrologist", "renal", "kidney clinic", "kidney"],
    "orthopedics": ["orthopedics", "orthopaedics", "orthopedic", "orthopaedic", "orthopedic surgery",
                    "orthopaedic surgery", "ortho", "orthopedist", "sports medicine"],
    "oncology": ["oncology", "oncologist", "medical oncology", "onc", "cancer center"],
    "hematology": ["hematology", "hematologist", "heme", "haematology"],
    "pulmonology": ["pulmonology", "pulmonologist", "pulmonary", "pulmonary medicine", "pulm", "lung clinic",
                    "pulmonary and critical care", "respiratory"],
    "rheumatology": ["rheumatology", "rheumatologist", "rheum"],
    "urology": ["urology", "urologist", "uro"],
    "ophthalmology": ["ophthalmology", "ophthalmologist", "eye clinic", "ophtho", "eye"],
    "otolaryngology": ["otolaryngology", "otolaryngologist", "ent", "ear nose and throat", "ear nose throat",
                       "ear, nose and throat", "ear, nose & throat", "ear nose & throat", "head and neck surgery"],
    "obstetrics and gynecology": ["obstetrics and gynecology", "ob/gyn", "obgyn", "ob-gyn", "ob gyn", "gynecology",
                                  "obstetrics", "women's health", "gyn"],
    "psychiatry": ["psychiatry", "psychiatrist", "behavioral health", "mental health", "psych"],
    "allergy": ["allergy and immunology", "allergy", "immunology", "allergist", "allergy & immunology",
                "allergy/immunology"],
    "infectious disease": ["infectious disease", "infectious diseases", "id clinic"],
    "general surgery": ["general surgery", "general surgeon", "surgery"],
    "vascular surgery": ["vascular surgery", "vascular surgeon", "vascular"],
    "podiatry": ["podiatry", "podiatrist", "foot and ankle"],
    "physical therapy": ["physical therapy", "pt/ot", "physiotherapy", "physical medicine and rehabilitation",
                         "pm&r", "rehabilitation"],
    "pain management": ["pain management", "pain clinic", "pain medicine"],
    "sleep medicine": ["sleep medicine", "sleep clinic", "sleep study"],
    "geriatrics": ["geriatrics", "geriatric medicine"],
    "pediatrics": ["pediatrics", "pediatrician"],
    "radiology": ["radiology", "imaging"],
    "audiology": ["audiology"],
    "plastic surgery": ["plastic surgery"],
    "hematology oncology": ["hematology/oncology", "hematology oncology", "heme/onc", "hem/onc", "heme onc",
                            "hematology-oncology", "hematology & oncology", "hematology and oncology"],
}
# weak synonyms: too common in prose ("eye", "surgery", "kidney", "heme") to trust outside a label
WEAK = {"eye", "surgery", "kidney", "vascular", "heme", "uro", "psych", "imaging", "respiratory", "cardio",
        "onc", "endo", "neuro", "gyn", "allergy", "rehabilitation", "neurological", "id clinic", "ortho",
        "derm", "gi", "ent", "pulm", "rheum", "gastro", "renal", "cardiac", "pulmonary", "endocrine",
        "orthopedic", "orthopaedic"}

_PAIRS = sorted(((syn, canon) for canon, syns in SYNONYMS.items() for syn in syns), key=lambda p: -len(p[0]))
_RES = [(re.compile(r"(?<![A-Za-z])" + re.escape(syn).replace(r"\ ", r"[\s,]+") + r"(?![A-Za-z])", re.I), syn, canon)
        for syn, canon in _PAIRS]


def find_specialties(text: str, strong_only: bool = False) -> list[tuple[str, int, int]]:
    """(canonical, start, end) for each specialty mention, in order, overlapping matches dropped."""
    taken: list[tuple[int, int]] = []
    out = []
    for rx, syn, canon in _RES:
        if strong_only and syn in WEAK:
            continue
        for m in rx.finditer(text):
            if syn in ("gi", "ent", "id clinic", "uro", "onc", "heme", "pt/ot") and not m.group(0).isupper() \
                    and syn not in ("heme", "onc"):
                continue        # "gi"/"ent" only as the capitalised abbreviation
            if any(s < m.end() and m.start() < e for s, e in taken):
                continue
            taken.append((m.start(), m.end()))
            out.append((canon, m.start(), m.end()))
    return sorted(out, key=lambda t: t[1])


LABEL_ONLY = {"PT": "physical therapy", "ID": "infectious disease", "OT": "occupational therapy",
              "GYN": "obstetrics and gynecology", "OB": "obstetrics and gynecology"}


def parse_specialty(text: str) -> str | None:
    """The specialty a label's value names; bare abbreviations (PT, ID) count only here."""
    bare = text.strip(" .:;|")
    if bare.upper() in LABEL_ONLY and bare.isupper():
        return LABEL_ONLY[bare.upper()]
    found = find_specialties(text)
    return found[0][0] if found else None
