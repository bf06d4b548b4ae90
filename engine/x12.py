"""X12 5010 syntax, without I/O: build segments and interchanges, read them back, validate them.

What this module knows is the envelope and the segment grammar shared by every
transaction (270/271 eligibility, 278 prior authorization): ISA/GS/ST ... SE/GE/IEA,
delimiters, control numbers and counts. What a transaction *means* lives in
engine/eligibility.py and engine/authorization.py.

- `interchange(...)` wraps transaction segments in a complete ISA ... IEA with
  correct counts (SE01, GE01, IEA01) and matching control numbers.
- `read(text)` tokenizes an incoming interchange with pyx12's `X12Reader`
  (delimiters taken from the ISA, envelope counts and control numbers checked)
  and returns an `Interchange`; anything wrong raises `X12Error` naming the
  segment and element, e.g. `SE01: SE count of 9 for SE02=0001 is wrong. I count 11`.
- `validate(text)` runs pyx12's full validator (`x12n_document`: loops, segment
  usage and repeats, element types, lengths and code values) and returns the
  problems found, one string each (empty list = valid).

About the maps. pyx12 4.0.0 ships 5010 maps for 835/837/834/820/277/999 but **not**
for 270/271 (005010X279A1) or 278 (005010X217): those entries are commented out in
its maps.xml. `validate` therefore builds, once per process (in a temporary folder),
5010 maps derived from the 4010A1 maps pyx12 does ship for the same transactions
(X092A1, X094A1), using only pyx12's own files: the ISA/GS segments come from its 5010
control map, ST03 (implementation convention reference) is added and must name the
5010 guide, and the few 5010 code values we use are added (DTP*291, BHT01 0007,
HI ABK/ABF for ICD-10, HCR01 A2/C, DTP*AAH). For 270/271 the 4010 loops match 5010.
For 278 the 4010 hierarchy (subscriber > service provider > service) is rearranged into
the 5010 one (subscriber > patient event EV > service SS) out of the same segment
definitions, with SV1 taken from pyx12's 5010 837P map (`_reshape_x217`). So the
validation checks envelope, loops, segment order/usage/repeats, element types, lengths
and code lists, as the 4010A1 guides define them for these segments; it is not the full
5010 guide (5010-only segments or codes we do not send are unknown to it, and would be
reported, never missed). Building the maps takes ~0.3 s; validating one small
transaction ~80 ms (pyx12 reloads the map each time): start-up and tests, never per message.
"""
from __future__ import annotations

import atexit
import io
import json
import logging
import shutil
import tempfile
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from pathlib import Path

log = logging.getLogger("engine.x12")

ELEMENT, COMPONENT, REPETITION, TERMINATOR = "*", ":", "^", "~"

# The 5010 implementation guides we send and read: GS08 = ST03.
ELIGIBILITY_VERSION = "005010X279A1"
AUTHORIZATION_VERSION = "005010X217"


