"""The simulated payer: an HTTP server taking one X12 interchange per POST and answering it.

270 -> 271 (EB rows: coverage, plan, co-payment, network), 278 request -> 278 response
(HCR decision, authorization number, validity dates), each decided by `Rules` on the
member id. Anything that is not a 270 or a 278 request gets HTTP 400. Requests are kept
in `received` (for tests) in arrival order.
"""
from __future__ import annotations

import http.server
import itertools
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml


@dataclass
class Rules:
    defaults: dict
    members: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> "Rules":
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        return cls(data.get("defaults") or {}, data.get("members") or [])

    def for_member(self, member_id: str) -> dict:
        for rule in self.members:
            if re.search(rule.get("member", "$^"), member_id or ""):
                return {**self.defaults, **{k: v for k, v in rule.items() if k != "member"}}
        return dict(self.defaults)


def _tokenize(text: str) -> tuple[list[list[str]], str, str]:
    """(segments as element lists, element separator, component separator) from the ISA's delimiters."""
    text = text.strip()
    if not text.startswith("ISA") or len(text) < 106:
        raise ValueError("not an X12 interchange")
    element, component, terminator = text[3], text[104], text[105]
    segments = [s.strip().split(element) for s in text.split(terminator) if s.strip()]
    return segments, element, component


def _first(segments: list[list[str]], seg_id: str, qualifier: str | None = None) -> list[str] | None:
    for s in segments:
        if s[0] == seg_id and (qualifier is None or (len(s) > 1 and s[1] == qualifier)):
            return s
    return None


def _get(seg: list[str] | None, i: int) -> str:
    return seg[i] if seg and len(seg) > i else ""


class Builder:
    """X12 5010 written the plain way a payer system would (no library), ~ and * and :."""

    def __init__(self, control: int, sender: str, receiver: str, functional_id: str, version: str):
        self.control, self.sender, self.receiver = control, sender, receiver
        self.functional_id, self.version = functional_id, version
        self.body: list[str] = []

    def add(self, *elements) -> None:
        values = [str(e) for e in elements]
        while values and values[-1] == "":
            values.pop()
        self.body.append("*".join(values))

    def text(self, set_id: str, se_count_error: int = 0) -> str:
        now = datetime.now(timezone.utc)
        st = f"{self.control % 10000:04d}"
        body = [f"ST*{set_id}*{st}*{self.version}", *self.body]
        body.append(f"SE*{len(body) + 1 + se_count_error}*{st}")
        isa = "*".join(["ISA", "00", " " * 10, "00", " " * 10, "ZZ", self.sender[:15].ljust(15), "ZZ",
                        self.receiver[:15].ljust(15), now.strftime("%y%m%d"), now.strftime("%H%M"), "^", "00501",
                        f"{self.control:09d}", "0", "T", ":"])
        out = [isa, f"GS*{self.functional_id}*{self.sender}*{self.receiver}*{now:%Y%m%d}*{now:%H%M}*{self.control}*X*"
               f"{self.version}", *body, f"GE*1*{self.control}", f"IEA*1*{self.control:09d}"]
        return "~".join(out) + "~\n"


