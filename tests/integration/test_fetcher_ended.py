"""A consumer whose background fetch task ended is made anew (the real broker and Redis).

aiokafka ends its fetch task for good when a fetch step raises an error it does not expect
(the fault matrix's S7 met it: under uvloop, a fetch request written to a connection that a
reset has just closed raises ``RuntimeError``). The consumer then returns nothing from
``getmany`` while its heartbeats keep the member, and so its partitions, in the group. The
gateway must notice, leave the group with that consumer and join with a new one. The test
breaks the fetch step of the running gateway's consumer the same way; on the code before
the fix the records produced afterwards were never delivered.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from hitl_gateway.app import Gateway
from hitl_gateway.settings import Settings

from .kafka_io import produce, read_all, wait_until

N = 300


def _records(start: int) -> list[tuple[bytes, bytes]]:
    def body(n: int) -> bytes:
        return orjson.dumps(
            {"id": f"f-{n}", "domain": "support-chat", "confidence": 0.99, "output": {"n": n}}
        )

    return [(f"k{n % 7}".encode(), body(n)) for n in range(start, start + N)]


async def _delivered(settings: Settings) -> int:
    return len(await read_all(settings.topics.delivered))


async def test_a_consumer_whose_fetcher_ended_is_made_anew(settings: Settings) -> None:
    await produce(settings.topics.outputs, _records(0))
    gateway = Gateway(settings, CollectorRegistry())
    task = asyncio.create_task(gateway.run())
    try:
        await wait_until(lambda: _has(settings, N), timeout_s=60)
        source: Any = gateway.pipeline._source
        broken = source.consumer
        fetcher = broken._fetcher

        async def reset_connection(*_: Any) -> bool:
            raise RuntimeError(
                "unable to perform operation on <TCPTransport closed=True reading=False>; "
                "the handler is closed"
            )

        fetcher._proc_fetch_request = reset_connection  # the next fetch step raises
        await wait_until(lambda: _ended(fetcher), timeout_s=30, interval_s=0.05)
        await produce(settings.topics.outputs, _records(N))
        await wait_until(lambda: _has(settings, 2 * N), timeout_s=60)
        assert source.consumer is not broken, "the broken consumer is still in use"
        assert not task.done()
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, 60)  # stops cleanly: no error from the old consumer
    delivered = await read_all(settings.topics.delivered)
    assert sorted(orjson.loads(r.value)["id"] for r in delivered) == sorted(
        f"f-{n}" for n in range(2 * N)
    ), "a record was lost or delivered twice"


async def _has(settings: Settings, count: int) -> bool:
    return await _delivered(settings) >= count


async def _ended(fetcher: Any) -> bool:
    return bool(fetcher.error_future.done())
