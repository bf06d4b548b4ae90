"""The payer exchange folder: 271/278 answers that a clearinghouse drops as files in `payers.inbox`.

With `payers.destination` naming a file destination, the engine's 270s and 278s are
written into the exchange folder (channels/file_writer.py; the file written is `sent`)
and the request stays pending until its answer file arrives. `sweep` then, for each
complete file in the inbox (names ending `.part` and hidden names are still being
written and are left alone; sub-folders are ours):

1. `read_answer` (no database): the file's bytes, sha256 and trace (TRN02, else BHT03);
   a file that is not X12 at all is an `unreadable` problem. A damaged interchange
   whose trace can still be seen goes on to its request, so the handler names what is
   wrong and the referral gets a review exception, as an HTTP answer would.
2. `apply_answers` (in the journal writer's transaction): the `payer_requests` row of
   that trace (the newest still `asked`, else the newest: a payer may send its final
   decision after a pended one) and its outbound row, then the same handler the HTTP
   way uses (`PayerDesk.on_response[message_type]`, given the raw X12), each file in
   its own savepoint. An applied file leaves a `payer_answer_file` event whose cause is
   `file:<sha256>`: the same file swept again (a crash between the commit and the move)
   is recognised and not applied twice.
3. `settle` (after the commit): the file moves to `inbox/processed/`, or to
   `inbox/error/` beside `NAME.error.txt` saying why (unreadable X12, unknown trace,
   handler error). Nothing is ever deleted or overwritten (a name taken gets `.1`, `.2`).

Bad paths: an inbox that does not exist yet is created; a file that vanishes or cannot be
read or moved (another sweep took it, a permission problem) is left for the next sweep and
counted as `skipped`; a handler error rolls back that file's work only.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine import outbound, x12
from engine.store import write_transaction
from engine.referral_store import ReferralStore

log = logging.getLogger("engine.payer_exchange")

PROCESSED, ERROR = "processed", "error"
EVENT = "payer_answer_file"
# Our own traces (engine/eligibility.py RE<referral>-<request>, engine/authorization.py RA<referral>-<auth>):
# the referral id narrows the look-up to one referral's requests.
_OUR_TRACE = re.compile(r"R[EA](\d+)-\d+")


@dataclass
class AnswerFile:
    """One file found in the inbox."""
    path: Path
    sha256: str = ""
    text: str = ""
    trace: str | None = None
    problem: str | None = None          # why it cannot even be matched to a request


@dataclass
class Outcome:
    """What became of one file: `processed` (applied now or before) or `error` with the reason."""
    file: AnswerFile
    result: str
    reason: str | None = None
    referral_id: int | None = None


def answer_files(inbox: Path) -> list[Path]:
    """Complete files in the inbox, oldest first: not hidden, not `*.part`, not a folder."""
    try:
        entries = [p for p in inbox.iterdir() if not p.name.startswith(".") and not p.name.endswith(".part")]
    except FileNotFoundError:
        return []
    found = []
    for p in entries:
        try:
            if p.is_file():
                found.append((p.stat().st_mtime, p.name, p))
        except OSError:
            continue                    # gone or unreadable meanwhile: the next sweep looks again
    return [p for _, _, p in sorted(found)]


def _lenient_trace(text: str) -> str | None:
    """TRN02 of an interchange pyx12 will not read, with the delimiters its ISA declares (ISA is fixed
    width: element separator at 3, segment terminator at 105)."""
    if not text.startswith("ISA") or len(text) < 106:
        return None
    element, terminator = text[3], text[105]
    for raw in text.split(terminator):
        parts = raw.strip().split(element)
        if parts[0] == "TRN" and len(parts) > 2 and parts[2].strip():
            return parts[2].strip()
    return None


def read_answer(path: Path) -> AnswerFile | None:
    """The file's content, hash and trace. None when it cannot be read now (vanished, no permission)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    answer = AnswerFile(path, hashlib.sha256(data).hexdigest(), data.decode("latin-1").strip())
    try:
        doc = x12.read(answer.text)
    except x12.X12Error as exc:
        answer.trace = _lenient_trace(answer.text)
        if answer.trace is None:
            answer.problem = f"unreadable X12: {exc}"
        return answer
    traces = [s.get(2) for s in doc.all("TRN") if s.get(2)]
    bht = doc.first("BHT")
    answer.trace = traces[0] if traces else (bht.get(3) if bht is not None and bht.get(3) else None)
    if answer.trace is None:
        answer.problem = (f"unknown trace: the {doc.transaction_set} names no trace (no TRN02, no BHT03), so it "
                          "cannot be matched to a request")
    return answer


