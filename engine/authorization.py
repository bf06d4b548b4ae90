"""Prior authorization: an X12 278 request when the payer's rules want one, its answer, the decision's
effect on the referral, overdue escalation, and the KPIs.

An authorization row (`authorizations`) lives through: `requested` (278 queued) -> `pending`
(pended by the payer: HCR01 A4) or `more_info` (HCR01 CT, or A4 with a reason: the payer wants
documents) -> `approved` (A1/A2/A6: number in HCR02, validity in DTP*AAH) | `denied` (A3) |
`not_required` (NA) | `canceled` (C). The referral mirrors it in `authorization_status`,
`authorization_number`, `authorization_valid_from/to`; while required and not granted it stays
`auth_pending` (engine.referrals.missing_items), and `approved`/`not_required` let the completeness
rules move it to `ready`, so scheduling can go ahead.

- Denial -> a review exception and a next action for the coordinator (notify the referring
  provider, appeal or cancel), the `payers.escalate_to` owner when the referral has none.
- `sweep`: past the payer's expected turnaround (`turnaround_days`, per payer or rule) a waiting
  authorization is escalated once per turnaround period (event `auth_overdue`, next action);
  pended ones are asked again every `payers.follow_up_hours` (a new 278, same trace).
- Payers who answer by phone or portal: `decide(...)` (CLI `auth-set`) records the decision by hand.

`read_278` is pure and raises `X12Error` naming the segment/element of an unusable answer.
"""
from __future__ import annotations

import json
import math
import re
import sqlite3
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from engine import outbound, x12
from engine.config import EngineConfig, PayerRule, PriorAuthRule
from engine.eligibility import answer_text, iso_date, originator, subscriber_segments
from engine.referral_store import ReferralStore
from engine.store import now_iso

STATUSES = ("requested", "pending", "more_info", "approved", "denied", "not_required", "canceled")
OPEN = ("requested", "pending", "more_info")
# HCR01 (X12 element 306, action code) -> our status.
ACTIONS = {"A1": "approved", "A2": "approved", "A6": "approved", "A3": "denied", "A4": "pending",
           "CT": "more_info", "NA": "not_required", "C": "canceled"}


@dataclass
class Decision:
    """What a 278 response (or a coordinator) says about one request."""
    status: str
    number: str | None = None
    valid_from: str | None = None
    valid_to: str | None = None
    reason: str | None = None
    action_code: str | None = None
    trace: str | None = None

    def summary(self) -> str:
        text = self.status.replace("_", " ")
        if self.number:
            text += f" #{self.number}"
        if self.valid_from or self.valid_to:
            text += f" valid {self.valid_from or '?'} to {self.valid_to or '?'}"
        if self.reason:
            text += f": {self.reason}"
        return text


def _diagnosis_composites(diagnoses: list[str]) -> list[tuple]:
    """HI: ICD-10-CM without the dot; the first is the principal (ABK), the rest other (ABF); at most 12."""
    codes = [re.sub(r"[^A-Z0-9]", "", c.upper()) for c in diagnoses if c][:12]
    return [("ABK" if i == 0 else "ABF", code) for i, code in enumerate(codes)]