class Payer:
    """The answering logic, without HTTP."""

    def __init__(self, rules: Rules):
        self.rules = rules
        self._controls = itertools.count(1)
        self._asked: dict[str, int] = {}       # 278 trace -> times asked
        self._lock = threading.Lock()

    def answer(self, text: str) -> tuple[int, str]:
        """(HTTP status, body) for one posted interchange."""
        try:
            segments, _, component = _tokenize(text)
        except ValueError as exc:
            return 400, str(exc)
        st = _first(segments, "ST")
        isa = _first(segments, "ISA")
        sender, receiver = _get(isa, 6).strip(), _get(isa, 8).strip()
        with self._lock:
            control = next(self._controls)
        kind = _get(st, 1)
        if kind == "270":
            return self._eligibility(segments, control, receiver, sender)
        if kind == "278" and _get(_first(segments, "BHT"), 2) == "13":
            return self._authorization(segments, control, receiver, sender)
        return 400, f"unsupported transaction {kind or '(none)'}"

    def _header(self, b: Builder, segments, purpose: str, structure: str, payer_code: str) -> None:
        bht = _first(segments, "BHT")
        now = datetime.now(timezone.utc)
        b.add("BHT", structure, purpose, _get(bht, 3), f"{now:%Y%m%d}", f"{now:%H%M}")
        payer = _first(segments, "NM1", payer_code)
        provider = _first(segments, "NM1", "1P")
        subscriber = _first(segments, "NM1", "IL")
        b.add("HL", "1", "", "20", "1")
        b.add(*payer)
        b.add("HL", "2", "1", "21", "1")
        b.add(*provider)
        return subscriber

    def _eligibility(self, segments, control: int, us: str, them: str) -> tuple[int, str]:
        subscriber = _first(segments, "NM1", "IL")
        rule = self.rules.for_member(_get(subscriber, 9))
        outcome = rule.get("eligibility", "active")
        if outcome == "error":
            return 500, "payer system unavailable"
        b = Builder(control, us, them, "HB", "005010X279A1")
        self._header(b, segments, "11", "0022", "PR")
        b.add("HL", "3", "2", "22", "0")
        trn = _first(segments, "TRN")
        b.add("TRN", "2", _get(trn, 2), _get(trn, 3))
        b.add(*subscriber)
        if outcome == "not_found":
            b.add("AAA", "N", "", "75", "C")
            return 200, b.text("271")
        dmg = _first(segments, "DMG")
        if dmg:
            b.add(*dmg)
        year = datetime.now(timezone.utc).year
        b.add("DTP", "346", "D8", f"{year}0101")
        if outcome == "inactive":
            b.add("EB", "6", "", "30")
            return 200, b.text("271")
        b.add("EB", "1", "IND", "30", "", rule.get("plan", ""))
        copay = str(rule.get("copay", ""))
        if outcome == "malformed":
            copay = "4O.OO"          # a letter O where digits belong: the engine must name EB07
        if copay:
            b.add("EB", "B", "IND", "3", "", "", "27", copay, "", "", "", "", rule.get("network", "Y"))
        return 200, b.text("271")

    def _authorization(self, segments, control: int, us: str, them: str) -> tuple[int, str]:
        subscriber = _first(segments, "NM1", "IL")
        rule = self.rules.for_member(_get(subscriber, 9))
        trn = _first(segments, "TRN")
        trace = _get(trn, 2)
        with self._lock:
            asked = self._asked[trace] = self._asked.get(trace, 0) + 1
        outcome = rule.get("authorization", "approved")
        if isinstance(outcome, list):
            outcome = outcome[min(asked, len(outcome)) - 1]
        if outcome == "error":
            return 500, "payer system unavailable"
        b = Builder(control, us, them, "HI", "005010X217")
        self._header(b, segments, "11", "0007", "X3")
        b.add("HL", "3", "2", "22", "1")
        b.add(*subscriber)
        b.add("HL", "4", "3", "EV", "0")
        b.add("TRN", "2", trace, _get(trn, 3))
        um = _first(segments, "UM")
        b.add(*(um or ["UM", "SC", "I", "3"]))
        today = datetime.now(timezone.utc).date()
        if outcome in ("approved", "malformed"):
            b.add("HCR", "A1", f"AUTH{control:06d}")
            end = today + timedelta(days=int(rule.get("auth_valid_days", 90)))
            b.add("DTP", "AAH", "RD8", f"{today:%Y%m%d}-{end:%Y%m%d}")
        elif outcome == "denied":
            b.add("HCR", "A3", "", "35")
            b.add("MSG", rule.get("denial_reason", "Not medically necessary"))
        elif outcome == "pended":
            b.add("HCR", "A4")
        elif outcome == "more_info":
            b.add("HCR", "A4", "", "E8")
            b.add("MSG", "Clinical notes from the last visit required")
        elif outcome == "not_required":
            b.add("HCR", "NA")
        return 200, b.text("278", se_count_error=2 if outcome == "malformed" else 0)


class PayerSimulator:
    """The HTTP server in a background thread: `start()`, `stop()`, `url`, `received` (request texts)."""

    def __init__(self, rules: Rules, host: str = "127.0.0.1", port: int = 0):
        self.payer = Payer(rules)
        self.host, self._port = host, port
        self.received: list[str] = []
        self.answered: list[str] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/x12"

    def start(self) -> "PayerSimulator":
        simulator = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:   # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                text = self.rfile.read(length).decode("ascii", "replace")
                simulator.received.append(text)
                status, body = simulator.payer.answer(text)
                simulator.answered.append(body)
                data = body.encode("ascii", "replace")
                self.send_response(status)
                self.send_header("Content-Type", "application/edi-x12" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:   # quiet: requests carry patient data
                pass

        self._server = http.server.ThreadingHTTPServer((self.host, self._port), Handler)
        self._port = self._server.server_address[1]     # the same port again after stop(): start()
        self._thread = threading.Thread(target=self._server.serve_forever, name="payer-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "PayerSimulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
