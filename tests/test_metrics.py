"""The engine's ACK metrics: counted on the event loop, flushed to prometheus_client's multiprocess files."""
from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from engine.web.metrics import ACK_BUCKETS, ENV, FLUSH_SECONDS, EngineMetrics, frames_in, metrics_dir


def samples(data_dir) -> dict[tuple, float]:
    out = {}
    for family in MultiProcessCollector(CollectorRegistry(), path=str(metrics_dir(data_dir))).collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_acks_counted_on_the_loop_reach_the_files_like_observe_would(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "")     # EngineMetrics.start points it at tmp_path; put back afterwards
    latencies = [0.0003, 0.0005, 0.0007, 0.004, 0.004, 0.03, 7.0]   # 0.0005: on a bound (le is inclusive)

    async def main():
        metrics = EngineMetrics.start(tmp_path)
        for seconds in latencies:
            metrics.on_ack("ehr_inbound", "AA", seconds)
        metrics.on_ack("ehr_inbound", "AR", 0.001)
        assert frames_in(tmp_path) == {}                  # counted, not yet written
        await asyncio.sleep(FLUSH_SECONDS + 0.2)          # the loop's timer flushes
        assert frames_in(tmp_path) == {"ehr_inbound": {"AA": 7, "AR": 1}}
        metrics.on_ack("ehr_inbound", "AA", 0.002)
        metrics.stop()                                    # at shutdown: flushed at once
        return metrics

    asyncio.run(main())
    got = samples(tmp_path)
    channel = (("channel", "ehr_inbound"),)
    assert got[("engine_ack_latency_seconds_count", channel)] == 9
    assert abs(got[("engine_ack_latency_seconds_sum", channel)] - (sum(latencies) + 0.003)) < 1e-9
    everything = latencies + [0.001, 0.002]
    for bound in ACK_BUCKETS:       # cumulative buckets, as Histogram.observe would have made them
        le = (("channel", "ehr_inbound"), ("le", str(bound)))
        assert got[("engine_ack_latency_seconds_bucket", le)] == sum(1 for s in everything if s <= bound), bound
    assert got[("engine_ack_latency_seconds_bucket", (("channel", "ehr_inbound"), ("le", "+Inf")))] == 9
    assert got[("engine_errors_total", (("error_class", "ack_AR"),))] == 1
