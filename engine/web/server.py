"""The web process: uvicorn serving engine.web.app, started and stopped by the daemon.

Why a process: the engine's event loop carries MLLP ACKs (p99 target ~10 ms); page rendering, KPI
queries and argon2 checks must not share its GIL. The child reads the store with its own
connections. It stops on SIGTERM (uvicorn's graceful shutdown) and on its own if the engine that
started it disappears (a watchdog compares the parent pid), so a killed engine leaves no server behind.
Access logs are off: URLs carry search terms (patient ids, names), which must not reach the logs.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time

from engine.config import EngineConfig

log = logging.getLogger("engine.web")


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def serve(config: EngineConfig, parent: int | None = None) -> None:
    """Child-process entry: serve until SIGTERM. Logs go to `<logs>/web.log` beside the engine's."""
    from engine import logs
    web_log = config.logging.file.with_name("web.log") if config.logging.file else None
    logs.configure(config.logging.level, config.logging.format, web_log)
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()
    import uvicorn
    from engine.web.app import create_app
    app = create_app(config)
    log.info("dashboard listening", extra={"fields": {"host": config.web.host, "port": config.web.port}})
    uvicorn.run(app, host=config.web.host, port=config.web.port, log_config=None, access_log=False,
                server_header=False, timeout_graceful_shutdown=5)


class WebServer:
    """The daemon's handle on the web child process."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.process: multiprocessing.process.BaseProcess | None = None

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.process = ctx.Process(target=serve, args=(self.config, os.getpid()), name="engine-web", daemon=True)
        self.process.start()
        log.info("dashboard process started", extra={"fields": {"pid": self.process.pid,
                                                                "url": f"http://{self.config.web.host}:"
                                                                       f"{self.config.web.port}/"}})

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None or not process.is_alive():
            return
        process.terminate()
        process.join(timeout)
        if process.is_alive():
            log.warning("dashboard process did not stop in time; killing it")
            process.kill()
            process.join(5)
        self.process = None
