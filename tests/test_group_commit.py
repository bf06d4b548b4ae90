"""The group-commit writer: shared transactions, frames before background work, no starvation."""
from __future__ import annotations

import asyncio
import time

from engine.group_commit import GroupCommitter


def run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)


def test_items_submitted_together_share_a_transaction_and_resolve_in_order():
    async def main():
        batches = []
        committer = GroupCommitter(lambda items: batches.append(list(items)) or [f"ok-{i}" for i in items])
        committer.start(asyncio.get_running_loop())
        futures = [committer.submit(i) for i in range(100)]
        results = await asyncio.gather(*futures)
        await committer.close()
        return batches, results
    batches, results = run(main())
    assert results == [f"ok-{i}" for i in range(100)]
    assert sum(len(b) for b in batches) == 100 and len(batches) < 100


def test_background_work_waits_for_a_gap_in_urgent_traffic_but_is_never_starved():
    order: list[str] = []

    def write(items):
        order.extend(items)
        return items

    async def main():
        # busy_share 0: only the gap rule (frames here cost the writer nothing, so it is never busy)
        committer = GroupCommitter(write, idle_gap=0.05, max_wait=0.3, busy_share=0.0)
        committer.start(asyncio.get_running_loop())
        urgent = [committer.submit("frame-0")]
        background = committer.submit("bg-1", background=True)
        # Urgent frames keep arriving every 10 ms for 0.6 s: background work must still get in
        # (max_wait), but not while frames arrive closer together than idle_gap.
        started = time.monotonic()
        while time.monotonic() - started < 0.6:
            urgent.append(committer.submit(f"frame-{len(urgent)}"))
            await asyncio.sleep(0.01)
        await asyncio.gather(*urgent)
        assert background.done()
        late = committer.submit("bg-2", background=True)
        await late
        await committer.close()
    run(main())
    assert order.index("bg-1") > order.index("frame-3")   # it waited while frames kept coming ...
    assert order.index("bg-1") < order.index("frame-45")  # ... but not for the load to end (max_wait)
    assert order[-1] == "bg-2"


def test_with_a_background_writer_frames_never_wait_behind_background_work():
    """PostgreSQL's mode: background work (a referral update waiting for the cluster-wide write lock) runs
    on its own thread and connection; frames keep being committed and answered meanwhile."""
    import threading
    held = threading.Event()           # the background writer is stuck (another node holds the lock)
    frames: list[str] = []

    def write_frames(items):
        frames.extend(items)
        return items

    def write_background(items):
        held.wait(10)
        return [f"applied-{i}" for i in items]

    async def main():
        committer = GroupCommitter(write_frames, write_background=write_background)
        committer.start(asyncio.get_running_loop())
        background = [committer.submit(f"bg-{i}", background=True) for i in range(3)]
        acked = await asyncio.wait_for(asyncio.gather(*[committer.submit(f"frame-{i}") for i in range(50)]), 5)
        assert not any(b.done() for b in background)          # still waiting for the lock ...
        held.set()                                               # ... which comes free
        applied = await asyncio.wait_for(asyncio.gather(*background), 5)
        await committer.close()
        return acked, applied
    acked, applied = run(main())
    assert acked == [f"frame-{i}" for i in range(50)] and frames == acked
    assert applied == ["applied-bg-0", "applied-bg-1", "applied-bg-2"]


def test_processed_messages_go_in_small_chunks_while_frames_arrive_and_big_ones_when_quiet():
    """A frame that arrives while the writer applies referral updates waits for that transaction:
    2 updates while frames keep coming, 8 when the engine has been quiet for a while."""
    from engine.daemon import Engine
    sizes: list[tuple[str, int]] = []

    def write(items):
        for item in items:
            sizes.append(("frame", 1) if item == "frame" else ("changes", len(item)))
        return [None] * len(items)

    async def main():
        committer = GroupCommitter(write, idle_gap=0.0, max_wait=0.0)
        committer.start(asyncio.get_running_loop())
        engine = object.__new__(Engine)
        engine.committer, engine.after_apply, engine.background_journal = committer, None, None
        await asyncio.sleep(Engine.QUIET_SECONDS * 2)
        assert committer.quiet_for() > Engine.QUIET_SECONDS
        await engine._apply(list(range(20)))               # quiet: 8 + 8 + 4
        await committer.submit("frame")
        engine.QUIET_SECONDS = 60.0                        # "just now", however slow this machine is today
        assert committer.quiet_for() < engine.QUIET_SECONDS
        await engine._apply(list(range(5)))                # a frame just came: 2 + 2 + 1
        await committer.close()
    run(main())
    assert sizes == [("changes", 8), ("changes", 8), ("changes", 4), ("frame", 1),
                     ("changes", 2), ("changes", 2), ("changes", 1)]


def test_background_work_runs_between_frames_while_they_leave_the_writer_mostly_idle():
    """A steady trickle of frames that keeps the writer busy less than busy_share: background work runs
    whenever no frame is waiting (processing keeps up); frames that keep it busier push it to the gaps."""
    def run_with(frame_seconds: float) -> list[str]:
        order: list[str] = []

        def write(items):
            if items[0].startswith("frame"):
                time.sleep(frame_seconds)
            order.extend(items)
            return items

        async def main():
            committer = GroupCommitter(write, idle_gap=10.0, max_wait=30.0, busy_share=0.3)
            committer.start(asyncio.get_running_loop())
            frames, background = [], []
            for i in range(40):          # a frame every 20 ms for 0.8 s; background work from 0.3 s on
                frames.append(committer.submit(f"frame-{i}"))
                if 15 <= i < 25:
                    background.append(committer.submit(f"bg-{i - 15}", background=True))
                await asyncio.sleep(0.02)
            await asyncio.gather(*frames)
            ran = sum(1 for b in background if b.done())
            await committer.close()
            return ran
        ran = run(main())
        return order, ran

    order, ran = run_with(0.001)        # ~5 % busy: all ten background items done while frames still came
    assert ran == 10 and order.index("bg-9") < order.index("frame-39")
    order, ran = run_with(0.03)         # frames come faster than they commit: background waits (for gaps
    #                                      of 10 s or max_wait 30 s here, i.e. until close)
    assert ran == 0 and order.index("bg-0") > order.index("frame-39")


def test_background_work_gets_in_even_when_frames_never_stop_queueing():
    """A writer saturated with frames (one always waiting): a background item still goes in after max_wait."""
    order: list[str] = []

    def write(items):
        time.sleep(0.005)
        order.extend(items)
        return items

    async def main():
        committer = GroupCommitter(write, max_batch=1, idle_gap=10.0, max_wait=0.1, busy_share=0.0)
        committer.start(asyncio.get_running_loop())
        frames = [committer.submit(f"frame-{i}") for i in range(120)]    # 0.6 s of queued frames
        background = committer.submit("bg", background=True)
        await background
        assert not all(f.done() for f in frames)
        await asyncio.gather(*frames)
        await committer.close()
    run(main())
    assert 5 <= order.index("bg") < 110
