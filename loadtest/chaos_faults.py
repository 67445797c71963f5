"""The fault matrix's scenarios: each repetition injects one fault into the running rig and
returns when it is over, noting when the fault began and the moment recovery is timed from
(the kill, the pause, the broker's or Redis's return, the network's heal)."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from chaos_check import redis_pending

if TYPE_CHECKING:
    from chaos_rig import Cluster, GatewayProcess, Ports, RedisServer, Toxiproxy
    from hitl_gateway.settings import Settings


@dataclass
class Rig:
    ports: Ports
    cluster: Cluster
    redis: RedisServer
    toxi: Toxiproxy
    settings: Settings
    gateways: list[GatewayProcess]
    spawn: Callable[[], GatewayProcess]
    rng: random.Random
    short: bool
    notes: list[str] = field(default_factory=list)

    @property
    def session_s(self) -> float:
        return self.settings.kafka.session_timeout_ms / 1_000

    def live(self) -> list[GatewayProcess]:
        return [g for g in self.gateways if g.running]


@dataclass
class Fault:
    began: float  # wall clock
    resume_from: float  # recovery is timed from here
    detail: dict[str, object] = field(default_factory=dict)


async def s1_kill_gateway(rig: Rig) -> Fault:
    await asyncio.sleep(rig.rng.uniform(0, 2))
    victim = rig.rng.choice(rig.live())
    at = time.time()
    await asyncio.to_thread(victim.kill)
    await asyncio.sleep(rig.session_s + 6)
    victim.start()
    return Fault(at, at, {"gateway": victim.index})


async def s2_rolling_restart(rig: Rig) -> Fault:
    at = time.time()
    for gateway in list(rig.gateways):
        code = await asyncio.to_thread(gateway.stop, 60)
        gateway.start()
        rig.notes.append(f"gateway {gateway.index} exit {code}")
        await asyncio.sleep(5)
    return Fault(at, at)


async def s3_zombie(rig: Rig) -> Fault:
    victim = rig.rng.choice(rig.live())
    at = time.time()
    victim.signal(signal.SIGSTOP)
    await asyncio.sleep(rig.session_s + 5)
    victim.signal(signal.SIGCONT)
    await asyncio.sleep(5)
    return Fault(at, at, {"gateway": victim.index, "paused_s": rig.session_s + 5})


async def s4_kill_broker(rig: Rig) -> Fault:
    broker = rig.rng.choice((1, 2, 3))
    down_s = 10 if rig.short else 30
    at = time.time()
    await asyncio.to_thread(rig.cluster.kill_broker, broker)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(rig.cluster.start_broker, broker)
    return Fault(at, time.time(), {"broker": broker, "down_s": down_s})


async def s4_rolling_brokers(rig: Rig) -> Fault:
    at = time.time()
    back = at
    for broker in (1, 2, 3):
        await asyncio.to_thread(rig.cluster.stop_broker, broker)
        await asyncio.to_thread(rig.cluster.start_broker, broker)
        back = time.time()
        await asyncio.sleep(5)
    return Fault(at, back, {"rolling": True})


async def s5_kill_redis(rig: Rig) -> Fault:
    url = f"redis://127.0.0.1:{rig.ports.redis}/0"
    before = await redis_pending(url, rig.settings.redis.key_prefix)
    at = time.time()
    await asyncio.to_thread(rig.redis.kill)
    await asyncio.sleep(5)
    await asyncio.to_thread(rig.redis.start)
    back = time.time()
    after = await redis_pending(url, rig.settings.redis.key_prefix)
    # Holds may close between the two reads (decisions keep coming, and those sent while
    # Redis was down are applied as soon as it is back): what matters is that none the index
    # had vanished at restart while still open, which appendfsync=always promises. The
    # verifier tells them apart afterwards by when each one's close was written (``closed``).
    return Fault(at, back, {"index_before": len(before), "index_after": len(after),
                            "index_vanished": sorted(before - after),
                            "after_read_ms": int(time.time() * 1000)})  # fmt: skip


def closed(fault: dict[str, Any], closed_at_ms: dict[str, int]) -> dict[str, Any]:
    """An S5 fault's vanished holds split by the holds topic: closed (their tombstone was
    written by the time the index was read after the restart) and open (lost by Redis)."""
    vanished = fault["index_vanished"]
    by = fault["after_read_ms"]
    shut = {i for i in vanished if closed_at_ms.get(i, by + 1) <= by}
    return {"index_vanished_closed": len(shut),
            "index_vanished_open": [i for i in vanished if i not in shut]}  # fmt: skip


async def s6_flush_redis(rig: Rig) -> Fault:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{rig.ports.redis}/0")
    try:
        at = time.time()
        await client.flushall()
    finally:
        await client.aclose()
    await asyncio.sleep(10)
    return Fault(at, at)


def _network(target: str, kind: str) -> Callable[[Rig], Awaitable[Fault]]:
    toxics: dict[str, tuple[str, dict[str, int]] | None] = {
        "latency": ("latency", {"latency": 3_000, "jitter": 500}),
        "timeout": ("timeout", {"timeout": 0}),  # data stops flowing, connections stay open
        "reset": ("reset_peer", {"timeout": 500}),  # connections reset after 0.5 s
        "partition": None,  # the proxy refuses connections and drops the open ones
    }

    async def fault(rig: Rig) -> Fault:
        duration = 8 if rig.short else 12
        at = time.time()
        toxic = toxics[kind]
        if toxic is None:
            await asyncio.to_thread(rig.toxi.enable, target, False)
        else:
            await asyncio.to_thread(rig.toxi.add, target, toxic[0], toxic[1])
        await asyncio.sleep(duration)
        await asyncio.to_thread(rig.toxi.heal)
        return Fault(at, time.time(), {"target": target, "kind": kind, "duration_s": duration})

    return fault


async def s8_scale(rig: Rig) -> Fault:
    at = time.time()
    added = [rig.spawn(), rig.spawn()]
    for g in added:
        g.start()
    await asyncio.sleep(15)
    for g in rig.live()[:3]:
        await asyncio.to_thread(g.stop, 60)
    await asyncio.sleep(15)
    rig.spawn().start()
    return Fault(at, at, {"sizes": [3, 5, 2, 3]})


SIMPLE: dict[str, Callable[[Rig], Awaitable[Fault]]] = {
    "S1": s1_kill_gateway,
    "S2": s2_rolling_restart,
    "S3": s3_zombie,
    "S4": s4_kill_broker,
    "S4r": s4_rolling_brokers,
    "S5": s5_kill_redis,
    "S6": s6_flush_redis,
    "S8": s8_scale,
    "S11": s1_kill_gateway,
}
for _target in ("kafka", "redis"):
    for _kind in ("latency", "timeout", "reset", "partition"):
        SIMPLE[f"S7-{_target}-{_kind}"] = _network(_target, _kind)
