"""The dashboard's side inside the engine process: metrics files, the channel switch, the web child.

`WebSide` is all the daemon holds: it gives the listeners their ACK hook (metrics), starts a listener
only if its channel is not paused, polls `channel_state` every `POLL_SECONDS` on the event loop (one
indexed read of a table with one row per channel, tens of µs) to stop or start listeners, and starts
and stops the web process. Nothing here touches the journal's writer connection.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3

from engine.config import EngineConfig
from engine.db import store_errors
from engine.store import StoreError, connect
from engine.web.channel_state import paused

log = logging.getLogger("engine.web")
POLL_SECONDS = 1.0
RESTART_SECONDS = 30.0


class WebSide:
    def __init__(self, config: EngineConfig):
        self.config = config
        self.metrics = None
        if config.web.enabled:
            from engine.web.metrics import EngineMetrics
            self.metrics = EngineMetrics.start(config.data_dir)
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = connect(config.store_location, readonly=True)
        except StoreError:
            pass
        self.paused: set[str] = paused(self._conn) if self._conn is not None else set()
        self.listeners: list = []
        self._task: asyncio.Task | None = None
        self.server = None

    def listener_hooks(self) -> dict:
        return {"on_ack": self.metrics.on_ack} if self.metrics is not None else {}

    async def start_listener(self, listener) -> None:
        if listener.channel.name in self.paused:
            log.info("channel paused: not listening", extra={"fields": {"channel": listener.channel.name}})
            return
        await listener.start()

    def start(self, listeners: list) -> None:
        self.listeners = listeners
        if self.config.web.enabled:
            from engine.web.server import WebServer
            self.server = WebServer(self.config)
            self.server.start()
        if self._conn is not None:
            self._task = asyncio.create_task(self._watch(), name="channel-switch")

    async def _watch(self) -> None:
        restarted_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(POLL_SECONDS)
            process = self.server.process if self.server is not None else None
            if process is not None and not process.is_alive() and loop.time() - restarted_at > RESTART_SECONDS:
                # A crashed dashboard comes back (at most every RESTART_SECONDS); the engine never waits for it.
                log.error("dashboard process exited; starting it again", extra={"fields": {
                    "exitcode": process.exitcode}})
                restarted_at = loop.time()
                self.server.start()
            try:
                wanted = paused(self._conn)
            except store_errors():
                log.warning("cannot read channel state; trying again", exc_info=True)
                continue
            for listener in self.listeners:
                name = listener.channel.name
                if name in wanted and name not in self.paused:
                    log.info("channel paused", extra={"fields": {"channel": name}})
                    self.paused.add(name)
                    await listener.stop()
                elif name not in wanted and name in self.paused:
                    try:
                        await listener.start()
                    except OSError as exc:    # the port is taken: stay paused, say so, try again next poll
                        log.error("channel cannot resume", extra={"fields": {"channel": name, "error": str(exc)}})
                        continue
                    log.info("channel resumed", extra={"fields": {"channel": name}})
                    self.paused.discard(name)

    async def stop(self) -> None:
        """Stop switching first (so nothing restarts a listener the daemon is stopping), then the web."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self.server is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.server.stop)
        if self._conn is not None:
            self._conn.close()

    def stop_metrics(self) -> None:
        """After the listeners' last ACK: what they counted reaches the metric files."""
        if self.metrics is not None:
            self.metrics.stop()
