"""Insurance eligibility: an X12 270 inquiry per new referral, the payer's 271 applied to it.

Pure parts: `inquiry_270(...)` builds the interchange (005010X279A1); `read_271(text)`
reads an answer into a `Coverage` (active / inactive / rejected, plan, copay, network,
whether the payer says the service needs authorization), raising `X12Error` naming the
segment/element when the answer cannot be used (not a 271, another inquiry's trace,
no coverage code, an amount that is not a number).

`Eligibility.ask` (in the writer's transaction) records a `payer_requests` row, queues the
270 on the payer gateway destination (engine/outbound.py; the queue retries an unreachable
payer with backoff) and leaves an `eligibility` event and, when the referral has none, a
next action saying that eligibility is pending. `Eligibility.apply_response` is the
delivery's response handler for `x12_270` rows: it records the answer on the request and
the referral (`coverage_status`, `coverage_plan`, `coverage_checked_at`), an `eligibility`
event, and re-judges completeness: inactive coverage -> `incomplete` with `active_coverage`
missing (through `set_status`); active coverage -> the prior authorization request if the
payer's rules want one (engine/authorization.py).
"""
from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from engine import outbound, x12
from engine.config import EngineConfig, PayerRule
from engine.referral_store import ReferralStore

ACTIVE = {"1", "2", "3", "4", "5"}          # EB01: active coverage (full, capitated, pending investigation)
INACTIVE = {"6", "7", "8"}                  # EB01: inactive (pending update, pending investigation)
# AAA03: why the payer could not answer (X12 code list 901, the ones payers send for 270s).
REJECT_REASONS = {
    "15": "required application data missing", "41": "authorization/access restrictions",
    "42": "unable to respond at current time", "43": "invalid/missing provider identification",
    "58": "invalid/missing date of birth", "65": "invalid/missing patient name",
    "71": "patient birth date does not match the payer's", "72": "invalid/missing subscriber/insured id",
    "73": "invalid/missing subscriber/insured name", "75": "subscriber/insured not found",
    "76": "duplicate subscriber/insured id", "79": "invalid participant identification",
}
NETWORK = {"Y": True, "N": False}           # EB12; W (not applicable) and U (unknown) say nothing


def x12_date(value: str | None) -> str | None:
    """'1980-01-01' (or 19800101) -> '19800101'; None when it is not a date."""
    digits = re.sub(r"\D", "", value or "")[:8]
    return digits if len(digits) == 8 else None


def iso_date(value: str) -> str | None:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if re.fullmatch(r"\d{8}", value or "") else None


def originator(npi: str) -> str:
    """TRN03: '9' + nine digits identifies the organisation that made the trace number."""
    return "9" + re.sub(r"\D", "", npi)[:9].ljust(9, "0")


def subscriber_segments(referral: dict) -> list[str]:
    """NM1*IL (+ DMG when the birth date is known) of the patient as subscriber."""
    out = [x12.segment("NM1", "IL", "1", referral.get("patient_family_name"), referral.get("patient_given_name"),
                       "", "", "", "MI", referral.get("member_id"))]
    dob = x12_date(referral.get("patient_birth_date"))
    if dob:
        sex = referral.get("patient_sex") if referral.get("patient_sex") in ("M", "F") else ""
        out.append(x12.segment("DMG", "D8", dob, sex))
    return out


def inquiry_270(referral: dict, payer: PayerRule, *, submitter_id: str, provider_name: str, provider_npi: str,
                control_number: int, trace: str, at: datetime, service_type: str = "30") -> str:
    """The 270 for one referral's patient (the subscriber; dependents are asked as subscribers with their
    own member id, which is what payers issue today)."""
    tx = [x12.segment("BHT", "0022", "13", trace, at.strftime("%Y%m%d"), at.strftime("%H%M")),
          x12.segment("HL", "1", "", "20", "1"),
          x12.segment("NM1", "PR", "2", payer.name, "", "", "", "", "PI", payer.payer_id),
          x12.segment("HL", "2", "1", "21", "1"),
          x12.segment("NM1", "1P", "2", provider_name, "", "", "", "", "XX", provider_npi),
          x12.segment("HL", "3", "2", "22", "0"),
          x12.segment("TRN", "1", trace, originator(provider_npi)),
          *subscriber_segments(referral),
          x12.segment("DTP", "291", "D8", at.strftime("%Y%m%d")),
          x12.segment("EQ", service_type)]
    return x12.interchange(tx, functional_id="HS", version=x12.ELIGIBILITY_VERSION, sender_id=submitter_id,
                           receiver_id=payer.payer_id, control_number=control_number, at=at)


