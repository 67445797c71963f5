"""SIGTERM mid-stream: the gateway exits 0 within its budget, and the committed offsets
account for exactly what was delivered."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson

from hitl_gateway.settings import Settings

from .kafka_io import committed_offsets, produce, read_all, wait_until
from .processes import GatewayProcess

N = 60_000


async def test_sigterm_drains_commits_and_exits_zero(settings: Settings, tmp_path: Path) -> None:
    await produce(
        settings.topics.outputs,
        [
            (f"k{i}".encode(), orjson.dumps({"id": f"r{i}", "domain": "d", "output": "y" * 200}))
            for i in range(N)
        ],
    )
    gateway = GatewayProcess(settings, tmp_path, "gw")
    gateway.start()

    async def some_committed() -> bool:
        return bool(await committed_offsets(settings))

    try:
        await wait_until(some_committed, timeout_s=60, interval_s=0.05)
        gateway.terminate()
        stopping = time.monotonic()
        code = gateway.wait(settings.runtime.shutdown_timeout_s + 10)
        took = time.monotonic() - stopping
    finally:
        gateway.kill()
    assert code == 0, gateway.log()[-3000:]
    assert took < settings.runtime.shutdown_timeout_s
    assert '"event": "signal_received"' in gateway.log()

    committed = await committed_offsets(settings)
    delivered = await read_all(settings.topics.delivered)
    assert 0 < len(delivered) < N, "the stop should land mid-stream"
    per_partition = Counter(int(dict(r.headers)["hitl.source.partition"]) for r in delivered)
    # Input offsets are contiguous (no transactions upstream): offset == records consumed.
    assert dict(per_partition) == {p: o for p, o in committed.items() if o > 0}
