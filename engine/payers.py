"""Payers at intake: which payer a referral names, what it wants, and the store tables for what we asked it.

Pure look-ups over `payers:` in config.yaml (`find_payer`, `auth_rule`), the schema
of migration 7 (`migrate_payers`), `rejudge` (completeness re-judged after a payer
answered), and `PayerDesk`, which wires eligibility (engine/eligibility.py) and prior
authorization (engine/authorization.py) into the engine:

- `after_apply` runs in the journal writer's transaction right after a message changed a
  referral (before the outbound rules): it marks the referral `authorization_required`
  when the payer's rules say so (ready -> auth_pending) and queues an X12 270 to the
  payer gateway for new referrals (`payers.eligibility_on`) and when the payer or member
  id changes. It returns the `Applied` the outbound rules should see (its `to_status`
  follows the move to auth_pending, so a `status:ready` rule does not fire for a
  referral that is not ready).
- `on_response` maps outbound message types (`x12_270`, `x12_278`) to the handlers that
  apply the payer's answer where the delivery is recorded (engine/delivery.py; with a file
  destination, where the answer file is swept from `payers.inbox`: engine/payer_exchange.py); a
  handler that raises (malformed 271/278) leaves the row `sent` with the answer kept
  and a review exception for the coordinators.
- `sweep` escalates authorizations past the payer's expected turnaround and asks again
  about pended ones (schedules: `payers.sweep_every_minutes`).

Bad paths: a payer not in `payers.rules` gets an `eligibility` event saying so (verify by
phone); no member id, no 270 (completeness rules say what is missing); no gateway
configured (`payers.destination` null), nothing is queued and nothing fails.
"""
from __future__ import annotations

import dataclasses
import sqlite3

import sqlite_utils

from engine.config import EngineConfig, PayerRule, PayersConfig, PriorAuthRule, ReferralsConfig
from engine.lifecycle import TRANSITIONS, Facts, ReferralStatus, intake_status
from engine.referral_store import ReferralStore

ACTOR = "payer"
# Statuses where eligibility and authorization still decide something (before scheduling).
JUDGED = ("incomplete", "ready", "auth_pending")
BEFORE_SCHEDULING = ("received", "needs_review", "incomplete", "ready", "auth_pending")


def migrate_payers(db: sqlite_utils.Database) -> None:
    """Migration 7: what we asked payers and what they answered; authorizations; coverage on the referral.
    `db` is sqlite_utils.Database on SQLite, engine.db.PgSchema on PostgreSQL (the same calls)."""
    db["payer_requests"].create({
        "id": int, "referral_id": int, "kind": str, "outbound_id": int, "authorization_id": int, "trace": str,
        "payer": str, "payer_id": str, "member_id": str, "service_type": str, "status": str, "outcome": str,
        "summary": str, "result": str, "error": str, "asked_at": str, "answered_at": str,
    }, pk="id", not_null={"referral_id", "kind", "status", "asked_at"},
        foreign_keys=[("referral_id", "referrals", "id")])
    t = db["payer_requests"]
    t.create_index(["referral_id", "id"])
    t.create_index(["outbound_id"])
    t.create_index(["kind", "asked_at"])
    db["authorizations"].create({
        "id": int, "referral_id": int, "payer": str, "payer_id": str, "service": str, "service_type": str,
        "documents": str, "status": str, "number": str, "valid_from": str, "valid_to": str, "reason": str,
        "trace": str, "requested_at": str, "due_at": str, "decided_at": str, "decided_by": str,
        "escalation_level": int, "escalated_at": str, "updated_at": str,
    }, pk="id", not_null={"referral_id", "status", "requested_at"}, defaults={"escalation_level": 0},
        foreign_keys=[("referral_id", "referrals", "id")])
    a = db["authorizations"]
    a.create_index(["referral_id", "id"])
    a.create_index(["status", "due_at"])          # the overdue sweep; referrals waiting on auth
    a.create_index(["payer", "decided_at"])       # KPIs: turnaround and denial rate by payer
    r = db["referrals"]
    r.add_column("coverage_status", str)          # pending | active | inactive | rejected (payer could not say)
    r.add_column("coverage_plan", str)
    r.add_column("coverage_checked_at", str)
    r.add_column("authorization_valid_from", str)
    r.add_column("authorization_valid_to", str)


# ---- payer rules (pure) ---------------------------------------------------------------------------