def request_278(referral: dict, payer: PayerRule, rule: PriorAuthRule, diagnoses: list[str], *,
                submitter_id: str, provider_name: str, provider_npi: str, control_number: int, trace: str,
                at: datetime) -> str:
    """A 278 health care services review request (005010X217) for a specialty care referral: the payer
    (2010A), us as requester (2010B), the subscriber (2010C), the patient event (2000E: trace, UM for
    specialty care, diagnoses) and the service (2000F: the procedure, only when the order's service code
    is a CPT/HCPCS code; a local code such as CARDREF means nothing to a payer)."""
    procedure = referral.get("service_code") if re.fullmatch(r"\d{4}[0-9A-Z]|[A-Z]\d{4}",
                                                             referral.get("service_code") or "") else None
    tx = [x12.segment("BHT", "0007", "13", trace, at.strftime("%Y%m%d"), at.strftime("%H%M")),
          x12.segment("HL", "1", "", "20", "1"),
          x12.segment("NM1", "X3", "2", payer.name, "", "", "", "", "PI", payer.payer_id),
          x12.segment("HL", "2", "1", "21", "1"),
          x12.segment("NM1", "1P", "2", provider_name, "", "", "", "", "XX", provider_npi),
          x12.segment("HL", "3", "2", "22", "1"),
          *subscriber_segments(referral),
          x12.segment("HL", "4", "3", "EV", "1" if procedure else "0"),
          x12.segment("TRN", "1", trace, originator(provider_npi)),
          x12.segment("UM", "SC", "I", rule.service_type)]
    if diagnoses:
        tx.append(x12.segment("HI", *_diagnosis_composites(diagnoses)))
    if procedure:
        tx += [x12.segment("HL", "5", "4", "SS", "0"),
               x12.segment("UM", "SC", "I"),
               x12.segment("SV1", ("HC", procedure), "0", "UN", "1")]
    return x12.interchange(tx, functional_id="HI", version=x12.AUTHORIZATION_VERSION, sender_id=submitter_id,
                           receiver_id=payer.payer_id, control_number=control_number, at=at)


def read_278(text: str, expected_trace: str | None = None) -> Decision:
    """Read a 278 response. Raises X12Error: not X12 / broken envelope (engine.x12.read), not a 278 (ST01),
    a request rather than a response (BHT02), another request's trace (TRN02), no HCR and no AAA, an
    unknown HCR01 action, an approval without a number (HCR02), a malformed date (DTP03)."""
    doc = x12.read(text)
    if doc.transaction_set != "278":
        raise x12.X12Error("ST01", f"expected a 278 review response, got transaction set {doc.transaction_set!r}")
    bht = doc.first("BHT")
    if bht is not None and bht.get(2) == "13":
        raise x12.X12Error("BHT02", "this 278 is a request (13), not a response (11)")
    traces = [s.get(2) for s in doc.all("TRN")]
    if expected_trace and traces and expected_trace not in traces:
        raise x12.X12Error("TRN02", f"answers trace {traces[0]!r}, not this request's {expected_trace!r}")
    trace = traces[0] if traces else None
    message = "; ".join(s.get(1) for s in doc.all("MSG") if s.get(1)) or None
    rejections = doc.all("AAA")
    hcr = doc.first("HCR")
    if hcr is None:
        if rejections:
            codes = ", ".join(s.get(3) for s in rejections)
            return Decision("more_info", reason=f"payer rejected the request (AAA {codes})"
                            + (f": {message}" if message else ""), action_code="AAA", trace=trace)
        raise x12.X12Error("HCR", "the 278 response has no HCR (review decision) and no AAA (rejection)")
    code = hcr.get(1)
    if code not in ACTIONS:
        raise x12.X12Error("HCR01", f"unknown action code {code!r}; expected one of {', '.join(ACTIONS)}")
    status = ACTIONS[code]
    if status == "pending" and hcr.get(3):
        status = "more_info"               # pended with a reason: the payer wants something from us
    number = hcr.get(2) or next((s.get(2) for s in doc.all("REF") if s.get(1) in ("BB", "NT")), None) or None
    if status == "approved" and not number:
        raise x12.X12Error("HCR02", f"approval ({code}) without an authorization number")
    valid_from = valid_to = None
    for seg in doc.all("DTP"):
        if seg.get(1) in ("AAH", "472") and seg.get(2) in ("D8", "RD8"):
            begin, _, end = seg.get(3).partition("-")
            if not iso_date(begin) or (end and not iso_date(end)):
                raise x12.X12Error("DTP03", f"{seg.get(3)!r} is not a date (CCYYMMDD) or range")
            valid_from, valid_to = iso_date(begin), iso_date(end) if end else None
            break
    reason = " ".join(x for x in ((f"reason {hcr.get(3)}" if hcr.get(3) else None), message) if x) or None
    return Decision(status, number, valid_from, valid_to, reason, code, trace)


