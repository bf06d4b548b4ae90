"""Outbound HL7 from templates: the mapping language, the other direction.

A template (`mappings/outbound/*.yaml`) names the message it builds and, per
segment, which HL7 position takes which value of the referral context:

    type: SIU^S12                 # MSH-9 (the structure, MSH-9.3, from `structure`)
    version: "2.5.1"
    structure: SIU_S12            # checked with hl7apy when loaded
    segments:
      - segment: SCH
        fields:
          1.1: appointment.placer_id          # a context path
          7.2: [appointment.reason, referral.reason]   # first non-empty
          11.4: {path: appointment.start, format: dtm}
          25.1: {path: appointment.status, table: filler_status}
          6.1: {value: REFERRAL}              # a literal
      - segment: DG1
        each: diagnoses                       # one segment per item; `item.code` reads it
        fields: {1: {index: true}, 3.1: item.code, 3.3: {value: I10}}
      - segment: PID
        fields:
          3: {each: patient.identifiers, components: {1: id, 4: authority, 5: type}}   # repetitions

Positions are `FIELD[.COMPONENT[.SUBCOMPONENT]]`. A value spec is a path, a
list of alternatives, or a mapping with `path`/`value`, then `format` (dtm,
date, upper), `table` (a template table), `default`, `max` (characters). A
segment may have `when: PATH` (only when that value is present). Values are
HL7-escaped; the MSH is built by the engine (sender/receiver from the
destination, MSH-10 the control id kept for every resend).

Contract: `Templates.load(folder)` compiles every file and renders each with a
full sample context, then validates the result against the message structure
with hl7apy (~50 ms a template, once — never per message, see FACTS.md); it
raises `TemplateError` whose problems read `FILE:LINE: KEY: what is wrong`.
`Templates.render(name, context, msh) -> bytes` is pure string building
(tens of µs), safe inside the journal writer's transaction.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from engine.hl7v2.ack import escape
from engine.mapping import _line, _load_yaml

log = logging.getLogger("engine.templates")

FS, ENC = "|", "^~\\&"
_POSITION = re.compile(r"^(\d{1,3})(?:\.(\d{1,3}))?(?:\.(\d{1,3}))?$")


class TemplateError(Exception):
    """Problems in template files; `problems` read `FILE:LINE: KEY: what is wrong`."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class MSH:
    """Who sends to whom: the destination's configured names."""
    sending_application: str = "REFERRAL_ENGINE"
    sending_facility: str = "RIVERBEND"
    receiving_application: str = ""
    receiving_facility: str = ""
    processing_id: str = "P"


# ---- value formats -------------------------------------------------------------

def _dtm(value: str) -> str:
    """ISO 8601 (with or without offset) -> HL7 DTM (YYYYMMDDHHMM[SS][+ZZZZ]); HL7 input passes through."""
    if re.fullmatch(r"\d{4,14}([+-]\d{4})?", value):
        return value
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return value
    text = dt.strftime("%Y%m%d%H%M%S") if (dt.hour, dt.minute, dt.second) != (0, 0, 0) or "T" in value \
        else dt.strftime("%Y%m%d")
    if dt.tzinfo is not None:
        text += dt.strftime("%z")
    return text


def _date(value: str) -> str:
    return re.sub(r"\D", "", value)[:8] if re.match(r"\d{4}-\d{2}-\d{2}", value) else value


FORMATS: dict[str, Callable[[str], str]] = {"dtm": _dtm, "date": _date, "upper": str.upper,
                                            "lower": str.lower, "digits": lambda v: re.sub(r"\D", "", v)}


def lookup(context: dict, path: str) -> Any:
    """`a.b.c` in nested dicts (None when any step is missing)."""
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


# ---- compiled templates ----------------------------------------------------------

@dataclass(slots=True)
class _Value:
    paths: list[str] = field(default_factory=list)
    literal: str | None = None
    fmt: Callable[[str], str] | None = None
    table: dict[str, str] | None = None
    default: str | None = None
    max: int | None = None
    index: bool = False

    def __call__(self, context: dict, index: int) -> str:
        if self.index:
            return str(index)
        value = self.literal
        for path in self.paths:
            found = lookup(context, path)
            if found not in (None, "", [], {}):
                value = str(found)
                break
        if value is None:
            value = self.default
        if value is None:
            return ""
        if self.table is not None:
            value = self.table.get(value, self.table.get("*", value))
        if self.fmt is not None:
            value = self.fmt(value)
        if self.max is not None:
            value = value[:self.max]
        return value


