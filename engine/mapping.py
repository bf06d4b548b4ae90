"""Declarative HL7 -> normalized mappings: the YAML files in `mappings/` and their interpreter.

One file per message family. It says which message types it `handles`, which
`event` each one produces (first matching rule), and how `fields` of
`engine.normalized.Mapped` are read from HL7 paths:

    handles: [ORM^O01, OMG^O19]          # 'SIU' = every SIU trigger
    events:                              # first match wins; `type:` narrows a rule to some triggers
      - {when: {path: ORC-1, in: [CA, OC, DC]}, event: referral.cancel}
      - {event: referral.order}
    tables:
      urgency: {map: {S: stat, A: urgent, R: routine}, otherwise: routine}
    fields:
      patient.family_name: PID-5.1                      # a path
      placer_order_number: [ORC-2.1, OBR-2.1, RF1-6.1]  # first non-empty
      urgency: {path: [ORC-7.6, TQ1-9.1], table: urgency, default: routine}
      patient.identifiers:                              # a list: one item per repetition
        each: PID-3[*]
        fields: {id: PID-3.1, authority: PID-3.4, type: PID-3.5}

A value spec is a path, a list of alternatives, or a mapping with `path` /
`value` (literal) / `concat` (list of specs joined) / `each` (+ `where`, `path`
or `concat`; first match, or all joined with `join`), then `when` (conditions,
else no value), `transform` (one name or a list: date, timestamp, phone,
digits, trim, upper, lower, {regex: PATTERN}), `table`, `default`, `all`
(every value as a list, for `extras`). Inside `each: DG1[*]` a path naming DG1
reads the current DG1; inside `each: PID-3[*]` a path `PID-3.4` reads the
current repetition. A condition is `{path, equals|in|not_in|matches|exists}`
(equals/in compare case-insensitively), a list of them (all), or `{any: [...]}`.
A list of objects is one `{each, where, when, fields}` block or
`{distinct: true|[fields], blocks: [...]}`; items with nothing read from the
message, or missing a required field (`id`, `code`), are left out.
mappings/README.md is the analysts' reference.

Contract: `Mappings.load(folder)` compiles every *.yaml there or raises
`MappingError` whose `problems` each read `FILE:LINE: KEY: what is wrong`.
`Mappings.map(text, message_type=None) -> Mapped` (or `map_parsed(message,
message_type)` for an already parsed message) raises `NoMapping` when no
file handles the type or no event rule matches, `MappingError` when the output
does not validate (naming the file, line and field), `ParseError` for text
that is not HL7. Files are re-checked at most once per `reload_interval`
(one stat per file); a file that fails to reload keeps its last good version
and its problems are in `Mappings.problems`.
"""
from __future__ import annotations

import logging
import os
import re
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ValidationError

from engine.hl7v2.parse import (
    HL7Path, Message, PathError, Segment, compile_path, component, first, first_in_segment, parse, repetitions,
    segment_values, unescape, values,
)
from engine.normalized import EventKind, Mapped

log = logging.getLogger("engine.mapping")

EVENTS = frozenset(typing.get_args(EventKind))


