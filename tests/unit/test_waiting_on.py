"""A stop that overruns its budget names what it waits on (app.waiting_on)."""

from __future__ import annotations

import asyncio

from hitl_gateway.app import waiting_on


async def _close_client(closed: asyncio.Event) -> None:
    await closed.wait()


async def _stop_pipeline(closed: asyncio.Event) -> None:
    await _close_client(closed)


async def test_each_unfinished_task_is_named_with_the_calls_it_waits_in() -> None:
    closed = asyncio.Event()
    stuck = asyncio.create_task(_stop_pipeline(closed), name="pipeline-stop")
    await asyncio.sleep(0)  # it runs up to its wait
    try:
        [line] = [w for w in waiting_on() if w.startswith("pipeline-stop:")]
        assert "_stop_pipeline (test_waiting_on.py:" in line
        assert line.index("_stop_pipeline") < line.index("_close_client") < line.index("Event.wait")
        # The task asking is left out: it is the watchdog itself.
        assert not any("test_each_unfinished_task" in w for w in waiting_on())
    finally:
        closed.set()
        await stuck
    assert not [w for w in waiting_on() if w.startswith("pipeline-stop:")]
