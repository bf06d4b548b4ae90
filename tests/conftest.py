"""Shared fixtures: a real engine on loopback with a real store: a SQLite file in a temp folder, and
the same test again on a fresh database of a throwaway PostgreSQL cluster (tests/pg.py).

Every test touching the store runs on both backends: ids end in [sqlite] / [postgresql]. A test
touches the store when it uses `engine`, `make_engine`, `engine_process` or `store_url`, or its
module is marked `pytestmark = pytest.mark.store`. `--backends sqlite` (or ENGINE_TEST_BACKENDS)
runs one of them only.

`engine` runs the daemon's Engine in a background thread with its own event
loop (fast to start; the processor runs in a thread). `engine_process` starts
`run_engine.py run` as a separate process, for crash, signal and CLI tests.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from engine.config import EngineConfig, load_config

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_messages"


BACKENDS = ("sqlite", "postgresql")
STORE_FIXTURES = {"engine", "make_engine", "engine_process", "store_url"}


def pytest_addoption(parser):
    parser.addoption("--backends", default=os.environ.get("ENGINE_TEST_BACKENDS", ",".join(BACKENDS)),
                     help="store backends to run the store tests on: sqlite,postgresql (default both)")


def pytest_configure(config):
    config.addinivalue_line("markers", "store: the test uses the store; it runs on every backend")
    config.addinivalue_line("markers", "sqlite_only: about SQLite itself (WAL, the file); not run on postgresql")
    config.addinivalue_line("markers", "postgresql_only: several nodes on one store; SQLite is one node's store")


def pytest_collection_modifyitems(config, items):
    wanted = set(config.getoption("--backends").split(","))
    unknown = wanted - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(f"--backends: unknown {sorted(unknown)}; valid: {', '.join(BACKENDS)}")
    keep, drop = [], []
    for item in items:
        param = getattr(getattr(item, "callspec", None), "params", {}).get("backend_name", "sqlite")
        uses_store = item.get_closest_marker("store") is not None or bool(STORE_FIXTURES & set(item.fixturenames))
        uses_store = uses_store and item.get_closest_marker("sqlite_only") is None
        if param == "sqlite" and item.get_closest_marker("postgresql_only") is not None:
            drop.append(item)
            continue
        (keep if param in wanted and (param == "sqlite" or uses_store) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def pg_cluster():
    from tests.pg import PostgresCluster
    cluster = PostgresCluster.start(Path(tempfile.mkdtemp(prefix="engine-pg-")))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module", params=BACKENDS, autouse=True)
def backend_name(request) -> str:
    """Module-scoped, so a module's tests run on one backend, then on the other (module fixtures such
    as a shared running engine can ask for it)."""
    return request.param


@pytest.fixture(autouse=True)
def backend(backend_name, request, monkeypatch):
    """The store backend of this run of the test: None (SQLite, the config's file) or a fresh, empty
    PostgreSQL database's URL, also set as ENGINE_STORE_URL for the configs the test writes."""
    if backend_name == "sqlite":
        monkeypatch.delenv("ENGINE_STORE_URL", raising=False)
        yield None
        return
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.new_database()
    monkeypatch.setenv("ENGINE_STORE_URL", url)
    yield url
    cluster.drop_database(url)


@pytest.fixture
def store_url(backend, tmp_path):
    """Where a test's own store lives: tmp_path/e.db, or the PostgreSQL database of this run."""
    return backend or tmp_path / "e.db"


def open_store(location):
    """A plain connection to a test's store, either backend (engine.db.connect)."""
    from engine.db import connect
    return connect(location)


def wait_until(predicate, timeout: float = 20.0, what: str = "condition", step: float = 0.05):
    """Poll `predicate` until it returns something truthy (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, channel_extra: str = "", store_extra: str = "", isolation: str = "thread",
                 idle_timeout: float = 600, max_bytes: int = 64 * 1024 * 1024) -> Path:
    """A config in tmp_path: one MLLP channel on a free port, store and logs in tmp_path/var."""
    path = tmp_path / "config.yaml"
    path.write_text(f"""
data_dir: ./var
store:
  url: ${{ENGINE_STORE_URL:-sqlite:///./var/engine.db}}
{store_extra}
logging:
  level: ${{LOG_LEVEL:-DEBUG}}
  format: json
  file: ./var/logs/engine.log
processing:
  isolation: {isolation}
channels:
  - name: ehr_inbound
    source:
      type: mllp
      host: 127.0.0.1
      port: {free_port()}
      idle_timeout_seconds: {idle_timeout}
      max_message_bytes: {max_bytes}
{channel_extra}
""")
    return path


class EngineThread:
    """The Engine on its own event loop in a thread; `start()` returns once it listens."""

    def __init__(self, config: EngineConfig):
        from engine.daemon import Engine
        self.config = config
        self.engine = Engine(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.engine.listeners[0].port

    def start(self) -> "EngineThread":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.engine.start(), self.loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.engine.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def journal(self):
        from engine.store import Journal
        return Journal(self.config.store_location, readonly=True)

    def wait_processed(self, timeout: float = 20.0) -> None:
        """Until no message is left in status 'received'."""
        journal = self.journal()
        try:
            deadline = time.monotonic() + timeout
            while journal.counts().get("received", 0) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not journal.counts().get("received", 0), journal.counts()
        finally:
            journal.close()


@pytest.fixture
def make_engine(tmp_path):
    started: list[EngineThread] = []

    def make(config_path: Path | None = None, **kwargs) -> EngineThread:
        path = config_path or write_config(tmp_path, **kwargs)
        e = EngineThread(load_config(path)).start()
        started.append(e)
        return e

    yield make
    for e in started:
        if e.thread.is_alive():
            e.stop()


@pytest.fixture
def engine(make_engine) -> EngineThread:
    return make_engine()


class EngineProcess:
    """`run_engine.py run` as a child process (real signals, real crash)."""

    def __init__(self, config_path: Path, env: dict | None = None):
        self.config_path = config_path
        self.config = load_config(config_path)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return self.config.channels[0].source.port

    def start(self) -> "EngineProcess":
        self.stderr_path = self.config_path.parent / f"engine-{time.monotonic_ns()}.stderr"
        self.proc = subprocess.Popen([sys.executable, str(REPO / "run_engine.py"), "run", "--config",
                                      str(self.config_path)], cwd=REPO, env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=open(self.stderr_path, "wb"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.stderr_path.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("engine did not start listening")

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@pytest.fixture
def engine_process(tmp_path):
    started: list[EngineProcess] = []

    def make(config_path: Path | None = None, env: dict | None = None, **kwargs) -> EngineProcess:
        p = EngineProcess(config_path or write_config(tmp_path, **kwargs), env).start()
        started.append(p)
        return p

    yield make
    for p in started:
        if p.proc.poll() is None:
            p.kill()


def sample(name: str) -> bytes:
    """A sample message as it goes on the wire (CR between segments)."""
    return (SAMPLES / name).read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("*.hl7"))


# --- outbound test peers (tests/receivers.py): a real MLLP EHR, SMTP server and HTTP endpoint on loopback ---

@pytest.fixture
def mllp_receiver():
    """An MLLP peer answering AA (script other replies with `.script(Reply(...))`)."""
    from tests.receivers import MLLPReceiver
    with MLLPReceiver() as receiver:
        yield receiver


@pytest.fixture
def smtp_receiver():
    from tests.receivers import SMTPReceiver
    with SMTPReceiver() as receiver:
        yield receiver


@pytest.fixture
def http_receiver():
    from tests.receivers import HTTPReceiver
    with HTTPReceiver() as receiver:
        yield receiver
