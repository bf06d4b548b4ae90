"""Fields from a read document: label-value pairing by geometry, then prose, then picking.

1. Lines and segments (`ocr.layout`); labels found in every segment (`ocr.labels`).
2. Sections: labels and headers that open one (PATIENT, Referring Provider, To:, From:)
   start a zone covering what is below them in their column, and to their right on
   their own line; zones end at the page break. A generic label (Name, Phone, Fax,
   NPI, ID) takes its meaning from the zone it sits in.
3. Values for each label: in its own cell after the colon, else the next cell to the
   right, else the words below it within its column (table headers, boxed forms);
   multi-line for reason and diagnoses.
4. Prose and layout-free evidence (`ocr.prose`): letters, checkbox rows, fax header
   lines, signature blocks, codes and NPIs anywhere.
5. Every candidate carries a source score, a validation score and the OCR confidence of
   its words; the best candidate per field wins, and its confidence is reported.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from ocr.fields import choices, dates, icd10, identifiers, names, payers, phones, specialty
from ocr.fields.digits import fix_digit_token
from ocr.labels import GENERIC, ITEM_NUMBER, JUNK, Label, find_labels, looks_like_label
from ocr.layout import Line, Segment, document_lines, typical_height
from ocr.model import CHECKED, UNCHECKED, Page, Word

log = logging.getLogger("ocr.extract")

CONTRACT_FIELDS = (
    "patient_family_name", "patient_given_name", "patient_dob", "patient_sex", "patient_phone",
    "patient_mrn", "insurance_payer", "insurance_member_id", "referring_provider_name",
    "referring_provider_npi", "referring_practice_phone", "referring_practice_fax",
    "referred_to_specialty", "urgency", "diagnosis_codes", "reason",
)
MULTILINE = {"reason", "diagnosis_codes"}
VALUE_JUNK = " \"'\u201c\u2018\u2019\u201d|_~=*\u2014-:;,."      # rule remnants OCR glues to a value
FAX_HEADER = re.compile(r"\bfrom\b.*\bto\b|\bpage\b|\bp\.?\s*\d+\s*/\s*\d+|\d{1,2}:\d{2}", re.I)


@dataclass
class Candidate:
    field: str
    value: object
    score: float            # trust in where it was found (label in its cell 1.0 ... a guess 0.2)
    valid: float = 1.0      # how well the value validated
    conf: float = 1.0       # OCR confidence of its words, 0..1
    order: float = 0.0      # position in the document, earlier wins ties
    how: str = ""

    @property
    def rank(self) -> float:
        return self.score * (0.7 + 0.3 * self.valid) * (0.85 + 0.15 * self.conf)


@dataclass
class Zone:
    page: int
    line_no: int
    x0: float
    left: float
    right: float
    section: str
    only_line: bool = False     # the fax machine's header line: FROM/TO there say nothing about the page


@dataclass
class Evidence:
    """Everything the passes found, by field."""
    candidates: dict[str, list[Candidate]] = field(default_factory=dict)
    text: str = ""          # the document's lines, for checks across fields

    def add(self, cand: Candidate) -> None:
        self.candidates.setdefault(cand.field, []).append(cand)

    def best(self, name: str) -> Candidate | None:
        cands = self.candidates.get(name) or []
        return max(cands, key=lambda c: (round(c.rank, 6), -c.order)) if cands else None


# ---------------------------------------------------------------- geometry helpers

def word_offsets(seg: Segment) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for w in seg.words:
        spans.append((pos, pos + len(w.text)))
        pos += len(w.text) + 1
    return spans


def words_between(seg: Segment, start: int, end: int) -> list[Word]:
    return [w for w, (s, e) in zip(seg.words, word_offsets(seg)) if e > start and s < end]


def x_at(seg: Segment, offset: int) -> float:
    for w, (s, e) in zip(seg.words, word_offsets(seg)):
        if e > offset:
            return w.x0
    return seg.x1


def mean_conf(words: list[Word]) -> float:
    return sum(w.conf for w in words) / len(words) / 100 if words else 0.0


@dataclass
class Span:
    text: str
    words: list[Word]
    how: str
    lines: int = 1
    gap: float = 0.0


@dataclass
class FoundLabel:
    label: Label
    seg: Segment
    seg_index: int
    line: Line
    x0: float
    x1: float
    section: str | None = None


# ---------------------------------------------------------------- the passes

class Extractor:
    def __init__(self, pages: list[Page]):
        self.pages = pages
        self.lines = document_lines(pages)
        self.heights = {p.number: typical_height(p.words) for p in pages}
        self.by_page: dict[int, list[Line]] = {}
        for line in self.lines:
            self.by_page.setdefault(line.page, []).append(line)
        self.labels: list[FoundLabel] = []
        self.seg_labels: dict[int, list[Label]] = {}
        self.zones: list[Zone] = []
        self.ev = Evidence()

    def run(self) -> Evidence:
        self.ev.text = "\n".join(line.text for line in self.lines)
        self._find_labels()
        self._build_zones()
        for fl in self.labels:
            fl.section = self.section_at(fl.line, fl.x0)
        self._vote_direction()
        for fl in self.labels:
            try:
                self._values_for(fl)
            except Exception as exc:    # one odd cell must not cost the document its other fields
                # the exception's text may quote what was read (patient data): its type only above DEBUG
                log.warning("label skipped", extra={"fields": {"field": fl.label.field,
                                                               "error": type(exc).__name__}})
                log.debug("label skipped", exc_info=True)
        from ocr import prose
        try:
            prose.add_evidence(self)
        except Exception as exc:
            log.warning("prose evidence skipped", extra={"fields": {"error": type(exc).__name__}})
            log.debug("prose evidence skipped", exc_info=True)
        return self.ev

    # -- labels and zones
    def _find_labels(self) -> None:
        for line in self.lines:
            for si, seg in enumerate(line.segments):
                found = find_labels(seg.text)
                if si:
                    # a bare "ID" cell after another is a value ("Referral To | ID": infectious disease),
                    # unless an id number is the next cell ("Plan  BCBS PPO  ID  W99670936")
                    nxt = line.segments[si + 1].text.strip(" #:") if si + 1 < len(line.segments) else ""
                    if not re.fullmatch(r"[A-Z]{0,4}[0-9][0-9A-Z\-]{4,}", nxt) or sum(c.isdigit() for c in nxt) < 5:
                        found = [lab for lab in found if not _bare_id(seg.text, lab)]
                self.seg_labels[id(seg)] = found
                for lab in found:
                    lw = words_between(seg, lab.start, lab.end) or seg.words[:1]
                    self.labels.append(FoundLabel(lab, seg, si, line, lw[0].x0, max(w.x1 for w in lw)))

    def _build_zones(self) -> None:
        by_line: dict[int, list[FoundLabel]] = {}
        for fl in self.labels:
            if fl.label.opens:
                by_line.setdefault(fl.line.number, []).append(fl)
        page_h = {p.number: p.height or 1.0 for p in self.pages}
        for line_no, fls in by_line.items():
            fls.sort(key=lambda f: f.x0)
            line = fls[0].line
            # the fax machine's stamp along the top edge: its FROM/TO say nothing about the page
            only_line = line.y1 < 0.05 * page_h[line.page] and bool(FAX_HEADER.search(line.text) or
                                                                    re.match(r"\W*to\b", line.text, re.I))
            new = []
            for i, fl in enumerate(fls):
                left = fls[i - 1].x1 if i > 0 else 0.0
                right = fls[i + 1].x0 if i + 1 < len(fls) else float("inf")
                if fl.label.field is not None and not only_line and self._zone_section(line, fl.x0) == fl.label.opens:
                    continue     # "DOB:" under PATIENT restates its column's section; it must not spread it
                if fl.label.field in GENERIC and not only_line and self._zone_section(line, fl.x0) in ("to", "other"):
                    continue     # "Physician:" under CONSULTANT is the consultant's: a generic label takes its block's side
                new.append(Zone(fl.line.page, line_no, fl.x0, left, right, fl.label.opens, only_line))
            self.zones += new
        self.first_zone_line = {}
        for z in self.zones:
            if not z.only_line:
                self.first_zone_line[z.page] = min(self.first_zone_line.get(z.page, z.line_no), z.line_no)

    def _zone_section(self, line: Line, x: float) -> str | None:
        """The section the zones so far give a point (no letterhead fallback): see section_at."""
        saved = getattr(self, "first_zone_line", None)
        self.first_zone_line = {}
        try:
            return self.section_at(line, x)
        finally:
            if saved is None:
                del self.first_zone_line
            else:
                self.first_zone_line = saved

    def _vote_direction(self) -> None:
        """Per page: do values sit under their labels (boxed forms, tables) or over them
        (underlined blanks with the label printed beneath)? Each label alone in its cell
        votes for the side whose nearest words are clearly closer (under 0.6 of the other
        gap: boxed forms pack both sides about as close); no votes means below."""
        votes: dict[int, float] = {}
        for fl in self.labels:
            if fl.label.field is None or self._inline_text(fl):
                continue
            # a "row" overlapping the label's own line is debris, not a value above or below it
            below = [sp for sp in self._below(fl) if sp.gap >= 0]
            above = [sp for sp in self._above(fl) if sp.gap >= 0]
            if below and above:
                b, a = max(below[0].gap, 1.0), max(above[0].gap, 1.0)
                vote = 1 if b < 0.6 * a else -1 if a < 0.6 * b else 0
                parse = self._vote_parser(fl)
                if parse is not None:
                    # a boxed grid puts its value about as near the next box's label as its own: what
                    # the text says decides ("Derm" under SPECIALTY parses, the name over it does not)
                    ok_below = parse(below[0].text.strip(VALUE_JUNK)) is not None
                    ok_above = parse(above[0].text.strip(VALUE_JUNK)) is not None
                    if ok_below != ok_above:
                        vote = 1 if ok_below else -1
            else:
                # the first box under a heading has nothing over it (and the last blank of an
                # underlined form nothing under it): half a vote for the only side there is
                vote = 0.5 if below else -0.5 if above else 0
            votes[fl.line.page] = votes.get(fl.line.page, 0) + vote
        self.values_below = {page: v >= 0 for page, v in votes.items()}

    def _vote_parser(self, fl: FoundLabel):
        """The parser of a label whose values have a shape (a date, a phone, a code, a known word),
        for the direction vote; names, reasons and ids take almost any text and do not vote."""
        target = fl.label.field
        if target in GENERIC:
            target = GENERIC[target].get(fl.section) or {"phone": "patient_phone", "fax": "referring_practice_fax",
                                                          "npi": "referring_provider_npi"}.get(target)
        if target == "insurance_payer":
            return _payer_known
        if target in SHAPED_VALUES:
            return PARSERS[target]
        return None

    def reading_section(self, fl: FoundLabel) -> str | None:
        best = None
        for other in self.labels:
            if other.label.opens and other.line.page == fl.line.page and \
                    (other.line.number, other.x0) < (fl.line.number, fl.x0):
                if best is None or (other.line.number, other.x0) > (best.line.number, best.x0):
                    best = other
        return best.label.opens if best else None

    def _inline_text(self, fl: FoundLabel) -> str:
        labs = self.seg_labels[id(fl.seg)]
        nxt = next((l for l in labs if l.start >= fl.label.end), None)
        return fl.seg.text[fl.label.end:nxt.start if nxt else len(fl.seg.text)].strip(" :;-|_=")

    def section_at(self, line: Line, x: float) -> str | None:
        best = None
        for z in self.zones:
            if z.page != line.page or z.line_no > line.number:
                continue
            if z.only_line and z.line_no != line.number:
                continue
            if z.line_no == line.number and z.x0 > x + 1:
                continue
            if not (z.left - 1 <= x < z.right):
                continue
            key = (z.line_no, -abs(z.x0 - x))
            if best is None or key > best[0]:
                best = (key, z)
        if best:
            return best[1].section
        if line.number < self.first_zone_line.get(line.page, 10 ** 9):
            return "letterhead"       # above every section: the sending practice's letterhead
        return None

    def starts_with_label(self, seg: Segment) -> bool:
        labs = self.seg_labels.get(id(seg), [])
        return bool(labs) and leads(seg.text, labs[0])

    # -- values next to a label
    def spans_for(self, fl: FoundLabel, multiline: bool = False, whole_lines: bool = False) -> list[Span]:
        seg, lab = fl.seg, fl.label
        labs = self.seg_labels[id(seg)]
        nxt = next((l for l in labs if l.start >= lab.end), None)
        end = nxt.start if nxt else len(seg.text)
        spans: list[Span] = []
        inline = seg.text[lab.end:end].strip(" :;-|_=")
        colon = lab.colon
        if inline and not lab.colon and nxt is None and (seg.text.rstrip().endswith(":") or
                                                         re.match(r"/\s*[A-Za-z][A-Za-z ]*$", inline)):
            # "Clinical information supporting the request:", "REASON FOR REFERRAL / CLINICAL QUESTION":
            # words that end in the colon, or a second wording after a slash, belong to the label
            colon = seg.text.rstrip().endswith(":")
            inline = ""
        if nxt is not None and nxt.colon and not lab.colon and COMPOUND_JOIN.fullmatch(seg.text[lab.end:nxt.start]):
            inline = ""
            # "Referring Provider / NPI: Alan Brooks, MD / 1234567893": both heads share the value,
            # each parser takes its own part
            after = next((l for l in labs if l.start >= nxt.end), None)
            stop = after.start if after else len(seg.text)
            shared = seg.text[nxt.end:stop].strip(" :;-|_=")
            if shared:
                spans.append(Span(shared, words_between(seg, nxt.end, stop), "same_cell"))
        if inline:
            span = Span(inline, words_between(seg, lab.end, end), "same_cell")
            carry = multiline or (lab.field in ("patient_name", "referring_provider_name", "name", "cover_from")
                                  and len(inline.split()) == 1)   # "Ordering: Kayla / Gray MD." across the break
            if carry and not leads(seg.text, lab) and nxt is None and fl.seg_index == len(fl.line.segments) - 1 \
                    and not re.search(r"[.;]\s*$", inline):
                flow = self._flow(fl)
                if flow:
                    head = re.split(r"(?<=[a-z0-9)\]])[.;](?:\s|$)", flow.text)[0]
                    span = Span(inline + " " + head, span.words + flow.words[:len(head.split())], "same_cell")
            spans.append(span)
        elif nxt is None and fl.seg_index + 1 < len(fl.line.segments):
            right = fl.line.segments[fl.seg_index + 1]
            rl = self.seg_labels.get(id(right), [])
            if rl and leads(right.text, rl[0]) and rl[0].colon and not lab.colon and lab.field in ("referring_provider_name", "name") \
                    and rl[0].field in ("npi", "referring_practice_phone") \
                    and right.x0 - seg.x1 < 3 * self.heights[fl.line.page]:
                # "Referring Provider / NPI: Alan Brooks, MD / 1234..." with the slash lost between cells
                after = rl[1].start if len(rl) > 1 else len(right.text)
                shared = right.text[rl[0].end:after].strip(" :;-|_=")
                if shared:
                    spans.append(Span(shared, words_between(right, rl[0].end, after), "same_cell"))
            elif not self.starts_with_label(right) and not (not lab.colon and self._header_line(fl.line)
                                                            and len(re.sub(r"\W", "", right.text)) <= 3):
                # (a short cell among column heads, "MI" or a garbled "Mo", is another head)
                rl = self.seg_labels.get(id(right), [])
                cut = rl[0].start if rl else len(right.text)
                text = right.text[:cut].strip(" :;-|_=")
                if text:
                    spans.append(Span(text, words_between(right, 0, cut), "right"))
        if not inline and not leads(seg.text, lab) and fl.seg_index == len(fl.line.segments) - 1:
            flow = self._flow(fl)          # prose: "... Reason for referral:" / "Kidney stone, recurrent."
            if flow:
                spans.append(flow)
        # then the value under the label (boxed forms, table headers) or over it (underlined
        # blanks with the label beneath), also as a fallback when the same-cell text is a hint
        # like "(last, first)": the page's own convention first (see _vote_direction), and a
        # colon points forward
        near = self._below(fl, whole_lines) + self._above(fl, whole_lines)
        below_first = getattr(self, "values_below", {}).get(fl.line.page, True) or colon
        spans.extend(sorted(near, key=lambda sp: ((sp.how == "above") == below_first, sp.gap)))
        if multiline and spans:
            spans[0] = self._continue(fl, spans[0], codes=whole_lines)
        return spans

    def _header_line(self, line: Line) -> bool:
        """A row of column heads: two or more cells that start with a label, no colon, no digit."""
        if re.search(r"\d", line.text):
            return False
        heads = [self.seg_labels.get(id(s), []) for s in line.segments]
        starts = [labs[0] for s, labs in zip(line.segments, heads) if labs and leads(s.text, labs[0])]
        return len(starts) >= 2 and not any(l.colon for labs in heads for l in labs)

    def _column(self, fl: FoundLabel) -> tuple[float, float]:
        h = self.heights[fl.line.page]
        segs = fl.line.segments
        x0 = fl.x0
        before = fl.seg.text[:fl.label.start]
        if before.strip(JUNK) and len(before.split()) <= 2 and not any(l.start < fl.label.start
                                                                       for l in self.seg_labels.get(id(fl.seg), [])):
            x0 = fl.seg.x0      # "PANENT'S BIRTH DATE": a garbled first word of the head still heads the column
        left = segs[fl.seg_index - 1].x1 + 0.5 * h if fl.seg_index > 0 else 0.0
        left = max(left, x0 - 3 * h) if fl.seg_index > 0 else x0 - 3 * h
        right = segs[fl.seg_index + 1].x0 - 0.5 * h if fl.seg_index + 1 < len(segs) else float("inf")
        labs = self.seg_labels[id(fl.seg)]
        nxt = next((l for l in labs if l.start >= fl.label.end), None)
        if nxt is not None:
            right = min(right, x_at(fl.seg, nxt.start) - 0.5 * h)
        return left, right

    def _flow(self, fl: FoundLabel) -> Span | None:
        """The start of the next line, for a label that ends a line of running text."""
        lines = self.by_page[fl.line.page]
        idx = lines.index(fl.line)
        if idx + 1 >= len(lines) or lines[idx + 1].y0 - fl.line.y1 > 1.5 * self.heights[fl.line.page]:
            return None
        seg = lines[idx + 1].segments[0]
        labs = self.seg_labels.get(id(seg), [])
        cut = labs[0].start if labs else len(seg.text)
        text = seg.text[:cut].strip(" :;-|_=")
        return Span(text, words_between(seg, 0, cut), "same_cell") if text else None

    def _below(self, fl: FoundLabel, whole_lines: bool = False) -> list[Span]:
        return self._vertical(fl, +1, whole_lines)

    def _above(self, fl: FoundLabel, whole_lines: bool = False) -> list[Span]:
        return self._vertical(fl, -1, whole_lines)

    def _vertical(self, fl: FoundLabel, direction: int, whole_lines: bool = False) -> list[Span]:
        """Values in the label's column on the next two lines below (+1) or above (-1) it.

        Stops at a line whose words in the column start with a label (the next row of the
        form). Above, a line holding any label is not a value (it is the previous row)."""
        h = self.heights[fl.line.page]
        left, right = self._column(fl)
        lines = self.by_page[fl.line.page]
        idx = lines.index(fl.line)
        near = lines[idx + 1: idx + 3] if direction > 0 else list(reversed(lines[max(0, idx - 2):idx]))
        out: list[Span] = []
        for other in near:
            gap = other.y0 - fl.line.y1 if direction > 0 else fl.line.y0 - other.y1
            if gap > (3.0 if direction > 0 else 2.0) * h:
                break
            ws = [w for w in other.words if left <= w.x0 < right]
            if not ws and leads(fl.seg.text, fl.label) and fl.seg_index > 0:
                # the head sits well right of its value's left edge (a wide cell, a centred head):
                # the one cell that starts between the previous head and this one is the value
                floor = max(fl.line.segments[fl.seg_index - 1].x1 + 0.5 * h, fl.x0 - 6 * h)
                inside = [sg for sg in other.segments if floor <= sg.x0 < left]
                if len(inside) == 1:
                    ws = [w for w in inside[0].words if w.x0 < right]
            if not ws:
                continue
            if whole_lines:
                # "1. Rheumatoid arthritis (M06.9)" under "ASSESSMENT | PLAN": the code sits past the
                # next heading's edge, but the cell that starts in the column runs on to it
                first = next((s for s in other.segments if ws[0] in s.words), None)
                if first is not None:
                    ws = [w for w in first.words if w.x0 >= ws[0].x0]
                    # "A. D64.9      B. C34.90": codes set out in cells across the row are one list
                    for later in other.segments[other.segments.index(first) + 1:]:
                        if not icd10.find_codes(later.text, labelled=True):
                            break
                        ws = ws + later.words
            elif leads(fl.seg.text, fl.label):
                # a centred column head over a left-aligned value: the cell that runs into the
                # column from the left (but not from the previous head's side) is the value
                first = next((s for s in other.segments if ws[0] in s.words), None)
                segs = fl.line.segments
                floor = segs[fl.seg_index - 1].x1 + 0.5 * h if fl.seg_index > 0 else fl.x0 - 10 * h
                if first is not None and floor <= first.x0 < left:
                    ws = [w for w in first.words if w.x0 < right]
            seg = next((s for s in other.segments if s.words and s.words[0] is ws[0]), None)
            if seg is not None and self.starts_with_label(seg):
                break
            text = " ".join(w.text for w in ws)
            labs = find_labels(text)
            if labs and (leads(text, labs[0]) or direction < 0):
                break
            if labs:
                text = text[:labs[0].start]
            out.append(Span(text.strip(" :;-|_"), ws, "below" if direction > 0 else "above", gap=gap))
        return out

    def _continue(self, fl: FoundLabel, span: Span, codes: bool = False) -> Span:
        """Extend a reason/diagnosis value with the lines that carry on below it."""
        h = self.heights[fl.line.page]
        lines = self.by_page[fl.line.page]
        start_line = next((l for l in lines if span.words and span.words[-1] in l.words), fl.line)
        idx = lines.index(start_line)
        x_start = span.words[0].x0 if span.words else fl.x0
        left_bound = min(fl.x0, x_start) - 1.5 * h
        text, words, n = span.text, list(span.words), 1
        prev = start_line
        for below in lines[idx + 1: idx + 8]:
            if below.y0 - prev.y1 > 1.8 * h:
                break
            seg = below.segments[0]
            if seg.x0 < left_bound or seg.x0 > x_start + 2 * h:
                break
            if self.starts_with_label(seg) or self._is_header(seg):
                break
            text += " " + seg.text
            words += seg.words
            if codes:       # "A. G43.909      B. R20.2": codes set out in cells across the row
                for later in below.segments[1:]:
                    if not icd10.find_codes(later.text, labelled=True):
                        break
                    text += " " + later.text
                    words += later.words
            n += 1
            prev = below
        return Span(text, words, span.how, n)

    def _is_header(self, seg: Segment) -> bool:
        t = seg.text.strip()
        return t.isupper() and len(t.split()) <= 4 and not re.search(r"\d", t)

    # -- one label -> candidates
    def _values_for(self, fl: FoundLabel) -> None:
        lab = fl.label
        target = lab.field
        if target is None:
            return
        score = {2: 1.0, 1: 1.0, 0: 0.9}[lab.strength]
        if target in GENERIC:
            generic = target
            target = GENERIC[generic].get(fl.section)
            score = 0.85 if fl.section not in (None, "letterhead") else (0.6 if fl.section else 0.5)
            if target is None:
                # dense lines ("Ins: Kaiser  Ref Dr: Wu  Tel 503..."): the last section opened
                # before the label in reading order decides instead of the column
                target = GENERIC[generic].get(self.reading_section(fl))
                score = 0.7
            if target is None:
                return
            if _bare_id(fl.seg.text, lab) and target != "insurance_member_id":
                return      # a bare "ID" row head outside insurance may be Idaho in an address row
        if fl.section in ("to", "other") and target.startswith("referring"):
            if lab.field in GENERIC or lab.opens is None:
                return
        if fl.section == "other" and target.startswith("patient") and lab.strength < 2:
            if lab.field in GENERIC:
                return
        parse = PARSERS.get(target)
        if parse is None:
            return
        if target == "referring_provider_name" and not re.search(r"\bref", fl.seg.text[lab.start:lab.end], re.I):
            score *= 0.95       # "PCP:", "Signed:", "Attending:" name a referrer only when no "Referring ..." does
        if target == "patient_name" and FAMILY_FIRST_HINT.search(fl.seg.text[lab.start:lab.end]):
            parse = _name_family_first       # "Name (Last First): SMITH JOHN" says the order itself
        for i, span in enumerate(self.spans_for(fl, multiline=target in MULTILINE,
                                                whole_lines=target == "diagnosis_codes")):
            parsed = parse(span.text.strip(VALUE_JUNK))
            if parsed is None:
                continue
            value, valid = parsed
            if target in NAME_TARGETS and span.how != "same_cell" and looks_like_label(span.text):
                continue        # the next label down ("Ordering Physiclan"), not a name
            if target == "insurance_payer" and valid < 0.6 and span.how in ("above", "below"):
                continue        # an unknown plan name is believed only right next to its label
            how_penalty = {"same_cell": 1.0, "right": 0.97, "below": 0.93, "above": 0.9}[span.how]
            if target == "referring_provider_name" and fl.section == "to":
                how_penalty *= 0.5
            order = fl.line.number * 10000 + fl.x0
            if target == "insurance_payer_known":
                target = "insurance_payer"
            if target == "subscriber":
                target = "insurance_member_id"
                how_penalty *= 0.8           # "Subscriber: W123...": an id there is the member's, below a labelled one
            if target == "cover_from":
                target = "referring_provider_name"
                how_penalty *= 0.6           # "From: Dr. Alan Brooks" names the sender, below a labelled one
            self.ev.add(Candidate(target, value, score * how_penalty, valid, mean_conf(span.words), order,
                                  f"label:{span.how}"))
            if target == "insurance_payer" and valid < 0.6:
                continue        # an unknown plan name ("INSURED'S GROUP NUMBER" beside it) may hide a known one below
            if target == "insurance_payer":
                # "Ins Ambetter #33580167480": shorthand puts the member id right after the plan
                after = re.search(r"\s#\s?([A-Za-z0-9][A-Za-z0-9\-]{4,})", span.text)
                ident = _member(after.group(1)) if after else None
                if ident and sum(c.isdigit() for c in ident[0]) >= 5:
                    self.ev.add(Candidate("insurance_member_id", ident[0], score * how_penalty * 0.8, ident[1],
                                          mean_conf(span.words), order, "after_payer"))
            if target == "patient_dob":
                # "DOB 4/5/77 M": a lone sex letter right after the birth date
                after = re.search(r"\d\s+(M|F|Male|Female|MALE|FEMALE)\b", span.text)
                if after:
                    self.ev.add(Candidate("patient_sex", after.group(1)[0].upper(), 0.6, 1.0, mean_conf(span.words),
                                          order, "after_dob"))
            if target == "patient_name":
                given, family = value
                self.ev.add(Candidate("patient_given_name", given, score * how_penalty * 0.98, valid,
                                      mean_conf(span.words), order, f"label:{span.how}"))
                self.ev.add(Candidate("patient_family_name", family, score * how_penalty * 0.98, valid,
                                      mean_conf(span.words), order, f"label:{span.how}"))
            break


# ---------------------------------------------------------------- value parsers: text -> (value, validity)

def leads(text: str, lab: Label) -> bool:
    """The label opens its cell: nothing but rule debris ("_Member ID", "'Patient") or a box's item
    number ("17b. NPI") before it."""
    return lab.start == 0 or text[:lab.start].strip(JUNK) == "" \
        or ((item := ITEM_NUMBER.match(text)) is not None and item.end() == lab.start)


def _bare_id(text: str, lab: Label) -> bool:
    """ "ID" alone, no colon: a row head only first on its line, and only for insurance."""
    return lab.field == "id" and not lab.colon and text[lab.start:lab.end].strip(" |").lower() == "id"


def _name(text: str):
    text = re.split(r"\s{2,}|\t|\|", text.strip())[0]
    tokens = text.split()
    tries = [text]
    if "," in text:
        head, _, tail = text.partition(",")
        tail_tokens = tail.split()
        for n in (3, 2, 1):
            if len(tail_tokens) > n:
                tries.append(head + ", " + " ".join(tail_tokens[:n]))
    else:
        for n in (4, 3, 2):
            if len(tokens) > n:
                tries.append(" ".join(tokens[:n]))
    for t in tries:
        got = names.split_name(t)
        if got:
            return got, 1.0 if t == text else 0.85
    return None


# a label that tells the order of the name it labels: "Name (Last, First)", "Last/First Name"
FAMILY_FIRST_HINT = re.compile(r"\b(?:last|family|sur)(?:\s*name)?\s*[,/&\s]\s*(?:first|given)\b", re.I)


def _name_family_first(text: str):
    """A patient name under a label that says family name first: "SMITH JOHN" -> (John, Smith).
    With a comma the usual parse already has the order; a particle family ("Van Dyke John") or a
    middle initial ("Smith John Q") are handled by putting the first word(s) last."""
    text = re.split(r"\s{2,}|\t|\|", text.strip())[0]
    if "," in text:
        return _name(text)
    tokens = text.split()
    if len(tokens) < 2:
        return None
    n = 1
    while n < len(tokens) - 1 and tokens[n - 1].lower() in names.PARTICLES:
        n += 1                               # "Van Dyke John": the family is two words
    given_part = [t for t in tokens[n:] if len(t.strip(".")) > 1] or tokens[n:]
    got = names.split_name(" ".join(tokens[:n]) + ", " + " ".join(given_part))
    return (got, 1.0) if got else _name(text)


def _provider_name(text: str):
    text = text.strip()
    if not text:
        return None
    parts = [p.strip() for p in re.split(r"\s{2,}|\||/|;", text) if p.strip()]
    text = parts[0] if parts else text
    if "," in text:
        head, _, tail = text.partition(",")
        head_tokens = [t for t in head.split() if t.lower().strip(".") not in names.TITLES]
        tail_first = tail.split()[0].strip(".,").lower() if tail.split() else ""
        if len(head_tokens) >= 2 and not all(t.lower() in names.PARTICLES for t in head_tokens[:-1]) \
                or tail_first in names.CREDENTIALS or names.looks_like_org(tail):
            text = head
    if names.looks_like_org(text):
        return None
    got = _name(text)
    return got if got else None


def _single_name(text: str):
    tok = re.split(r"\s{2,}|,|\|", text.strip())[0].strip(" .:;")
    if not tok or re.search(r"\d", tok) or len(tok.split()) > 3:
        return None
    words = tok.split()
    if words[0].lower() in names.NOT_NAME or not re.fullmatch(r"[A-Za-z][A-Za-z'\-\. ]+", tok):
        return None
    if len(words) > 1 and words[0].lower() not in names.PARTICLES:
        tok = words[0]      # "Jane Q" -> Jane; "Van Dyke" stays
    return " ".join(names.proper_case(w) for w in tok.split()), 1.0


def _dob(text: str):
    found = dates.find_dates(text[:40], past=True)
    if not found:
        return None
    return found[0][0], 1.0 if found[0][1] <= 2 else 0.85


def _phone(text: str):
    found = phones.find_phones(text[:40])
    if not found:
        return None
    return found[0][0], 1.0 if found[0][1] <= 3 else 0.8


def _sex(text: str):
    v = choices.parse_sex(text[:40])
    return (v, 1.0) if v else None


PHONE_SHAPED = re.compile(r"^\(?\d{3}\)?[\s.\-]\d{3}[\s.\-]\d{4}$|^1-\d{3}-\d{3}-\d{4}$")


def _mrn(text: str):
    ident = identifiers.parse_identifier(text[:40], min_len=4)
    if not ident or PHONE_SHAPED.match(ident):
        return None
    return identifiers.fix_id_ocr(ident), 0.9


def _member(text: str):
    ident = identifiers.parse_identifier(text[:50], min_len=4)
    if not ident or PHONE_SHAPED.match(ident):
        return None
    return identifiers.fix_id_ocr(ident), 0.9


def _subscriber_id(text: str):
    """An id right after "Subscriber" (a name there is the subscriber, not an id): at least 5 digits."""
    first = text.strip(" :#").split()[:1]
    ident = identifiers.parse_identifier(first[0], min_len=5) if first else None
    if not ident or sum(c.isdigit() for c in ident) < 5 or PHONE_SHAPED.match(ident):
        return None
    return identifiers.fix_id_ocr(ident), 0.9


def _payer(text: str):
    text = re.split(r"(?<=[a-z)])\.\s+(?=[A-Z])|\s{3,}|\s+#|\s*\(", text)[0]   # prose runs on: "Oscar Health. Our ...", "Aetna #W1..."
    got = payers.match_payer(text)
    return (got[0], got[1]) if got else None


def _payer_known(text: str):
    got = payers.match_payer(text)
    return (got[0], got[1]) if got and got[1] >= 0.85 else None


def _npi(text: str):
    text = " ".join(fix_digit_token(t) for t in text[:40].split())
    found = identifiers.find_npis(text)
    if found:
        return found[0][0], 1.0
    return None


def _specialty(text: str):
    tokens = text.split()
    if any(t in (CHECKED, UNCHECKED) or re.fullmatch(r"\[\s*[xX]?\s*\]", t) for t in tokens):
        # a list of boxes: only a ticked one names the specialty, an unticked list says nothing
        from ocr.prose import _ticked_texts
        for chosen in _ticked_texts(tokens):
            v = specialty.parse_specialty(chosen)
            if v:
                return v, 1.0
        return None
    v = specialty.parse_specialty(text[:120])
    return (v, 1.0) if v else None


def _urgency(text: str):
    v = choices.parse_urgency(text[:80])
    return (v, 1.0) if v else None


def _codes(text: str):
    codes = icd10.find_codes(text, labelled=True)
    return (codes, 1.0) if codes else None


def _reason(text: str):
    text = re.sub(r"\s+", " ", text).strip(" :;-|_")
    text = re.split(r"(?<=[a-z0-9)\]])\.\s+(?=[A-Z])", text)[0].rstrip(".")   # one sentence: prose runs on
    if len(text) < 3 or not re.search(r"[A-Za-z]{3}", text):
        return None
    return text, 1.0


PARSERS = {
    "patient_name": _name, "patient_family_name": _single_name, "patient_given_name": _single_name,
    "patient_dob": _dob, "patient_sex": _sex, "patient_phone": _phone, "patient_mrn": _mrn,
    "insurance_payer": _payer, "insurance_payer_known": _payer_known, "insurance_member_id": _member, "referring_provider_name": _provider_name,
    "cover_from": _provider_name, "subscriber": _subscriber_id, "referring_provider_npi": _npi, "referring_practice_phone": _phone, "referring_practice_fax": _phone,
    "referred_to_specialty": _specialty, "urgency": _urgency, "diagnosis_codes": _codes, "reason": _reason,
}


# ---------------------------------------------------------------- the result

def _order_by_courtesy_title(name: tuple[str, str], text: str, titles: str = r"Dr\.?") -> tuple[str, str]:
    """(given, family) turned round when the document itself says otherwise: "BROOKS ALAN MD"
    read as Brooks Alan, while elsewhere the page says "Dr. Alan" never but "Dr. Brooks" once.
    A title is followed by a family name (or a full given-first name), never a lone given name.
    `titles` is "Dr." for the referrer, "Mr./Mrs./Ms." for the patient ("PT: SMITH JOHN", "Mr. Smith")."""
    given, family = name
    if " " in given or " " in family:
        return name
    def titled(word: str) -> bool:
        # "Dr. Brooks asks" counts, "Dr. Alan Brooks" (a capitalised word or initial follows) does not
        other = family if word == given else given
        return re.search(r"(?i:\b(?:" + titles + r")\s+" + re.escape(word) + r"\b)(?!\.?\s+[A-Z])(?!(?i:\.?\s+" + re.escape(other)
                         + r"\b))", text) is not None
    if titled(given) and not titled(family):
        return family, given
    return name


# fields whose value has a shape of its own: what parses there tells a value from a neighbour's
SHAPED_VALUES = {"patient_dob", "patient_sex", "patient_phone", "referring_practice_phone", "referring_practice_fax",
                 "referring_provider_npi", "referred_to_specialty", "urgency", "diagnosis_codes", "insurance_payer_known",
                 "referring_provider_name", "patient_name", "patient_family_name", "patient_given_name"}

COMPOUND_JOIN = re.compile(r"[\s/&,+(]*(?:and\s*)?", re.I)
NAME_TARGETS = {"patient_name", "referring_provider_name", "cover_from", "patient_family_name", "patient_given_name"}


def _join_code_labels(best: Candidate, cands: list[Candidate]) -> Candidate:
    """Codes under several labels ("Primary Dx: E11.9" / "Secondary Dx: I10", a "Dx 1"/"Dx 2"
    pair) are one list, in page order. Only label readings as strong as a label in its own cell
    take part, so a code mentioned in prose or under a weak, far label is never added."""
    if not best.how.startswith("label:"):
        return best
    labelled = sorted((c for c in cands if c.how.startswith("label:") and c.score >= 0.85 and c.valid >= 1.0),
                      key=lambda c: c.order)
    if len({c.order for c in labelled}) < 2:
        return best
    codes: list[str] = []
    for c in labelled:
        codes += [v for v in c.value if v not in codes and v.replace(".", "") not in {x.replace(".", "") for x in codes}]
    if len(codes) <= len(best.value):
        return best
    return Candidate(best.field, codes, best.score, best.valid, min(c.conf for c in labelled), best.order, best.how)


def extract_fields(pages: list[Page]) -> dict:
    """The contract dict (fields, `confidence`, `evidence`) for the pages' words."""
    ev = Extractor(pages).run()
    out: dict = {}
    confidence: dict[str, float] = {}
    how: dict[str, str] = {}
    for name in CONTRACT_FIELDS:
        best = ev.best(name)
        if name == "diagnosis_codes" and best is not None:
            # a list found twice (a form cell and the same sentence across a line break): the
            # longer reading wins when it contains the shorter one
            for other in ev.candidates.get(name, []):
                if other.score >= 0.85 and set(best.value) < set(other.value):
                    best = other
            best = _join_code_labels(best, ev.candidates.get(name, []))
        if best is None:
            out[name] = [] if name == "diagnosis_codes" else None
            confidence[name] = 0.0
            continue
        value = best.value
        if name == "referring_provider_name":
            value = _order_by_courtesy_title(value, ev.text)
            value = f"{value[0]} {value[1]}"
        out[name] = value
        confidence[name] = round(max(0.0, min(1.0, best.score * best.valid * (0.4 + 0.6 * best.conf))), 2)
        how[name] = best.how
    if out["insurance_member_id"] and out["insurance_payer"] and "medicare" in out["insurance_payer"].lower():
        out["insurance_member_id"] = identifiers.fix_mbi(out["insurance_member_id"])   # "1TLOT9..." -> 1TL0T9...
    if out["patient_given_name"] and out["patient_family_name"]:
        turned = _order_by_courtesy_title((out["patient_given_name"], out["patient_family_name"]), ev.text,
                                          r"Mr|Mrs|Ms|Miss|Mr\.|Mrs\.|Ms\.")
        if turned != (out["patient_given_name"], out["patient_family_name"]):
            out["patient_given_name"], out["patient_family_name"] = turned
    out["confidence"] = confidence
    out["evidence"] = how
    return out