class Authorizations:
    """Prior authorization requests, answers and decisions (see the module docstring)."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.cfg = config.payers

    # ---- asking ----------------------------------------------------------------------------------

    def request(self, conn: sqlite3.Connection, referral: dict, payer: PayerRule, rule: PriorAuthRule, *,
                at: str, cause: str) -> int | None:
        """Open an authorization and queue its 278, unless one is open or granted already. Returns its id."""
        referral_id = referral["id"]
        if conn.execute("SELECT 1 FROM authorizations WHERE referral_id=? AND status IN "
                        "('requested','pending','more_info','approved','not_required')", (referral_id,)).fetchone():
            return None
        from engine.payers import turnaround_days
        days = turnaround_days(payer, rule)
        due = now_iso(datetime.fromisoformat(at) + timedelta(days=days))
        service = referral.get("service_code") or referral.get("service_text") or referral.get("specialty")
        auth_id = conn.execute(
            "INSERT INTO authorizations (referral_id, payer, payer_id, service, service_type, documents, status, "
            "requested_at, due_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING id",
            (referral_id, payer.name, payer.payer_id, service, rule.service_type, json.dumps(rule.documents),
             "requested", at, due, at)).fetchone()[0]
        trace = f"RA{referral_id}-{auth_id}"
        conn.execute("UPDATE authorizations SET trace=? WHERE id=?", (trace, auth_id))
        outbound_id = self._send(conn, referral, payer, rule, auth_id, trace, at, dedupe=f"278:{auth_id}:0",
                                 cause=cause)
        store = ReferralStore(conn)
        store.update(referral_id, {"authorization_status": "requested"}, at)
        store.add_event(referral_id, "authorization", referral.get("authorization_status"), "requested", at,
                        "payer", f"auth{auth_id}", f"278 to {payer.name} queued (outbound #{outbound_id}); "
                        f"decision expected within {days:g} days")
        documents = f"; send {', '.join(rule.documents)}" if rule.documents else ""
        store.set_next_action(referral_id, f"Prior authorization requested from {payer.name}{documents}",
                              due, "payer", at)
        return auth_id

    def _send(self, conn, referral: dict, payer: PayerRule, rule: PriorAuthRule, auth_id: int, trace: str,
              at: str, *, dedupe: str, cause: str, due: str | None = None) -> int | None:
        request_id = conn.execute(
            "INSERT INTO payer_requests (referral_id, kind, authorization_id, trace, payer, payer_id, member_id, "
            "service_type, status, asked_at) VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING id",
            (referral["id"], "authorization", auth_id, trace, payer.name, payer.payer_id, referral.get("member_id"),
             rule.service_type, "asked", at)).fetchone()[0]
        diagnoses = [r[0] for r in conn.execute("SELECT code FROM diagnoses WHERE referral_id=? ORDER BY id",
                                                (referral["id"],))]
        payload = request_278(referral, payer, rule, diagnoses, submitter_id=self.cfg.submitter_id,
                              provider_name=self.cfg.provider_name, provider_npi=self.cfg.provider_npi,
                              control_number=request_id, trace=trace, at=datetime.fromisoformat(at))
        outbound_id = outbound.enqueue(conn, outbound.Outbound(
            self.cfg.destination, "x12_278", x12.ascii_bytes(payload), control_id=f"{request_id:09d}",
            referral_id=referral["id"], rule="prior_authorization", dedupe_key=dedupe,
            patient_key=referral.get("patient_mrn") or str(referral["id"])), order=self.config.outbound.order, at=at,
            due=due)
        conn.execute("UPDATE payer_requests SET outbound_id=? WHERE id=?", (outbound_id, request_id))
        return outbound_id

    # ---- answers -----------------------------------------------------------------------------------

    def apply_response(self, conn: sqlite3.Connection, row, ack: str | None) -> Decision:
        """The delivery's handler for a sent `x12_278` row; raises X12Error for an unusable answer."""
        request = conn.execute("SELECT * FROM payer_requests WHERE outbound_id=?", (row["id"],)).fetchone()
        if request is None or request["authorization_id"] is None:
            raise LookupError(f"outbound #{row['id']}: no authorization request recorded for it")
        decision = read_278(answer_text(ack), expected_trace=request["trace"])
        at = outbound.now_iso()
        conn.execute("UPDATE payer_requests SET status='answered', outcome=?, summary=?, result=?, answered_at=? "
                     "WHERE id=?", (decision.status, decision.summary(), json.dumps(asdict(decision)), at,
                                    request["id"]))
        self.record(conn, request["authorization_id"], decision, at=at, by=None, cause_kind="payer",
                    cause_id=f"req{request['id']}")
        return decision

    def record(self, conn: sqlite3.Connection, auth_id: int, decision: Decision, *, at: str, by: str | None,
               cause_kind: str, cause_id: str) -> None:
        """Apply a decision (the payer's or a coordinator's) to the authorization and its referral."""
        from engine.payers import rejudge
        auth = conn.execute("SELECT * FROM authorizations WHERE id=?", (auth_id,)).fetchone()
        decided = decision.status not in OPEN
        conn.execute("UPDATE authorizations SET status=?, number=coalesce(?, number), valid_from=coalesce(?, "
                     "valid_from), valid_to=coalesce(?, valid_to), reason=?, decided_at=?, decided_by=?, "
                     "updated_at=? WHERE id=?",
                     (decision.status, decision.number, decision.valid_from, decision.valid_to, decision.reason,
                      at if decided else auth["decided_at"], by or (auth["payer"] if decided else None), at, auth_id))
        referral_id = auth["referral_id"]
        store = ReferralStore(conn)
        referral = store.get(referral_id)
        fields = {"authorization_status": decision.status}
        if decision.number:
            fields["authorization_number"] = decision.number
        if decision.valid_from or decision.valid_to:
            fields.update(authorization_valid_from=decision.valid_from, authorization_valid_to=decision.valid_to)
        store.update(referral_id, fields, at)
        who = f" (by {by})" if by else ""
        store.add_event(referral_id, "authorization", referral.get("authorization_status"), decision.status, at,
                        cause_kind, cause_id, f"{auth['payer']}: {decision.summary()}{who}")
        moved = rejudge(conn, referral_id, self.config.referrals, at, cause_kind, cause_id,
                        f"prior authorization {decision.status.replace('_', ' ')}")
        payer = auth["payer"]
        if decision.status in ("approved", "not_required"):
            valid = f", valid to {decision.valid_to}" if decision.valid_to else ""
            text = (f"Authorization approved (#{decision.number}{valid}): schedule the patient"
                    if decision.status == "approved" else f"{payer}: no authorization needed; schedule the patient")
            if moved != "ready" and referral["status"] != "ready":
                text = text.replace("schedule the patient", "complete the referral, then schedule")
            store.set_next_action(referral_id, text, None, cause_kind, at)
        elif decision.status == "denied":
            store.add_exception(referral_id, None, "authorization.denied", referral["status"],
                                f"prior authorization denied by {payer}" + (f": {decision.reason}"
                                                                            if decision.reason else ""), at)
            store.set_next_action(referral_id, f"Authorization denied by {payer}: notify the referring provider "
                                  "and the patient; appeal, or decline the referral", at, cause_kind, at)
            if not referral.get("owner") and self.cfg.escalate_to:
                store.assign(referral_id, self.cfg.escalate_to, cause_kind, at)
        elif decision.status == "more_info":
            documents = ", ".join(json.loads(auth["documents"] or "[]"))
            store.set_next_action(referral_id, f"{payer} needs more information for the authorization"
                                  + (f" ({decision.reason})" if decision.reason else "")
                                  + (f": send {documents}" if documents else ""), at, cause_kind, at)
        elif decision.status == "canceled":
            store.set_next_action(referral_id, f"{payer} canceled the authorization request: request it again "
                                  "or call the payer", at, cause_kind, at)

    def decide(self, conn: sqlite3.Connection, referral_id: int, status: str, *, number: str | None,
               valid_from: str | None, valid_to: str | None, by: str, note: str | None = None,
               at: str | None = None) -> dict:
        """A decision received by phone or portal, recorded by a coordinator (CLI `auth-set`). Raises
        ValueError naming what is wrong (unknown status, approval without a number, bad dates, no
        referral). Opens an authorization when none was requested through X12."""
        at = at or outbound.now_iso()
        if status not in STATUSES or status == "requested":
            raise ValueError(f"--status {status!r}: valid: {', '.join(s for s in STATUSES if s != 'requested')}")
        if status == "approved" and not number:
            raise ValueError("an approval needs the authorization number (--number)")
        for name, value in (("--valid-from", valid_from), ("--valid-to", valid_to)):
            if value and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                raise ValueError(f"{name} {value!r}: write a date as 2026-12-01")
        if valid_from and valid_to and valid_to < valid_from:
            raise ValueError(f"--valid-to {valid_to} is before --valid-from {valid_from}")
        store = ReferralStore(conn)
        referral = store.get(referral_id)
        if referral is None:
            raise ValueError(f"no referral with id {referral_id}")
        auth = conn.execute("SELECT id FROM authorizations WHERE referral_id=? ORDER BY id DESC LIMIT 1",
                            (referral_id,)).fetchone()
        if auth is None:
            auth_id = conn.execute(
                "INSERT INTO authorizations (referral_id, payer, service, status, requested_at, updated_at) "
                "VALUES (?,?,?,?,?,?) RETURNING id", (referral_id, referral.get("payer"), referral.get("service_code")
                                                      or referral.get("specialty"), "requested", at, at)
            ).fetchone()[0]
            store.update(referral_id, {"authorization_required": 1}, at)
        else:
            auth_id = auth[0]
        reason = note or ("recorded by hand (phone/portal)")
        self.record(conn, auth_id, Decision(status, number, valid_from, valid_to, reason, "manual"), at=at, by=by,
                    cause_kind="user", cause_id=by)
        return dict(conn.execute("SELECT * FROM authorizations WHERE id=?", (auth_id,)).fetchone())

    # ---- the schedule --------------------------------------------------------------------------------

    def sweep(self, conn: sqlite3.Connection, now: datetime) -> dict:
        """Escalate authorizations waiting past the payer's turnaround (one level per turnaround period) and
        ask again about pended ones every `follow_up_hours`. Idempotent for the same `now`."""
        from engine.payers import auth_rule, payer_of
        store = ReferralStore(conn)
        at = now_iso(now)
        escalated = followed = 0
        for auth in conn.execute("SELECT * FROM authorizations WHERE status IN ('requested','pending','more_info') "
                                 "AND due_at IS NOT NULL").fetchall():
            requested, due = datetime.fromisoformat(auth["requested_at"]), datetime.fromisoformat(auth["due_at"])
            period = (due - requested).total_seconds()
            if now >= due and period > 0:
                level = 1 + math.floor((now - due).total_seconds() / period)
                if level > (auth["escalation_level"] or 0):
                    conn.execute("UPDATE authorizations SET escalation_level=?, escalated_at=?, updated_at=? WHERE "
                                 "id=?", (level, at, at, auth["id"]))
                    waited = (now - requested).total_seconds() / 86400
                    store.add_event(auth["referral_id"], "auth_overdue", str(auth["escalation_level"] or 0),
                                    str(level), at, "schedule", f"auth{auth['id']}",
                                    f"{auth['payer']} has not decided after {waited:.1f} days "
                                    f"(expected {period / 86400:g})")
                    store.set_next_action(auth["referral_id"], f"Prior authorization overdue with {auth['payer']} "
                                          f"({waited:.0f} days): call the payer or use its portal, then auth-set",
                                          at, "schedule", at)
                    referral = store.get(auth["referral_id"])
                    if referral and not referral.get("owner") and self.cfg.escalate_to:
                        store.assign(auth["referral_id"], self.cfg.escalate_to, "schedule", at)
                    escalated += 1
            if auth["status"] == "pending" and self.cfg.follow_up_hours and self.cfg.destination and auth["trace"]:
                last = conn.execute("SELECT max(asked_at) FROM payer_requests WHERE authorization_id=?",
                                    (auth["id"],)).fetchone()[0] or auth["requested_at"]
                if (now - datetime.fromisoformat(last)).total_seconds() >= self.cfg.follow_up_hours * 3600:
                    referral = store.get(auth["referral_id"])
                    payer = payer_of(self.cfg, referral) if referral else None
                    rule = auth_rule(payer, referral) if payer else None
                    if payer is not None and rule is not None:
                        self._send(conn, referral, payer, rule, auth["id"], auth["trace"], at,
                                   dedupe=f"278:{auth['id']}:{at}", cause="follow_up",
                                   due=min(at, outbound.now_iso()))     # due now, also for a sweep run --at later
                        store.add_event(auth["referral_id"], "authorization", "pending", "pending", at, "schedule",
                                        f"auth{auth['id']}", f"asked {payer.name} again about the pended request")
                        followed += 1
        return {"escalated": escalated, "followed_up": followed}


