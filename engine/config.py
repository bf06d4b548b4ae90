"""config.yaml: load, interpolate `${VAR:-default}`, validate, and explain errors.

`load_config(path)` returns an `EngineConfig` or raises `ConfigError`, whose
`problems` each name the file, the line, the key (e.g. `channels[0].source.port`)
and what would be valid. Interpolation happens on scalar values only, so a line
number always points at what the analyst wrote. Relative paths are resolved
against the config file's folder, so the engine behaves the same from any cwd.
"""
from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_NAME = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)")


class ConfigError(Exception):
    """Every problem found in one config file; `str()` lists them one per line."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- sources -------------------------------------------------------------

class MLLPSource(_Strict):
    """An MLLP listener (TCP server) receiving HL7 v2 from EHRs."""
    type: Literal["mllp"]
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    idle_timeout_seconds: float = Field(default=600.0, gt=0)
    max_connections: int = Field(default=256, ge=1)


# The fields of `run_engine.py extract` (DESIGN.md) a fax review rule may name.
FAX_FIELDS = ("patient_family_name", "patient_given_name", "patient_dob", "patient_sex", "patient_phone",
              "patient_mrn", "insurance_payer", "insurance_member_id", "referring_provider_name",
              "referring_provider_npi", "referring_practice_phone", "referring_practice_fax",
              "referred_to_specialty", "urgency", "diagnosis_codes", "reason")


class FaxReview(_Strict):
    """The fax review gate: a referral whose `required` fields are all found, each field at or above its
    `min_confidence` (else `default_min_confidence`), is accepted; otherwise it waits in needs_review."""
    required: list[str] = Field(default_factory=lambda: [
        "patient_family_name", "patient_given_name", "patient_dob", "referred_to_specialty",
        "referring_provider_name"])
    min_confidence: dict[str, float] = Field(default_factory=lambda: {
        "patient_family_name": 0.8, "patient_given_name": 0.8, "patient_dob": 0.85,
        "referred_to_specialty": 0.7})
    default_min_confidence: float = Field(default=0.6, ge=0, le=1)

    @field_validator("required")
    @classmethod
    def _known_required(cls, values: list[str]) -> list[str]:
        unknown = [v for v in values if v not in FAX_FIELDS]
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; valid: {', '.join(FAX_FIELDS)}")
        return values

    @field_validator("min_confidence")
    @classmethod
    def _known_thresholds(cls, values: dict[str, float]) -> dict[str, float]:
        unknown = [k for k in values if k not in FAX_FIELDS]
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; valid: {', '.join(FAX_FIELDS)}")
        bad = [k for k, v in values.items() if not 0 <= v <= 1]
        if bad:
            raise ValueError(f"{', '.join(bad)}: a confidence is between 0 and 1")
        return values


class FaxFolderSource(_Strict):
    """A fax server's drop folder. Files are claimed from `inbox` into `processing`, then filed in
    `processed` (referral or review item committed) or `error` (with NAME.error.txt). Folders default to
    DATA_DIR/fax/inbox and siblings of the inbox. `completeness` says when a file is whole:
    `stable_seconds` (size and mtime unchanged that long), `rename` (the server writes *.part / *.tmp
    and renames), `sidecar` (the server writes NAME.done after NAME)."""
    type: Literal["fax_folder"]
    inbox: Path | None = None
    processing: Path | None = None
    processed: Path | None = None
    error: Path | None = None
    pages: Path | None = Field(default=None, description="page images kept for reviewers (DATA_DIR/fax/pages)")
    completeness: Literal["stable_seconds", "rename", "sidecar"] = "stable_seconds"
    stable_seconds: float = Field(default=2.0, ge=0)
    poll_seconds: float = Field(default=2.0, gt=0, description="rescan interval besides file-system events")
    max_pages: int = Field(default=200, ge=1, le=5000)
    workers: int = Field(default=2, ge=1, le=64, description="OCR worker processes (one fax each)")
    takeover_seconds: float = Field(default=900.0, gt=0, description="several nodes sharing the folders: a fax "
                                    "another node claimed this long ago and has not filed is taken over")
    addendum_window_days: float = Field(default=14.0, ge=0, description="same patient + specialty + referrer "
                                        "within this many days: the fax is an addendum, not a new referral")
    review: FaxReview = FaxReview()


Source = Annotated[Union[MLLPSource, FaxFolderSource], Field(discriminator="type")]


# ---- filters -------------------------------------------------------------

class Filter(_Strict):
    """Keep a message only if the value at `path` passes: `in`, `not_in`, `equals` or `matches` (regex)."""
    path: str
    in_: list[str] | None = Field(default=None, alias="in")
    not_in: list[str] | None = None
    equals: str | None = None
    matches: str | None = None

    @field_validator("path")
    @classmethod
    def _path_ok(cls, value: str) -> str:
        from engine.hl7v2.parse import _split
        _split(value)
        return value

    @field_validator("matches")
    @classmethod
    def _regex_ok(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_test(self) -> "Filter":
        tests = [t for t in (self.in_, self.not_in, self.equals, self.matches) if t is not None]
        if len(tests) != 1:
            raise ValueError("a filter needs exactly one of: in, not_in, equals, matches")
        return self


# ---- destinations: where the outbound queue delivers ----------------------------

class _HL7Destination(_Strict):
    """A destination taking HL7 messages: MSH-3/4 (us) and MSH-5/6 (them) of what is sent there."""
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    sending_application: str = "REFERRAL_ENGINE"
    sending_facility: str = "RIVERBEND"
    receiving_application: str = ""
    receiving_facility: str = ""


class MLLPDestination(_HL7Destination):
    """An EHR's MLLP listener. ACK policy: AA/CA = delivered; AE/CE -> `on_error`; AR/CR -> `on_reject`."""
    type: Literal["mllp"]
    host: str
    port: int = Field(ge=1, le=65535)
    ack_timeout_seconds: float = Field(default=10.0, gt=0)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    on_error: Literal["retry", "dead", "sent"] = "retry"
    on_reject: Literal["dead", "retry"] = "dead"


