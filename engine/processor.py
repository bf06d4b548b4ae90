"""The post-ACK pipeline: journal rows in status 'received' -> filtered / transformed / error.

Per message: prepare and decode (as declared in MSH-18), the full parse
(engine.hl7v2.parse, ~100x faster than python-hl7), hl7apy validation when the channel is `strict`, the channel's
message-type list and filters, then the transformer: the channel's mappings
turn the message into an `engine.normalized.Mapped`, which the journal writer
applies to its referral in the same transaction as the message's new status.

The processor only reads the store and decides; it returns `StatusChange`s and
the daemon hands them to the journal's single writer (the group-commit thread),
so a low-priority worker can never hold the database write lock while the ACK
path waits for it. Each change applies only to a row still in 'received', so
deciding a batch twice, or again after a crash, changes nothing already done.

`decide_batch` is a plain function: the daemon runs it in a worker process at
idle CPU priority (parsing at ~1-2 ms a message never slows an ACK) or, for
tests, in a thread.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine.config import Channel, EngineConfig, Filter
from engine.hl7v2 import CharsetError, decode, get_all, parse, prepare
from engine.mapping import Mappings, NoMapping
from engine.normalized import Mapped
from engine.db import is_postgres
from engine.store import Journal, StatusChange

log = logging.getLogger("engine.processor")


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    reason: str | None = None
    mapped: Mapped | None = None        # what the channel's mappings made of a transformed message


def type_accepted(channel: Channel, message_type: str) -> bool:
    if not channel.message_types:
        return True
    code = message_type.split("^", 1)[0]
    return any(t == message_type or t == code for t in channel.message_types)


def filter_passes(f: Filter, values: list[str]) -> bool:
    if f.in_ is not None:
        return any(v in f.in_ for v in values)
    if f.not_in is not None:
        return not any(v in f.not_in for v in values)
    if f.equals is not None:
        return f.equals in values
    return any(re.search(f.matches, v) for v in values)


def _validate_strict(text: str) -> None:
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message
    parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()


_mappings: dict[Path, Mappings] = {}


def map_message(channel: Channel, message, message_type: str | None) -> Mapped | None:
    """The transformer step: the channel's mappings folder makes a Mapped of the message; None when the
    channel has no transformer. Raises MappingError (a mapping's output is invalid), NoMapping (no file
    handles the type, or no event rule matched) or ParseError; edited files reload without a restart."""
    if channel.transformer is None:
        return None
    return mappings_for(channel).map_parsed(message, message_type)


def mappings_for(channel: Channel) -> Mappings:
    """The channel's mappings folder, loaded once per process."""
    folder = channel.transformer.mappings
    mappings = _mappings.get(folder)
    if mappings is None:
        mappings = _mappings[folder] = Mappings.load(folder)
    return mappings


def process_message(channel: Channel | None, raw: bytes, charset: str | None, message_type: str | None) -> Outcome:
    if channel is None:
        return Outcome("error", "the channel that received this message is no longer configured")
    prepared = prepare(raw)
    try:
        text = prepared.decode(charset) if charset else decode(prepared, "").text
    except (UnicodeDecodeError, LookupError, CharsetError) as exc:
        return Outcome("error", f"cannot decode: {exc}")
    try:
        message = parse(text)
    except Exception as exc:  # ParseError, or a bug in the parser: this message only
        return Outcome("error", f"parse failed: {type(exc).__name__}: {exc}")
    if channel.strict:
        try:
            _validate_strict(text)
        except Exception as exc:
            return Outcome("error", f"strict validation failed: {exc}")
    if message_type and not type_accepted(channel, message_type):
        return Outcome("filtered", f"message type {message_type} is not in the channel's message_types")
    for f in channel.filters:
        if not filter_passes(f, get_all(message, f.path)):
            return Outcome("filtered", f"filter on {f.path} did not pass")
    try:
        mapped = map_message(channel, message, message_type)
    except NoMapping as exc:
        return Outcome("filtered", f"no mapping: {exc}")
    except Exception as exc:   # MappingError, ParseError, or a bug in a mapping: this message only
        return Outcome("error", f"mapping failed: {exc}")
    return Outcome("transformed", mapped=mapped)


def processing_journal(config: EngineConfig) -> Journal:
    """The processor's own connection: read-only on SQLite; on PostgreSQL it also writes its claims."""
    return Journal(config.store_location, readonly=not is_postgres(config.store_location))


def decide_batch(journal: Journal, config: EngineConfig, limit: int) -> list[StatusChange]:
    """Decide up to `limit` pending messages, oldest first."""
    rows = journal.next_batch(limit, config.node_name, config.processing.lease_seconds)
    channels = {c.name: c for c in config.channels}
    changes = []
    for row in rows:
        try:
            outcome = process_message(channels.get(row["channel"]), row["raw"], row["charset"], row["message_type"])
        except Exception as exc:  # one bad message must not stop the others
            log.error("processing failed", extra={"fields": {"message_id": row["id"], "error": type(exc).__name__}})
            log.debug("processing failed", exc_info=True)
            outcome = Outcome("error", f"internal error: {type(exc).__name__}: {exc}")
        if outcome.status == "error":
            log.warning("message processing error", extra={"fields": {
                "message_id": row["id"], "channel": row["channel"], "error": outcome.reason}})
        changes.append(StatusChange(row["id"], outcome.status, outcome.reason, outcome.mapped))
    return changes


# ---- worker-process side ------------------------------------------------------

_worker: dict = {}


def _exit_with_parent(parent: int) -> None:
    """A worker whose daemon was killed (kill -9) would otherwise live on as an orphan."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def lower_priority(nice: int) -> None:
    """Run only when the CPU is otherwise idle (Linux SCHED_IDLE), else at `nice`."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        if nice:
            os.nice(nice)


def worker_init(config: EngineConfig, nice: int) -> None:
    from engine import logs
    _exit_with_parent(os.getppid())
    logs.configure(config.logging.level, config.logging.format, None)
    lower_priority(nice)
    _worker["config"] = config
    _worker["journal"] = processing_journal(config)
    for channel in config.channels:   # now, not inside the first batch: the first messages wait less
        if channel.transformer is not None:
            # a broken mappings folder is left for each message to report (map_message)
            with contextlib.suppress(Exception):
                mappings_for(channel)


def worker_decide_batch(limit: int) -> list[StatusChange]:
    return decide_batch(_worker["journal"], _worker["config"], limit)
