"""What a mapping makes of one HL7 message: the engine's normalized, vendor-neutral view.

The contract between `mappings/` (which fill it from HL7 paths) and the referral
lifecycle (which applies it to a referral). Every field is optional: a mapping
fills what its message carries; the lifecycle decides what is missing.

Values are normalized by the mapping layer: dates `YYYY-MM-DD`, timestamps ISO
8601 (`2026-11-23T10:15:00` or with offset), sex `M|F|U|O|A|N`, urgency
`routine|urgent|stat`, specialty lowercase canonical (`cardiology`), phone and
fax as 10 digits when they are North American numbers (else as printed).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# What a message means for a referral; a mapping file sets one per message type/trigger.
EventKind = Literal[
    "referral.order",          # ORM^O01 / OMG^O19 new order (ORC-1 NW), REF^I12
    "referral.update",         # order/referral changed (ORC-1 XO/SC, REF^I13/I14?)
    "referral.cancel",         # order canceled (ORC-1 CA/OC/DC, REF^I14? per mapping)
    "appointment.booked",      # SIU^S12
    "appointment.rescheduled", # SIU^S13
    "appointment.modified",    # SIU^S14 (completed when the filler status says so)
    "appointment.canceled",    # SIU^S15
    "appointment.no_show",     # SIU^S26
    "appointment.completed",   # SIU^S14 with a completed status, or a mapping rule
    "visit.completed",         # ADT^A03
    "patient.registered",      # ADT^A04
    "patient.updated",         # ADT^A08
    "note.received",           # ORU^R01 / MDM^T02 consult note
    "ignored",                 # mapped on purpose to nothing (e.g. a test message)
]

Urgency = Literal["routine", "urgent", "stat"]
AppointmentStatus = Literal["booked", "rescheduled", "modified", "canceled", "no_show", "completed", "pending",
                            "unknown"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Identifier(_Model):
    id: str
    authority: str | None = None     # assigning authority (CX-4)
    type: str | None = None          # identifier type code (CX-5: MR, MB, SS...)


class Address(_Model):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


class Patient(_Model):
    identifiers: list[Identifier] = Field(default_factory=list)
    family_name: str | None = None
    given_name: str | None = None
    middle_name: str | None = None
    birth_date: str | None = None    # YYYY-MM-DD
    sex: str | None = None
    phone: str | None = None
    email: str | None = None
    address: Address | None = None
    language: str | None = None
    contact_preference: str | None = None   # sms | email | phone | mail


class Provider(_Model):
    role: str | None = None          # referring | referred_to | ordering | attending | performing
    family_name: str | None = None
    given_name: str | None = None
    npi: str | None = None
    id: str | None = None            # local id when not an NPI
    practice: str | None = None
    department: str | None = None
    phone: str | None = None
    fax: str | None = None


class Insurance(_Model):
    payer: str | None = None
    payer_id: str | None = None
    plan: str | None = None
    member_id: str | None = None
    group: str | None = None


class Diagnosis(_Model):
    code: str
    system: str | None = None        # I10, ICD10CM, ...
    description: str | None = None


class Appointment(_Model):
    placer_id: str | None = None     # SCH-1
    filler_id: str | None = None     # SCH-2
    start: str | None = None         # ISO timestamp
    duration_minutes: int | None = None
    location: str | None = None
    provider: str | None = None
    status: AppointmentStatus | None = None
    reason: str | None = None


class Document(_Model):
    kind: str = "consult_note"
    id: str | None = None            # TXA-12 / OBR-3 / filler document number
    title: str | None = None
    author: str | None = None
    date: str | None = None
    status: str | None = None        # final | preliminary | corrected ...
    text: str | None = None          # TX/FT lines joined with newlines
    content_type: str | None = None  # application/pdf for ED
    content_base64: str | None = None


class Mapped(_Model):
    """One HL7 message, normalized. Produced by engine.mapping, consumed by the referral lifecycle."""
    event: EventKind
    message_type: str | None = None
    control_id: str | None = None
    event_time: str | None = None          # when it happened (EVN-2, MSH-7, TXA-4 ...), ISO
    order_control: str | None = None       # ORC-1
    placer_order_number: str | None = None # ORC-2 / OBR-2 / RF1-6 / SCH-26
    filler_order_number: str | None = None # ORC-3 / OBR-3 / SCH-27
    referral_number: str | None = None     # RF1-6/RF1-11 or a vendor Z-segment
    urgency: Urgency | None = None
    specialty: str | None = None
    service_code: str | None = None
    service_text: str | None = None
    reason: str | None = None
    patient: Patient = Field(default_factory=Patient)
    providers: list[Provider] = Field(default_factory=list)
    insurance: list[Insurance] = Field(default_factory=list)
    diagnoses: list[Diagnosis] = Field(default_factory=list)
    appointment: Appointment | None = None
    document: Document | None = None
    extras: dict[str, str | list[str]] = Field(default_factory=dict)   # vendor variants, free-form