@dataclass
class Coverage:
    """What a 271 says about one subscriber."""
    status: str                              # active | inactive | rejected
    plan: str | None = None
    copay: str | None = None                 # the first co-payment amount (EB01 B, EB07), as printed
    in_network: bool | None = None
    auth_required: bool | None = None        # EB11 on an active row: the payer says authorization is needed
    plan_begin: str | None = None
    plan_end: str | None = None
    reason: str | None = None                # AAA reason or the inactive row's description
    trace: str | None = None
    benefits: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        if self.status == "rejected":
            return f"payer could not answer: {self.reason}"
        parts = [self.status]
        if self.plan:
            parts.append(f"plan {self.plan}")
        if self.copay:
            parts.append(f"copay {self.copay}")
        if self.in_network is not None:
            parts.append("in network" if self.in_network else "out of network")
        if self.auth_required:
            parts.append("authorization required")
        if self.reason and self.status != "active":
            parts.append(self.reason)
        return ", ".join(parts)


def _amount(seg: x12.Segment, position: int) -> str | None:
    value = seg.get(position)
    if not value:
        return None
    try:
        return str(Decimal(value).quantize(Decimal("0.01")))
    except InvalidOperation:
        raise x12.X12Error(f"EB{position:02d}", f"{value!r} is not a monetary amount") from None


def read_271(text: str, expected_trace: str | None = None) -> Coverage:
    """Read a 271. Raises X12Error: not X12, broken envelope (engine.x12.read), not a 271 (ST01), the
    answer to another inquiry (TRN02), neither an EB nor an AAA segment, no coverage code among the
    EB01 values, a malformed amount (EB07) or date (DTP03)."""
    doc = x12.read(text)
    if doc.transaction_set != "271":
        raise x12.X12Error("ST01", f"expected a 271 eligibility response, got transaction set {doc.transaction_set!r}")
    traces = [s.get(2) for s in doc.all("TRN") if s.get(1) in ("1", "2")]
    if expected_trace and traces and expected_trace not in traces:
        raise x12.X12Error("TRN02", f"answers trace {traces[0]!r}, not this inquiry's {expected_trace!r}")
    coverage = Coverage("unknown", trace=traces[0] if traces else None)
    rejections = doc.all("AAA")
    if rejections:
        codes = [s.get(3) for s in rejections]
        coverage.status = "rejected"
        coverage.reason = "; ".join(f"AAA {c}: {REJECT_REASONS.get(c, 'rejected')}" for c in codes)
        return coverage
    rows = doc.all("EB")
    if not rows:
        raise x12.X12Error("EB", "the 271 has no EB (eligibility or benefit) segment and no AAA (rejection)")
    for seg in doc.all("DTP"):
        if seg.get(1) in ("346", "356", "291", "307") and seg.get(2) in ("D8", "RD8"):
            begin, _, end = seg.get(3).partition("-")
            if not iso_date(begin) or (end and not iso_date(end)):
                raise x12.X12Error("DTP03", f"{seg.get(3)!r} is not a date (CCYYMMDD) or range")
            coverage.plan_begin = coverage.plan_begin or iso_date(begin)
            coverage.plan_end = coverage.plan_end or (iso_date(end) if end else None)
        elif seg.get(1) in ("347", "357") and iso_date(seg.get(3)):
            coverage.plan_end = iso_date(seg.get(3))
    codes = []
    for seg in rows:
        code = seg.get(1)
        if not code:
            raise x12.X12Error("EB01", "an EB segment without an eligibility or benefit information code")
        codes.append(code)
        benefit = {"code": code, "service_type": seg.get(3) or None, "plan": seg.get(5) or None,
                   "amount": _amount(seg, 7), "percent": seg.get(8) or None,
                   "auth_required": {"Y": True, "N": False}.get(seg.get(11)),
                   "in_network": NETWORK.get(seg.get(12))}
        coverage.benefits.append(benefit)
        if code in ACTIVE and coverage.status != "active":
            coverage.status = "active"
            coverage.plan = benefit["plan"] or coverage.plan
        elif code in INACTIVE and coverage.status == "unknown":
            coverage.status = "inactive"
            coverage.reason = "inactive coverage" + (f" ({benefit['plan']})" if benefit["plan"] else "")
            coverage.plan = coverage.plan or benefit["plan"]
        if code == "B" and coverage.copay is None and benefit["amount"] is not None:
            coverage.copay = benefit["amount"]
        if benefit["in_network"] is not None and coverage.in_network is None:
            coverage.in_network = benefit["in_network"]
        if benefit["auth_required"] is not None and code not in INACTIVE:
            coverage.auth_required = bool(coverage.auth_required) or benefit["auth_required"]
    if coverage.status == "unknown":
        raise x12.X12Error("EB01", f"no active (1-5) or inactive (6-8) coverage code among EB01 values "
                                   f"{', '.join(codes)}")
    return coverage


