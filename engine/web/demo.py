"""Demo data for the dashboard, made by the engine's own code: sample messages are journaled
(engine.intake.take_frame -> Journal.write) and processed (engine.processor.decide_batch -> the
writer's referral updates), exactly as the daemon would, just without sockets. Used by the web tests,
the screenshot script and bench/bench_web.py; nothing here runs in production.
"""
from __future__ import annotations

from pathlib import Path

from engine.config import EngineConfig
from engine.intake import take_frame
from engine.processor import decide_batch, processing_journal
from engine.store import Journal

SAMPLES = Path(__file__).resolve().parents[2] / "sample_messages"
PLACER, MRN, FAMILY = "RF250304-0481", "10483726", "FAIRWEATHER"
FAMILIES = ["FAIRWEATHER", "OKONKWO", "LINDQVIST", "BARRETO", "NAKAMURA", "DELACROIX", "MBEKI", "HALVORSEN"]


def _wire(name: str) -> str:
    return (SAMPLES / name).read_text().replace("\r\n", "\r").replace("\n", "\r")


def _control_id(message: str, control_id: str) -> str:
    msh, rest = message.split("\r", 1)
    fields = msh.split("|")
    fields[9] = control_id
    return "|".join(fields) + "\r" + rest


def order(i: int) -> tuple[bytes, bytes]:
    """The i-th demo referral: an ORM^O01 and the SIU^S12 booking it (own placer number, MRN, name)."""
    placer, mrn, family = f"RFD{i:06d}", f"D{i:07d}", FAMILIES[i % len(FAMILIES)]
    orm = _wire("ORM_O01_v2.5.1_bench25.hl7").replace(PLACER, placer).replace(MRN, mrn).replace(FAMILY, family)
    siu = _wire("SIU_S12_v2.5.1.hl7").replace(PLACER, placer).replace(MRN, mrn).replace(FAMILY, family)
    return _control_id(orm, f"DEMO-ORM-{i:04d}").encode(), _control_id(siu, f"DEMO-SIU-{i:04d}").encode()


def seed(config: EngineConfig, referrals: int = 8, booked_every: int = 2, channel: str = "ehr_inbound") -> None:
    """`referrals` orders, every `booked_every`-th one booked; all processed to the end."""
    journal = Journal(config.store_location, config.store.synchronous, referral_rules=config.referrals)
    reader = processing_journal(config)     # as the daemon's processor reads (and, on PostgreSQL, claims)
    try:
        raws = []
        for i in range(referrals):
            orm, siu = order(i)
            raws.append(orm)
            if booked_every and i % booked_every == 0:
                raws.append(siu)
        # Orders first, then bookings, so each booking finds its referral.
        raws.sort(key=lambda raw: b"SIU^S12" in raw[:200])
        for batch in (raws[:referrals], raws[referrals:]):
            if not batch:
                continue
            journal.write([take_frame(raw, channel, "127.0.0.1:1").messages() for raw in batch])
            while True:
                changes = decide_batch(reader, config, 200)
                if not changes:
                    break
                journal.write([changes])
    finally:
        reader.close()
        journal.close()
