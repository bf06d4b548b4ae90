"""Prometheus metrics across processes (prometheus_client multiprocess mode).

The engine process records into per-process mmap files under `<data_dir>/prometheus` (cleared at each
engine start, before any metric exists): inbound messages per channel and ACK code, the ACK latency
histogram (from the MLLP listener's `on_ack` hook: counted in plain dicts, well under a µs, and moved into
the files every FLUSH_SECONDS: a locked mmap write per value per frame cost ~8 % of the event loop's time
at 2,000 msg/s), errors by class. OCR workers (spawned by the engine, so they inherit the directory)
record seconds per page with `observe_ocr_page`. The web process's `/metrics` merges those files and adds gauges read from
the store at scrape time (outbound queue depth, messages waiting/in error, open referrals, paused
channels); every such read is bounded by an index, never a count over the whole journal.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from bisect import bisect_left
from pathlib import Path

from engine.db import columns

ENV = "PROMETHEUS_MULTIPROC_DIR"
ACK_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
OCR_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)
BOUND = 100_000      # the gauges count at most this many rows (shown as ">= BOUND")
FLUSH_SECONDS = 0.25  # ACK counts and latencies reach the metric files this long after the ACK, at most


def metrics_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "prometheus"


class EngineMetrics:
    """What the engine process records. `start` must run before the listeners exist."""

    def __init__(self, directory: Path):
        from prometheus_client import Counter, Histogram, values
        # Multiprocess mode is chosen per value class; a fresh one binds this engine's directory even
        # when an earlier engine ran in the same process (tests).
        values.ValueClass = values.MultiProcessValue()
        self.directory = directory
        self.messages_in = Counter("engine_messages_in", "Inbound frames answered, by channel and ACK code",
                                   ["channel", "ack"], registry=None)
        self.ack_latency = Histogram("engine_ack_latency_seconds", "Frame read to ACK written, by channel",
                                     ["channel"], buckets=ACK_BUCKETS, registry=None)
        self.errors = Counter("engine_errors", "Errors by class", ["error_class"], registry=None)
        self._children: dict[tuple[str, str], tuple] = {}
        # (channel, ack code) -> [frames, seconds, frames per latency bucket (the last: +Inf)], not yet flushed
        self._pending: dict[tuple[str, str], list] = {}
        self._flush_timer: asyncio.TimerHandle | None = None

    @classmethod
    def start(cls, data_dir: Path) -> "EngineMetrics":
        directory = metrics_dir(data_dir)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
        os.environ[ENV] = str(directory)
        return cls(directory)

    def on_ack(self, channel: str, code: str, seconds: float) -> None:
        """The listener's hook, on the event loop, once per frame: plain counting; `flush` comes later."""
        pending = self._pending.get((channel, code))
        if pending is None:
            pending = self._pending[(channel, code)] = [0, 0.0, [0] * (len(ACK_BUCKETS) + 1)]
        pending[0] += 1
        pending[1] += seconds
        pending[2][bisect_left(ACK_BUCKETS, seconds)] += 1     # prometheus: the first bucket with seconds <= le
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Add what `on_ack` counted to the shared metric files (a few mmap writes per channel and code)."""
        self._flush_timer = None
        pending, self._pending = self._pending, {}
        for (channel, code), (frames, seconds, buckets) in pending.items():
            children = self._children.get((channel, code))
            if children is None:
                children = self._children[(channel, code)] = (self.messages_in.labels(channel, code),
                                                              self.ack_latency.labels(channel))
            counter, histogram = children
            counter.inc(frames)
            # Histogram.observe, many at once: its sum and bucket values (prometheus_client 0.26, pinned)
            histogram._sum.inc(seconds)
            for value, n in zip(histogram._buckets, buckets):
                if n:
                    value.inc(n)
            if code not in ("AA", "CA"):
                self.errors.labels(f"ack_{code}").inc(frames)

    def stop(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self.flush()

    def error(self, error_class: str) -> None:
        self.errors.labels(error_class).inc()


_ocr_histogram = None


def observe_ocr_page(seconds: float) -> None:
    """Record one OCR'd page; does nothing in a process started without the engine's metrics directory."""
    global _ocr_histogram
    if not os.environ.get(ENV):
        return
    if _ocr_histogram is None:
        from prometheus_client import Histogram, values
        if not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.MultiProcessValue()
        _ocr_histogram = Histogram("engine_ocr_page_seconds", "OCR seconds per fax page", buckets=OCR_BUCKETS,
                                   registry=None)
    _ocr_histogram.observe(seconds)


def _table_exists(conn, name: str) -> bool:
    return bool(columns(conn, name))


def bounded_count(conn: sqlite3.Connection, where: str, args: tuple = ()) -> int:
    """count(*) over the journal's matching rows, stopping at BOUND (the (status, id) index serves it)."""
    return conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM messages WHERE {where} LIMIT {BOUND}) AS bounded",
                        args).fetchone()[0]