@dataclass(slots=True)
class _Repeat:
    """A field with one repetition per item of a list: {each: PATH, components: {N: item_key}}."""
    path: str
    components: dict[int, _Value]


@dataclass(slots=True)
class _Segment:
    name: str
    fields: dict[int, dict[int, dict[int, _Value]] | _Repeat]   # field -> component -> subcomponent -> value
    each: str | None = None
    when: str | None = None


@dataclass(slots=True)
class Template:
    name: str
    file: Path
    message_type: str
    version: str
    structure: str
    segments: list[_Segment]
    triggers: dict[str, str] = field(default_factory=dict)   # referral event -> trigger (one shape, many triggers)

    def message_type_for(self, event: str | None) -> str:
        typ, trigger = self.message_type.split("^")
        return f"{typ}^{self.triggers.get(event or '', trigger)}"

    def render(self, context: dict, msh: MSH, control_id: str, at: datetime | None = None) -> bytes:
        """The message as HL7 bytes (segments separated by CR, UTF-8, MSH-18 UNICODE UTF-8). The trigger
        follows `context['event']['kind']` when the template maps events to triggers."""
        at = at or datetime.now(timezone.utc)
        typ, trigger = self.message_type_for(lookup(context, "event.kind")).split("^")
        header = FS.join(["MSH", ENC, escape(msh.sending_application, FS, ENC), escape(msh.sending_facility, FS, ENC),
                          escape(msh.receiving_application, FS, ENC), escape(msh.receiving_facility, FS, ENC),
                          at.strftime("%Y%m%d%H%M%S%z"), "", f"{typ}^{trigger}^{self.structure}", control_id,
                          msh.processing_id, self.version, "", "", "AL", "NE", "", "UNICODE UTF-8"])
        lines = [header]
        for segment in self.segments:
            if segment.when and lookup(context, segment.when) in (None, "", [], {}):
                continue
            if segment.each is None:
                lines.append(_render_segment(segment, context, 1))
                continue
            items = lookup(context, segment.each) or []
            for index, item in enumerate(items, 1):
                lines.append(_render_segment(segment, {**context, "item": item}, index))
        return ("\r".join(lines) + "\r").encode("utf-8")


def _render_segment(segment: _Segment, context: dict, index: int) -> str:
    if not segment.fields:
        return segment.name
    out = [""] * max(segment.fields)
    for number, spec in segment.fields.items():
        if isinstance(spec, _Repeat):
            reps = []
            for item in lookup(context, spec.path) or []:
                item_ctx = {**context, "item": item} if not isinstance(item, dict) else {**context, **item, "item": item}
                reps.append(_join_components({c: {1: v} for c, v in spec.components.items()}, item_ctx, index))
            out[number - 1] = "~".join(r for r in reps if r)
        else:
            out[number - 1] = _join_components(spec, context, index)
    return segment.name + FS + FS.join(out).rstrip(FS) if any(out) else segment.name


def _join_components(components: dict[int, dict[int, _Value]], context: dict, index: int) -> str:
    comps = [""] * max(components)
    for c, subs in components.items():
        parts = [""] * max(subs)
        for s, value in subs.items():
            parts[s - 1] = escape(value(context, index), FS, ENC)
        comps[c - 1] = "&".join(parts).rstrip("&")
    return "^".join(comps).rstrip("^")


# ---- compiling ---------------------------------------------------------------------

class _Problem(Exception):
    def __init__(self, line: int, key: str, text: str):
        super().__init__(text)
        self.line, self.key, self.text = line, key, text


