"""The referral lifecycle: a small explicit state machine, pure (no SQL, no sockets).

`decide(current, event, facts)` says what one event does to a referral: move it
to a new status, keep its status (the event's data is still applied: a second
appointment, a demographic update), or refuse it as an `Exception` for a
coordinator to review (a no-show on a closed referral, a note for a canceled
one). Nothing is silently applied or dropped: every outcome is one of those
three, and the caller records it (history row, data, or review exception).

Main path: received -> needs_review | incomplete -> ready -> auth_pending ->
scheduled -> completed -> closed; side states canceled, declined, no_show
(re-schedulable), rejected, leaked.

Decisions worth knowing (see `_RULES`):
- A new HL7 order is judged for completeness at once, so it is created as
  `incomplete`, `auth_pending` or `ready` (the history row goes from none to that
  status); `received` and `needs_review` belong to fax intake, where a human looks
  first. While a referral is before scheduling, any event that fills a missing
  item moves it on (incomplete -> ready).
- A consult note on a `scheduled` referral (the note overtook the visit-complete
  message) completes it and keeps the note: the note proves the visit. A note on
  a referral never scheduled does the same (the scheduling feed may be elsewhere).
  A note on a no-show, canceled, declined, rejected, leaked or closed referral is
  an exception.
- `completed` with `note_received` is as far as inbound messages go: `closed`
  arrives when the note has been delivered back to the referring provider and
  that destination ACKed (outbound queue), via `close()`.
- An appointment canceled (SIU^S15) cancels the referral when no other appointment
  stays active (also when we never saw the booking: an external practice's S12
  may not reach us); a later booking re-schedules it, unless the order itself was
  canceled (then the booking is an exception).
- A visit completed / appointment completed on an unscheduled or no-show referral
  completes it (the schedule's messages were late or lost).
- A coordinator's status change (`manual_transition`, table `MANUAL_TRANSITIONS`) is
  a subset of the same graph, never to scheduled/completed/closed/leaked (messages,
  delivery and the schedule say those); refused with `ManualTransitionRefused`,
  whose message lists what is allowed from the current status.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import get_args

from engine.normalized import EventKind


class ReferralStatus(StrEnum):
    RECEIVED = "received"
    NEEDS_REVIEW = "needs_review"
    INCOMPLETE = "incomplete"
    READY = "ready"
    AUTH_PENDING = "auth_pending"
    SCHEDULED = "scheduled"
    COMPLETED = "completed"
    CLOSED = "closed"
    CANCELED = "canceled"
    DECLINED = "declined"
    NO_SHOW = "no_show"
    REJECTED = "rejected"
    LEAKED = "leaked"


S = ReferralStatus
EVENTS: tuple[str, ...] = get_args(EventKind)
ORDER_EVENTS = frozenset({"referral.order"})

# Before an appointment exists: completeness decides between these.
INTAKE = frozenset({S.RECEIVED, S.NEEDS_REVIEW, S.INCOMPLETE, S.READY, S.AUTH_PENDING})
# Nothing inbound moves a referral out of these; events on them are exceptions.
FINAL = frozenset({S.CLOSED, S.CANCELED, S.DECLINED, S.REJECTED, S.LEAKED})

# Every move the engine may make, whatever causes it (message, user, schedule).
# The property tests check that `decide` never leaves this graph.
TRANSITIONS: dict[ReferralStatus | None, frozenset[ReferralStatus]] = {
    None: frozenset({S.RECEIVED, S.NEEDS_REVIEW, S.INCOMPLETE, S.READY, S.AUTH_PENDING}),
    S.RECEIVED: frozenset({S.NEEDS_REVIEW, S.INCOMPLETE, S.READY, S.AUTH_PENDING, S.SCHEDULED, S.COMPLETED,
                           S.NO_SHOW, S.CANCELED, S.DECLINED, S.REJECTED}),
    S.NEEDS_REVIEW: frozenset({S.INCOMPLETE, S.READY, S.AUTH_PENDING, S.SCHEDULED, S.COMPLETED, S.NO_SHOW,
                               S.CANCELED, S.DECLINED, S.REJECTED}),
    S.INCOMPLETE: frozenset({S.READY, S.AUTH_PENDING, S.SCHEDULED, S.COMPLETED, S.NO_SHOW, S.CANCELED,
                             S.DECLINED, S.REJECTED, S.LEAKED}),
    S.READY: frozenset({S.INCOMPLETE, S.AUTH_PENDING, S.SCHEDULED, S.COMPLETED, S.NO_SHOW, S.CANCELED,
                        S.DECLINED, S.REJECTED, S.LEAKED}),
    S.AUTH_PENDING: frozenset({S.INCOMPLETE, S.READY, S.SCHEDULED, S.COMPLETED, S.NO_SHOW, S.CANCELED,
                               S.DECLINED, S.REJECTED, S.LEAKED}),
    S.SCHEDULED: frozenset({S.COMPLETED, S.NO_SHOW, S.CANCELED, S.LEAKED}),
    S.NO_SHOW: frozenset({S.SCHEDULED, S.COMPLETED, S.CANCELED, S.LEAKED,
                          S.READY}),           # a coordinator re-opens it for re-scheduling
    S.COMPLETED: frozenset({S.CLOSED}),
    S.CANCELED: frozenset({S.SCHEDULED,        # re-booked after an appointment cancel (not an order cancel)
                           S.READY}),          # a coordinator re-opens it
    S.CLOSED: frozenset(),
    S.DECLINED: frozenset(),
    S.REJECTED: frozenset(),
    S.LEAKED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Facts:
    """What the lifecycle needs to know besides the event, computed by the caller after merging the event's data."""
    missing: tuple[str, ...] = ()           # required items still missing (config: referrals.completeness)
    authorization_pending: bool = False     # authorization required and not yet granted
    active_appointments: int = 0            # appointments still booked after applying this event
    order_canceled: bool = False            # the order itself was canceled (not just an appointment)