class StoreCollector:
    """Gauges read from the store at scrape time."""

    def __init__(self, connect, channels: list[str]):
        self.connect = connect        # () -> sqlite3.Connection (the web's thread-local reader)
        self.channels = channels

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        conn = self.connect()
        waiting = GaugeMetricFamily("engine_messages_waiting", "Messages acknowledged, not yet processed "
                                    f"(counted up to {BOUND})")
        waiting.add_metric([], bounded_count(conn, "status='received'"))
        yield waiting
        errors = GaugeMetricFamily("engine_messages_in_error", f"Messages in status error (counted up to {BOUND})")
        errors.add_metric([], bounded_count(conn, "status='error'"))
        yield errors
        from engine.web import channel_state
        paused = channel_state.paused(conn)
        state = GaugeMetricFamily("engine_channel_paused", "1 when the channel is paused", labels=["channel"])
        for name in self.channels:
            state.add_metric([name], 1.0 if name in paused else 0.0)
        yield state
        referrals = GaugeMetricFamily("engine_referrals", "Referrals by status", labels=["status"])
        for status, n in conn.execute("SELECT status, count(*) FROM referrals GROUP BY status"):
            referrals.add_metric([status], n)
        yield referrals
        if _table_exists(conn, "outbound"):
            from engine import outbound
            depth = GaugeMetricFamily("engine_outbound_queue_depth", "Outbound rows owed or dead, by destination "
                                      "and status", labels=["destination", "status"])
            for d in outbound.queue_depths(conn):
                for status in ("queued", "sending", "error", "dead"):
                    depth.add_metric([d["destination"], status], d.get(status, 0))
            yield depth
            sent = GaugeMetricFamily("engine_messages_out", "Outbound messages confirmed sent, by destination",
                                     labels=["destination"])
            for destination, n in conn.execute("SELECT destination, count(*) FROM outbound WHERE status='sent' "
                                               "GROUP BY destination"):
                sent.add_metric([destination], n)
            yield sent
        if _table_exists(conn, "faxes"):
            faxes = GaugeMetricFamily("engine_faxes", "Faxes by status", labels=["status"])
            for status, n in conn.execute("SELECT status, count(*) FROM faxes GROUP BY status"):
                faxes.add_metric([str(status)], n)
            yield faxes


def exposition(data_dir: Path, connect, channels: list[str]) -> tuple[bytes, str]:
    """The text format for one scrape: the engine's files merged, plus the store's gauges."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    registry = CollectorRegistry()
    directory = metrics_dir(data_dir)
    if directory.is_dir():
        MultiProcessCollector(registry, path=str(directory))
    registry.register(StoreCollector(connect, channels))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def frames_in(data_dir: Path) -> dict[str, dict[str, int]]:
    """channel -> ACK code -> frames answered since the engine started (from the engine's metric files)."""
    directory = metrics_dir(data_dir)
    out: dict[str, dict[str, int]] = {}
    if not directory.is_dir():
        return out
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector
    collector = MultiProcessCollector(CollectorRegistry(), path=str(directory))
    for family in collector.collect():
        if family.name != "engine_messages_in":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                codes = out.setdefault(sample.labels["channel"], {})
                codes[sample.labels["ack"]] = codes.get(sample.labels["ack"], 0) + int(sample.value)
    return out


def per_channel_counts(conn: sqlite3.Connection, status: str, since_id: int = 0) -> dict[str, int]:
    """channel -> messages in `status` with id >= since_id, counting at most BOUND rows over all channels
    (the (status, id) index gives the rows; each costs one row read for its channel)."""
    return dict(conn.execute(f"SELECT channel, count(*) FROM (SELECT channel FROM messages WHERE status=? AND id>=? "
                             f"LIMIT {BOUND}) AS bounded GROUP BY channel", (status, since_id)).fetchall())