class FileDestination(_HL7Destination):
    """HL7 files written atomically into a folder (an interface engine or archive picks them up)."""
    type: Literal["file"]
    directory: Path
    name_pattern: str = "{control_id}.hl7"


class FaxDestination(_Strict):
    """The fax server's outbox: a PDF per message and a sidecar naming the destination fax number."""
    type: Literal["fax"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    directory: Path
    sender_name: str = "Riverbend Referral Center"
    sender_fax: str = ""


class WebhookDestination(_Strict):
    """An HTTP endpoint taking JSON (e.g. an SMS gateway for patient outreach), or X12 for a payer
    gateway (`content_type: application/edi-x12`, `keep_response: true`: the 271/278 answer is kept whole)."""
    type: Literal["webhook"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str = Field(pattern=r"^https?://")
    timeout_seconds: float = Field(default=10.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    content_type: str = Field(default="application/json", pattern=r"^[\w.+-]+/[\w.+-]+(;.*)?$")
    keep_response: bool = Field(default=False, description="keep the whole response body (up to 1 MiB) on "
                                "the outbound row, not only its first 200 characters")


class SMTPDestination(_Strict):
    """An SMTP relay for e-mail (patient outreach, requests to specialists)."""
    type: Literal["smtp"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    sender: str
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)


Destination = Annotated[Union[MLLPDestination, FileDestination, FaxDestination, WebhookDestination,
                              SMTPDestination], Field(discriminator="type")]
HL7_DESTINATIONS = (MLLPDestination, FileDestination)


class Transformer(_Strict):
    """Referral mappings: a folder of YAML files (engine.mapping), one per message family."""
    mappings: Path


class Channel(_Strict):
    """Source -> filters -> transformer -> destinations, as in Mirth."""
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    enabled: bool = True
    source: Source
    message_types: list[str] = Field(default_factory=list,
                                     description="accepted MSH-9 types like ORM^O01 or ORM; empty = all")
    strict: bool = False
    filters: list[Filter] = Field(default_factory=list)
    transformer: Transformer | None = None
    destinations: list[Destination] = Field(default_factory=list)


# ---- engine-wide ---------------------------------------------------------

class StoreConfig(_Strict):
    url: str
    synchronous: Literal["FULL", "EXTRA", "NORMAL"] = "FULL"
    duplicate_window_hours: float = Field(default=168.0, ge=0)
    group_commit_max: int = Field(default=512, ge=1, le=100_000)
    pool_size: int = Field(default=8, ge=1, le=200, description="PostgreSQL: most connections the dashboard's "
                           "process holds (a pool shared by its request threads)")
    node: str | None = Field(default=None, description="this engine's name among the nodes sharing a PostgreSQL "
                             "store (claims and leases); default: host name + data folder")

    @field_validator("synchronous", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not (value.startswith("sqlite:///") or value.startswith("postgresql://")):
            raise ValueError("expected sqlite:///PATH (embedded) or postgresql://... (several nodes)")
        return value


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"
    file: Path | None = None

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class WebConfig(_Strict):
    """The dashboard/API (engine.web), run by the daemon in a child process when `enabled`."""
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8575, ge=1, le=65535)
    cookie_secure: Literal["auto", "always", "never"] = Field(
        default="auto", description="Secure cookies: auto = when the request came over https")
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    lockout_attempts: int = Field(default=5, ge=1, le=100, description="failed logins in a row before a lock")
    lockout_minutes: float = Field(default=15.0, gt=0)


class ProcessingConfig(_Strict):
    """The post-ACK pipeline (full parse, filters, transformer)."""
    isolation: Literal["process", "thread"] = Field(
        default="process", description="process: a worker process at lower priority, so parsing never slows ACKs")
    batch_size: int = Field(default=200, ge=1, le=10_000)
    nice: int = Field(default=5, ge=0, le=19)
    lease_seconds: float = Field(default=60.0, gt=0, description="PostgreSQL, several nodes: how long a node's claim "
                                 "on a batch of messages holds; a dead node's batch is taken over after it")


# ---- referrals: completeness, routing, matching -----------------------------

RequiredItem = Literal["member_id", "payer", "diagnosis", "reason", "referring_npi", "referring_provider",
                       "patient_birth_date", "patient_phone", "patient_identifier", "specialty", "urgency",
                       "document", "authorization"]
Urgency = Literal["routine", "urgent", "stat"]


class CompletenessRule(_Strict):
    """Items a referral needs before it is `ready`. Empty `specialty`/`payer` = any; all matching rules add up.
    `authorization` is special: with everything else present, the referral waits in `auth_pending`."""
    specialty: list[str] = Field(default_factory=list)
    payer: list[str] = Field(default_factory=list)
    require: list[RequiredItem] = Field(min_length=1)


class RoutingRule(_Strict):
    """The first rule whose non-empty conditions all hold chooses the receiving department and destination."""
    specialty: list[str] = Field(default_factory=list)
    urgency: list[Urgency] = Field(default_factory=list)
    payer: list[str] = Field(default_factory=list)
    department: str | None = None
    destination: str


class ReferralsConfig(_Strict):
    match_window_days: float = Field(default=90.0, gt=0, description="patient + specialty matching window")
    network: list[str] = Field(default_factory=list,
                               description="destinations inside the network; routing elsewhere = leakage risk")
    completeness: list[CompletenessRule] = Field(default_factory=list)
    routing: list[RoutingRule] = Field(default_factory=list)


# ---- outbound: rules, queue, schedules, outreach ------------------------------

class OutboundRule(_Strict):
    """On a referral event or status, render a template and queue it for a destination.

    `on`: referral events (appointment.booked, note.received, referral.order, ...) or `status:NAME`
    (any change into that status). `origin`: only referrals that came by hl7 or by fax.
    `send`: a template of `outbound.templates` (e.g. siu_notification, mdm_t02), or `fax_letter`
    (a PDF for the referring practice's fax, built from the referral and its consult note).
    `closes_loop`: when this message is delivered, the referral is closed."""
    name: str | None = None
    on: list[str] = Field(min_length=1)
    origin: Literal["hl7", "fax"] | None = None
    send: str
    to: str
    closes_loop: bool = False

    @field_validator("on")
    @classmethod
    def _known(cls, values: list[str]) -> list[str]:
        import typing
        from engine.lifecycle import ReferralStatus
        from engine.normalized import EventKind
        events = set(typing.get_args(EventKind)) | {"fax.accepted", "fax.needs_review"}
        statuses = {s.value for s in ReferralStatus}
        for value in values:
            if value.startswith("status:"):
                if value[7:] not in statuses:
                    raise ValueError(f"{value!r}: unknown status; valid: {', '.join(sorted(statuses))}")
            elif value not in events:
                raise ValueError(f"{value!r}: unknown event; valid: {', '.join(sorted(events))} or status:NAME")
        return values


class OutboundConfig(_Strict):
    order: Literal["per_destination", "per_patient"] = Field(
        default="per_destination", description="delivery order kept per destination, or per patient within it")
    max_attempts: int = Field(default=12, ge=1, le=1000)
    backoff_seconds: float = Field(default=2.0, gt=0)
    max_backoff_seconds: float = Field(default=900.0, gt=0)
    batch_size: int = Field(default=64, ge=1, le=10_000)
    lease_seconds: float = Field(default=300.0, gt=0, description="how long a node's claim on a batch of rows "
                                 "holds; a dead node's rows are sent by another node after it")
    templates: Path = Path("./mappings/outbound")
    rules: list[OutboundRule] = Field(default_factory=list)


class AgingSchedule(_Strict):
    """Referrals not yet scheduled past their SLA are escalated; past `expire_days` they are leaked."""
    every_minutes: float = Field(default=15.0, gt=0)
    sla_days: dict[Urgency, float] = Field(default_factory=lambda: {"stat": 1, "urgent": 3, "routine": 14})
    expire_days: float | None = Field(default=90.0, gt=0)
    escalate_to: str | None = Field(default=None, description="owner set on escalation when the referral has none")


class NoteChaseSchedule(_Strict):
    """Visit completed and no consult note after `after_days`: ask the specialist (once per `repeat_days`)."""
    every_minutes: float = Field(default=60.0, gt=0)
    after_days: float = Field(default=7.0, gt=0)
    repeat_days: float = Field(default=7.0, gt=0)
    to: str | None = Field(default=None, description="an smtp/webhook destination for the request")
    recipient: str | None = Field(default=None, description="the specialist office's address (smtp destinations)")


class ReminderSchedule(_Strict):
    every_minutes: float = Field(default=15.0, gt=0)
    hours_before: float = Field(default=48.0, gt=0)


class NoShowSchedule(_Strict):
    every_minutes: float = Field(default=60.0, gt=0)


class SchedulesConfig(_Strict):
    enabled: bool = True
    aging: AgingSchedule | None = AgingSchedule()
    note_chase: NoteChaseSchedule | None = NoteChaseSchedule()
    reminders: ReminderSchedule | None = ReminderSchedule()
    no_show_follow_up: NoShowSchedule | None = NoShowSchedule()
    retry_pump_seconds: float = Field(default=5.0, gt=0, description="how often due retries are looked for")


class QuietHours(_Strict):
    start: str = Field(default="20:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(default="08:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    timezone: str = "America/New_York"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name like America/New_York)") from None
        return value


class OutreachConfig(_Strict):
    """Messages to patients: SMS through a webhook destination, e-mail through an smtp destination, in the
    patient's preferred channel and language (templates per language), never inside quiet hours."""
    sms: str | None = None
    email: str | None = None
    default_preference: Literal["sms", "email", "none"] = "sms"
    default_language: str = "en"
    quiet_hours: QuietHours | None = QuietHours()
    callback_phone: str = Field(default="", description="the number patients call back ({department_phone})")
    templates: Path = Path("./mappings/outreach")


# ---- payers: eligibility (X12 270/271) and prior authorization (X12 278) -------------------------

class PriorAuthRule(_Strict):
    """Referrals this payer wants a prior authorization for: every non-empty condition must hold
    (`specialty`, `service` = service code or a word of the service text, `plan` = the plan the 271 named).
    `documents` are what the payer wants with the request (shown to the coordinator)."""
    specialty: list[str] = Field(default_factory=list)
    service: list[str] = Field(default_factory=list)
    plan: list[str] = Field(default_factory=list)
    documents: list[str] = Field(default_factory=list)
    turnaround_days: float | None = Field(default=None, gt=0, description="overrides the payer's")
    service_type: str = Field(default="3", pattern=r"^[A-Z0-9]{1,2}$",
                              description="X12 service type code (EQ01/UM03); 3 = consultation")


class PayerRule(_Strict):
    """One payer: how referrals name it (`name`, `aliases`, case-insensitive), its X12 id (NM1*PR, ISA08),
    expected decision time for authorizations, and which referrals need one."""
    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    payer_id: str = Field(pattern=r"^[A-Za-z0-9-]{2,15}$")
    eligibility: bool = Field(default=True, description="send a 270 for new referrals of this payer")
    turnaround_days: float = Field(default=3.0, gt=0)
    prior_auth: list[PriorAuthRule] = Field(default_factory=list)


class PayersConfig(_Strict):
    """Eligibility and prior authorization at intake (engine/eligibility.py, engine/authorization.py)."""
    destination: str | None = Field(default=None, description="the payer gateway (clearinghouse): a webhook "
                                    "destination that answers 270 with 271 and 278 with 278 in its response, or a "
                                    "file destination (an exchange folder) whose answers arrive in `inbox`")
    inbox: Path | None = Field(default=None, description="with a file destination: the folder where the "
                               "clearinghouse drops 271/278 answer files (engine/payer_exchange.py)")
    inbox_every_seconds: float = Field(default=5.0, gt=0, description="how often the inbox is swept")
    submitter_id: str = Field(default="RIVERBEND", pattern=r"^[A-Za-z0-9]{2,15}$", description="ISA06/GS02")
    provider_name: str = Field(default="RIVERBEND REFERRAL CENTER", description="the requester (NM1*1P)")
    provider_npi: str = Field(default="1234567893", pattern=r"^\d{10}$")
    eligibility_on: list[Literal["referral.order", "fax.accepted"]] = Field(
        default_factory=lambda: ["referral.order", "fax.accepted"], description="events that ask for eligibility")
    follow_up_hours: float | None = Field(default=24.0, gt=0, description="ask again about a pended "
                                          "authorization this often (null = never)")
    sweep_every_minutes: float = Field(default=60.0, gt=0, description="how often overdue authorizations are "
                                       "looked for")
    escalate_to: str | None = Field(default=None, description="owner set on an overdue or denied "
                                    "authorization when the referral has none")
    rules: list[PayerRule] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[PayerRule]) -> list[PayerRule]:
        seen: dict[str, str] = {}
        for rule in rules:
            for name in (rule.name, *rule.aliases):
                key = name.strip().lower()
                if key in seen:
                    raise ValueError(f"payer name {name!r} is used by both {seen[key]!r} and {rule.name!r}")
                seen[key] = rule.name
        return rules


class EngineConfig(_Strict):
    data_dir: Path
    store: StoreConfig
    logging: LoggingConfig = LoggingConfig()
    web: WebConfig = WebConfig()
    processing: ProcessingConfig = ProcessingConfig()
    referrals: ReferralsConfig = ReferralsConfig()
    channels: list[Channel] = Field(default_factory=list)
    outbound: OutboundConfig = OutboundConfig()
    schedules: SchedulesConfig = SchedulesConfig()
    outreach: OutreachConfig = OutreachConfig()
    payers: PayersConfig = PayersConfig()
    source_file: Path | None = Field(default=None, exclude=True)

    @field_validator("channels")
    @classmethod
    def _unique(cls, channels: list[Channel]) -> list[Channel]:
        names = [c.name for c in channels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"channel names must be unique; repeated: {', '.join(dupes)}")
        ports = [(c.source.host, c.source.port) for c in channels if c.enabled and isinstance(c.source, MLLPSource)]
        taken = sorted({f"{h}:{p}" for h, p in ports if ports.count((h, p)) > 1})
        if taken:
            raise ValueError(f"two enabled channels listen on the same address: {', '.join(taken)}")
        return channels

    @model_validator(mode="after")
    def _destinations_named(self) -> "EngineConfig":
        """Rules, outreach and schedules name destinations: each must exist, once, of a fitting kind."""
        names = [d.name for c in self.channels for d in c.destinations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"destination names must be unique across channels; repeated: {', '.join(dupes)}")
        kinds = {d.name: d.type for c in self.channels for d in c.destinations}
        known = ", ".join(sorted(kinds)) or "none defined"
        wanted = [(f"outbound.rules[{i}].to", r.to, None) for i, r in enumerate(self.outbound.rules)]
        wanted += [("outreach.sms", self.outreach.sms, {"webhook"}), ("outreach.email", self.outreach.email, {"smtp"})]
        chase = self.schedules.note_chase
        if chase is not None:
            wanted.append(("schedules.note_chase.to", chase.to, {"smtp", "webhook"}))
            if chase.to in kinds and kinds[chase.to] == "smtp" and not chase.recipient:
                raise ValueError(f"schedules.note_chase.recipient: required when note_chase.to is the smtp "
                                 f"destination {chase.to!r} (the specialist office's e-mail address)")
        wanted.append(("payers.destination", self.payers.destination,
                       {"webhook", "file"} if self.payers.inbox is not None else {"webhook"}))
        for key, name, types in wanted:
            if name is None:
                continue
            if name not in kinds:
                raise ValueError(f"{key}: no destination named {name!r} (destinations: {known})")
            if key == "payers.destination" and kinds[name] not in types:
                raise ValueError(f"{key}: {name!r} is a {kinds[name]} destination; expected webhook (answers in the "
                                 "HTTP response), or file together with payers.inbox: PATH (the folder where the "
                                 "clearinghouse drops 271/278 answers)")
            if types and kinds[name] not in types:
                raise ValueError(f"{key}: {name!r} is a {kinds[name]} destination; expected {' or '.join(sorted(types))}")
        for i, rule in enumerate(self.outbound.rules):
            if rule.send == "fax_letter" and kinds[rule.to] != "fax":
                raise ValueError(f"outbound.rules[{i}]: send fax_letter needs a fax destination ({rule.to!r} is "
                                 f"{kinds[rule.to]})")
            if rule.send != "fax_letter" and kinds[rule.to] not in ("mllp", "file"):
                raise ValueError(f"outbound.rules[{i}]: HL7 template {rule.send!r} needs an mllp or file destination "
                                 f"({rule.to!r} is {kinds[rule.to]}); use send: fax_letter for a fax destination")
        if self.payers.destination is not None:
            payer_gateway = self.destinations()[self.payers.destination]
            if isinstance(payer_gateway, FileDestination):
                pass                       # answers come back as files in payers.inbox
            elif not payer_gateway.keep_response:
                raise ValueError(f"payers.destination: webhook {payer_gateway.name!r} must keep the whole response "
                                 f"(the payer's 271/278): set keep_response: true on it")
        return self

    def destinations(self) -> dict:
        return {d.name: d for c in self.channels for d in c.destinations}

    def channel(self, name: str) -> Channel:
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise KeyError(name)

    @property
    def node_name(self) -> str:
        """This engine among the nodes sharing a store: store.node, or host name + a tag of the data folder."""
        if self.store.node:
            return self.store.node
        import hashlib
        import socket
        return f"{socket.gethostname()}:{hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:8]}"

    @property
    def store_location(self) -> Path | str:
        """The SQLite file, or the postgresql:// URL (engine.db.connect takes either)."""
        if self.store.url.startswith("sqlite:///"):
            return Path(self.store.url.removeprefix("sqlite:///"))
        return self.store.url


# ---- loading ---------------------------------------------------------------

def interpolate(value: str, env: dict[str, str] | os._Environ = os.environ) -> str:
    """Replace ${VAR} and ${VAR:-default}; defaults may hold further ${...}.

    An empty variable counts as unset when a default is given (shell `:-`). An
    unset ${VAR} without default raises KeyError(VAR) — but only where it would be
    used: inside the default of a variable that is set, it is never evaluated.
    Values taken from the environment are inserted as they are, never expanded again.
    """
    out, _ = _expand(value, 0, env, closing=False)
    return out


def _expand(text: str, i: int, env, closing: bool, used: bool = True) -> tuple[str, int]:
    """Expand text[i:] up to the end (or, when `closing`, up to the unmatched '}'); returns (value, next index).

    `used` is False while skipping the default of a variable that is set: unset names there are no error."""
    parts: list[str] = []
    while i < len(text):
        if closing and text[i] == "}":
            return "".join(parts), i + 1
        match = _NAME.match(text, i) if text.startswith("${", i) else None
        if match is None:
            parts.append(text[i])
            i += 1
            continue
        name, i = match["name"], match.end()
        current = env.get(name)
        if text.startswith(":-", i):
            default, i = _expand(text, i + 2, env, closing=True, used=used and not current)
            parts.append(current if current else default)
        elif text.startswith("}", i):
            i += 1
            if current is None and used:
                raise KeyError(name)
            parts.append(current or "")
        else:
            parts.append(text[match.start():i])   # not a reference after all: keep it literally
    return "".join(parts), i


def _to_python(node: yaml.Node, lines: dict[tuple, int], path: tuple, problems: list[str], filename: str,
               env) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = key_node.value
            out[key] = _to_python(value_node, lines, path + (key,), problems, filename, env)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, lines, path + (i,), problems, filename, env) for i, item in enumerate(node.value)]
    value = node.value
    if "${" in value:
        try:
            return interpolate(value, env)
        except KeyError as exc:
            problems.append(f"{filename}:{lines[path]}: {_dotted(path)}: environment variable {exc.args[0]} is "
                            f"not set and has no default (write ${{{exc.args[0]}:-default}})")
            return value
    return yaml.SafeLoader("").construct_object(node) if node.style is None else value


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation such as list[Channel] or Annotated[Union[...], ...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _valid_hint(error: dict, loc: tuple) -> str:
    """For an unknown key, list the keys the model accepts at that place."""
    if error["type"] != "extra_forbidden":
        return ""
    models: list[type[BaseModel]] = [EngineConfig]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        tagged = [m for m in models if "type" in m.model_fields
                  and typing.get_args(m.model_fields["type"].annotation) == (part,)]
        if tagged:          # pydantic's loc names the union member ('file'): keep just that one
            models = tagged
            continue
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        models = [m for f in fields for m in _models_in(f.annotation)]
    keys = sorted({f.alias or name for m in models for name, f in m.model_fields.items() if name != "source_file"})
    return f"; valid keys here: {', '.join(keys)}" if keys else ""


def load_config(path: str | os.PathLike, env: dict[str, str] | None = None) -> EngineConfig:
    path = Path(path)
    filename = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{filename}: cannot read the config file: {exc.strerror}"]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark else filename
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if root is None or not isinstance(root, yaml.MappingNode):
        raise ConfigError([f"{filename}: the config must be a mapping with keys like store, channels"])
    lines: dict[tuple, int] = {}
    problems: list[str] = []
    data = _to_python(root, lines, (), problems, filename, os.environ if env is None else env)
    if problems:
        raise ConfigError(problems)
    base = path.resolve().parent
    data.setdefault("data_dir", "./var")
    try:
        config = EngineConfig.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = _strip_union_tags(error["loc"])
            line = _nearest_line(lines, loc)
            got = error.get("input")
            shown = "" if isinstance(got, (dict, list)) or error["type"] == "missing" else f" (got {got!r})"
            message = error["msg"]
            if error["type"] == "missing":
                message = "required key is missing"
            problems.append(f"{filename}:{line}: {_dotted(loc)}: {message}{shown}{_valid_hint(error, error['loc'])}")
        raise ConfigError(problems) from None
    return _resolve_paths(config, base, path)


_UNION_TAGS = {"mllp", "file", "fax", "webhook", "smtp", "fax_folder"}


def _strip_union_tags(loc: tuple) -> tuple:
    """pydantic puts a tagged union's tag ('mllp') into error locations; the YAML has no such key."""
    out: list = []
    for part in loc:
        under_union = out and (out[-1] == "source" or (isinstance(out[-1], int) and len(out) > 1
                                                       and out[-2] == "destinations"))
        if isinstance(part, str) and part in _UNION_TAGS and under_union:
            continue
        out.append(part)
    return tuple(out)


def _nearest_line(lines: dict[tuple, int], loc: tuple) -> int:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1


def _resolve_fax_folders(source: FaxFolderSource, data_dir: Path, absolute) -> None:
    source.inbox = absolute(source.inbox) if source.inbox else data_dir / "fax" / "inbox"
    for name in ("processing", "processed", "error"):
        value = getattr(source, name)
        setattr(source, name, absolute(value) if value else source.inbox.parent / name)
    source.pages = absolute(source.pages) if source.pages else data_dir / "fax" / "pages"


def _resolve_paths(config: EngineConfig, base: Path, source: Path) -> EngineConfig:
    def absolute(p: Path) -> Path:
        return p if p.is_absolute() else (base / p)
    config.data_dir = absolute(config.data_dir)
    if config.store.url.startswith("sqlite:///"):
        db = Path(config.store.url.removeprefix("sqlite:///"))
        config.store.url = f"sqlite:///{absolute(db)}"
    if config.logging.file is not None:
        config.logging.file = absolute(config.logging.file)
    for channel in config.channels:
        if isinstance(channel.source, FaxFolderSource):
            _resolve_fax_folders(channel.source, config.data_dir, absolute)
        if channel.transformer is not None:
            channel.transformer.mappings = absolute(channel.transformer.mappings)
        for destination in channel.destinations:
            if isinstance(destination, (FileDestination, FaxDestination)):
                destination.directory = absolute(destination.directory)
    config.outbound.templates = absolute(config.outbound.templates)
    config.outreach.templates = absolute(config.outreach.templates)
    if config.payers.inbox is not None:
        config.payers.inbox = absolute(config.payers.inbox)
    config.source_file = source.resolve()
    return config