# ---- reads -------------------------------------------------------------------------------------------

def report(conn: sqlite3.Connection, referral_id: int) -> dict:
    """The referral's authorizations and every 278 asked/answered (CLI `auth ID`)."""
    auths = []
    for a in conn.execute("SELECT * FROM authorizations WHERE referral_id=? ORDER BY id", (referral_id,)):
        item = dict(a)
        item["documents"] = json.loads(item["documents"]) if item["documents"] else []
        item["requests"] = []
        for r in conn.execute(
                "SELECT q.id, q.trace, q.status, q.outcome, q.summary, q.asked_at, q.answered_at, q.outbound_id, "
                "o.status AS delivery, o.attempts, o.last_error FROM payer_requests q LEFT JOIN outbound o ON "
                "o.id=q.outbound_id WHERE q.authorization_id=? ORDER BY q.id", (a["id"],)):
            item["requests"].append(dict(r))
        auths.append(item)
    return {"referral_id": referral_id, "authorizations": auths}


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 2)


def auth_kpis(conn: sqlite3.Connection, since: str | None = None, until: str | None = None) -> dict:
    """Prior-auth KPIs over authorizations decided in [since, until) (ISO times; None = unbounded):
    turnaround in days (median, p90; overall and per payer), denial rate per payer (denied / approved +
    denied), and referrals waiting on authorization now (count, oldest request)."""
    where, args = ["decided_at IS NOT NULL", "status IN ('approved','denied','not_required')"], []
    if since:
        where.append("decided_at>=?")
        args.append(since)
    if until:
        where.append("decided_at<?")
        args.append(until)
    per_payer: dict[str, dict] = {}
    days_all: list[float] = []
    for payer, status, requested, decided in conn.execute(
            f"SELECT coalesce(payer, '(unknown)'), status, requested_at, decided_at FROM authorizations "
            f"WHERE {' AND '.join(where)}", args):
        days = (datetime.fromisoformat(decided) - datetime.fromisoformat(requested)).total_seconds() / 86400
        p = per_payer.setdefault(payer, {"payer": payer, "decided": 0, "approved": 0, "denied": 0, "_days": []})
        p["decided"] += 1
        p[status if status != "not_required" else "approved"] += 1
        p["_days"].append(days)
        days_all.append(days)
    payers = []
    for p in sorted(per_payer.values(), key=lambda x: x["payer"]):
        days = p.pop("_days")
        judged = p["approved"] + p["denied"]
        p.update(median_days=_percentile(days, 0.5), p90_days=_percentile(days, 0.9),
                 denial_rate=round(p["denied"] / judged, 3) if judged else None)
        payers.append(p)
    waiting = conn.execute(
        "SELECT count(DISTINCT r.id), min(a.requested_at) FROM referrals r LEFT JOIN authorizations a ON a.referral_id=r.id "
        "AND a.status IN ('requested','pending','more_info') WHERE r.status='auth_pending'").fetchone()
    return {"since": since, "until": until, "decided": len(days_all),
            "turnaround_days": {"median": _percentile(days_all, 0.5), "p90": _percentile(days_all, 0.9)},
            "by_payer": payers, "waiting_on_auth": {"referrals": waiting[0], "oldest_requested_at": waiting[1]}}
