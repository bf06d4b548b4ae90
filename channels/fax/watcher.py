"""The fax drop-folder channel: watch, claim, read in a worker process, file, move.

    inbox/NAME --rename--> processing/NAME --OCR (process pool)--> commit (journal writer)
               --> processed/NAME      (accepted, needs_review, addendum, duplicate)
               --> error/NAME + error/NAME.error.txt   (the reader's reason)

- A watchdog observer wakes the scanner on file-system events; a rescan every
  `poll_seconds` (and one at start-up) catches anything an event missed and lets
  `stable_seconds` elapse. What counts as complete: channels/fax/completeness.py.
- Claiming is one atomic rename into processing/, so a file is never read twice and a
  fax server never sees it vanish half-read.
- OCR runs in a ProcessPoolExecutor (`workers` processes, one fax each, niced), so the
  event loop and the MLLP listeners never wait on it.
- The file leaves processing/ only after its commit. A crash leaves it there; at the
  next start it is taken again, and engine.fax_intake recognises a file already filed
  by its hash and name, so it is filed exactly once. Files are never deleted.
- Several nodes sharing the folders (a network share; PostgreSQL store): each node claims
  into its own processing/NODE/, so a node's restart recovers only its own files. A file
  left in another node's folder longer than `takeover_seconds` (the node died) is taken
  over with the same atomic rename: one node wins, and the store's hash check still files
  it once. A live node touches the files it holds (their ctime) every quarter of that
  time, so a long OCR is never taken from it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import multiprocessing
import os
import sqlite3
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from channels.fax.completeness import SIDECAR_SUFFIX, InboxTracker
from channels.fax.worker import init_worker, read_for_channel
from engine.config import Channel, FaxFolderSource, ReferralsConfig
from engine.fax_intake import FaxResult, Filed, commit_fax, filed_ok
from engine.db import is_postgres
from engine.store import WriterTask, connect

log = logging.getLogger("channels.fax")

PROCESSED_STATUSES = ("accepted", "needs_review", "addendum", "duplicate")
STOP_WAIT_SECONDS = 20.0      # in-flight faxes get this long at shutdown; the rest stay in processing/


def claim_folder(processing: Path, node: str | None) -> Path:
    """Where a node's claims go: processing/ itself (one node), or processing/NODE/ (host:tag -> host_tag)."""
    if not node:
        return processing
    return processing / "".join(c if c.isalnum() or c in "-_." else "_" for c in node)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def free_name(folder: Path, name: str) -> Path:
    """folder/name, or folder/stem.N.suffix when that is taken: filing never overwrites."""
    target = folder / name
    n = 1
    while target.exists() or Path(str(target) + ".error.txt").exists():
        stem, dot, suffix = name.partition(".")
        target = folder / (f"{stem}.{n}.{suffix}" if dot else f"{name}.{n}")
        n += 1
    return target