def find_payer(cfg: PayersConfig, name: str | None, payer_id: str | None = None) -> PayerRule | None:
    """The configured payer a referral means: its payer name (IN1-4, fax) as a name or alias,
    case-insensitive, else its payer id (IN1-3) as a payer_id or alias."""
    for key in ((name or "").strip().lower(), (payer_id or "").strip().lower()):
        if not key:
            continue
        for rule in cfg.rules:
            if key == rule.name.lower() or key in (a.lower() for a in rule.aliases) or key == rule.payer_id.lower():
                return rule
    return None


def payer_of(cfg: PayersConfig, referral: dict) -> PayerRule | None:
    """`find_payer` for a referral row (its payer name, and the first insurance's payer id)."""
    insurance = referral.get("insurance") or []
    first = insurance[0] if isinstance(insurance, list) and insurance and isinstance(insurance[0], dict) else {}
    return find_payer(cfg, referral.get("payer"), first.get("payer_id"))


def _any(values: list[str], *candidates: str | None) -> bool:
    wanted = {v.lower() for v in values}
    for candidate in candidates:
        if candidate and (candidate.lower() in wanted or wanted & set(candidate.lower().split())):
            return True
    return False


def auth_rule(payer: PayerRule, referral: dict, plan: str | None = None) -> PriorAuthRule | None:
    """The first prior-auth rule of `payer` this referral falls under (None: no authorization needed)."""
    for rule in payer.prior_auth:
        if rule.specialty and not _any(rule.specialty, referral.get("specialty")):
            continue
        if rule.service and not _any(rule.service, referral.get("service_code"), referral.get("service_text")):
            continue
        if rule.plan and not _any(rule.plan, plan or referral.get("coverage_plan")):
            continue
        return rule
    return None


def turnaround_days(payer: PayerRule, rule: PriorAuthRule | None) -> float:
    return rule.turnaround_days if rule is not None and rule.turnaround_days else payer.turnaround_days


# ---- completeness after a payer's answer ----------------------------------------------------------

def rejudge(conn: sqlite3.Connection, referral_id: int, rules: ReferralsConfig, at: str, cause_kind: str,
            cause_id, detail: str | None, trigger: bool = True) -> str | None:
    """Re-run the completeness rules (engine.referrals.missing_items, which count inactive coverage as
    missing `active_coverage` and a required, not granted authorization as pending) for a referral before
    scheduling, and move incomplete/ready/auth_pending through `set_status` when the answer changed.
    Returns the new status, or None when it stays (the `missing` list is refreshed either way).
    With `trigger` (a payer's answer, a coordinator's decision: changes the outbound rules did not see) the
    move is noted for the rules (engine.rules.note_trigger), so a `status:ready` rule fires as for a message."""
    from engine.referrals import missing_items
    store = ReferralStore(conn)
    referral = store.get(referral_id)
    if referral is None or referral["status"] not in BEFORE_SCHEDULING:
        return None
    n_diagnoses, n_identifiers, n_documents = store.completeness_counts(referral_id)
    missing, auth_pending = missing_items(referral, rules, diagnoses=n_diagnoses, identifiers=n_identifiers,
                                          documents=bool(n_documents))
    current = ReferralStatus(referral["status"])
    target = intake_status(Facts(tuple(missing), auth_pending))
    if current.value in JUDGED and target != current and target in TRANSITIONS[current]:
        store.set_status(referral_id, current.value, target.value, at, cause_kind, cause_id, detail,
                         fields={"missing": missing})
        if trigger:
            from engine.rules import note_trigger
            note_trigger(conn, referral_id, None, current.value, target.value, cause_kind, str(cause_id), at)
        return target.value
    if missing != (referral.get("missing") or []):
        store.update(referral_id, {"missing": missing}, at)
    return None


# ---- the engine's payer desk ----------------------------------------------------------------------