def _value(spec: Any, tables: dict, line: int, key: str) -> _Value:
    if isinstance(spec, str):
        return _Value(paths=[spec])
    if isinstance(spec, list):
        if not all(isinstance(p, str) for p in spec):
            raise _Problem(line, key, "a list of alternatives holds context paths only")
        return _Value(paths=list(spec))
    if not isinstance(spec, dict):
        raise _Problem(line, key, f"expected a context path, a list of paths or a mapping, got {spec!r}")
    unknown = set(spec) - {"path", "value", "format", "table", "default", "max", "index"}
    if unknown:
        raise _Problem(line, key, f"unknown keys {sorted(unknown)}; valid: path, value, format, table, default, "
                                  "max, index")
    paths = spec.get("path") or []
    paths = [paths] if isinstance(paths, str) else list(paths)
    fmt = spec.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise _Problem(line, key, f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    table = spec.get("table")
    if table is not None and table not in tables:
        raise _Problem(line, key, f"no table {table!r} in this file (tables: {', '.join(tables) or 'none'})")
    if not paths and spec.get("value") is None and not spec.get("index"):
        raise _Problem(line, key, "needs `path`, `value` or `index: true`")
    return _Value(paths=paths, literal=spec.get("value"), fmt=FORMATS.get(fmt) if fmt else None,
                  table=tables.get(table) if table else None, default=spec.get("default"),
                  max=int(spec["max"]) if spec.get("max") else None, index=bool(spec.get("index")))


def _segment(raw: Any, tables: dict) -> _Segment:
    line = _line(raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("segment"), str) or \
            not re.fullmatch(r"[A-Z][A-Z0-9]{2}", raw["segment"]):
        raise _Problem(line, "segments", "each item needs `segment: XYZ` (three letters/digits) and `fields`")
    unknown = set(raw) - {"segment", "fields", "each", "when"}
    if unknown:
        raise _Problem(line, "segments", f"unknown keys {sorted(unknown)}; valid: segment, fields, each, when")
    name = raw["segment"]
    fields: dict = {}
    for position, spec in (raw.get("fields") or {}).items():
        key, pline = f"{name}-{position}", _line(raw.get("fields"), position)
        m = _POSITION.match(str(position))
        if not m:
            raise _Problem(pline, key, "a position is FIELD[.COMPONENT[.SUBCOMPONENT]] like 3 or 11.4")
        f, c, s = int(m[1]), int(m[2] or 1), int(m[3] or 1)
        if isinstance(spec, dict) and "each" in spec:
            comps = spec.get("components") or {}
            if not isinstance(comps, dict) or not comps:
                raise _Problem(pline, key, "`each` needs `components: {N: item key}`")
            fields[f] = _Repeat(spec["each"], {int(n): _value(v, tables, pline, f"{key}.{n}") for n, v in comps.items()})
            continue
        if isinstance(fields.get(f), _Repeat):
            raise _Problem(pline, key, "this field already repeats with `each`")
        fields.setdefault(f, {}).setdefault(c, {})[s] = _value(spec, tables, pline, key)
    return _Segment(name, fields, raw.get("each"), raw.get("when"))


def compile_template(path: Path) -> Template:
    raw = _load_yaml(path.read_text(encoding="utf-8"))
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise TemplateError([f"{path}:1: (file): a template is a mapping with type, version, structure, segments"])
    for key in ("type", "version", "structure", "segments"):
        if key not in raw:
            problems.append(f"{path}:{_line(raw)}: {key}: required key is missing")
    unknown = set(raw) - {"type", "version", "structure", "segments", "tables", "description", "triggers"}
    if unknown:
        problems.append(f"{path}:{_line(raw)}: {sorted(unknown)}: unknown keys; valid: type, version, structure, "
                        "segments, tables, triggers, description")
    if problems:
        raise TemplateError(problems)
    if not re.fullmatch(r"[A-Z0-9]{3}\^[A-Z0-9]{3}", str(raw["type"])):
        raise TemplateError([f"{path}:{_line(raw, 'type')}: type: like SIU^S12 (got {raw['type']!r})"])
    tables = {name: dict(t.get("map", t)) if isinstance(t, dict) else {} for name, t in (raw.get("tables") or {}).items()}
    for name, t in (raw.get("tables") or {}).items():
        if isinstance(t, dict) and t.get("otherwise") is not None:
            tables[name]["*"] = t["otherwise"]
            tables[name].pop("otherwise", None)
    segments = []
    for item in raw["segments"] or []:
        try:
            segments.append(_segment(item, tables))
        except _Problem as p:
            problems.append(f"{path}:{p.line}: {p.key}: {p.text}")
    if problems:
        raise TemplateError(problems)
    triggers = raw.get("triggers") or {}
    bad = [t for t in triggers.values() if not re.fullmatch(r"[A-Z0-9]{3}", str(t))]
    if bad:
        raise TemplateError([f"{path}:{_line(raw, 'triggers')}: triggers: a trigger is three letters/digits "
                             f"like S15 (got {bad[0]!r})"])
    return Template(path.stem, path, str(raw["type"]), str(raw["version"]), str(raw["structure"]), segments,
                    {str(k): str(v) for k, v in triggers.items()})


# ---- structure check with hl7apy (once per template) ------------------------------

def sample_context() -> dict:
    """Every context value filled, so a load-time render exercises every segment and field."""
    return {
        "referral": {"id": 1042, "status": "scheduled", "urgency": "urgent", "specialty": "cardiology",
                     "reason": "Palpitations, rule out atrial fibrillation", "placer_order_number": "RF250304-0481",
                     "filler_order_number": "CARD-77120", "referral_number": "RF250304-0481",
                     "service_code": "CARDCONS", "service_text": "Cardiology consult",
                     "receiving_department": "Riverbend Cardiology", "referred_at": "2026-11-20T09:15:00",
                     "payer": "Blue Cross", "member_id": "XJH123456789", "authorization_number": "AUTH-5531",
                     "priority_code": "A", "status_code": "A"},
        "patient": {"mrn": "10483726", "mrn_authority": "RIVERBEND", "identifiers": [
            {"id": "10483726", "authority": "RIVERBEND", "type": "MR"}], "family_name": "Okafor",
            "given_name": "Grace", "middle_name": "A", "birth_date": "1958-04-12", "sex": "F",
            "phone": "5555550142", "email": "grace@example.org", "language": "en",
            "address": {"line1": "12 Elm St", "city": "Riverbend", "state": "OH", "postal_code": "43004"}},
        "referring": {"npi": "1234567893", "family_name": "Lindqvist", "given_name": "Maria",
                      "practice": "Maple Family Practice", "phone": "5555550100", "fax": "5555550199"},
        "receiving": {"npi": "1093817465", "family_name": "Haddad", "given_name": "Omar",
                      "department": "Riverbend Cardiology"},
        "appointment": {"placer_id": "APT-1", "filler_id": "SCH-9931", "start": "2026-12-02T14:30:00",
                        "duration_minutes": 40, "location": "Cardiology Clinic 3", "provider": "Haddad",
                        "status": "booked", "reason": "New patient consult", "filler_status": "Booked"},
        "document": {"id": "DOC-77", "title": "Cardiology consult note", "author": "Haddad", "date":
                     "2026-12-02T16:00:00", "status": "final", "text": "Assessment: paroxysmal AF.\nPlan: Holter.",
                     "lines": ["Assessment: paroxysmal AF.", "Plan: Holter."], "content_type": "application/pdf",
                     "content_base64": "JVBERi0xLjQK", "completion_status": "AU", "type_code": "CN"},
        "diagnoses": [{"code": "I48.91", "description": "Unspecified atrial fibrillation", "system": "I10"}],
        "event": {"kind": "appointment.booked", "at": "2026-11-21T10:00:00", "reason": "appointment.booked"},
        "visit": {"number": "V-20331", "class": "O"},
        "return": {"disposition": "AC"},
    }


def check_structure(template: Template) -> list[str]:
    """hl7apy's view of a sample render: [] when the message matches its structure.

    hl7apy models a choice group (ORM^O01's OBR|RQD|RQ1|RXO|ODS|ODT, named `*_SUPPGRP` or `*CHOICE*`)
    as a sequence and reports every alternative not taken as missing: those reports are dropped."""
    import tempfile
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_message
    from hl7apy.validation import Validator
    text = template.render(sample_context(), MSH(receiving_application="CHECK", receiving_facility="CHECK"),
                           "CHECK0001").decode("utf-8")
    where = f"{template.file}:1: structure {template.structure} ({template.version}): hl7apy"
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as report:
        try:
            message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        except (HL7apyException, ValueError, KeyError) as exc:
            return [f"{where}: {type(exc).__name__}: {exc}"]
        try:
            Validator.validate(message, report_file=report.name)
        except HL7apyException:
            pass                        # the report holds every error found
        errors = [line.removeprefix("Error: ").strip() for line in report.read().splitlines()
                  if line.startswith("Error:")]
    choice = re.compile(r"^Missing required child \w*(?:_SUPPGRP|CHOICE)\w*\.")
    return [f"{where}: {e}" for e in errors if not choice.match(e)]


class Templates:
    """Every template of a folder by name (file stem, e.g. `siu_s12`)."""

    def __init__(self, templates: dict[str, Template]):
        self.templates = templates

    @classmethod
    def load(cls, folder: Path, check: bool = True) -> "Templates":
        problems: list[str] = []
        templates: dict[str, Template] = {}
        files = sorted(Path(folder).glob("*.yaml"))
        if not files:
            raise TemplateError([f"{folder}: no outbound templates (*.yaml) here"])
        for path in files:
            try:
                template = compile_template(path)
            except TemplateError as exc:
                problems += exc.problems
                continue
            if check:
                problems += check_structure(template)
            templates[template.name] = template
        if problems:
            raise TemplateError(problems)
        return cls(templates)

    def __contains__(self, name: str) -> bool:
        return name in self.templates

    def render(self, name: str, context: dict, msh: MSH, control_id: str) -> bytes:
        return self.templates[name].render(context, msh, control_id)

    def message_type(self, name: str, event: str | None = None) -> str:
        return self.templates[name].message_type_for(event)