def answer_text(ack: str | None) -> str:
    """The payer's answer out of the webhook connector's ack ("HTTP 200 <body>"); raw X12 (an answer file
    from the exchange folder, engine/payer_exchange.py) passes through as it is. Raises X12Error when
    there is none (the gateway answered 2xx with an empty body)."""
    match = re.match(r"HTTP (\d{3}) ?(.*)\Z", ack or "", re.S)
    body = (match.group(2) if match else ack or "").strip()
    if not body:
        status = f"HTTP {match.group(1)}" if match else "nothing"
        raise x12.X12Error("HTTP", f"the payer gateway answered {status} with an empty body; expected an X12 "
                                   "interchange")
    return body


class Eligibility:
    """Asks payers (270) and applies their answers (271); see the module docstring."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.cfg = config.payers

    def ask(self, conn: sqlite3.Connection, referral: dict, payer: PayerRule, message_id: int | None, *,
            first_time: bool, at: str) -> int | None:
        """Queue a 270 unless one was asked for this payer + member id already, or this is not a new
        referral and none was ever asked (then only `eligibility_on` events start it). Returns the request id."""
        referral_id = referral["id"]
        if not referral.get("member_id"):
            return None
        earlier = conn.execute("SELECT payer_id, member_id FROM payer_requests WHERE referral_id=? AND "
                               "kind='eligibility'", (referral_id,)).fetchall()
        if (payer.payer_id, referral["member_id"]) in [tuple(r) for r in earlier]:
            return None
        if not earlier and not first_time:
            return None
        request_id = conn.execute(
            "INSERT INTO payer_requests (referral_id, kind, payer, payer_id, member_id, service_type, status, "
            "asked_at) VALUES (?,?,?,?,?,?,?,?) RETURNING id",
            (referral_id, "eligibility", payer.name, payer.payer_id, referral["member_id"], "30", "asked", at)
        ).fetchone()[0]
        trace = f"RE{referral_id}-{request_id}"
        payload = inquiry_270(referral, payer, submitter_id=self.cfg.submitter_id,
                              provider_name=self.cfg.provider_name, provider_npi=self.cfg.provider_npi,
                              control_number=request_id, trace=trace, at=datetime.fromisoformat(at))
        outbound_id = outbound.enqueue(conn, outbound.Outbound(
            self.cfg.destination, "x12_270", x12.ascii_bytes(payload), control_id=f"{request_id:09d}",
            referral_id=referral_id, source_message_id=message_id, rule="eligibility",
            dedupe_key=f"270:{referral_id}:{payer.payer_id}:{referral['member_id']}",
            patient_key=referral.get("patient_mrn") or str(referral_id)), order=self.config.outbound.order, at=at)
        conn.execute("UPDATE payer_requests SET outbound_id=?, trace=? WHERE id=?", (outbound_id, trace, request_id))
        store = ReferralStore(conn)
        store.update(referral_id, {"coverage_status": "pending"}, at)
        store.add_event(referral_id, "eligibility", referral.get("coverage_status"), "pending", at, "payer",
                        f"req{request_id}", f"270 to {payer.name} queued (outbound #{outbound_id}); "
                        "waiting for the 271")
        if not referral.get("next_action"):
            store.set_next_action(referral_id, f"Eligibility pending: waiting for {payer.name}'s answer", None,
                                  "payer", at)
        return request_id

    def apply_response(self, conn: sqlite3.Connection, row, ack: str | None) -> Coverage:
        """The delivery's handler for a sent `x12_270` row; raises X12Error for an unusable answer (the
        delivery keeps it on the row and opens a review exception)."""
        from engine.authorization import Authorizations
        from engine.payers import auth_rule, payer_of, rejudge
        request = conn.execute("SELECT * FROM payer_requests WHERE outbound_id=?", (row["id"],)).fetchone()
        if request is None:
            raise LookupError(f"outbound #{row['id']}: no eligibility request recorded for it")
        coverage = read_271(answer_text(ack), expected_trace=request["trace"])
        at = outbound.now_iso()
        referral_id = request["referral_id"]
        conn.execute("UPDATE payer_requests SET status='answered', outcome=?, summary=?, result=?, answered_at=? "
                     "WHERE id=?", (coverage.status, coverage.summary(), json.dumps(asdict(coverage)), at,
                                    request["id"]))
        store = ReferralStore(conn)
        referral = store.get(referral_id)
        if referral is None:
            return coverage
        if referral.get("member_id") != request["member_id"]:
            # A newer inquiry (member id changed) is what counts; keep this answer on its request only.
            store.add_event(referral_id, "eligibility", None, coverage.status, at, "payer", f"req{request['id']}",
                            f"answer for the earlier member id ignored: {coverage.summary()}")
            return coverage
        status = coverage.status
        store.update(referral_id, {"coverage_status": status, "coverage_plan": coverage.plan,
                                   "coverage_checked_at": at}, at)
        store.add_event(referral_id, "eligibility", referral.get("coverage_status"), status, at, "payer",
                        f"req{request['id']}", f"{request['payer']} 271: {coverage.summary()}")
        payer = payer_of(self.cfg, referral)
        if coverage.status == "inactive":
            rejudge(conn, referral_id, self.config.referrals, at, "payer", f"req{request['id']}",
                    f"coverage inactive: {request['payer']} 271 says {coverage.reason}")
            store.set_next_action(referral_id, f"Coverage inactive with {request['payer']}: ask the patient for "
                                  "current insurance, then update the referral", None, "payer", at)
        elif coverage.status == "rejected":
            store.set_next_action(referral_id, f"{request['payer']} could not verify eligibility ({coverage.reason}): "
                                  "check the member id and patient details, or verify by phone", None, "payer", at)
        else:
            referral = store.get(referral_id)
            rule = auth_rule(payer, referral, coverage.plan) if payer is not None else None
            if rule is not None and not referral.get("authorization_required"):
                store.update(referral_id, {"authorization_required": 1, "authorization_status":
                                           referral.get("authorization_status") or "required"}, at)
                store.add_event(referral_id, "authorization", None, "required", at, "payer", f"req{request['id']}",
                                f"{payer.name} requires prior authorization for plan {coverage.plan}")
                referral = store.get(referral_id)
            moved = rejudge(conn, referral_id, self.config.referrals, at, "payer", f"req{request['id']}",
                            f"coverage active with {request['payer']}")
            if rule is not None:
                Authorizations(self.config).request(conn, store.get(referral_id), payer, rule, at=at,
                                                    cause=f"req{request['id']}")
            if (referral.get("next_action") or "").startswith("Eligibility pending"):
                store.set_next_action(referral_id, "Schedule the patient" if moved == "ready" else
                                      "Prior authorization pending" if rule else "Coverage verified", None,
                                      "payer", at)
        return coverage


def report(conn: sqlite3.Connection, referral_id: int) -> list[dict]:
    """What was asked and answered for a referral, oldest first (the CLI's `eligibility ID`)."""
    out = []
    for r in conn.execute(
            "SELECT q.id, q.payer, q.payer_id, q.member_id, q.trace, q.status, q.outcome, q.summary, q.result, "
            "q.asked_at, q.answered_at, q.outbound_id, o.status AS delivery, o.attempts, o.last_error "
            "FROM payer_requests q LEFT JOIN outbound o ON o.id=q.outbound_id WHERE q.referral_id=? AND "
            "q.kind='eligibility' ORDER BY q.id", (referral_id,)):
        item = dict(r)
        item["result"] = json.loads(item["result"]) if item["result"] else None
        out.append(item)
    return out

