"""The referral state machine: each event's rule, and properties over random event sequences."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.lifecycle import EVENTS, TRANSITIONS, Facts, ReferralStatus, close, decide

S = ReferralStatus
facts_strategy = st.builds(Facts, missing=st.sampled_from([(), ("member_id",), ("reason", "diagnosis")]),
                           authorization_pending=st.booleans(), active_appointments=st.integers(0, 2),
                           order_canceled=st.booleans())


def test_a_new_order_is_judged_for_completeness_at_once():
    assert decide(None, "referral.order", Facts()).to == S.READY
    assert decide(None, "referral.order", Facts(missing=("member_id",))).to == S.INCOMPLETE
    assert decide(None, "referral.order", Facts(authorization_pending=True)).to == S.AUTH_PENDING


def test_only_an_order_creates_a_referral_and_unknown_events_are_refused():
    with pytest.raises(ValueError, match="keep the message unmatched"):
        decide(None, "appointment.booked")
    with pytest.raises(ValueError, match="unknown event kind"):
        decide(S.READY, "appointment.exploded")


@pytest.mark.parametrize("current, event, facts, to", [
    (S.INCOMPLETE, "referral.update", Facts(), S.READY),                 # a later message filled the gaps
    (S.READY, "patient.updated", Facts(missing=("patient_phone",)), S.INCOMPLETE),
    (S.INCOMPLETE, "appointment.booked", Facts(missing=("member_id",)), S.SCHEDULED),
    (S.READY, "appointment.rescheduled", Facts(active_appointments=1), S.SCHEDULED),   # S13 before S12
    (S.SCHEDULED, "appointment.no_show", Facts(), S.NO_SHOW),
    (S.NO_SHOW, "appointment.booked", Facts(active_appointments=1), S.SCHEDULED),      # re-booked
    (S.SCHEDULED, "appointment.canceled", Facts(), S.CANCELED),
    (S.CANCELED, "appointment.booked", Facts(active_appointments=1), S.SCHEDULED),     # after an S15
    (S.SCHEDULED, "appointment.completed", Facts(), S.COMPLETED),
    (S.SCHEDULED, "visit.completed", Facts(), S.COMPLETED),
    (S.SCHEDULED, "note.received", Facts(), S.COMPLETED),                # note overtook the S14
    (S.READY, "referral.cancel", Facts(), S.CANCELED),
])
def test_moves(current, event, facts, to):
    assert decide(current, event, facts).to == to


@pytest.mark.parametrize("current, event, facts", [
    (S.SCHEDULED, "appointment.booked", Facts(active_appointments=2)),   # a second appointment
    (S.SCHEDULED, "appointment.canceled", Facts(active_appointments=1)), # another stays booked
    (S.SCHEDULED, "patient.updated", Facts()),
    (S.COMPLETED, "visit.completed", Facts()),
    (S.CANCELED, "referral.cancel", Facts()),
    (S.READY, "ignored", Facts()),
    (S.NEEDS_REVIEW, "referral.update", Facts()),                        # a human looks first
])
def test_status_stays(current, event, facts):
    decision = decide(current, event, facts)
    assert decision.to is None and decision.exception is None


@pytest.mark.parametrize("current, event, facts, text", [
    (S.CLOSED, "appointment.no_show", Facts(), "no-show on a closed referral"),
    (S.CANCELED, "note.received", Facts(), "consult note on a canceled referral"),
    (S.NO_SHOW, "note.received", Facts(), "consult note on a no_show referral"),
    (S.CANCELED, "appointment.booked", Facts(order_canceled=True), "appointment booked on a canceled referral"),
    (S.COMPLETED, "referral.cancel", Facts(), "order cancel on a completed referral"),
    (S.LEAKED, "visit.completed", Facts(), "visit completed on a leaked referral"),
])
def test_events_that_do_not_fit_are_exceptions(current, event, facts, text):
    decision = decide(current, event, facts)
    assert decision.to is None and decision.exception == text


def test_a_note_completes_and_marks_the_note_and_closing_needs_delivery():
    decision = decide(S.COMPLETED, "note.received")
    assert decision.to is None and decision.note_received
    assert close(S.COMPLETED, note_received=True).to == S.CLOSED
    assert close(S.COMPLETED, note_received=False).exception == "loop closure on a completed referral"
    assert close(S.SCHEDULED, note_received=True).exception


@settings(max_examples=300, deadline=None)
@given(first=facts_strategy, steps=st.lists(st.tuples(st.sampled_from(EVENTS), facts_strategy), max_size=25))
def test_random_event_sequences_stay_inside_the_transition_graph(first, steps):
    status = decide(None, "referral.order", first).to
    assert status in TRANSITIONS[None]
    for event, facts in steps:
        decision = decide(status, event, facts)
        assert decision.to is None or decision.exception is None        # a refusal never moves
        if decision.to is not None:
            assert decision.to in TRANSITIONS[status], (status, event, decision)
            assert decision.to != status
            status = decision.to
    assert status in set(ReferralStatus)


@settings(max_examples=200, deadline=None)
@given(status=st.sampled_from(list(ReferralStatus)), event=st.sampled_from(EVENTS), facts=facts_strategy)
def test_every_status_and_event_has_a_rule(status, event, facts):
    decision = decide(status, event, facts)
    assert decision.to is None or decision.to in TRANSITIONS[status]
    if status in (S.CLOSED, S.DECLINED, S.REJECTED, S.LEAKED):
        assert decision.to is None       # nothing inbound reopens a finished referral