def find_request(conn: sqlite3.Connection, trace: str):
    """The request a trace answers: the newest still asked, else the newest. None when unknown."""
    mine = _OUR_TRACE.fullmatch(trace)
    where, args = ("referral_id=? AND trace=?", (int(mine.group(1)), trace)) if mine else ("trace=?", (trace,))
    return conn.execute(f"SELECT * FROM payer_requests WHERE {where} ORDER BY status='asked' DESC, id DESC LIMIT 1",
                        args).fetchone()


def _review(conn: sqlite3.Connection, row, reason: str, at: str) -> None:
    """As for an answer over HTTP (engine.delivery): the reason beside the outbound row, and a review
    exception for the coordinators."""
    conn.execute("UPDATE outbound SET last_error=? WHERE id=?", (f"response not applied: {reason}", row["id"]))
    if row["referral_id"] is not None:
        status = conn.execute("SELECT status FROM referrals WHERE id=?", (row["referral_id"],)).fetchone()
        ReferralStore(conn).add_exception(row["referral_id"], row["source_message_id"],
                                          f"response.{row['message_type']}", status[0] if status else "unknown",
                                          f"the answer file to outbound #{row['id']} could not be applied: {reason}",
                                          at)


def apply_one(conn: sqlite3.Connection, handlers: dict[str, Callable], answer: AnswerFile) -> Outcome:
    """Apply one answer file (see the module docstring); its work is rolled back alone when it fails."""
    if answer.problem:
        return Outcome(answer, ERROR, answer.problem)
    request = find_request(conn, answer.trace)
    if request is None:
        return Outcome(answer, ERROR, f"unknown trace: no request was sent with trace {answer.trace!r}")
    referral_id = request["referral_id"]
    key = f"file:{answer.sha256}"
    if conn.execute("SELECT 1 FROM referral_events WHERE referral_id=? AND kind=? AND cause_id=?",
                    (referral_id, EVENT, key)).fetchone():
        return Outcome(answer, PROCESSED, "applied before", referral_id)
    row = conn.execute("SELECT * FROM outbound WHERE id=?", (request["outbound_id"],)).fetchone() \
        if request["outbound_id"] is not None else None
    if row is None:
        return Outcome(answer, ERROR, f"unknown trace: request #{request['id']} (trace {answer.trace!r}) has no "
                                      "outbound message", referral_id)
    handler = handlers.get(row["message_type"])
    if handler is None:
        return Outcome(answer, ERROR, f"handler error: no handler for {row['message_type']} answers", referral_id)
    at = outbound.now_iso()
    conn.execute("SAVEPOINT answer_file")
    try:
        handler(conn, row, answer.text)
        ReferralStore(conn).add_event(referral_id, EVENT, None, answer.path.name, at, "payer", key,
                                      f"answer file {answer.path.name} applied to request #{request['id']} "
                                      f"(outbound #{row['id']})")
        conn.execute("RELEASE answer_file")
    except Exception as exc:
        conn.execute("ROLLBACK TO answer_file")
        conn.execute("RELEASE answer_file")
        reason = f"{type(exc).__name__}: {exc}"
        log.error("payer answer file not applied", extra={"fields": {
            "outbound_id": row["id"], "request_id": request["id"], "error": type(exc).__name__}})
        _review(conn, row, reason, at)
        return Outcome(answer, ERROR, f"handler error: {reason}", referral_id)
    return Outcome(answer, PROCESSED, None, referral_id)