class PayerDesk:
    """Eligibility and prior authorization wired into the engine (see the module docstring)."""

    def __init__(self, config: EngineConfig):
        from engine.authorization import Authorizations
        from engine.eligibility import Eligibility
        self.config = config
        self.cfg = config.payers
        self.eligibility = Eligibility(config)
        self.authorizations = Authorizations(config)

    @property
    def enabled(self) -> bool:
        return self.cfg.destination is not None

    @property
    def on_response(self) -> dict:
        return {"x12_270": self.eligibility.apply_response, "x12_278": self.authorizations.apply_response}

    @property
    def answers_by_file(self) -> bool:
        """The gateway is an exchange folder (a file destination): answers come back as files in
        `payers.inbox` (engine/payer_exchange.py), not in a delivery's response."""
        from engine.config import FileDestination
        return self.enabled and isinstance(self.config.destinations().get(self.cfg.destination), FileDestination)

    @property
    def delivery_handlers(self) -> dict:
        """`on_response` for the delivery: empty for an exchange folder, where writing the request file is
        `sent` and the answer is applied when its file arrives (the file writer's ack is no answer)."""
        return {} if self.answers_by_file else self.on_response

    def after_apply(self, conn: sqlite3.Connection, message_id: int, applied):
        """See the module docstring. Returns `applied`, or a copy whose to_status is where the referral went."""
        if not self.enabled or applied.outcome not in ("created", "applied") or applied.referral_id is None:
            return applied
        referral_id = applied.referral_id
        cause = getattr(applied, "cause", None) or f"msg{message_id}"
        store = ReferralStore(conn)
        referral = store.get(referral_id)
        if referral is None or referral["status"] not in BEFORE_SCHEDULING:
            return applied
        at = referral["updated_at"]
        payer = payer_of(self.cfg, referral)
        first_time = applied.event in self.cfg.eligibility_on
        if payer is None:
            if first_time:
                store.add_event(referral_id, "eligibility", None, "unknown_payer", at, ACTOR, cause,
                                f"payer {referral.get('payer') or '(none)'} is not in payers.rules: verify "
                                "coverage and authorization by phone or portal")
            return applied
        rule = auth_rule(payer, referral)
        if rule is not None and not referral.get("authorization_required"):
            store.update(referral_id, {"authorization_required": 1,
                                       "authorization_status": referral.get("authorization_status") or "required"},
                         at)
            store.add_event(referral_id, "authorization", None, "required", at, ACTOR, cause,
                            f"{payer.name} requires prior authorization for {referral.get('specialty') or 'this service'}"
                            + (f"; documents: {', '.join(rule.documents)}" if rule.documents else ""))
            referral = store.get(referral_id)
        if payer.eligibility:
            self.eligibility.ask(conn, referral, payer, message_id, first_time=first_time, at=at)
        elif rule is not None:
            self.authorizations.request(conn, referral, payer, rule, at=at, cause=cause)
        if message_id is None:
            # A change made outside the writer (engine.rules.plan_triggers: a coordinator's status change, a
            # fax accepted in review): ask the payer, but leave the status the person chose alone.
            return applied
        # the outbound rules run right after this hook with the Applied it returns: no trigger needed
        moved = rejudge(conn, referral_id, self.config.referrals, at, "payer", cause,
                        f"prior authorization required by {payer.name}" if rule is not None else None, trigger=False)
        if moved is None:
            return applied
        return dataclasses.replace(applied, to_status=moved)

    def sweep(self, conn: sqlite3.Connection, now) -> dict:
        return self.authorizations.sweep(conn, now)

    def self_check(self) -> float:
        """Build a sample 270 and 278 and check them once at start-up: the 270 against pyx12's (derived)
        5010 map, the 278's envelope with pyx12's reader (engine/x12.py says why). Raises RuntimeError
        naming the problems; returns the seconds it took."""
        import time
        from datetime import datetime, timezone
        from engine.authorization import request_278
        from engine.config import PayerRule, PriorAuthRule
        from engine.eligibility import inquiry_270
        from engine import x12
        started = time.perf_counter()
        payer = self.cfg.rules[0] if self.cfg.rules else PayerRule(name="SAMPLE PAYER", payer_id="SAMPLE")
        sample = {"id": 1, "patient_family_name": "SAMPLE", "patient_given_name": "PATIENT",
                  "patient_birth_date": "1970-01-01", "patient_sex": "F", "member_id": "SAMPLE1",
                  "service_code": "99243"}
        at = datetime.now(timezone.utc)
        kw = dict(submitter_id=self.cfg.submitter_id, provider_name=self.cfg.provider_name,
                  provider_npi=self.cfg.provider_npi, control_number=1, trace="SELFCHECK", at=at)
        problems = x12.validate(inquiry_270(sample, payer, **kw), "270")
        try:
            x12.read(request_278(sample, payer, PriorAuthRule(), ["I10"], **kw))
        except x12.X12Error as exc:
            problems.append(f"278 {exc}")
        if problems:
            raise RuntimeError("payers: the X12 the engine would send is invalid: " + "; ".join(problems))
        return time.perf_counter() - started


def chain_after_apply(desk: PayerDesk | None, planner):
    """The journal's after_apply hook: the payer desk first (it may move the referral to auth_pending),
    then the outbound rules with what the desk returned. None when neither is configured."""
    if desk is None or not desk.enabled:
        return planner.after_apply if planner is not None else None

    def after_apply(conn: sqlite3.Connection, message_id: int, applied):
        applied = desk.after_apply(conn, message_id, applied)
        return planner.after_apply(conn, message_id, applied) if planner is not None else []
    return after_apply
