"""A gateway starting on a healthy broker and streaming records shows only its own lines: no
Kafka client warning or error. The client's expected retries are DEBUG lines and a counter,
and a steady stream causes none (a transaction's offsets join it after its records are
acknowledged; joined while they were in flight, the broker refused first writes as
NOT_ENOUGH_REPLICAS many times a second)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from hitl_gateway.settings import KafkaSettings, RuntimeSettings, Settings

from .kafka_io import committed_offsets, produce, wait_until
from .processes import GatewayProcess

SECONDS = 8
PER_SECOND = 1_500


async def test_a_first_start_and_a_steady_stream_show_no_client_warnings(
    settings: Settings, tmp_path: Path
) -> None:
    runtime = RuntimeSettings(**{**settings.runtime.model_dump(), "log_level": "DEBUG"})
    # Options the gateway does not name pass through to the clients that take them.
    passed = {"client_rack": "rack-1", "metadata_max_age_ms": 60_000, "retry_backoff_ms": 50}
    kafka = KafkaSettings(**{**settings.kafka.model_dump(), "client": passed})
    gateway = GatewayProcess(
        settings.model_copy(update={"runtime": runtime, "kafka": kafka}), tmp_path, "gw"
    )
    gateway.start()
    total = 0
    try:
        # Paced in tenths of a second: many small transactions, as a live stream makes.
        for tick in range(SECONDS * 10):
            chunk = [
                (f"k{i}".encode(), orjson.dumps({"id": f"r{i}", "domain": "d", "output": i}))
                for i in range(total, total + PER_SECOND // 10)
            ]
            await produce(settings.topics.outputs, chunk)
            total += len(chunk)
            if tick == 0:
                await asyncio.sleep(1.0)  # the first commit starts the producers
            await asyncio.sleep(0.1)

        async def all_committed() -> bool:
            return sum((await committed_offsets(settings)).values()) == total

        await wait_until(all_committed, timeout_s=60, interval_s=0.2)
        gateway.terminate()
        assert gateway.wait(30) == 0
    finally:
        gateway.kill()
    events = [orjson.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    client = [e for e in events if str(e.get("logger", "")).startswith("aiokafka")]
    loud = [e for e in client if e["level"] in ("warning", "error", "critical")]
    assert not loud, f"client warnings on a healthy broker: {loud[:3]}"
    retried = [e for e in client if "NotEnoughReplicas" in str(e["event"])]
    assert not retried, f"{len(retried)} produce retries, first: {retried[0]['event']}"
    assert any(e["event"] == "gateway_stopped" for e in events)
    assert "HITL_KAFKA__CLIENT__CLIENT_RACK" in gateway.env
