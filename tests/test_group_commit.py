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
        committer = GroupCommitter(write, idle_gap=0.05, max_wait=0.3)
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