def apply_answers(conn: sqlite3.Connection, handlers: dict[str, Callable], answers: list[AnswerFile]) -> list[Outcome]:
    """`apply_one` for each file, in the caller's transaction (the journal writer's)."""
    return [apply_one(conn, handlers, a) for a in answers]


def _free_name(folder: Path, name: str) -> Path:
    target = folder / name
    n = 0
    while target.exists() or target.with_name(target.name + ".error.txt").exists():
        n += 1
        target = folder / f"{name}.{n}"
    return target


def settle(inbox: Path, outcomes: list[Outcome]) -> dict:
    """Move each file out of the inbox (after the commit). Returns counts: processed, error, skipped."""
    from channels.file_writer import fsync_dir, replace_atomic
    counts = {"processed": 0, "error": 0, "skipped": 0}
    for outcome in outcomes:
        folder = inbox / outcome.result
        try:
            folder.mkdir(parents=True, exist_ok=True)
            target = _free_name(folder, outcome.file.path.name)
            if outcome.result == ERROR:
                # the reason first: a crash before the move leaves the file in the inbox to be looked at again
                replace_atomic(target.with_name(target.name + ".error.txt"),
                               f"{outcome.file.path.name}: {outcome.reason}\nsha256 {outcome.file.sha256}\n".encode())
            os.rename(outcome.file.path, target)
            fsync_dir(folder)
            fsync_dir(inbox)
        except OSError as exc:
            log.warning("payer answer file not moved", extra={"fields": {"error": exc.strerror or type(exc).__name__}})
            counts["skipped"] += 1
            continue
        counts[outcome.result] += 1
        if outcome.result == ERROR:
            log.warning("payer answer file refused", extra={"fields": {
                "referral_id": outcome.referral_id, "reason": (outcome.reason or "").split(":")[0]}})
    return counts


def scan(inbox: Path) -> tuple[list[AnswerFile], int]:
    """Read the inbox's complete files (creating the inbox if needed). Returns (files, unreadable now)."""
    inbox.mkdir(parents=True, exist_ok=True)
    answers, skipped = [], 0
    for path in answer_files(inbox):
        answer = read_answer(path)
        if answer is None:
            skipped += 1
        else:
            answers.append(answer)
    return answers, skipped


def _merge(counts: dict, skipped: int) -> dict:
    counts["skipped"] += skipped
    return counts


def sweep(conn: sqlite3.Connection, handlers: dict[str, Callable], inbox: Path) -> dict:
    """The whole sweep on a connection in autocommit mode (the CLI's `sweep payer_inbox`): the files are
    applied in one transaction, then moved."""
    answers, skipped = scan(inbox)
    if not answers:
        return {"processed": 0, "error": 0, "skipped": skipped}
    with write_transaction(conn):
        outcomes = apply_answers(conn, handlers, answers)
    return _merge(settle(inbox, outcomes), skipped)


async def run(engine) -> dict:
    """The engine's scheduled `payer_inbox` job: files read and moved in a thread, applied by the journal
    writer (engine.store.WriterTask through the engine's committer)."""
    from engine.store import WriterTask
    desk, inbox = engine.payer_desk, engine.config.payers.inbox
    if desk is None or inbox is None or engine.committer is None:
        return {}
    answers, skipped = await asyncio.to_thread(scan, inbox)
    if not answers:
        return {"processed": 0, "error": 0, "skipped": skipped}
    handlers = desk.on_response
    outcomes = await engine.committer.submit(
        WriterTask("payer inbox", lambda conn: apply_answers(conn, handlers, answers)), background=True)
    if isinstance(outcomes, Exception):
        raise outcomes                     # nothing committed: the files stay in the inbox for the next sweep
    return _merge(await asyncio.to_thread(settle, inbox, outcomes), skipped)
