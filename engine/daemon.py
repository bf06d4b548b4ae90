"""The long-running engine: listeners, the journal writer, the post-ACK processor.

Start-up: open (and migrate) the store, start the group-commit writer, start
every enabled channel's listener, start the processor. Shutdown (SIGTERM or
SIGINT): stop accepting, let every frame already read commit and be ACKed,
finish the processor's current batch, commit what is queued, close the store.
Nothing is lost at any point: a message is ACKed only after its commit, and a
restarted engine picks up every message still in status 'received'.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import importlib
import logging
import multiprocessing
import signal
from functools import partial

from channels.mllp.listener import MLLPListener
from engine import logs
from engine.config import EngineConfig, FaxFolderSource, MLLPSource
from engine.delivery import DeliveryService
from engine.payers import PayerDesk, chain_after_apply
from engine.rules import OutboundPlanner
from engine.schedules import EngineScheduler
from engine.templates import Templates
from engine.group_commit import GroupCommitter
from engine.processor import decide_batch, processing_journal, worker_decide_batch, worker_init
from engine.db import describe, is_postgres
from engine.store import Journal

log = logging.getLogger("engine")


class Engine:
    # Processed messages per writer transaction. While frames arrive (one in the last QUIET_SECONDS) a
    # frame may wait behind one such transaction: 2 updates, ~1 ms (8 took 4-8 ms and put the p99 ACK
    # at 2,000 msg/s near 20-45 ms instead of 5-10); on a quiet engine 8, fewer commits to catch up.
    APPLY_CHUNK = 8
    APPLY_CHUNK_BUSY = 2
    QUIET_SECONDS = 0.05

    def __init__(self, config: EngineConfig):
        self.config = config
        self.listeners: list[MLLPListener] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self.journal: Journal | None = None
        self.background_journal: Journal | None = None   # PostgreSQL: the group committer's background lane
        self.committer: GroupCommitter | None = None
        self._processor_task: asyncio.Task | None = None
        self.web_side = None
        self.planner: OutboundPlanner | None = None
        self.payer_desk: PayerDesk | None = None
        self.after_apply = None
        self.delivery: DeliveryService | None = None
        self.scheduler: EngineScheduler | None = None
        self.fax_channels: list = []     # channels.fax.watcher.FaxFolderChannel, one per fax_folder channel

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        # Outbound templates are compiled and checked against their HL7 structure (hl7apy) once, here.
        self.planner = OutboundPlanner(config, Templates.load(config.outbound.templates)) \
            if config.outbound.rules else None
        # Eligibility (270/271) and prior authorization (278) at intake; the X12 it sends is checked once, here.
        self.payer_desk = PayerDesk(config) if config.payers.destination else None
        if self.payer_desk is not None:
            seconds = self.payer_desk.self_check()
            log.info("payer X12 checked", extra={"fields": {"ms": round(seconds * 1000, 1)}})
        self.after_apply = chain_after_apply(self.payer_desk, self.planner)
        def journal() -> Journal:
            return Journal(config.store_location, config.store.synchronous, config.store.duplicate_window_hours,
                           referral_rules=config.referrals, after_apply=self.after_apply, node=config.node_name)
        self.journal = journal()
        if is_postgres(config.store_location):
            # referral updates and other background work wait for the cluster-wide write lock on their own
            # connection and thread, never in front of the frames waiting for their ACK (engine/group_commit.py)
            self.background_journal = journal()
        if any(c.transformer is not None for c in config.channels):
            # The writer validates diagnoses against ICD-10-CM, whose tables take ~2 s to load:
            # load them now, before any listener accepts, never inside a commit an ACK waits for
            # (nor beside the listeners: the load holds the GIL).
            importlib.import_module("simple_icd_10_cm")
        # Everything loaded so far (ICD-10-CM tables: ~630,000 objects) lives as long as the process:
        # move it out of the collector's reach, or each full collection walks it (~150 ms) while
        # ACKs wait.
        gc.freeze()
        self.committer = GroupCommitter(self.journal.write, config.store.group_commit_max, write_background=(
            self.background_journal.write if self.background_journal is not None else None))
        self.committer.start(asyncio.get_running_loop())
        self.delivery = DeliveryService(config, partial(self.committer.submit, background=True), planner=self.planner,
                                        on_response=self.payer_desk.delivery_handlers if self.payer_desk else None,
                                        worker_id=config.node_name)
        await self.delivery.start()
        self.scheduler = EngineScheduler(self)
        self.scheduler.start()
        # Metrics hook, paused channels, the dashboard's child process (engine.web.runtime).
        from engine.web.runtime import WebSide
        self.web_side = WebSide(config)
        for channel in config.channels:
            if channel.enabled and isinstance(channel.source, MLLPSource):
                listener = MLLPListener(channel, self.committer, on_committed=self._wake.set,
                                        **self.web_side.listener_hooks())
                await self.web_side.start_listener(listener)
                self.listeners.append(listener)
        self.web_side.start(self.listeners)
        await self._start_fax_channels()
        self._processor_task = asyncio.create_task(self._process_forever(), name="processor")
        # Again, now that the delivery, schedules, dashboard and fax channels are loaded too: whatever
        # start-up left behind stays out of the collector's full walks while ACKs wait.
        gc.collect()
        gc.freeze()
        log.info("engine started", extra={"fields": {
            "store": describe(config.store_location), "channels": [c.name for c in config.channels if c.enabled],
            "synchronous": config.store.synchronous}})

    async def stop(self) -> None:
        self._stopping = True
        log.info("engine stopping: draining in-flight messages")
        if self.web_side is not None:
            await self.web_side.stop()
        for listener in self.listeners:
            await listener.stop()
        if self.web_side is not None:
            self.web_side.stop_metrics()
        for fax in self.fax_channels:     # before the writer closes: in-flight faxes still commit
            await fax.stop()
        self._wake.set()
        if self._processor_task is not None:
            await self._processor_task
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.delivery is not None:
            await self.delivery.stop()
        if self.committer is not None:
            await self.committer.close()
            c = self.committer
            log.info("journal writes", extra={"fields": {
                "transactions": c.batches, "messages": c.items,
                "messages_per_transaction": round(c.items / c.batches, 1) if c.batches else 0,
                "ms_per_transaction": round(c.write_seconds / c.batches * 1000, 2) if c.batches else 0}})
        for journal in (self.journal, self.background_journal):
            if journal is not None:
                journal.close()
        log.info("engine stopped")

    async def _start_fax_channels(self) -> None:
        """Fax drop folders: OCR in their own process pools; filing goes through the one writer."""
        from channels.fax.watcher import FaxFolderChannel
        for channel in self.config.channels:
            if channel.enabled and isinstance(channel.source, FaxFolderSource):
                fax = FaxFolderChannel(channel, self.committer.submit, self.config.store_location,
                                       rules=self.config.referrals,
                                       after_apply=self.after_apply,
                                       on_filed=lambda _filed: self.delivery.wake(),
                                       node=self.config.node_name if is_postgres(self.config.store_location) else None)
                await fax.start()
                self.fax_channels.append(fax)

    async def _process_forever(self) -> None:
        """Run the post-ACK pipeline until stop; a crashed worker process is replaced.

        The worker decides, the journal's writer applies (one writer, no lock waits).
        """
        processing = self.config.processing
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if processing.isolation == "process":
                executor = concurrent.futures.ProcessPoolExecutor(
                    1, mp_context=multiprocessing.get_context("spawn"),
                    initializer=worker_init, initargs=(self.config, processing.nice))
                decide = partial(worker_decide_batch, processing.batch_size)
            else:
                journal = processing_journal(self.config)
                executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="processor")
                decide = partial(decide_batch, journal, self.config, processing.batch_size)
            try:
                while not self._stopping:
                    self._wake.clear()
                    changes = await loop.run_in_executor(executor, decide)
                    if changes:
                        await self._apply(changes)
                    elif not self._stopping:
                        try:
                            await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                        except asyncio.TimeoutError:
                            pass
            except concurrent.futures.process.BrokenProcessPool:
                log.error("processor worker died; starting a new one")
                await asyncio.sleep(1.0)
            except Exception:
                log.error("processor failed; retrying in 5 s", exc_info=log.isEnabledFor(logging.DEBUG))
                await asyncio.sleep(5.0)
            finally:
                executor.shutdown(wait=True)
                if processing.isolation == "thread":
                    journal.close()

    async def _apply(self, changes: list) -> None:
        """Referral updates cost ~0.3-0.6 ms each in the writer: commit them in small chunks, one after
        another, so frames waiting for their ACK share the next transaction instead of waiting behind
        a whole batch. (With a background writer of its own, PostgreSQL, frames never wait behind them.)"""
        while changes:
            quiet = self.background_journal is not None or self.committer.quiet_for() > self.QUIET_SECONDS
            chunk = self.APPLY_CHUNK if quiet else self.APPLY_CHUNK_BUSY
            await self.committer.submit(changes[:chunk], background=True)
            changes = changes[chunk:]
            if self.after_apply is not None:
                self.delivery.wake()     # the rules or the payer desk may have queued messages


def run(config: EngineConfig) -> int:
    """Run in the foreground until SIGTERM/SIGINT. Returns the process exit code."""
    logs.configure(config.logging.level, config.logging.format, config.logging.file)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # uvloop is an optimisation, not a requirement
        runner = asyncio.run
    return runner(_main(config))


async def _main(config: EngineConfig) -> int:
    engine = Engine(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await engine.start()
    except OSError as exc:
        log.error("cannot start", extra={"fields": {"error": str(exc)}})
        await engine.stop()
        return 1
    await stop.wait()
    await engine.stop()
    return 0
