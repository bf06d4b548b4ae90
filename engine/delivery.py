"""Delivery: one asyncio worker per destination drains the outbound queue through its connector.

A worker claims due rows (engine.outbound.claim_due, in the journal writer's
transaction), hands them to the destination's connector one by one in id order,
and writes the outcomes back in one writer transaction per batch:

- `sent`: the row is done; a row that `closes_loop` closes its referral (the
  lifecycle decides; the status history names the outbound row as the cause);
- `retry`: attempts + 1, due again after exponential backoff, dead after
  `outbound.max_attempts`; later rows of the same order key wait behind it;
- `dead`: refused for good; the referral gets a review exception so a
  coordinator sees that the message did not arrive.

At-least-once: a crash between a send and its recorded outcome resends the row
with the same MSH-10. Rows this node left in `sending` are released at start.
A worker sleeps until its destination's next due row, or until `wake()` (new
rows queued, the retry pump, a resend).
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import datetime, timezone
from typing import Callable

from channels.outbound import Connector, Delivery, DeliveryResult
from engine import outbound
from engine.config import (EngineConfig, FaxDestination, FileDestination, MLLPDestination, SMTPDestination,
                           WebhookDestination)
from engine.lifecycle import ReferralStatus, close
from engine.referral_store import ReferralStore
from engine.store import WriterTask

log = logging.getLogger("engine.delivery")


def connector_for(destination) -> Connector:
    """The channels/ connector for one configured destination."""
    if isinstance(destination, MLLPDestination):
        from channels.mllp.sender import MLLPSender
        return MLLPSender(destination.host, destination.port, ack_timeout=destination.ack_timeout_seconds,
                          connect_timeout=destination.connect_timeout_seconds, on_error=destination.on_error,
                          on_reject=destination.on_reject)
    if isinstance(destination, FileDestination):
        from channels.file_writer import FileWriter
        return FileWriter(destination.directory, destination.name_pattern)
    if isinstance(destination, FaxDestination):
        from channels.fax_outbox import FaxOutbox
        return FaxOutbox(destination.directory, sender_name=destination.sender_name,
                         sender_fax=destination.sender_fax)
    if isinstance(destination, WebhookDestination):
        from channels.webhook import Webhook
        return Webhook(destination.url, timeout=destination.timeout_seconds, headers=destination.headers,
                       content_type=destination.content_type, keep_response=destination.keep_response)
    if isinstance(destination, SMTPDestination):
        from channels.smtp import SMTPSender
        return SMTPSender(destination.host, destination.port, sender=destination.sender,
                          starttls=destination.starttls, username=destination.username,
                          password=destination.password, timeout=destination.timeout_seconds)
    raise TypeError(f"no connector for {type(destination).__name__}")


def destination_problems(config: EngineConfig) -> list[str]:
    """What a connector refuses in a destination's settings (a file name pattern, a fax or e-mail
    address), as `FILE: destinations.NAME: reason` lines; checked by check-config and at start."""
    problems = []
    for name, destination in config.destinations().items():
        try:
            connector_for(destination)
        except ValueError as exc:
            problems.append(f"{config.source_file}: destinations.{name}: {exc}")
    return problems


def close_loop(conn: sqlite3.Connection, referral_id: int, outbound_id: int, at: str) -> str | None:
    """The consult note reached the referring provider: close the referral if the lifecycle allows.
    Returns the new status, or None (recorded as an event: e.g. the visit is not completed yet)."""
    row = conn.execute("SELECT status, note_received FROM referrals WHERE id=?", (referral_id,)).fetchone()
    if row is None:
        return None
    store = ReferralStore(conn)
    decision = close(ReferralStatus(row[0]), bool(row[1]))
    if decision.to is None:
        store.add_event(referral_id, "note_delivered", None, None, at, "outbound", str(outbound_id),
                        f"not closed: {decision.exception}")
        return None
    store.set_status(referral_id, row[0], decision.to.value, at, "outbound", outbound_id, decision.detail)
    return decision.to.value


class DeliveryService:
    """The outbound side of the engine: a worker per destination, writes through the journal writer."""

    def __init__(self, config: EngineConfig, submit: Callable[[WriterTask], asyncio.Future],
                 connectors: dict[str, Connector] | None = None, worker_id: str = "local",
                 planner=None, on_response: dict[str, Callable] | None = None):
        self.config = config
        self._submit = submit               # GroupCommitter.submit(task, background=True)
        self.destinations = config.destinations()
        if connectors is None:
            from engine.config import ConfigError
            problems = destination_problems(config)
            if problems:
                raise ConfigError(problems)
            connectors = {name: connector_for(d) for name, d in self.destinations.items()}
        self.connectors = connectors
        self.worker_id = worker_id
        self.planner = planner              # engine.rules.OutboundPlanner: rules on status:closed
        # message_type -> handler(conn, row, response_text) run in the same transaction that records a row
        # `sent`: a synchronous answer (an X12 271 to a 270) is applied where its delivery is recorded.
        self.on_response = dict(on_response or {})
        self._wake = {name: asyncio.Event() for name in self.destinations}
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self.delivered = 0                  # counters for logs and metrics
        self.failed = 0

    async def _write(self, name: str, fn: Callable[[sqlite3.Connection], object]):
        result = await self._submit(WriterTask(name, fn))
        if isinstance(result, Exception):
            raise result
        return result

    async def start(self) -> None:
        released = await self._write("release claims", lambda c: outbound.release_expired(c, worker=self.worker_id))
        if released:
            log.info("outbound rows resumed after restart", extra={"fields": {"rows": released}})
        for name in self.destinations:
            self._tasks.append(asyncio.create_task(self._run(name), name=f"deliver:{name}"))

    def wake(self, destination: str | None = None) -> None:
        for name, event in self._wake.items():
            if destination is None or name == destination:
                event.set()

    async def stop(self) -> None:
        self._stopping = True
        self.wake()
        for task in self._tasks:
            try:
                await task
            except Exception:
                log.error("delivery worker failed while stopping", exc_info=log.isEnabledFor(logging.DEBUG))
        for connector in self.connectors.values():
            await connector.close()

    def _claim(self, conn: sqlite3.Connection, name: str) -> tuple[list, str | None]:
        """The next batch, or ([], when to look again)."""
        rows = outbound.claim_due(conn, name, limit=self.config.outbound.batch_size, worker=self.worker_id,
                                  lease_seconds=self.config.outbound.lease_seconds)
        return (rows, None) if rows else ([], outbound.next_due(conn, name))

    async def _run(self, name: str) -> None:
        wake = self._wake[name]
        rows: list = []
        next_due = None
        while not self._stopping:
            wake.clear()
            try:
                if not rows:
                    rows, next_due = await self._write(f"claim {name}", lambda c: self._claim(c, name))
                if rows:
                    # A batch's outcomes and the next batch's claim share one writer transaction.
                    rows, next_due = await self._deliver(name, rows)
                    continue
            except Exception as exc:    # the claimed rows come back with the retry pump (lease expiry)
                log.error("delivery worker error", extra={"fields": {"destination": name,
                                                                     "error": type(exc).__name__}})
                log.debug("delivery worker error", exc_info=True)
                rows, next_due = [], None
            await self._sleep(wake, next_due)

    async def _sleep(self, wake: asyncio.Event, next_due: str | None) -> None:
        timeout = self.config.schedules.retry_pump_seconds
        if next_due:
            seconds = (datetime.fromisoformat(next_due) - datetime.now(timezone.utc)).total_seconds()
            timeout = min(timeout, max(0.01, seconds))
        try:
            await asyncio.wait_for(wake.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _deliver(self, name: str, rows: list[sqlite3.Row]) -> tuple[list, str | None]:
        connector = self.connectors[name]
        outcomes: list[tuple[sqlite3.Row, DeliveryResult]] = []
        held: list[int] = []                # not attempted: an earlier row of their key failed, or stopping
        failed_keys: set[str] = set()
        for row in rows:
            if self._stopping or row["order_key"] in failed_keys:
                held.append(row["id"])
                continue
            try:
                result = await connector.deliver(Delivery(row["id"], name, row["message_type"], row["control_id"],
                                                          row["payload"], row["attempts"] + 1))
            except Exception as exc:    # a connector bug on this row: it counts as an attempt, never a lost batch
                log.error("connector failed", extra={"fields": {"outbound_id": row["id"], "destination": name,
                                                                "error": type(exc).__name__}})
                log.debug("connector failed", exc_info=True)
                result = DeliveryResult("retry", f"connector error: {type(exc).__name__}")
            outcomes.append((row, result))
            if result.outcome == "retry":
                failed_keys.add(row["order_key"])
        def record_and_claim(conn):
            self._record(conn, outcomes, held)
            return ([], None) if self._stopping else self._claim(conn, name)
        return await self._write(f"outcomes {name}", record_and_claim)

    def _handle_response(self, conn: sqlite3.Connection, handler: Callable, row, response: str | None,
                         at: str) -> None:
        """A response that cannot be applied (malformed, unexpected) is kept on the row and shown to the
        coordinators as a review exception; the delivery itself stays recorded."""
        conn.execute("SAVEPOINT response")
        try:
            handler(conn, row, response)
            conn.execute("RELEASE response")
        except Exception as exc:
            conn.execute("ROLLBACK TO response")
            conn.execute("RELEASE response")
            log.error("outbound response not applied", extra={"fields": {
                "outbound_id": row["id"], "message_type": row["message_type"], "error": type(exc).__name__}})
            # The row stays `sent` (it was delivered) and keeps the answer in `ack`; why it could not be
            # applied goes beside it, so `queue --status sent` and the timeline show it too.
            conn.execute("UPDATE outbound SET last_error=? WHERE id=?",
                         (f"response not applied: {type(exc).__name__}: {exc}", row["id"]))
            if row["referral_id"] is not None:
                status = conn.execute("SELECT status FROM referrals WHERE id=?", (row["referral_id"],)).fetchone()
                ReferralStore(conn).add_exception(
                    row["referral_id"], row["source_message_id"], f"response.{row['message_type']}",
                    status[0] if status else "unknown",
                    f"the response to outbound #{row['id']} could not be applied: {type(exc).__name__}: {exc}", at)

    def _close_loop(self, conn: sqlite3.Connection, row, at: str) -> None:
        """Close the referral (and queue what `status:closed` rules owe); a failure there is a review
        exception, never a reason to lose the delivery's own record."""
        conn.execute("SAVEPOINT close_loop")
        try:
            before = conn.execute("SELECT status FROM referrals WHERE id=?", (row["referral_id"],)).fetchone()
            new = close_loop(conn, row["referral_id"], row["id"], at)
            if new and self.planner is not None:
                self.planner.plan(conn, row["referral_id"], None, before[0], new, cause=f"out{row['id']}")
            conn.execute("RELEASE close_loop")
        except Exception as exc:
            conn.execute("ROLLBACK TO close_loop")
            conn.execute("RELEASE close_loop")
            log.error("closing the loop failed", extra={"fields": {"outbound_id": row["id"],
                                                                   "error": type(exc).__name__}})
            status = conn.execute("SELECT status FROM referrals WHERE id=?", (row["referral_id"],)).fetchone()
            ReferralStore(conn).add_exception(row["referral_id"], row["source_message_id"], "outbound.closes_loop",
                                              status[0] if status else "unknown",
                                              f"outbound #{row['id']} was delivered but the referral could not be "
                                              f"closed: {type(exc).__name__}: {exc}", at)

    def _record(self, conn: sqlite3.Connection, outcomes: list, held: list[int]) -> None:
        cfg = self.config.outbound
        at = outbound.now_iso()
        store = ReferralStore(conn)
        for row, result in outcomes:
            if result.outcome == "sent":
                if outbound.record_sent(conn, row["id"], result.ack, at):
                    self.delivered += 1
                    handler = self.on_response.get(row["message_type"])
                    if handler is not None:
                        self._handle_response(conn, handler, row, result.ack, at)
                    if row["closes_loop"] and row["referral_id"] is not None:
                        self._close_loop(conn, row, at)
                continue
            self.failed += 1
            status = outbound.record_failure(conn, row["id"], result.detail, result.ack,
                                             dead=result.outcome == "dead", max_attempts=cfg.max_attempts,
                                             backoff=cfg.backoff_seconds, max_backoff=cfg.max_backoff_seconds, at=at)
            log.warning("outbound delivery failed", extra={"fields": {
                "outbound_id": row["id"], "destination": row["destination"], "status": status,
                "attempt": row["attempts"] + 1}})
            if status == "dead" and row["referral_id"] is not None:
                referral = conn.execute("SELECT status FROM referrals WHERE id=?", (row["referral_id"],)).fetchone()
                store.add_exception(row["referral_id"], row["source_message_id"], f"outbound.{row['message_type']}",
                                    referral[0] if referral else "unknown",
                                    f"outbound #{row['id']} to {row['destination']} is dead after "
                                    f"{row['attempts'] + 1} attempt(s): {result.detail}", at)
        outbound.release(conn, held, at, worker=self.worker_id)