class FaxFolderChannel:
    """One `fax_folder` channel. `submit(item, background=True)` is the group committer's submit."""

    def __init__(self, channel: Channel, submit, store_path: Path, rules: ReferralsConfig | None = None,
                 after_apply=None, on_filed=None, node: str | None = None):
        assert isinstance(channel.source, FaxFolderSource)
        self.channel = channel
        self.source: FaxFolderSource = channel.source
        self.submit = submit
        self.store_path = store_path
        self.rules = rules
        self.after_apply = after_apply
        self.on_filed = on_filed            # called with a Filed after each commit (wake delivery, tests)
        # where this engine's claims go: processing/ (one node), processing/NODE/ (nodes sharing folders)
        self.node = node
        self.claimed = claim_folder(self.source.processing, node)
        self._held: dict[Path, float] = {}     # claimed files in flight -> when last touched (several nodes)
        self.tracker = InboxTracker(self.source.completeness, self.source.stable_seconds)
        self._kick = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._scanner: asyncio.Task | None = None
        self._observer = None
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._slots = asyncio.Semaphore(self.source.workers)
        self.filed: list[Filed] = []        # what this run filed (the status page and tests read it)

    @property
    def name(self) -> str:
        return self.channel.name

    # ---- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        s = self.source
        for folder in (s.inbox, s.processing, self.claimed, s.processed, s.error, s.pages):
            folder.mkdir(parents=True, exist_ok=True)
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        recovered = sorted(p for p in self.claimed.iterdir() if p.is_file())
        if self.node:            # and what a single-node run of this folder left directly in processing/
            recovered += self._take_over([s.processing], older_than=0.0)
        for path in recovered:   # a crash interrupted these: file them (once) before anything new
            self._spawn(path, recovered=True)
        if recovered:
            log.warning("fax files recovered from processing", extra={"fields": {
                "channel": self.name, "files": len(recovered)}})
        self._start_observer(loop)
        self._scanner = asyncio.create_task(self._scan_forever(), name=f"fax-scan-{self.name}")
        log.info("fax channel started", extra={"fields": {"channel": self.name, "workers": s.workers,
                                                         "completeness": s.completeness}})

    async def stop(self) -> None:
        self._stopping = True
        self._kick.set()
        if self._observer is not None:
            self._observer.stop()
            await asyncio.get_running_loop().run_in_executor(None, self._observer.join, 5)
        if self._scanner is not None:
            await self._scanner
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=STOP_WAIT_SECONDS)
            for task in pending:     # their files stay in processing/ and are filed at the next start
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        log.info("fax channel stopped", extra={"fields": {"channel": self.name}})

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            self.source.workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker)

    def _start_observer(self, loop: asyncio.AbstractEventLoop) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        kick = self._kick

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event) -> None:       # watchdog's thread: only wake the loop
                loop.call_soon_threadsafe(kick.set)

        self._observer = Observer()
        self._observer.schedule(Wake(), str(self.source.inbox), recursive=False)
        self._observer.daemon = True
        self._observer.start()

    # ---- scanning and claiming ------------------------------------------------------------

    async def _scan_forever(self) -> None:
        while not self._stopping:
            self._kick.clear()
            try:
                self._claim_ready()
                if self.node:
                    self._touch_held()
                    others = [d for d in self.source.processing.iterdir() if d.is_dir() and d != self.claimed]
                    for path in self._take_over(others, self.source.takeover_seconds):
                        self._spawn(path, recovered=True)
            except OSError as exc:    # the inbox vanished or is unreadable: say so, keep trying
                log.error("fax inbox scan failed", extra={"fields": {"channel": self.name, "error": str(exc)}})
            try:
                # a stable_seconds rule needs a rescan after the wait even without any new event
                await asyncio.wait_for(self._kick.wait(), timeout=self._next_scan_in())
            except asyncio.TimeoutError:
                pass

    def _next_scan_in(self) -> float:
        if self.source.completeness == "stable_seconds" and self.tracker.waiting:
            return max(0.05, min(self.source.poll_seconds, self.source.stable_seconds / 2 or 0.05))
        return self.source.poll_seconds

    def _listing(self) -> dict[str, tuple[int, int]]:
        out = {}
        with os.scandir(self.source.inbox) as entries:
            for entry in entries:
                try:
                    if entry.is_file():
                        st = entry.stat()
                        out[entry.name] = (st.st_size, st.st_mtime_ns)
                except FileNotFoundError:   # removed between listing and stat
                    continue
        return out

    def _claim_ready(self) -> None:
        for name in self.tracker.ready(self._listing(), time.monotonic()):
            if self._stopping:
                return
            source = self.source.inbox / name
            target = free_name(self.claimed, name)
            try:
                os.rename(source, target)          # atomic on one file system: the claim
            except FileNotFoundError:              # the fax server took it back, or another engine claimed it
                continue
            sidecar = self.source.inbox / (name + SIDECAR_SUFFIX)
            if sidecar.exists():                   # kept, never deleted: filed beside the processed faxes
                try:
                    os.rename(sidecar, free_name(self.source.processed, sidecar.name))
                except FileNotFoundError:
                    pass
            self._spawn(target, recovered=False)

    def _take_over(self, folders: list[Path], older_than: float) -> list[Path]:
        """Files in other nodes' claim folders whose claim (the rename: ctime) is older than `older_than`
        seconds, renamed into this node's folder; a file another node took first is skipped."""
        taken = []
        cutoff = time.time() - older_than
        for folder in folders:
            for path in sorted(p for p in folder.iterdir() if p.is_file()):
                try:
                    if path.stat().st_ctime > cutoff:
                        continue
                    target = free_name(self.claimed, path.name)
                    os.rename(path, target)
                except FileNotFoundError:        # filed meanwhile, or another node took it over first
                    continue
                taken.append(target)
        if taken:
            log.warning("fax files taken over from another node", extra={"fields": {
                "channel": self.name, "files": len(taken)}})
        return taken

    def _touch_held(self) -> None:
        """Refresh the claim (ctime) of the files this node holds, so other nodes see it is alive."""
        now = time.monotonic()
        for path, touched in list(self._held.items()):
            if now - touched >= self.source.takeover_seconds / 4:
                try:
                    os.utime(path)
                except FileNotFoundError:
                    pass
                self._held[path] = now

    def _spawn(self, path: Path, recovered: bool) -> None:
        self._held[path] = time.monotonic()
        task = asyncio.create_task(self._file_one(path, recovered), name=f"fax-{path.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _task: self._held.pop(path, None))

    # ---- one fax ----------------------------------------------------------------------------

    async def _file_one(self, path: Path, recovered: bool) -> None:
        loop = asyncio.get_running_loop()
        async with self._slots:
            try:
                sha256 = await loop.run_in_executor(None, sha256_file, path)
                received_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
                fax = FaxResult(self.name, path.name, sha256, received_at, recovered=recovered,
                                pages_dir=str(self.source.pages / sha256[:24]), review=self.source.review,
                                addendum_window_days=self.source.addendum_window_days)
                if not await loop.run_in_executor(None, self._known, sha256, path.name, recovered):
                    outcome = await self._read(path, fax.pages_dir)
                    fax.extraction = outcome.get("extraction")
                    fax.error_reason, fax.error = outcome.get("error_reason"), outcome.get("error")
                    if fax.error_reason and not path.exists():     # another node took it over: it files it
                        log.warning("fax taken over by another node", extra={"fields": {"channel": self.name}})
                        return
                task = WriterTask(f"fax:{self.name}", partial(commit_fax, fax=fax, rules=self.rules,
                                                              after_apply=self.after_apply))
                filed = await self.submit(task, background=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # the store refused, the disk is full...: the file waits in processing/
                log.error("fax could not be filed; it stays in processing", extra={"fields": {
                    "channel": self.name, "error": type(exc).__name__}})
                log.debug("fax filing failed", exc_info=True)
                return
            if isinstance(filed, Exception):    # the writer task raised: rolled back, same as above
                log.error("fax could not be filed; it stays in processing", extra={"fields": {
                    "channel": self.name, "error": type(filed).__name__}})
                return
            try:
                await loop.run_in_executor(None, self._move, path, filed, fax)
            except OSError as exc:   # filed in the store; the file stays in processing/ and is only moved later
                log.error("filed fax could not be moved out of processing", extra={"fields": {
                    "channel": self.name, "fax_id": filed.fax_id, "error": exc.strerror or type(exc).__name__}})
            self.filed.append(filed)
            log.info("fax filed", extra={"fields": {"channel": self.name, "fax_id": filed.fax_id,
                                                   "status": filed.status, "referral_id": filed.referral_id}})
            if self.on_filed is not None:
                self.on_filed(filed)

    def _known(self, sha256: str, file_name: str, recovered: bool) -> bool:
        """True when the store already filed this content (then there is nothing to read)."""
        if not is_postgres(self.store_path) and not Path(self.store_path).exists():
            return False
        conn = connect(self.store_path, readonly=True)
        try:
            if recovered and conn.execute("SELECT 1 FROM faxes WHERE sha256=? AND file_name=?",
                                          (sha256, file_name)).fetchone():
                return True
            conn.row_factory = sqlite3.Row
            return filed_ok(conn, sha256)
        finally:
            conn.close()

    async def _read(self, path: Path, pages_dir: str) -> dict:
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._pool
            try:
                outcome = await loop.run_in_executor(pool, read_for_channel, str(path),
                                                     self.source.max_pages, pages_dir)
                _observe_pages(outcome.get("extraction"))
                return outcome
            except concurrent.futures.process.BrokenProcessPool:
                # a worker died (out of memory, killed): new pool, one more try, then it is this file's fault
                log.error("fax worker died; starting new workers", extra={"fields": {"channel": self.name,
                                                                                   "attempt": attempt}})
                if self._pool is pool:      # another fax may have replaced the broken pool already
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._new_pool()
        return {"error_reason": "internal", "error": "the reader's worker process died twice on this file"}

    def _move(self, path: Path, filed: Filed, fax: FaxResult) -> None:
        status = filed.filed_status if filed.status == "already_filed" else filed.status
        if status == "error":
            target = free_name(self.source.error, path.name)
            reason = fax.error_reason or "error"
            text = (f"{path.name}: {reason}: {filed.error or fax.error or ''}\n"
                    f"fax id {filed.fax_id}, sha256 {fax.sha256}, at {fax.received_at}\n")
            Path(str(target) + ".error.txt").write_text(text, encoding="utf-8")
        else:
            target = free_name(self.source.processed, path.name)
        os.rename(path, target)
        if fax.extraction and fax.extraction.get("ocr_text") and fax.pages_dir:
            Path(fax.pages_dir).mkdir(parents=True, exist_ok=True)
            (Path(fax.pages_dir) / "ocr.txt").write_text(fax.extraction["ocr_text"], encoding="utf-8")


def _observe_pages(extraction: dict | None) -> None:
    """OCR seconds per page into /metrics (a no-op when the dashboard's metrics are off)."""
    if extraction and extraction.get("source") != "text_layer" and extraction.get("pages"):
        from engine.web.metrics import observe_ocr_page
        for _ in range(extraction["pages"]):
            observe_ocr_page(extraction.get("seconds_per_page") or 0.0)
