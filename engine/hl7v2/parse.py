"""The one full-parse entry point (python-hl7) and HL7 path access.

Paths name what analysts write in mappings and filters:
`MSH-9.1`, `PID-3[*].1` (every repetition), `DG1[*]-3.1` (every DG1),
`OBX[2]-5`, `PID-5.1.1` (subcomponent). Indexes are 1-based; `*` means all.
`get` returns the first match or None; `get_all` every non-empty match, with
HL7 escape sequences (\\F\\, \\S\\, \\T\\, \\R\\, \\E\\, \\.br\\) resolved.
A malformed path raises `PathError` naming it.
"""
from __future__ import annotations

import re

import hl7

_PATH = re.compile(r"^(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<segidx>\*|\d+)\])?"
                   r"(?:-(?P<field>\d+)(?:\[(?P<rep>\*|\d+)\])?"
                   r"(?:\.(?P<comp>\d+)(?:\.(?P<sub>\d+))?)?)?$")


class PathError(ValueError):
    """An HL7 path that does not follow SEG[n]-field[r].component.subcomponent."""


def parse(text: str) -> hl7.Message:
    """Parse decoded, CR-separated message text. Raises hl7.exceptions.ParseException."""
    return hl7.parse(text)


def _split(path: str) -> re.Match:
    match = _PATH.match(path.strip())
    if not match:
        raise PathError(f"bad HL7 path {path!r}: expected SEG[n]-field[r].component.subcomponent, "
                        "e.g. PID-3[*].1 or DG1[*]-3.1")
    return match


def _indexes(spec: str | None, count: int) -> range:
    if spec == "*":
        return range(1, count + 1)
    n = int(spec or 1)
    return range(n, n + 1) if 1 <= n <= count else range(0)


def _repetitions(segment, field_num: int) -> int:
    if field_num >= len(segment):
        return 0
    field = segment[field_num]
    if isinstance(field, hl7.Field) and field and all(isinstance(r, hl7.Repetition) for r in field):
        return len(field)
    return 1


def get_all(message: hl7.Message, path: str) -> list[str]:
    m = _split(path)
    name = m["seg"]
    segments = [s for s in message if str(s[0]) == name]
    values: list[str] = []
    for seg_num in _indexes(m["segidx"], len(segments)):
        segment = segments[seg_num - 1]
        if m["field"] is None:
            values.append(str(segment))
            continue
        field_num = int(m["field"])
        for rep in _indexes(m["rep"], _repetitions(segment, field_num)):
            try:
                value = message.extract_field(name, seg_num, field_num, rep,
                                              int(m["comp"] or 1), int(m["sub"] or 1)) \
                    if m["comp"] else _whole(segment, field_num, rep)
            except (IndexError, KeyError):
                continue
            if value:
                values.append(message.unescape(value) if message.esc in value else value)
    return values


def _whole(segment, field_num: int, rep: int) -> str:
    field = segment[field_num]
    if isinstance(field, hl7.Field) and field and all(isinstance(r, hl7.Repetition) for r in field):
        return str(field[rep - 1])
    return str(field)


def get(message: hl7.Message, path: str) -> str | None:
    values = get_all(message, path)
    return values[0] if values else None
