"""The split-based parser against python-hl7 as an oracle, and its escapes, separators and errors.

For every sample message and every path shape (field, repetition, component,
subcomponent, on every segment), `get_all` must equal what python-hl7 extracts
and unescapes. python-hl7 is given an escape map for the formatting sequences
where this parser differs on purpose (\\.br\\ -> newline, \\H\\/\\N\\ dropped).
"""
from __future__ import annotations

from pathlib import Path

import hl7
import pytest

from engine.hl7v2 import prepare, split_frame
from engine.hl7v2.parse import ParseError, PathError, get, get_all, parse

SAMPLES = Path(__file__).resolve().parent.parent / "sample_messages"
FORMATTING = {"H": "", "N": "", ".br": "\n", ".sp": "\n", ".ce": "\n", ".in": "", ".ti": "", ".sk": "",
              ".fi": "", ".nf": ""}


def sample_texts() -> list[tuple[str, str]]:
    out = []
    for path in sorted(SAMPLES.glob("*.hl7")):
        raw = prepare(path.read_bytes())
        encoding = "latin-1" if "latin1" in path.name else "utf-8"
        messages, _ = split_frame(raw)
        for i, message in enumerate(messages):
            out.append((f"{path.name}#{i}", message.decode(encoding)))
    return out


def oracle_get_all(message: hl7.Message, path: str) -> list[str]:
    """The previous python-hl7 implementation of get_all, kept as the reference."""
    from engine.hl7v2.parse import compile_path
    p = compile_path(path)
    segments = [s for s in message if str(s[0]) == p.seg]

    def pick(spec, count):
        if spec == "*":
            return range(1, count + 1)
        n = spec or 1
        return range(n, n + 1) if 1 <= n <= count else range(0)

    def reps(segment, field_num):
        if field_num >= len(segment):
            return 0
        field = segment[field_num]
        if isinstance(field, hl7.Field) and field and all(isinstance(r, hl7.Repetition) for r in field):
            return len(field)
        return 1

    out = []
    for seg_num in pick(p.seg_index, len(segments)):
        segment = segments[seg_num - 1]
        if p.field is None:
            out.append(str(segment))
            continue
        for rep in pick(p.rep, reps(segment, p.field)):
            try:
                if p.comp:
                    value = message.extract_field(p.seg, seg_num, p.field, rep, p.comp, p.sub or 1)
                else:
                    field = segment[p.field]
                    many = isinstance(field, hl7.Field) and field and all(isinstance(r, hl7.Repetition)
                                                                          for r in field)
                    value = str(field[rep - 1]) if many else str(field)
                    value = message.unescape(value, app_map=FORMATTING) if message.esc in value else value
            except (IndexError, KeyError):
                continue
            if value:
                out.append(value)
    return out


@pytest.fixture(autouse=True)
def same_formatting_map(monkeypatch):
    """python-hl7's extract_field unescapes with its default map; give it ours for formatting sequences."""
    import hl7.containers
    original = hl7.containers.unescape
    monkeypatch.setattr(hl7.containers, "unescape", lambda container, field, app_map=None:
                        original(container, field, FORMATTING))


def paths_for(text: str) -> list[str]:
    """Every field, repetition, component and subcomponent shape present in the message (and one beyond)."""
    fsep, csep, rsep, ssep = text[3], text[4], text[5], text[7]
    shapes: dict[tuple[str, int], tuple[int, int]] = {}
    names: set[str] = set()
    for line in text.split("\r"):
        if not line:
            continue
        name = line[:3]
        names.add(name)
        fields = line.split(fsep)
        if name in ("MSH", "FHS", "BHS"):
            fields.insert(1, fsep)
        for f, value in enumerate(fields[1:], start=1):
            comps = max(len(r.split(csep)) for r in value.split(rsep))
            subs = max(len(c.split(ssep)) for r in value.split(rsep) for c in r.split(csep))
            old = shapes.get((name, f), (0, 0))
            shapes[(name, f)] = (max(old[0], comps), max(old[1], subs))
    out = [f"{name}[*]" for name in sorted(names)]
    for (name, f), (ncomps, nsubs) in sorted(shapes.items()):
        if name in ("MSH", "FHS", "BHS") and f <= 2:
            continue
        out += [f"{name}-{f}", f"{name}[*]-{f}", f"{name}[*]-{f}[*]", f"{name}[2]-{f}[2]"]
        for c in range(1, ncomps + 2):
            out.append(f"{name}[*]-{f}[*].{c}")
            for sub in range(2 if nsubs == 1 else 1, nsubs + 2):
                out.append(f"{name}[*]-{f}[*].{c}.{sub}")
    return out


