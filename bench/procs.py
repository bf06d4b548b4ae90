"""Launching the servers under test: free ports, start / readiness / SIGTERM stop.

Nothing is measured here (except ``startup_s``, the time to readiness). Each
server in ``SERVERS`` runs as a subprocess with cwd = repository root, its
stdout+stderr going to ``<data_dir>/server.log``:

* ``engine``: ``run_engine.py run --config config.yaml`` with MLLP_PORT,
  ENGINE_DATA_DIR and WEB_PORT in its environment; ready when the MLLP port
  accepts a TCP connection.
* ``python-hl7``, ``sqlite``, ``canned``: the baseline scripts in bench/;
  ready when they print READY.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from bench.message import REPO_ROOT

HOST = "127.0.0.1"


def free_port() -> int:
    """A currently unused loopback TCP port (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_accepts(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready: str = "line"  # "line": READY on stdout; "tcp": port accepts connections
    # After the warm-up, before anything is measured: wait until the server is in its steady state
    # (the default: it is as soon as it answers). Raises RuntimeError when it never gets there.
    settle: Callable[[], None] = lambda: None


def _engine(port: int, data_dir: Path) -> Launch:
    config = os.environ.get("BENCH_ENGINE_CONFIG", "config.yaml")  # to compare config variants
    env = {"MLLP_PORT": str(port), "ENGINE_DATA_DIR": str(data_dir), "WEB_PORT": str(free_port())}
    from engine.config import load_config
    loaded = load_config(REPO_ROOT / config, {**os.environ, **env})
    store = loaded.store_location
    web_port = loaded.web.port if loaded.web.enabled else None
    launch = Launch([sys.executable, "run_engine.py", "run", "--config", config], env, ready="tcp")
    if isinstance(store, Path):     # SQLite (a PostgreSQL store is not looked into here)
        launch.settle = lambda: _engine_settled(store, web_port)
    return launch


def _engine_settled(store: Path, web_port: int | None, timeout: float = 60.0) -> None:
    """The engine accepts MLLP within a second of starting, while its dashboard process and its
    processing worker are still importing and loading (2-3 s of CPU on these 2 cores) and the warm-up's
    messages are still being processed. A daemon that runs for months is measured in its steady state:
    the dashboard answering (when the config enables it) and nothing left in status 'received'."""
    import sqlite3
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
            try:
                waiting = db.execute("SELECT count(*) FROM messages WHERE status='received'").fetchone()[0]
            finally:
                db.close()
        except sqlite3.Error:
            waiting = -1
        if waiting == 0 and (web_port is None or port_accepts(web_port)):
            time.sleep(1.0)     # the last referral updates' outbound work (queued, then tried once)
            return
        time.sleep(0.2)
    raise RuntimeError(f"engine not settled within {timeout}s (dashboard down or messages still waiting)")


def _baseline(module: str, *extra: str) -> Callable[[int, Path], Launch]:
    def launch(port: int, data_dir: Path) -> Launch:
        args = [a.format(data_dir=data_dir) for a in extra]
        return Launch([sys.executable, "-m", f"bench.{module}", "--port", str(port), *args])
    return launch


SERVERS: dict[str, Callable[[int, Path], Launch]] = {
    "engine": _engine,
    "python-hl7": _baseline("baseline_python_hl7"),
    "sqlite": _baseline("baseline_sqlite", "--db", "{data_dir}/messages.db"),
    "canned": _baseline("baseline_canned"),
}


@dataclass
class Server:
    name: str
    port: int
    data_dir: Path
    proc: subprocess.Popen
    startup_s: float = 0.0
    exit_code: int | None = None  # set by stop(); -9 if it had to be killed
    settle: Callable[[], None] = lambda: None   # Launch.settle

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> Path:
        return self.data_dir / "server.log"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait up to timeout, then SIGKILL. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.exit_code = self.proc.returncode
        return self.exit_code


def start(name: str, data_dir: Path, port: int | None = None, ready_timeout: float = 30.0) -> Server:
    """Start server `name` in data_dir and wait until it is ready (or raise RuntimeError)."""
    port = port or free_port()
    spec = SERVERS[name](port, data_dir)
    log = open(data_dir / "server.log", "wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(spec.argv, cwd=REPO_ROOT, env={**os.environ, **spec.env},
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    srv = Server(name, port, data_dir, proc, settle=spec.settle)
    deadline = t0 + ready_timeout
    while time.perf_counter() < deadline:  # bounded by ready_timeout
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before ready; server log tail:\n{srv.log_tail()}")
        if spec.ready == "tcp":
            if port_accepts(port):
                break
        elif b"READY" in srv.log.read_bytes():
            break
        time.sleep(0.05)
    else:
        srv.stop()
        raise RuntimeError(f"{name} not ready within {ready_timeout}s; server log tail:\n{srv.log_tail()}")
    srv.startup_s = time.perf_counter() - t0
    return srv


@contextmanager
def running(name: str, data_dir: Path, ready_timeout: float = 30.0) -> Iterator[Server]:
    """Context manager: a started server that is SIGTERM-stopped on exit."""
    srv = start(name, data_dir, ready_timeout=ready_timeout)
    try:
        yield srv
    finally:
        srv.stop()