@dataclass(frozen=True, slots=True)
class Decision:
    """`to` is the new status (None: the status stays); `exception` set is the review record's text
    ("no-show on a closed referral"): apply nothing, keep the message linked, show it for review."""
    to: ReferralStatus | None = None
    exception: str | None = None
    detail: str | None = None
    note_received: bool = False


def intake_status(facts: Facts) -> ReferralStatus:
    if facts.missing:
        return S.INCOMPLETE
    return S.AUTH_PENDING if facts.authorization_pending else S.READY


def _move(current: ReferralStatus | None, to: ReferralStatus, detail: str | None = None, **kw) -> Decision:
    return Decision(None if to == current else to, detail=detail, **kw)


def _refuse(current: ReferralStatus, what: str) -> Decision:
    return Decision(exception=f"{what} on a {current.value} referral")


def decide(current: ReferralStatus | None, event: str, facts: Facts = Facts()) -> Decision:
    """The outcome of `event` for a referral in status `current` (None: no referral yet, only an order creates one).

    Raises ValueError for an event kind that is not in engine.normalized.EventKind, or
    for a non-order event without a referral (the caller must match it or keep it unmatched)."""
    if event not in EVENTS:
        raise ValueError(f"unknown event kind {event!r}; valid: {', '.join(EVENTS)}")
    if current is None:
        if event not in ORDER_EVENTS:
            raise ValueError(f"{event} needs a referral to apply to; keep the message unmatched instead")
        return Decision(intake_status(facts), detail="referral created")
    current = ReferralStatus(current)
    if event == "ignored":
        return Decision(detail="mapped to nothing")
    if event in ("patient.registered", "patient.updated", "referral.order", "referral.update"):
        if current in FINAL:
            return _refuse(current, "order update" if event.startswith("referral.") else "patient update")
        if current == S.NEEDS_REVIEW:
            return Decision(detail="data updated; waits for review")
        if current in INTAKE:
            return _move(current, intake_status(facts))
        return Decision(detail="data updated")
    if event == "referral.cancel":
        if current in (S.COMPLETED, S.CLOSED, S.DECLINED, S.REJECTED, S.LEAKED):
            return _refuse(current, "order cancel")
        return _move(current, S.CANCELED, "order canceled")
    if event == "appointment.booked":
        if current in (S.COMPLETED, S.CLOSED, S.DECLINED, S.REJECTED, S.LEAKED) or (
                current == S.CANCELED and facts.order_canceled):
            return _refuse(current, "appointment booked")
        return _move(current, S.SCHEDULED)
    if event in ("appointment.rescheduled", "appointment.modified"):
        if current in FINAL - {S.CANCELED} or current == S.COMPLETED or (
                current == S.CANCELED and facts.order_canceled):
            return _refuse(current, "appointment change")
        if current == S.CANCELED and not facts.active_appointments:
            return Decision(detail="canceled appointment changed")
        return _move(current, S.SCHEDULED)
    if event == "appointment.canceled":
        if current in (S.COMPLETED, S.CLOSED, S.DECLINED, S.REJECTED, S.LEAKED):
            return _refuse(current, "appointment cancel")
        if facts.active_appointments:
            return Decision(detail="another appointment stays booked")
        return _move(current, S.CANCELED, "appointment canceled")
    if event == "appointment.no_show":
        if current in FINAL or current == S.COMPLETED:
            return _refuse(current, "no-show")
        return _move(current, S.NO_SHOW)
    if event in ("appointment.completed", "visit.completed"):
        if current in (S.COMPLETED, S.CLOSED):
            return Decision(detail="visit already completed")
        if current in FINAL:
            return _refuse(current, "visit completed")
        return _move(current, S.COMPLETED, "visit completed")
    if event == "note.received":
        if current in FINAL or current == S.NO_SHOW:
            return _refuse(current, "consult note")
        detail = "consult note received" if current in (S.SCHEDULED, S.COMPLETED) else \
            "consult note received before any appointment"
        return _move(current, S.COMPLETED, detail, note_received=True)
    raise AssertionError(f"event {event} has no rule")   # pragma: no cover - EVENTS is exhaustive above