@pytest.mark.parametrize("name,text", sample_texts(), ids=[n for n, _ in sample_texts()])
def test_every_value_equals_python_hl7(name, text):
    mine = parse(text)
    theirs = hl7.parse(text)
    checked = 0
    for path in paths_for(text):
        expected = oracle_get_all(theirs, path)
        assert get_all(mine, path) == expected, path
        assert get(mine, path) == (expected[0] if expected else None), path
        checked += 1
    assert checked > 100


def test_msh_1_and_2_are_the_separators_raw():
    message = parse(prepare((SAMPLES / "ORM_O01_v2.5_altsep.hl7").read_bytes()).decode())
    assert get(message, "MSH-1") == "#"
    assert get(message, "MSH-2") == "@~\\&"
    assert get(message, "MSH-9") == "ORM@O01@ORM_O01"
    assert get(message, "MSH-9.2") == "O01"
    assert get(message, "PID-11.2") == "APT #4B"                 # \F\ is the field separator, here '#'
    assert get(message, "PID-13[2].4") == "mhtrent@example.org"  # \S\ the component separator, '@'


def test_escape_sequences():
    text = ("MSH|^~\\&|A|B|C|D|20250101||ORU^R01|1|P|2.5\r"
            "OBX|1|FT|X||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\g\\X41\\\\Xc3a9\\\\H\\bold\\N\\|\r"
            "NTE|1||unterminated \\F")
    message = parse(text)
    assert get(message, "OBX-5") == "a|b^c&d~e\\f\ngAébold"
    assert get(message, "NTE-3") == "unterminated \\F"


def test_a_short_encoding_field_keeps_the_default_subcomponent_separator():
    message = parse("MSH|^~\\|A|B\rPID|1||12^^^X&Y^MR~34^^^Z^MR")
    assert (message.comp_sep, message.rep_sep, message.esc, message.sub_sep) == ("^", "~", "\\", "&")
    assert get_all(message, "PID-3[*].4.2") == ["Y"]
    assert get_all(message, "PID-3[*].1") == ["12", "34"]


def test_lf_and_crlf_separated_text_parses_the_same():
    text = (SAMPLES / "SIU_S12_v2.5.1.hl7").read_text()
    for variant in (text, text.replace("\n", "\r"), text.replace("\n", "\r\n")):
        message = parse(variant)
        assert get(message, "SCH-1.1") == "PA250305-0481"
        assert len(get_all(message, "AIS[*]")) == 1


def test_unused_segments_are_not_split():
    message = parse((SAMPLES / "ORM_O01_v2.5.1_bench25.hl7").read_text())
    get(message, "PID-5.1")
    split = [s.name for s in message if s._fields is not None]
    assert split == ["PID"]


@pytest.mark.parametrize("text", ["", "PID|1||x", "MSH", "MSHA^~\\&|x", "hello world, not hl7"])
def test_text_that_is_not_hl7_raises_parse_error(text):
    with pytest.raises(ParseError):
        parse(text)


def test_a_malformed_path_raises_path_error():
    with pytest.raises(PathError) as caught:
        get(parse("MSH|^~\\&|A\rPID|1"), "PID-3.1.2.3")
    assert "'PID-3.1.2.3'" in str(caught.value)
