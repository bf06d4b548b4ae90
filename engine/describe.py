"""Readable views of a stored message for analysts: decoded text and a field-by-field breakdown.

Field names come from hl7apy's structure tables for the message's version
(2.5 when the version is unknown to it); Z-segments and unknown fields show
without a name. Only used on demand (CLI, web), never on the hot path.
"""
from __future__ import annotations

from functools import lru_cache

from engine.hl7v2 import decode, prepare

_HL7APY_VERSIONS = {"2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8", "2.8.1", "2.8.2"}


def readable(raw: bytes, charset: str | None) -> str:
    prepared = prepare(raw)
    try:
        return prepared.decode(charset) if charset else decode(prepared, "").text
    except (UnicodeDecodeError, LookupError):
        return prepared.decode("latin-1")


@lru_cache(maxsize=512)
def field_name(segment: str, position: int, version: str) -> str:
    from hl7apy.core import Field
    if version not in _HL7APY_VERSIONS:
        version = "2.5"
    try:
        return Field(f"{segment}_{position}", version=version).long_name.replace("_", " ").title()
    except Exception:  # hl7apy raises its own errors for unknown segments/fields
        return ""


def breakdown(text: str, version: str | None) -> list[dict]:
    """[{segment: 'PID', fields: [{position: 'PID-5', name: 'Patient Name', value: 'DOE^JANE'}]}]."""
    out = []
    lines = [s for s in text.split("\r") if s]
    field_sep = text[3:4] if text.startswith(("MSH", "FHS", "BHS")) else "|"
    for line in lines:
        name = line[:3]
        parts = line.split(field_sep)
        fields = []
        if name in ("MSH", "FHS", "BHS"):
            parts = [name, field_sep] + parts[1:]
        for position, value in enumerate(parts[1:], start=1):
            if value:
                fields.append({"position": f"{name}-{position}", "name": field_name(name, position, version or "2.5"),
                               "value": value})
        out.append({"segment": name, "fields": fields})
    return out