def close(current: ReferralStatus, note_received: bool) -> Decision:
    """The loop closes when the consult note was delivered back (outbound destination ACKed)."""
    if current != S.COMPLETED or not note_received:
        return _refuse(ReferralStatus(current), "loop closure")
    return Decision(S.CLOSED, detail="consult note delivered")


# ---- coordinator (user) actions ---------------------------------------------------
#
# What a coordinator may do by hand, per status. A subset of TRANSITIONS (a test checks it).
# Never by hand: scheduled (the scheduling system's SIU says so), completed (a visit or a note
# message), closed (the consult note's delivery ACK), leaked (the aging schedule).
_CLOSE_OUT = frozenset({S.CANCELED, S.DECLINED, S.REJECTED})
MANUAL_TRANSITIONS: dict[ReferralStatus, frozenset[ReferralStatus]] = {
    S.RECEIVED: _CLOSE_OUT | {S.READY},        # reviewed and accepted
    S.NEEDS_REVIEW: _CLOSE_OUT | {S.READY},    # the fax review is done
    S.INCOMPLETE: _CLOSE_OUT | {S.READY},      # missing items obtained outside HL7 (phone, portal)
    S.READY: _CLOSE_OUT,
    S.AUTH_PENDING: _CLOSE_OUT,
    S.SCHEDULED: frozenset({S.CANCELED}),      # the appointment's own cancel comes by SIU^S15
    S.NO_SHOW: frozenset({S.CANCELED, S.READY}),   # give up, or re-open for re-scheduling
    S.CANCELED: frozenset({S.READY}),          # re-open
    S.COMPLETED: frozenset(),
    S.CLOSED: frozenset(),
    S.DECLINED: frozenset(),
    S.REJECTED: frozenset(),
    S.LEAKED: frozenset(),
}
_WHERE_FROM = {S.SCHEDULED: "the scheduling system's SIU messages", S.COMPLETED: "a visit-completed or "
               "consult-note message", S.CLOSED: "the consult note's delivery to the referring provider",
               S.LEAKED: "the aging schedule"}


class ManualTransitionRefused(ValueError):
    """A coordinator asked for a status change the lifecycle does not allow by hand (or gave no reason).

    `allowed` is what the coordinator may set from `current`; the message names it."""

    def __init__(self, current: ReferralStatus, to: str, message: str):
        super().__init__(message)
        self.current, self.to = current, to
        self.allowed = tuple(sorted(MANUAL_TRANSITIONS.get(current, ())))


def manual_transition(current: ReferralStatus | str, to: ReferralStatus | str, reason: str | None) -> Decision:
    """The decision for a coordinator's status change `current -> to`, whose `reason` becomes the
    history row's detail. Raises ManualTransitionRefused when `to` is not a status, not allowed by hand
    from `current` (the message lists what is), or the reason is blank."""
    current = ReferralStatus(current)
    allowed = sorted(MANUAL_TRANSITIONS[current])
    can = f"from {current.value} a coordinator may set: {', '.join(allowed)}" if allowed else \
        f"a {current.value} referral cannot be changed by hand"
    try:
        target = ReferralStatus(to)
    except ValueError:
        raise ManualTransitionRefused(current, str(to), f"{to!r} is not a referral status (valid: "
                                      f"{', '.join(ReferralStatus)}); {can}") from None
    if target not in MANUAL_TRANSITIONS[current]:
        origin = f" ({target.value} comes from {_WHERE_FROM[target]})" if target in _WHERE_FROM else ""
        raise ManualTransitionRefused(current, target.value,
                                      f"{current.value} -> {target.value} is not a coordinator action{origin}; {can}")
    if not (reason or "").strip():
        raise ManualTransitionRefused(current, target.value, f"{current.value} -> {target.value} needs a reason "
                                      "(it is kept in the status history)")
    return Decision(target, detail=reason.strip())
