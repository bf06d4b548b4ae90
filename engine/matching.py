"""Which referral a message belongs to: pure rules over a small look-up interface.

Rules, first hit wins:
  1. a coordinator's link (`link MESSAGE_ID REFERRAL_ID`) for this message;
  2. placer order number (ORC-2 / RF1-6 / SCH-26), then filler order number;
  3. referral number;
  4. appointment placer / filler ids (SCH-1 / SCH-2) of an appointment already stored;
  5. patient identifier (id + assigning authority) + specialty (when the message
     has one) + the referral's date within `window_days` of the event.

A new order (`referral.order`) is matched by its numbers (rules 1-3); an order with
unknown numbers is a new referral, even for a known patient, with one exception:
an order bringing a referral number (REF^I12 from a referral hub forwarding the
order) joins the patient's one open referral of that specialty inside the window
that has no referral number yet (rule 5, "forwarded").

Rules 2-4 match when exactly one referral carries the number. Rule 5 prefers
open referrals over finished ones; several remaining candidates are ambiguous.
An ambiguous or empty result is `Match(None, candidates)`: the caller keeps the
message unmatched with its candidates, never guesses.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

from engine.normalized import Mapped


@dataclass(frozen=True, slots=True)
class Candidate:
    id: int
    status: str
    specialty: str | None
    referred_at: str | None          # ISO; when the referral was ordered
    referral_number: str | None = None


class ReferralLookup(Protocol):
    """What matching needs from the store; each returns referral ids (or candidates)."""
    def linked_referral(self, message_id: int) -> int | None: ...
    def by_order_number(self, placer: str | None, filler: str | None) -> list[int]: ...
    def by_referral_number(self, number: str) -> list[int]: ...
    def by_appointment(self, placer_id: str | None, filler_id: str | None) -> list[int]: ...
    def by_patient(self, identifiers: list[tuple[str, str | None]]) -> list[Candidate]: ...


@dataclass(frozen=True, slots=True)
class Match:
    referral_id: int | None
    rule: str | None = None
    candidates: tuple[int, ...] = ()


FINISHED = {"closed", "canceled", "declined", "rejected", "leaked", "completed"}


def parse_time(value: str | None) -> datetime | None:
    """ISO timestamp or date; naive values count as UTC. None for anything unreadable."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def match(mapped: Mapped, lookup: ReferralLookup, *, message_id: int | None = None, window_days: float = 90,
          now: str | None = None) -> Match:
    if message_id is not None:
        linked = lookup.linked_referral(message_id)
        if linked is not None:
            return Match(linked, "link")
    if mapped.placer_order_number or mapped.filler_order_number:
        # a placer number alone is the strongest key; a filler number counts only when no placer matched
        for placer, filler, rule in ((mapped.placer_order_number, None, "placer_order_number"),
                                     (None, mapped.filler_order_number, "filler_order_number")):
            if placer or filler:
                found = lookup.by_order_number(placer, filler)
                if len(found) == 1:
                    return Match(found[0], rule)
    if mapped.referral_number:
        found = lookup.by_referral_number(mapped.referral_number)
        if len(found) == 1:
            return Match(found[0], "referral_number")
    forwarded = mapped.event == "referral.order"
    if forwarded and not mapped.referral_number:
        return Match(None)
    appointment = mapped.appointment if not forwarded else None
    if appointment and (appointment.placer_id or appointment.filler_id):
        found = lookup.by_appointment(appointment.placer_id, appointment.filler_id)
        if len(found) == 1:
            return Match(found[0], "appointment")
    identifiers = [(i.id, i.authority) for i in mapped.patient.identifiers if i.id]
    if not identifiers:
        return Match(None)
    at = parse_time(mapped.event_time) or parse_time(now) or datetime.now(timezone.utc)
    window = timedelta(days=window_days)
    candidates = []
    for c in lookup.by_patient(identifiers):
        if mapped.specialty and c.specialty and c.specialty != mapped.specialty:
            continue
        referred = parse_time(c.referred_at)
        if referred is not None and abs(at - referred) > window:
            continue
        candidates.append(c)
    open_ = [c for c in candidates if c.status not in FINISHED]
    if forwarded:
        chosen = [c for c in open_ if not c.referral_number]
        return Match(chosen[0].id, "forwarded") if len(chosen) == 1 else Match(None)
    chosen = open_ if open_ else candidates
    if len(chosen) == 1:
        return Match(chosen[0].id, "patient")
    return Match(None, candidates=tuple(sorted(c.id for c in candidates)))