class X12Error(ValueError):
    """An interchange we cannot use. `where` names the segment/element (e.g. `EB01`, `SE01`,
    `ISA`), `detail` what is wrong with it; str() says both."""

    def __init__(self, where: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.where, self.detail = where, detail


def clean(value) -> str:
    """An element value: the delimiters may not appear inside data (X12 has no escape), so they become
    spaces; None is empty. Upper case, as payers expect."""
    text = "" if value is None else str(value)
    for ch in (ELEMENT, COMPONENT, REPETITION, TERMINATOR, "\r", "\n"):
        text = text.replace(ch, " ")
    return text.strip().upper()


def segment(seg_id: str, *elements) -> str:
    """One segment without its terminator; trailing empty elements are dropped (X12 forbids them).
    An element given as a tuple is a composite (joined with the component separator)."""
    values = [COMPONENT.join(clean(c) for c in e).rstrip(COMPONENT) if isinstance(e, tuple) else clean(e)
              for e in elements]
    while values and values[-1] == "":
        values.pop()
    return ELEMENT.join([seg_id, *values])


def interchange(transaction: list[str], *, functional_id: str, version: str, sender_id: str, receiver_id: str,
                control_number: int, at: datetime, production: bool = False) -> str:
    """ISA/GS/ST + `transaction` (segments from BHT on) + SE/GE/IEA, one transaction per interchange.
    `control_number` (1..999999999) is used for ISA13, GS06 and ST02, so a response echoing any of them
    finds its request."""
    if not 0 < control_number < 10 ** 9:
        raise ValueError(f"control number {control_number} out of range 1..999999999")
    isa13, gs06, st02 = f"{control_number:09d}", str(control_number), f"{control_number % 10000:04d}"
    # ISA is fixed-width: every element padded to its exact length.
    isa = ELEMENT.join(["ISA", "00", " " * 10, "00", " " * 10, "ZZ", clean(sender_id)[:15].ljust(15),
                        "ZZ", clean(receiver_id)[:15].ljust(15), at.strftime("%y%m%d"), at.strftime("%H%M"),
                        REPETITION, "00501", isa13, "0", "P" if production else "T", COMPONENT])
    if transaction and transaction[0].startswith(f"ST{ELEMENT}"):
        raise ValueError("pass the transaction from BHT on; ST/SE are added here")
    set_id = {"HS": "270", "HB": "271", "HI": "278"}[functional_id]
    body = [segment("ST", set_id, st02, version), *transaction]
    body.append(segment("SE", len(body) + 1, st02))
    out = [isa, segment("GS", functional_id, sender_id, receiver_id, at.strftime("%Y%m%d"), at.strftime("%H%M"),
                        gs06, "X", version), *body, segment("GE", 1, gs06), segment("IEA", 1, isa13)]
    return TERMINATOR.join(out) + TERMINATOR + "\n"


# ---- reading ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Segment:
    """One segment: `id` and its elements (elements[0] is the first after the id). Composites are kept
    as text; `component` splits one."""
    id: str
    elements: tuple[str, ...]
    component_separator: str = COMPONENT

    def get(self, position: int) -> str:
        """Element `position` (1-based, as in `EB01`), '' when absent."""
        return self.elements[position - 1] if 0 < position <= len(self.elements) else ""

    def component(self, position: int, sub: int) -> str:
        parts = self.get(position).split(self.component_separator)
        return parts[sub - 1] if 0 < sub <= len(parts) else ""


@dataclass(slots=True)
class Interchange:
    """A read interchange (one transaction set is what payers answer; more are read, the first is used)."""
    control_number: str              # ISA13
    group_control_number: str        # GS06
    functional_id: str               # GS01: HS 270, HB 271, HI 278
    version: str                     # GS08
    transaction_set: str             # ST01
    sender_id: str
    receiver_id: str
    segments: list[Segment] = field(default_factory=list)   # between ST and SE, ST and SE excluded

    def all(self, seg_id: str) -> list[Segment]:
        return [s for s in self.segments if s.id == seg_id]

    def first(self, seg_id: str) -> Segment | None:
        return next((s for s in self.segments if s.id == seg_id), None)


def read(text: str) -> Interchange:
    """Tokenize and envelope-check an interchange with pyx12's reader. Raises X12Error naming what is
    wrong: not X12 at all (no ISA), a broken ISA, wrong SE/GE/IEA counts or control numbers, a missing
    trailer, an empty or unnamed segment."""
    import pyx12.errors
    import pyx12.x12file
    logging.getLogger("pyx12").setLevel(logging.CRITICAL)   # its messages quote element values (PHI)
    text = (text or "").strip()
    if not text.startswith("ISA"):
        raise X12Error("ISA", f"not an X12 interchange (starts with {text[:20]!r})")
    if len(text) < 106:
        raise X12Error("ISA", f"the interchange header is cut short ({len(text)} characters; ISA alone is 106)")
    try:
        reader = pyx12.x12file.X12Reader(io.StringIO(text))
    except pyx12.errors.X12Error as exc:
        raise X12Error("ISA", str(exc)) from None
    component = reader.subele_term or COMPONENT
    values: dict[str, str] = {}
    segments: list[Segment] = []
    in_transaction = False
    problems: list[tuple[str, str]] = []
    try:
        for seg in reader:
            seg_id = seg.get_seg_id() or ""
            elements = tuple(seg.get_value(f"{seg_id}{i:02d}") or "" for i in range(1, len(seg) + 1))
            for kind, code, message, *_ in reader.pop_errors():
                problems.append((_where(kind, seg_id), message))
            if seg_id == "ISA":
                values.update(isa13=elements[12].strip(), sender=elements[5].strip(), receiver=elements[7].strip())
            elif seg_id == "GS":
                values.update(gs01=elements[0], gs06=elements[5] if len(elements) > 5 else "",
                              gs08=elements[7] if len(elements) > 7 else "")
            elif seg_id == "ST":
                values["st01"] = elements[0] if elements else ""
                in_transaction = "st_done" not in values
            elif seg_id == "SE":
                in_transaction = False
                values["st_done"] = "1"
            elif in_transaction:
                segments.append(Segment(seg_id, elements, component))
        reader.cleanup()
    except pyx12.errors.X12Error as exc:
        raise X12Error("ISA", str(exc)) from None
    for kind, code, message, *_ in reader.pop_errors():
        problems.append((_where(kind, ""), message))
    if problems:
        where, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise X12Error(where, message + more)
    if "st01" not in values:
        raise X12Error("ST", "the interchange holds no transaction set")
    return Interchange(values["isa13"], values.get("gs06", ""), values.get("gs01", ""), values.get("gs08", ""),
                       values["st01"], values.get("sender", ""), values.get("receiver", ""), segments)


def _where(kind: str, seg_id: str) -> str:
    return {"isa": "ISA/IEA", "gs": "GS/GE", "st": "ST/SE"}.get(kind, seg_id or "segment")


# ---- validation with pyx12 -------------------------------------------------------------------------

# (map pyx12 ships, functional id, 5010 version, transaction purpose (BHT02) or None)
_DERIVED = {
    "270": ("270.4010.X092.A1.xml", "HS", ELIGIBILITY_VERSION),
    "271": ("271.4010.X092.A1.xml", "HB", ELIGIBILITY_VERSION),
    "278_request": ("278.4010.X094.A1.xml", "HI", AUTHORIZATION_VERSION),
    "278_response": ("278.4010.X094.27.A1.xml", "HI", AUTHORIZATION_VERSION),
}
# Code values 5010 added to elements we send, known to be missing from the 4010A1 lists (X279A1: the
# plan date of an eligibility inquiry is DTP01 291, 4010 used 307).
_CODES_5010 = {"270": {"DTP01": ("291",)}, "271": {"DTP01": ("291", "346", "347", "356", "357")}}
_map_dirs: dict[str, str] = {}
_map_lock = threading.Lock()
_maps_root: Path | None = None


def _pyx12_map(name: str) -> bytes:
    return files("pyx12").joinpath("map", name).read_bytes()


def _derive(kind: str) -> str:
    """A map folder for one transaction kind (see the module docstring), made once per process."""
    global _maps_root
    with _map_lock:
        if kind in _map_dirs:
            return _map_dirs[kind]
        if _maps_root is None:
            _maps_root = Path(tempfile.mkdtemp(prefix="x12maps-"))
            atexit.register(shutil.rmtree, _maps_root, True)
        source, fic, version = _DERIVED[kind]
        folder = _maps_root / kind
        folder.mkdir()
        for name in ("codes.xml", "dataele.xml", "x12.control.00501.xml"):
            (folder / name).write_bytes(_pyx12_map(name))
        tree = ET.ElementTree(ET.fromstring(_pyx12_map(source)))
        control = ET.fromstring(_pyx12_map("x12.control.00501.xml"))
        root = tree.getroot()
        for seg_id in ("ISA", "GS"):
            old, new = root.find(f".//segment[@xid='{seg_id}']"), control.find(f".//segment[@xid='{seg_id}']")
            parent = root.find(f".//segment[@xid='{seg_id}']/..")
            parent[list(parent).index(old)] = new
        gs08 = root.find(".//element[@xid='GS08']/valid_codes")
        if gs08 is not None:
            ET.SubElement(gs08, "code").text = version
        st = root.find(".//segment[@xid='ST']")
        st03 = ET.SubElement(st, "element", xid="ST03")
        for tag, text in (("data_ele", "1705"), ("name", "Implementation Convention Reference"), ("usage", "R"),
                          ("seq", "03")):
            ET.SubElement(st03, tag).text = text
        ET.SubElement(ET.SubElement(st03, "valid_codes"), "code").text = version
        for xid, codes in _CODES_5010.get(kind, {}).items():
            for valid in root.findall(f".//element[@xid='{xid}']/valid_codes"):
                have = {c.text for c in valid.findall("code")}
                for code in codes:
                    if code not in have:
                        ET.SubElement(valid, "code").text = code
        if kind.startswith("278"):
            _reshape_x217(root, response=kind == "278_response")
        target = f"{kind}.5010.derived.xml"
        tree.write(folder / target, encoding="utf-8", xml_declaration=True)
        (folder / "maps.xml").write_text(
            f'<?xml version="1.0"?><maps><version icvn="00501"><map vriic="{version}" fic="{fic}" '
            f'abbr="{kind}">{target}</map></version></maps>', encoding="utf-8")
        _map_dirs[kind] = str(folder)
        return _map_dirs[kind]


def _codes(element: ET.Element, codes: tuple[str, ...], replace: bool = False) -> None:
    valid = element.find("valid_codes")
    if valid is None:
        valid = ET.SubElement(element, "valid_codes")
    if replace:
        for code in list(valid):
            valid.remove(code)
    have = {c.text for c in valid}
    for code in codes:
        if code not in have:
            ET.SubElement(valid, "code").text = code


def _loop(xid: str, name: str, usage: str, repeat: str, children: list[ET.Element]) -> ET.Element:
    loop = ET.Element("loop", xid=xid, type="explicit")
    for tag, text in (("name", name), ("usage", usage), ("pos", "010"), ("repeat", repeat)):
        ET.SubElement(loop, tag).text = text
    loop.extend(children)
    return loop


def _reshape_x217(root: ET.Element, response: bool) -> None:
    """The 4010 X094A1 hierarchy (subscriber > service provider > service) rearranged into the 5010 X217
    one (subscriber > patient event (EV) > service (SS)), reusing pyx12's own segment definitions:
    2000E takes the TRN, AAA, UM, HCR, REF, DTP and MSG of the 4010 service level and the diagnoses (HI)
    of the 4010 subscriber level; 2010EA is the 4010 service provider name; 2000F keeps the service level
    and gains SV1 (from pyx12's 5010 837P map, only the procedure, units and quantity required).
    5010 codes: BHT01 0007, HI ABK/ABF (ICD-10), HCR01 A2/C, DTP*AAH (certification dates)."""
    from copy import deepcopy
    c = root.find(".//loop[@xid='2000C']")
    service = root.find(".//loop[@xid='2000F']")
    provider = root.find(".//loop[@xid='2010E']")
    _codes(root.find(".//segment[@xid='BHT']/element[@xid='BHT01']"), ("0007",))
    _codes(root.find(".//segment[@xid='BHT']/element[@xid='BHT02']"), ("11", "13"))
    hi = c.find("segment[@xid='HI']")
    for element in hi.iter("element"):
        codes = {x.text for x in element.findall("valid_codes/code")}
        if "BK" in codes:
            _codes(element, ("ABK",))
        if "BF" in codes:
            _codes(element, ("ABF",))
    # 2000E, the patient event level
    event_hl = deepcopy(service.find("segment[@xid='HL']"))
    event_hl.find("name").text = "Patient Event Level"
    _codes(event_hl.find("element[@xid='HL03']"), ("EV",), replace=True)
    _codes(event_hl.find("element[@xid='HL04']"), ("0", "1"), replace=True)
    event = [event_hl]
    for seg_id in ("TRN", "AAA", "UM", "HCR", "REF"):
        event += [deepcopy(x) for x in service.findall(f"segment[@xid='{seg_id}']")]
    dtps = [deepcopy(x) for x in service.findall("segment[@xid='DTP']")]
    certification = deepcopy(dtps[0])
    _codes(certification.find("element[@xid='DTP01']"), ("AAH",), replace=True)
    _codes(certification.find("element[@xid='DTP02']"), ("D8", "RD8"), replace=True)
    event += [certification, *dtps, deepcopy(hi)]
    event += [deepcopy(x) for x in service.findall("segment[@xid='MSG']")]
    for hcr in [x for x in event if x.get("xid") == "HCR"]:
        _codes(hcr.find("element[@xid='HCR01']"), ("A2", "C"))
    event_provider = deepcopy(provider)
    event_provider.set("xid", "2010EA")
    event_provider.find("usage").text = "S"
    # 2000F, the service level, below the event
    new_service = deepcopy(service)
    for seg in list(new_service):
        if seg.tag == "segment" and seg.get("xid") in ("HI", "HSD", "CRC", "CL1", "CR1", "CR2", "CR5", "CR6"):
            new_service.remove(seg)
    new_service.find("usage").text = "S"
    sv1 = deepcopy(ET.fromstring(_pyx12_map("837.5010.X222.A1.xml")).find(".//segment[@xid='SV1']"))
    for part in sv1:
        if part.tag in ("element", "composite") and part.get("xid") not in ("SV101", "SV103", "SV104"):
            part.find("usage").text = "S" if part.find("usage").text != "N" else "N"
    sv1.find("usage").text = "S"
    um = new_service.find("segment[@xid='UM']")
    new_service.insert(list(new_service).index(um) + 2, sv1)
    for um in [x for x in event if x.get("xid") == "UM"] + [new_service.find("segment[@xid='UM']")]:
        for element in um.findall("element"):
            if element.get("xid") in ("UM07", "UM08", "UM09", "UM10"):    # not used in X217
                element.find("usage").text = "N"
    event_loop = _loop("2000E", "Patient Event Level", "R", ">1", [*event, event_provider, new_service])
    for loop in (event_loop, event_provider, new_service):
        _renumber(loop)
    # 2000C keeps its HL (and AAA) and the subscriber name; the event replaces 2000D/2000E below it
    for part in list(c):
        if part.tag == "loop" and part.get("xid") not in ("2010CA",) or \
                (part.tag == "segment" and part.get("xid") not in ("HL", "AAA")):
            c.remove(part)
    c.append(event_loop)
    positions = [int(x.findtext("pos") or 0) for x in c if x.tag in ("segment", "loop") and x is not event_loop]
    event_loop.find("pos").text = f"{max(positions) + 10:03d}"   # pyx12 walks children in `pos` order


def _renumber(loop: ET.Element) -> None:
    """Positions in document order (pyx12 expects a loop's children in increasing `pos`)."""
    n = 0
    for child in loop:
        if child.tag in ("segment", "loop"):
            n += 10
            child.find("pos").text = f"{n:03d}"


def validate(text: str, kind: str) -> list[str]:
    """Problems pyx12 finds in one interchange of `kind` (270, 271, 278_request, 278_response), each
    as "SEGMENT[/ELEMENT] (segment n): message"; [] when valid. Never raises for bad data."""
    import pyx12.errors
    import pyx12.params
    import pyx12.x12n_document
    logging.getLogger("pyx12").setLevel(logging.CRITICAL)   # its messages quote element values (PHI)
    map_path = _derive(kind)
    param = pyx12.params.params()
    param.set("map_path", map_path)
    out = io.StringIO()
    try:
        ok = pyx12.x12n_document.x12n_document(param, io.StringIO(text), fd_997=None, fd_html=None,
                                               fd_json=out, map_path=map_path)
    except (pyx12.errors.X12Error, pyx12.errors.EngineError) as exc:
        return [f"interchange: {exc}"]
    problems = _json_problems(out.getvalue())
    if not ok and not problems:
        problems = ["interchange: pyx12 reports it invalid without details"]
    return problems


def _json_problems(report: str) -> list[str]:
    """pyx12's JSON error report (interchanges > groups > transactions > segments > elements) as
    "SEGMENT[NN] (line n): message" lines."""
    try:
        data = json.loads(report) if report.strip() else {}
    except ValueError:
        return [f"interchange: unreadable pyx12 report {report[:200]!r}"]
    problems: list[str] = []

    def errors(node: dict, where: str) -> None:
        for err in node.get("errors") or []:
            problems.append(f"{where}: {err.get('err_str') if isinstance(err, dict) else err}")

    for isa in data.get("interchanges", []):
        errors(isa, "ISA/IEA")
        for gs in isa.get("groups", []):
            errors(gs, "GS/GE")
            for st in gs.get("transactions", []):
                errors(st, "ST/SE")
                for seg in st.get("segments", []):
                    where = f"{seg.get('seg_id')} (line {seg.get('cur_line')})"
                    errors(seg, where)
                    for ele in seg.get("elements", []):
                        errors(ele, f"{seg.get('seg_id')}{int(ele.get('ele_pos') or 0):02d} (line {seg.get('cur_line')})")
    return problems


def ascii_bytes(text: str) -> bytes:
    """X12's basic character set is upper-case ASCII: accented letters lose their accents (José -> Jose,
    Müller -> Muller) rather than becoming '?', which payers reject as a name mismatch."""
    import unicodedata
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return plain.encode("ascii")
