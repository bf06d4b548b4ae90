"""Patient outreach: reminders and follow-ups by SMS (a webhook destination) or e-mail (smtp).

`Outreach.send(conn, referral_id, kind, now, key)` picks the patient's channel
(`contact_preference` from the referral's patient data, else the configured
default; the other channel when the preferred one has no phone/address), the
language (patient's, else the default; a language without a text falls back to
the default language), renders the text of `mappings/outreach/messages.yaml`,
and queues it (engine.outbound) — due now, or at the end of quiet hours in the
configured time zone. Every attempt is a `referral_events` row (`outreach`), and
replies are recorded with `record_reply` (`outreach_reply`), so both are on the
referral's timeline. Idempotent per `key`.
"""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from engine import outbound
from engine.config import EngineConfig, OutreachConfig
from engine.referral_store import ReferralStore


class OutreachError(ValueError):
    """The outreach texts file is missing or malformed (names the file and what is wrong)."""


def load_texts(folder: Path) -> dict:
    path = Path(folder) / "messages.yaml"
    try:
        texts = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise OutreachError(f"{path}: cannot read outreach texts: {exc}") from None
    if not isinstance(texts, dict):
        raise OutreachError(f"{path}: expected KIND: {{LANGUAGE: {{subject, text}}}}")
    for kind, languages in texts.items():
        for language, entry in (languages or {}).items():
            if not isinstance(entry, dict) or "text" not in entry:
                raise OutreachError(f"{path}: {kind}.{language}: needs `text` (and `subject` for e-mail)")
    return texts


def _hm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def after_quiet_hours(now: datetime, start: str, end: str, zone: ZoneInfo) -> datetime:
    """`now`, or the end of the quiet period `now` falls in (periods may cross midnight)."""
    local = now.astimezone(zone)
    begin, finish = _hm(start), _hm(end)
    t = local.time()
    quiet = (begin <= t or t < finish) if begin > finish else (begin <= t < finish)
    if not quiet:
        return now
    day = local.date() if t < finish else local.date() + timedelta(days=1)
    return datetime.combine(day, finish, tzinfo=zone)


class Outreach:
    _cache: dict = {}

    def __init__(self, cfg: OutreachConfig, destinations: dict, order: str):
        self.cfg = cfg
        self.texts = load_texts(cfg.templates)
        self.destinations = destinations
        self.order = order
        self.zone = ZoneInfo(cfg.quiet_hours.timezone if cfg.quiet_hours else "UTC")

    @classmethod
    def for_engine(cls, config: EngineConfig) -> "Outreach":
        key = id(config)
        if key not in cls._cache:
            cls._cache[key] = cls(config.outreach, config.destinations(), config.outbound.order)
        return cls._cache[key]

    def channel_for(self, patient: dict) -> tuple[str, str] | None:
        """(sms|email, address) by preference, falling back to the channel the patient can be reached on."""
        preference = (patient.get("contact_preference") or self.cfg.default_preference).lower()
        if preference == "none":
            return None
        options = {"sms": (self.cfg.sms, patient.get("phone")), "email": (self.cfg.email, patient.get("email"))}
        order = [preference, "email" if preference == "sms" else "sms"] if preference in options else ["sms", "email"]
        for channel in order:
            destination, address = options[channel]
            if destination and address:
                return channel, address
        return None

    def send(self, conn: sqlite3.Connection, referral_id: int, kind: str, now: datetime, *, key: str,
             appointment_id: int | None = None) -> int | None:
        from engine.rules import referral_context
        store = ReferralStore(conn)
        at = outbound.now_iso(now)
        context = referral_context(conn, referral_id)
        if context is None:
            return None
        if appointment_id is not None:
            row = conn.execute("SELECT * FROM appointments WHERE id=?", (appointment_id,)).fetchone()
            context["appointment"] = dict(row) if row else context["appointment"]
        patient = context["patient"]
        reach = self.channel_for(patient)
        if reach is None:
            store.add_event(referral_id, "outreach", None, "none", at, "schedule", key,
                            f"{kind}: no reachable channel (preference, phone or e-mail missing)")
            return None
        channel, address = reach
        languages = self.texts.get(kind) or {}
        language = (patient.get("language") or self.cfg.default_language).lower()[:2]
        entry = languages.get(language) or languages.get(self.cfg.default_language)
        if entry is None:
            raise OutreachError(f"{self.cfg.templates}/messages.yaml: no {kind} text in {language} or "
                                f"{self.cfg.default_language}")
        text = entry["text"].format_map(_Values(self._values(context)))
        if channel == "sms":
            payload = {"to": address, "text": text, "referral_id": referral_id, "kind": kind}
        else:
            payload = {"to": address, "subject": entry.get("subject") or kind.replace("_", " ").capitalize(),
                       "body": text, "referral_id": referral_id, "kind": kind}
        due = now
        if self.cfg.quiet_hours is not None:
            due = after_quiet_hours(now, self.cfg.quiet_hours.start, self.cfg.quiet_hours.end, self.zone)
        destination = self.cfg.sms if channel == "sms" else self.cfg.email
        row_id = outbound.enqueue(conn, outbound.Outbound(
            destination, channel, json.dumps(payload).encode("utf-8"), referral_id=referral_id, rule=kind,
            dedupe_key=f"outreach:{key}", patient_key=patient.get("mrn") or str(referral_id)),
            order=self.order, at=at, due=outbound.now_iso(due))
        if row_id is not None:
            detail = f"{kind} by {channel} in {language}" + (f", held for quiet hours until {due.isoformat()}"
                                                           if due != now else "")
            store.add_event(referral_id, "outreach", None, channel, at, "schedule", f"out{row_id}", detail)
        return row_id

    def _values(self, context: dict) -> dict:
        patient, referral = context["patient"], context["referral"]
        appointment = context.get("appointment") or {}
        start = appointment.get("start")
        date_text = time_text = ""
        if start:
            try:
                begins = datetime.fromisoformat(start)
                begins = begins if begins.tzinfo else begins.replace(tzinfo=self.zone)
                local = begins.astimezone(self.zone)
                date_text, time_text = local.strftime("%b %d, %Y"), local.strftime("%I:%M %p").lstrip("0")
            except ValueError:
                date_text = start
        return {"given_name": patient.get("given_name") or "", "family_name": patient.get("family_name") or "",
                "specialty": referral.get("specialty") or "specialist", "date": date_text, "time": time_text,
                "location": appointment.get("location") or referral.get("receiving_department") or "",
                "department": referral.get("receiving_department") or "",
                "department_phone": self.cfg.callback_phone, "referral_id": referral.get("id")}


class _Values(dict):
    def __missing__(self, key: str) -> str:
        return ""


def record_reply(conn: sqlite3.Connection, referral_id: int, channel: str, text: str, by: str,
                 at: str | None = None) -> None:
    """A patient's reply (from the SMS gateway's callback or typed in by a coordinator), on the timeline."""
    ReferralStore(conn).add_event(referral_id, "outreach_reply", None, channel, at or outbound.now_iso(), "patient",
                                  by, text)