class MappingError(Exception):
    """Problems in mapping files (or output that does not validate); `problems` are `FILE:LINE: KEY: ...`."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class NoMapping(LookupError):
    """The message is not mapped: no file handles its type, or no event rule of that file matches."""

    def __init__(self, message_type: str, reason: str):
        super().__init__(f"no mapping for {message_type}: {reason}")
        self.message_type = message_type
        self.reason = reason


# ---- YAML with line numbers ------------------------------------------------

class _Map(dict):
    line: int = 0
    key_lines: dict


class _List(list):
    line: int = 0


def _load_yaml(text: str) -> Any:
    def convert(node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            out = _Map()
            out.line = node.start_mark.line + 1
            out.key_lines = {}
            for key_node, value_node in node.value:
                key = key_node.value
                out[key] = convert(value_node)
                out.key_lines[key] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            out = _List(convert(item) for item in node.value)
            out.line = node.start_mark.line + 1
            return out
        if node.style is None:       # plain scalars stay strings (HL7 codes like NO, 1, 2.5), but for these
            if node.value.lower() in ("true", "false"):
                return node.value.lower() == "true"
            if node.value in ("", "~", "null", "Null", "NULL"):
                return None
        return node.value
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    return None if root is None else convert(root)


def _line(container: Any, key: Any = None) -> int:
    if isinstance(container, _Map) and key in container.key_lines:
        return container.key_lines[key]
    return getattr(container, "line", 0)


class _Problem(Exception):
    def __init__(self, line: int, key: str, text: str):
        super().__init__(text)
        self.line, self.key, self.text = line, key, text


# ---- compiled specs ----------------------------------------------------------

@dataclass(slots=True)
class _Ctx:
    message: Message
    segment: Segment | None = None
    rep: str | None = None
    rep_path: HL7Path | None = None


def _read(ctx: _Ctx, path: HL7Path, keep_empty: bool = False) -> list[str]:
    """Values of `path`, relative to the current repetition/segment when it names them."""
    if (ctx.rep is not None and path.seg == ctx.rep_path.seg and path.field == ctx.rep_path.field
            and path.seg_index is None and path.rep is None):
        value = component(ctx.rep, path.comp, path.sub, ctx.message)
        return [unescape(value, ctx.message)] if value or keep_empty else []
    if ctx.segment is not None and path.seg == ctx.segment.name and path.seg_index is None:
        out: list[str] = []
        segment_values(ctx.segment, path, out, keep_empty)
        return out
    return values(ctx.message, path, keep_empty)


def _first(ctx: _Ctx, path: HL7Path) -> str | None:
    """The first value of `path` in context (the hot path of every mapping: no lists built)."""
    if path.seg_index is not None or path.rep == "*" or path.field is None:
        found = _read(ctx, path)
        return found[0] if found else None
    if ctx.rep is not None and path.seg == ctx.rep_path.seg and path.field == ctx.rep_path.field \
            and path.rep is None:
        value = component(ctx.rep, path.comp, path.sub, ctx.message)
        return unescape(value, ctx.message) if value else None
    if ctx.segment is not None and path.seg == ctx.segment.name:
        return first_in_segment(ctx.segment, path)
    return first(ctx.message, path)


def _reader(path: HL7Path, scope: HL7Path | None) -> Callable[[_Ctx], str | None]:
    """A function reading the first value of `path`, specialised once for where it will be read:
    the current repetition or segment of an enclosing `each: scope`, or the whole message."""
    if path.seg_index is not None or path.rep == "*" or path.field is None:
        return lambda ctx: _first(ctx, path)
    if scope is not None and scope.field is not None and path.seg == scope.seg and path.field == scope.field \
            and path.rep is None:
        comp, sub = path.comp, path.sub

        def in_repetition(ctx: _Ctx) -> str | None:
            value = component(ctx.rep, comp, sub, ctx.message)
            return unescape(value, ctx.message) if value else None
        return in_repetition
    if scope is not None and path.seg == scope.seg:
        return lambda ctx: first_in_segment(ctx.segment, path)
    seg = path.seg

    def in_message(ctx: _Ctx) -> str | None:
        segments = ctx.message._index.get(seg)
        return first_in_segment(segments[0], path) if segments else None
    return in_message


@dataclass(slots=True)
class _Cond:
    paths: list[HL7Path]
    op: str
    operand: Any
    readers: list[Callable | None] = field(default_factory=list)   # per path; None: read every value
    first_only: bool = field(default=False, init=False)   # every path has a reader: one value to test, no list

    def __post_init__(self) -> None:
        self.first_only = bool(self.readers) and None not in self.readers

    def holds(self, ctx: _Ctx) -> bool:
        if self.op == "any":
            return any(all(c.holds(ctx) for c in group) for group in self.operand)
        if self.first_only:
            for reader in self.readers:
                value = reader(ctx)
                if value:
                    return self._test(value)
            return self.op == "not_in" or (self.op == "exists" and not self.operand)
        found: list[str] = []
        for p, reader in zip(self.paths, self.readers):
            if reader is not None:
                value = reader(ctx)
                if value:
                    found = [value]
                    break
                continue
            found = _read(ctx, p)
            if found:
                break
        if self.op == "exists":
            return bool(found) == self.operand
        if self.op == "not_in":
            return all(self._test(v) for v in found)
        return any(self._test(v) for v in found)

    def _test(self, value: str) -> bool:
        """The condition for one value read (not_in: this value is not in the list)."""
        if self.op == "equals":
            return value.lower() == self.operand
        if self.op == "in":
            return value.lower() in self.operand
        if self.op == "not_in":
            return value.lower() not in self.operand
        if self.op == "exists":
            return self.operand
        return self.operand.search(value) is not None


@dataclass(slots=True)
class _Table:
    exact: dict[str, Any]
    folded: dict[str, Any]
    otherwise: Any = None
    keep: bool = False

    def look(self, value: str) -> Any:
        if value in self.exact:
            return self.exact[value]
        folded = self.folded.get(value.strip().lower(), _MISSING)
        if folded is not _MISSING:
            return folded
        return value if self.keep else self.otherwise


_MISSING = object()
_EMPTY = (None, "", [])     # values that say nothing (a literal with [] in it would be rebuilt at every test)


@dataclass(slots=True)
class _Value:
    """How one normalized value is read. Evaluates to a str/int/list or None."""
    paths: list[Any] = field(default_factory=list)     # alternatives: HL7Path | _Value
    literal: Any = None
    concat: list["_Value"] | None = None
    each: HL7Path | None = None
    where: list[_Cond] = field(default_factory=list)
    join: str | None = None
    when: list[_Cond] = field(default_factory=list)
    transforms: list[Callable[[str], str | None]] = field(default_factory=list)
    table: _Table | None = None
    default: Any = None
    all: bool = False
    from_message: bool = True
    readers: list[Callable[[_Ctx], Any]] = field(default_factory=list)   # one per alternative in `paths`
    plain: bool = False        # only alternatives to read: no each/when/transform/table/default (most fields)
    fn: Callable[[_Ctx], Any] | None = None   # what to call: `evaluate`, or a shortcut chosen by `seal`

    def seal(self) -> "_Value":
        """Choose `fn` once per compiled file: the lone reader of a plain value, the value of a literal
        (transforms and tables are pure, so it is computed here), `_read_and_finish` for paths with
        transforms/table/default/when (most of the rest), else the general `evaluate`."""
        self.plain = (self.literal is None and self.concat is None and self.each is None and not self.when
                      and not self.transforms and self.table is None and self.default is None and not self.all
                      and self.join is None)
        self.fn = self.evaluate
        if self.plain and len(self.readers) == 1:
            self.fn = self.readers[0]
        elif self.literal is not None and self.each is None and not self.when:
            constant = self.evaluate(None)      # reads nothing from the message
            if constant is None or isinstance(constant, (str, int, float)):     # immutable: safe to share
                self.fn = lambda ctx: constant
        elif (self.literal is None and self.concat is None and self.each is None and not self.all
              and self.join is None and all(isinstance(p, HL7Path) for p in self.paths)):
            self.fn = self._read_and_finish
        return self

    def _read_and_finish(self, ctx: _Ctx) -> Any:
        """`evaluate` for alternatives that are all paths (each reader gives one str or None)."""
        for c in self.when:
            if not c.holds(ctx):
                return None
        for reader in self.readers:
            value = reader(ctx)
            if value:
                value = self._finish(value)
                return self.default if value in (None, "") else value
        return self.default

    def evaluate(self, ctx: _Ctx) -> Any:
        if self.plain:
            for reader in self.readers:
                value = reader(ctx)
                if value not in _EMPTY:
                    return value
            return None
        if self.when and not all(c.holds(ctx) for c in self.when):
            return None
        if self.each is not None and self.join is None:
            # first (or, with all, every) item whose finished value is not empty
            found = []
            for item in _each(ctx, self.each, self.where):
                value = self._finish(self._inner(item))
                if value not in (None, ""):
                    if not self.all:
                        return value
                    found.append(value)
            return found or self.default
        found = self._raw(ctx)
        if isinstance(found, list):
            found = [v for v in (self._finish(x) for x in found) if v not in (None, "")]
            return found or self.default
        value = self._finish(found) if found not in (None, "") else None
        return self.default if value in (None, "") else value

    def _finish(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        for transform in self.transforms:
            value = transform(value)
            if value is None:
                return None
        if self.table is not None:
            value = self.table.look(value)
        return value

    def _raw(self, ctx: _Ctx) -> Any:
        if self.literal is not None:
            return self.literal
        if self.each is not None:        # with join: every item, blank ones too (lines of a note)
            return self.join.join(self._inner(sub) or "" for sub in _each(ctx, self.each, self.where))
        return self._inner(ctx)

    def _inner(self, ctx: _Ctx) -> Any:
        if self.concat is not None:
            sep = self.join if self.join is not None and self.each is None else ""
            return sep.join(str(v) for v in (c.fn(ctx) for c in self.concat) if v not in (None, ""))
        if not self.all and (self.join is None or self.each is not None):
            for reader in self.readers:
                value = reader(ctx)
                if value not in _EMPTY:
                    return value
            return None
        for alt in self.paths:
            if isinstance(alt, _Value):
                got = alt.evaluate(ctx)
                if got not in _EMPTY:
                    return got
                continue
            found = _read(ctx, alt, keep_empty=False)
            if found:
                if self.all:
                    return found
                if self.join is not None and self.each is None and self.concat is None:
                    return self.join.join(found)
                return found[0]
        return None


def _each(ctx: _Ctx, path: HL7Path, where: list[_Cond]) -> list[_Ctx]:
    """One context per segment (`DG1[*]`) or per repetition (`PID-3[*]`, `PRD-5`) that passes `where`."""
    out: list[_Ctx] = []
    if path.field is None:
        segments = ctx.message.segments_named(path.seg)
        if path.seg_index not in (None, "*"):
            segments = segments[path.seg_index - 1:path.seg_index]
        candidates = [_Ctx(ctx.message, s) for s in segments]
    else:
        if ctx.segment is not None and ctx.segment.name == path.seg and path.seg_index is None:
            segments = [ctx.segment]
        else:
            segments = ctx.message.segments_named(path.seg)
            segments = segments[:1] if path.seg_index is None else (
                segments if path.seg_index == "*" else segments[path.seg_index - 1:path.seg_index])
        candidates = []
        for s in segments:
            reps = repetitions(s, path.field)
            if isinstance(path.rep, int):
                reps = reps[path.rep - 1:path.rep]
            candidates += [_Ctx(ctx.message, s, r, path) for r in reps]
    return [c for c in candidates if all(w.holds(c) for w in where)] if where else candidates


@dataclass(slots=True)
class _ListSpec:
    """A list of objects (identifiers, diagnoses, providers...): blocks of `each` + `fields`, concatenated."""
    blocks: list[tuple[HL7Path, list[_Cond], list[_Cond], dict[str, _Value]]]
    required: tuple[str, ...]
    distinct: bool | list[str]      # True: drop repeated items; [fields]: drop items repeating those
    _readers: list[tuple] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        """Per block, what to call for each field: (name, spec.fn, spec.from_message), looked up once."""
        self._readers = [tuple((name, spec.fn, spec.from_message) for name, spec in fields.items())
                         for _, _, _, fields in self.blocks]

    def evaluate(self, ctx: _Ctx) -> list[dict]:
        out: list[dict] = []
        for (each, where, when, _), readers in zip(self.blocks, self._readers):
            if when and not all(c.holds(ctx) for c in when):
                continue
            for item_ctx in _each(ctx, each, where):
                item: dict[str, Any] = {}
                real = False
                for name, read, from_message in readers:
                    value = read(item_ctx)
                    if value not in _EMPTY:
                        item[name] = value
                        real = real or from_message
                if not real or any(r not in item for r in self.required):
                    continue
                if self.distinct is True and item in out:
                    continue
                if isinstance(self.distinct, list):
                    key = [item.get(k) for k in self.distinct]
                    if any([o.get(k) for k in self.distinct] == key for o in out):
                        continue
                out.append(item)
        return out


# ---- transforms --------------------------------------------------------------

_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d+)?([+-]\d{4})?$")


def _dtm(value: str) -> re.Match | None:
    """An HL7 DTM/DT with at least a day, month 1-12 and day 1-31; else None (the field is left empty)."""
    m = _DTM.match(value.strip())
    if not m or not m[3] or not ("01" <= m[2] <= "12") or not ("01" <= m[3] <= "31"):
        return None
    return m


def _date(value: str) -> str | None:
    m = _dtm(value)
    return f"{m[1]}-{m[2]}-{m[3]}" if m else None


def _timestamp(value: str) -> str | None:
    m = _dtm(value)
    if not m:
        return None
    out = f"{m[1]}-{m[2]}-{m[3]}"
    if m[4]:
        out += f"T{m[4]}:{m[5] or '00'}:{m[6] or '00'}"
        if m[8]:
            out += f"{m[8][:3]}:{m[8][3:]}"
    return out


def _phone(value: str) -> str | None:
    digits = re.sub(r"\D", "", value)
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    return digits if len(digits) == 10 else (value.strip() or None)


TRANSFORMS: dict[str, Callable[[str], str | None]] = {
    "date": _date, "timestamp": _timestamp, "phone": _phone,
    "digits": lambda v: re.sub(r"\D", "", v) or None,
    "trim": lambda v: v.strip(), "upper": lambda v: v.upper(), "lower": lambda v: v.lower(),
}


def _regex_transform(pattern: re.Pattern) -> Callable[[str], str | None]:
    def apply(value: str) -> str | None:
        m = pattern.search(value)
        if not m:
            return None
        return next((g for g in m.groups() if g is not None), m.group(0)) if m.groups() else m.group(0)
    return apply


# ---- targets -----------------------------------------------------------------

def _target(dotted: str) -> tuple[str, type[BaseModel] | None]:
    """('scalar' | 'objects' | 'extras', item model) for a dotted Mapped field, or raise ValueError."""
    model: type[BaseModel] = Mapped
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None or part == "event":
            valid = ", ".join(k for k in model.model_fields if k != "event")
            raise ValueError(f"{part!r} is not a field of {model.__name__}; valid: {valid}")
        if part == "extras" and model is Mapped:
            if len(parts) != 2:
                raise ValueError("write extras.NAME (one level)")
            return "extras", None
        models = [a for a in _flat_args(info.annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        is_list = typing.get_origin(info.annotation) is list
        last = i == len(parts) - 1
        if last:
            if is_list and models:
                return "objects", models[0]
            if models:
                raise ValueError(f"{dotted!r} is an object; map its fields, e.g. {dotted}."
                                 f"{next(iter(models[0].model_fields))}")
            return "scalar", None
        if not models or is_list:
            raise ValueError(f"{'.'.join(parts[:i + 1])!r} has no fields")
        model = models[0]
    raise ValueError(f"empty field name {dotted!r}")


def _flat_args(annotation: Any) -> list:
    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    return [x for a in args for x in _flat_args(a)]


# ---- compiling one file ------------------------------------------------------

_VALUE_KEYS = {"path", "value", "concat", "each", "where", "join", "when", "transform", "table", "default", "all"}
_COND_OPS = ("equals", "in", "not_in", "matches", "exists", "any")


class _Compiler:
    def __init__(self, tables: dict[str, _Table]):
        self.tables = tables
        self.scope: HL7Path | None = None      # the enclosing `each:` while compiling inside it

    def readers(self, alternatives: list[Any]) -> list[Callable]:
        return [alt.fn if isinstance(alt, _Value) else _reader(alt, self.scope) for alt in alternatives]

    def path(self, raw: Any, line: int, key: str) -> HL7Path:
        if not isinstance(raw, str):
            raise _Problem(line, key, f"expected an HL7 path like PID-5.1, got {raw!r}")
        try:
            return compile_path(raw)
        except PathError as exc:
            raise _Problem(line, key, str(exc)) from None

    def conditions(self, raw: Any, line: int, key: str) -> list[_Cond]:
        items = raw if isinstance(raw, list) else [raw]
        return [self.condition(c, _line(c) or line, f"{key}[{i}]" if isinstance(raw, list) else key)
                for i, c in enumerate(items)]

    def condition(self, raw: Any, line: int, key: str) -> _Cond:
        if not isinstance(raw, dict):
            raise _Problem(line, key, "a condition is {path: ..., equals|in|not_in|matches|exists: ...} "
                                      "or {any: [...]}")
        ops = [op for op in _COND_OPS if op in raw]
        extra = set(raw) - set(_COND_OPS) - {"path"}
        if extra:
            raise _Problem(line, key, f"unknown key(s) {', '.join(sorted(extra))}; valid: path, "
                                      + ", ".join(_COND_OPS))
        if len(ops) != 1:
            raise _Problem(line, key, "a condition needs exactly one of: " + ", ".join(_COND_OPS))
        op = ops[0]
        operand = raw[op]
        if op == "any":
            if not isinstance(operand, list):
                raise _Problem(line, key, "any: expects a list of conditions")
            return _Cond([], "any", [self.conditions(c, _line(c) or line, f"{key}.any[{i}]")
                                     for i, c in enumerate(operand)])
        if "path" not in raw:
            raise _Problem(line, key, "a condition needs a path")
        alts = raw["path"] if isinstance(raw["path"], list) else [raw["path"]]
        paths = [self.path(p, _line(raw, "path"), f"{key}.path") for p in alts]
        readers = [None if p.seg_index is not None or p.rep == "*" or p.field is None else _reader(p, self.scope)
                   for p in paths]
        if op in ("in", "not_in"):
            if not isinstance(operand, list):
                raise _Problem(_line(raw, op), f"{key}.{op}", "expects a list of values")
            operand = {str(v).lower() for v in operand}
        elif op == "equals":
            operand = str(operand).lower()
        elif op == "exists":
            if not isinstance(operand, bool):
                raise _Problem(_line(raw, op), f"{key}.exists", "expects true or false")
        else:
            try:
                operand = re.compile(str(operand))
            except re.error as exc:
                raise _Problem(_line(raw, op), f"{key}.matches", f"not a valid regular expression: {exc}") from None
        return _Cond(paths, op, operand, readers)

    def value(self, raw: Any, line: int, key: str) -> _Value:
        outer = self.scope
        try:
            spec = self._value(raw, line, key)
            spec.readers = self.readers(spec.paths)      # in the scope of the spec's own each:, if any
        finally:
            self.scope = outer
        return spec.seal()

    def _value(self, raw: Any, line: int, key: str) -> _Value:
        if isinstance(raw, str):
            return _Value(paths=[self.path(raw, line, key)])
        if isinstance(raw, list):
            if not raw:
                raise _Problem(line, key, "an empty list of alternatives")
            alts: list[Any] = []
            for i, alt in enumerate(raw):
                if isinstance(alt, str):
                    alts.append(self.path(alt, _line(raw) or line, f"{key}[{i}]"))
                else:
                    alts.append(self.value(alt, _line(alt) or line, f"{key}[{i}]"))
            return _Value(paths=alts)
        if not isinstance(raw, dict):
            raise _Problem(line, key, f"expected a path, a list of alternatives or a mapping, got {raw!r}")
        extra = set(raw) - _VALUE_KEYS
        if extra:
            raise _Problem(line, key, f"unknown key(s) {', '.join(sorted(extra))}; valid: "
                                      + ", ".join(sorted(_VALUE_KEYS)))
        sources = [k for k in ("path", "value", "concat") if k in raw]
        if len(sources) != 1:
            raise _Problem(line, key, "a value needs exactly one of: path, value, concat")
        spec = _Value()
        if "when" in raw:                      # read where the value is, before any each: of its own
            spec.when = self.conditions(raw["when"], _line(raw, "when"), f"{key}.when")
        if "each" in raw:                      # then: paths inside are read relative to it
            spec.each = self.path(raw["each"], _line(raw, "each"), f"{key}.each")
            self.scope = spec.each
        if "value" in raw:
            spec.literal = raw["value"]
            spec.from_message = False
        elif "concat" in raw:
            parts = raw["concat"]
            if not isinstance(parts, list):
                raise _Problem(_line(raw, "concat"), f"{key}.concat", "expects a list")
            spec.concat = [self.value(p, _line(raw, "concat"), f"{key}.concat[{i}]") for i, p in enumerate(parts)]
        else:
            spec.paths = self.value(raw["path"], _line(raw, "path"), f"{key}.path").paths
        if "where" in raw:
            if spec.each is None:
                raise _Problem(_line(raw, "where"), f"{key}.where", "where: needs each:")
            spec.where = self.conditions(raw["where"], _line(raw, "where"), f"{key}.where")
        if "join" in raw:
            spec.join = str(raw["join"])
        spec.all = bool(raw.get("all", False))
        spec.default = raw.get("default")
        if "transform" in raw:
            spec.transforms = self.transforms(raw["transform"], _line(raw, "transform"), f"{key}.transform")
        if "table" in raw:
            name = raw["table"]
            if name not in self.tables:
                raise _Problem(_line(raw, "table"), f"{key}.table", f"no table {name!r} in this file; tables: "
                                                                    + (", ".join(self.tables) or "none"))
            spec.table = self.tables[name]
        return spec

    def transforms(self, raw: Any, line: int, key: str) -> list[Callable]:
        out = []
        for item in raw if isinstance(raw, list) else [raw]:
            if isinstance(item, dict) and set(item) == {"regex"}:
                try:
                    out.append(_regex_transform(re.compile(str(item["regex"]))))
                except re.error as exc:
                    raise _Problem(line, key, f"not a valid regular expression: {exc}") from None
            elif isinstance(item, str) and item in TRANSFORMS:
                out.append(TRANSFORMS[item])
            else:
                raise _Problem(line, key, f"unknown transform {item!r}; valid: {', '.join(TRANSFORMS)}, "
                                          "{regex: PATTERN}")
        return out

    def objects(self, raw: Any, line: int, key: str, model: type[BaseModel]) -> _ListSpec:
        distinct: bool | list[str] = False
        if isinstance(raw, dict) and "blocks" in raw:
            distinct = raw.get("distinct", False)
            if isinstance(distinct, str):
                distinct = [distinct]
            if isinstance(distinct, list) and not all(d in model.model_fields for d in distinct):
                raise _Problem(_line(raw, "distinct"), f"{key}.distinct", "true, or field names of "
                               f"{model.__name__}: " + ", ".join(model.model_fields))
            extra = set(raw) - {"blocks", "distinct"}
            if extra:
                raise _Problem(line, key, f"unknown key(s) {', '.join(sorted(extra))}; valid: blocks, distinct")
            raw = raw["blocks"]
        blocks_raw = raw if isinstance(raw, list) else [raw]
        blocks = []
        for i, block in enumerate(blocks_raw):
            bkey = f"{key}[{i}]" if isinstance(raw, list) else key
            bline = _line(block) or line
            if not isinstance(block, dict) or "each" not in block or "fields" not in block:
                raise _Problem(bline, bkey, f"a list of {model.__name__} needs each: (segments or repetitions) "
                                            "and fields:")
            extra = set(block) - {"each", "where", "when", "fields"}
            if extra:
                raise _Problem(bline, bkey, f"unknown key(s) {', '.join(sorted(extra))}; valid: each, where, "
                                            "when, fields")
            when = self.conditions(block["when"], _line(block, "when"), f"{bkey}.when") if "when" in block else []
            each = self.path(block["each"], _line(block, "each"), f"{bkey}.each")
            outer, self.scope = self.scope, each
            try:
                where = self.conditions(block["where"], _line(block, "where"), f"{bkey}.where") \
                    if "where" in block else []
                fields = self._fields(block, bkey, model)
            finally:
                self.scope = outer
            blocks.append((each, where, when, fields))
        required = tuple(n for n, f in model.model_fields.items() if f.is_required())
        return _ListSpec(blocks, required, distinct)

    def _fields(self, block: dict, bkey: str, model: type[BaseModel]) -> dict[str, _Value]:
        fields_raw = block["fields"]
        if not isinstance(fields_raw, dict):
            raise _Problem(_line(block, "fields"), f"{bkey}.fields", "expects a mapping of field: value")
        fields = {}
        for name, spec in fields_raw.items():
            fline = _line(fields_raw, name)
            if name not in model.model_fields:
                raise _Problem(fline, f"{bkey}.fields.{name}", f"not a field of {model.__name__}; valid: "
                                                               + ", ".join(model.model_fields))
            fields[name] = self.value(spec, fline, f"{bkey}.fields.{name}")
        return fields


@dataclass(slots=True)
class _Rule:
    types: tuple[str, ...]
    when: list[_Cond]
    event: str


@dataclass
class MappingFile:
    """One compiled mapping file."""
    path: Path
    handles: tuple[str, ...]
    rules: list[_Rule]
    fields: dict[str, tuple[str, Any, int]]     # dotted target -> (kind, spec, line)

    def __post_init__(self) -> None:
        self._plan = [(tuple(t.split(".")[:-1]), t.split(".")[-1],
                       spec.fn if isinstance(spec, _Value) else spec.evaluate)
                      for t, (_, spec, _) in self.fields.items()]

    def event_for(self, ctx: _Ctx, message_type: str) -> str | None:
        family = message_type.split("^", 1)[0]
        for rule in self.rules:
            if rule.types and message_type not in rule.types and family not in rule.types:
                continue
            if all(c.holds(ctx) for c in rule.when):
                return rule.event
        return None

    def apply(self, message: Message, message_type: str) -> Mapped:
        ctx = _Ctx(message)
        event = self.event_for(ctx, message_type)
        if event is None:
            raise NoMapping(message_type, f"no rule under events: in {self.path} matches this message")
        out: dict[str, Any] = {"event": event, "message_type": message_type}
        if event == "ignored":
            return Mapped.model_validate(out)
        for parents, leaf, evaluate in self._plan:
            value = evaluate(ctx)
            if value is None or value == "" or value == []:
                continue
            node = out
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        try:
            return Mapped.model_validate(out)
        except ValidationError as exc:
            raise MappingError([self._explain(e) for e in exc.errors()]) from None

    def _explain(self, error: dict) -> str:
        loc = [str(p) for p in error["loc"] if not isinstance(p, int)]
        line, key = 1, ".".join(loc)
        for n in range(len(loc), 0, -1):
            if ".".join(loc[:n]) in self.fields:
                key = ".".join(loc[:n])
                line = self.fields[key][2]
                break
        got = error.get("input")
        shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
        return f"{self.path}:{line}: fields.{key}: {error['msg']}{shown}"


def compile_file(path: Path) -> MappingFile:
    """Compile one mapping file; raises MappingError with every problem found (FILE:LINE: KEY: ...)."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError([f"{name}: cannot read the mapping file: {exc.strerror}"]) from None
    try:
        root = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise MappingError([f"{name}:{mark.line + 1 if mark else 1}: not valid YAML: "
                            f"{getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(root, dict):
        raise MappingError([f"{name}:1: a mapping file is a mapping with keys handles, events, tables, fields"])
    problems: list[str] = []

    def problem(p: _Problem) -> None:
        problems.append(f"{name}:{p.line}: {p.key}: {p.text}")

    extra = set(root) - {"handles", "events", "tables", "fields", "description"}
    for key in sorted(extra):
        problem(_Problem(_line(root, key), key, "unknown key; valid: handles, events, tables, fields, description"))
    handles = root.get("handles")
    if isinstance(handles, str):
        handles = [handles]
    if not handles or not isinstance(handles, list) or not all(isinstance(h, str) for h in handles):
        problem(_Problem(_line(root, "handles") or 1, "handles",
                         "required: a list of message types like [ORM^O01, OMG^O19] or [SIU]"))
        handles = []
    tables: dict[str, _Table] = {}
    for tname, traw in (root.get("tables") or {}).items():
        tline = _line(root["tables"], tname)
        if isinstance(traw, dict) and "map" in traw:
            extra_t = set(traw) - {"map", "otherwise"}
            if extra_t or not isinstance(traw["map"], dict):
                problem(_Problem(tline, f"tables.{tname}", "a table is {map: {CODE: value}, otherwise: value|keep}"
                                                           " or just {CODE: value}"))
                continue
            entries, otherwise = traw["map"], traw.get("otherwise")
        elif isinstance(traw, dict):
            entries, otherwise = traw, None
        else:
            problem(_Problem(tline, f"tables.{tname}", "a table is a mapping {CODE: value}"))
            continue
        exact = {str(k): v for k, v in entries.items()}
        tables[tname] = _Table(exact, {k.strip().lower(): v for k, v in exact.items()},
                               None if otherwise == "keep" else otherwise, otherwise == "keep")
    compiler = _Compiler(tables)
    rules: list[_Rule] = []
    events = root.get("events")
    if not isinstance(events, list) or not events:
        problem(_Problem(_line(root, "events") or 1, "events",
                         "required: a list of rules like {event: referral.order, when: ...}"))
        events = []
    for i, rule in enumerate(events):
        key, line = f"events[{i}]", _line(rule) or _line(events)
        try:
            if not isinstance(rule, dict) or "event" not in rule:
                raise _Problem(line, key, "a rule needs event: (and optionally type:, when:)")
            extra_r = set(rule) - {"event", "type", "when"}
            if extra_r:
                raise _Problem(line, key, f"unknown key(s) {', '.join(sorted(extra_r))}; valid: event, type, when")
            if rule["event"] not in EVENTS:
                raise _Problem(_line(rule, "event"), f"{key}.event",
                               f"unknown event {rule['event']!r}; valid: {', '.join(sorted(EVENTS))}")
            types = rule.get("type") or []
            types = tuple([types] if isinstance(types, str) else types)
            when = compiler.conditions(rule["when"], _line(rule, "when"), f"{key}.when") if "when" in rule else []
            rules.append(_Rule(types, when, rule["event"]))
        except _Problem as p:
            problem(p)
    fields: dict[str, tuple[str, Any, int]] = {}
    fields_raw = root.get("fields") or {}
    if not isinstance(fields_raw, dict):
        problem(_Problem(_line(root, "fields"), "fields", "expects a mapping of normalized field: HL7 value"))
        fields_raw = {}
    for target, raw in fields_raw.items():
        line = _line(fields_raw, target)
        key = f"fields.{target}"
        try:
            try:
                kind, model = _target(str(target))
            except ValueError as exc:
                raise _Problem(line, key, str(exc)) from None
            spec = compiler.objects(raw, line, key, model) if kind == "objects" else compiler.value(raw, line, key)
            fields[str(target)] = (kind, spec, line)
        except _Problem as p:
            problem(p)
    if problems:
        raise MappingError(problems)
    return MappingFile(path, tuple(handles), rules, fields)


# ---- the folder ----------------------------------------------------------------

class Mappings:
    """Every mapping file of one folder, reloaded when a file changes (checked at most once per interval)."""

    def __init__(self, folder: str | os.PathLike, reload_interval: float = 1.0):
        self.folder = Path(folder)
        self.reload_interval = reload_interval
        self.problems: list[str] = []
        self._files: dict[Path, tuple[tuple[int, int], MappingFile | None]] = {}
        self._file_problems: dict[Path, list[str]] = {}
        self._by_type: dict[str, MappingFile] = {}
        self._checked = 0.0

    @classmethod
    def load(cls, folder: str | os.PathLike, reload_interval: float = 1.0) -> "Mappings":
        """Compile every *.yaml/*.yml in `folder`; MappingError lists every problem of every file."""
        mappings = cls(folder, reload_interval)
        mappings.refresh(force=True)
        if mappings.problems:
            raise MappingError(mappings.problems)
        return mappings

    def _stat(self) -> dict[Path, tuple[int, int]]:
        try:
            entries = list(os.scandir(self.folder))
        except OSError as exc:
            raise MappingError([f"{self.folder}: cannot read the mappings folder: {exc.strerror}"]) from None
        out = {}
        for entry in entries:
            if entry.name.endswith((".yaml", ".yml")) and not entry.name.startswith("."):
                st = entry.stat()
                out[Path(entry.path)] = (st.st_mtime_ns, st.st_size)
        return out

    def refresh(self, force: bool = False) -> bool:
        """Recompile changed files; returns True when something changed. Cheap when nothing did."""
        now = time.monotonic()
        if not force and now - self._checked < self.reload_interval:
            return False
        self._checked = now
        seen = self._stat()
        changed = False
        for path in sorted(seen):
            stamp = seen[path]
            old = self._files.get(path)
            if old is not None and old[0] == stamp:
                continue
            changed = True
            try:
                compiled: MappingFile | None = compile_file(path)
                self._file_problems.pop(path, None)
            except MappingError as exc:
                self._file_problems[path] = exc.problems
                compiled = old[1] if old else None      # keep the last good version
                if old is not None:
                    log.warning("mapping file has errors; keeping its previous version",
                                extra={"fields": {"file": str(path), "problems": exc.problems}})
            self._files[path] = (stamp, compiled)
        for gone in set(self._files) - set(seen):
            del self._files[gone]
            self._file_problems.pop(gone, None)
            changed = True
        if changed:
            self._index()
        return changed

    def _index(self) -> None:
        by_type: dict[str, MappingFile] = {}
        problems = [p for path in sorted(self._file_problems) for p in self._file_problems[path]]
        for path, (_, compiled) in sorted(self._files.items()):
            if compiled is None:
                continue
            for handled in compiled.handles:
                other = by_type.get(handled)
                if other is not None:
                    problems.append(f"{path}:1: handles: {handled} is already handled by {other.path}")
                    continue
                by_type[handled] = compiled
        self._by_type = by_type
        self.problems = problems

    def file_for(self, message_type: str) -> MappingFile | None:
        return self._by_type.get(message_type) or self._by_type.get(message_type.split("^", 1)[0])

    def map(self, text: str, message_type: str | None = None) -> Mapped:
        """Parse and map one message. Raises NoMapping, MappingError or engine.hl7v2.parse.ParseError."""
        return self.map_parsed(parse(text), message_type)

    def map_parsed(self, message: Message, message_type: str | None = None) -> Mapped:
        """Map an already parsed message (see `map`)."""
        self.refresh()
        if not message_type:
            code = values(message, compile_path("MSH-9.1"))
            trigger = values(message, compile_path("MSH-9.2"))
            message_type = "^".join(code[:1] + trigger[:1]) or "(none)"
        mapping = self.file_for(message_type)
        if mapping is None:
            raise NoMapping(message_type, f"no file in {self.folder} lists it under handles:")
        return mapping.apply(message, message_type)

