"""Redis index of held items, for the review API and the SLA sweeper.

Kafka's compacted ``hitl.holds`` topic is the record; this is an index over it, updated
after each commit (idempotently, by item id) and rebuilt from the topic when it is empty or
behind (``applied_offset`` per holds partition). Losing Redis costs availability, never a hold.

Keys: ``hold:{id}`` hash (meta JSON, value, key, headers, partition), ``queue:{pool}`` and
``age:{pool}`` sorted sets (by SLA deadline and by hold time), ``domain:{d}`` sets,
``sla:{partition}`` sorted set (next SLA check), ``closed:{id}`` (the decision id that
closed it), ``decision:{id}`` (a decision's result), ``applied:{topic}:{partition}``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hitl_gateway import headers
from hitl_gateway.errors import InfrastructureError
from hitl_gateway.settings import RedisSettings

CLOSED_TTL_S = 30 * 86_400
RESULT_TTL_S = 7 * 86_400


@dataclass(frozen=True, slots=True)
class IndexedHold:
    meta: dict[str, Any]
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int


def indexed(value: bytes, hdrs: list[tuple[str, bytes]], partition: int) -> IndexedHold:
    """An index entry from a hold record as it is on the holds topic."""
    found = dict(hdrs)
    own = [(k, v) for k, v in hdrs if k not in (headers.HOLD, headers.HOLD_KEY)]
    return IndexedHold(
        meta=orjson.loads(found[headers.HOLD]),
        value=value,
        key=found.get(headers.HOLD_KEY),
        headers=own,
        partition=partition,
    )


def index_changes(
    records: Iterable[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]], partition: int
) -> tuple[list[IndexedHold], list[tuple[str, str, int]]]:
    """What the index must do for these holds-topic records (key, value, headers), in topic
    order: the last record per item wins, a hold (upsert) or a tombstone (removal, with the
    decision that closed it)."""
    latest: dict[str, IndexedHold | str] = {}
    for key, value, hdrs in records:
        item_id = (key or b"").decode()
        if value is None:
            latest[item_id] = dict(hdrs).get(headers.DECISION_ID, b"closed").decode()
        else:
            latest[item_id] = indexed(value, hdrs, partition)
    upserts = [v for v in latest.values() if isinstance(v, IndexedHold)]
    removals = [(item, v, partition) for item, v in latest.items() if isinstance(v, str)]
    return upserts, removals


def redis_client(settings: RedisSettings) -> aioredis.Redis:
    """The Redis connection both Redis wrappers (holds, budgets) use."""
    return aioredis.Redis.from_url(
        settings.url,
        password=settings.password.get_secret_value() if settings.password else None,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def encode_headers(headers: list[tuple[str, bytes]]) -> bytes:
    return orjson.dumps([[k, base64.b64encode(v).decode()] for k, v in headers])


def decode_headers(raw: bytes) -> list[tuple[str, bytes]]:
    return [(k, base64.b64decode(v)) for k, v in orjson.loads(raw)]


class HoldIndex:
    def __init__(self, settings: RedisSettings) -> None:
        self._p = settings.key_prefix
        self._r = redis_client(settings)

    async def stop(self) -> None:
        await self._r.aclose()

    # -- writes (after a commit, by the partition owner) --------------------------------------

    async def apply(
        self,
        upserts: list[IndexedHold],
        removals: list[tuple[str, str, int]],
        results: dict[str, dict[str, Any]],
        applied: dict[tuple[str, int], int],
    ) -> None:
        """Upsert holds, remove closed ones ((item, closing decision, partition)), store
        decision results and advance the applied offsets, in one round trip."""
        try:
            previous = await self._pools_of(
                [h.meta["item_id"] for h in upserts] + [r[0] for r in removals]
            )
            async with self._r.pipeline(transaction=True) as pipe:
                for hold in upserts:
                    self._upsert(pipe, hold, previous.get(hold.meta["item_id"]))
                for item_id, decision_id, partition in removals:
                    self._remove(pipe, item_id, previous.get(item_id), decision_id, partition)
                for decision_id, result in results.items():
                    pipe.set(
                        f"{self._p}decision:{decision_id}", orjson.dumps(result), ex=RESULT_TTL_S
                    )
                for (topic, partition), offset in applied.items():
                    pipe.set(f"{self._p}applied:{topic}:{partition}", offset)
                await pipe.execute()
        except RedisError as exc:
            raise InfrastructureError(f"redis hold index update failed: {exc!r}") from exc

    async def _pools_of(self, item_ids: list[str]) -> dict[str, tuple[str, str]]:
        if not item_ids:
            return {}
        async with self._r.pipeline(transaction=False) as pipe:
            for item_id in item_ids:
                pipe.hget(f"{self._p}hold:{item_id}", "meta")
            metas = await pipe.execute()
        out = {}
        for item_id, raw in zip(item_ids, metas, strict=True):
            if raw:
                meta = orjson.loads(raw)
                out[item_id] = (meta["pool"], meta["domain"])
        return out

    def _upsert(self, pipe: Any, hold: IndexedHold, previous: tuple[str, str] | None) -> None:
        meta = hold.meta
        item_id, pool = meta["item_id"], meta["pool"]
        if previous is not None and previous[0] != pool:
            pipe.zrem(f"{self._p}queue:{previous[0]}", item_id)
            pipe.zrem(f"{self._p}age:{previous[0]}", item_id)
        pipe.hset(
            f"{self._p}hold:{item_id}",
            mapping={
                "meta": orjson.dumps(meta),
                "value": hold.value,
                "key": hold.key if hold.key is not None else b"",
                "has_key": b"1" if hold.key is not None else b"0",
                "headers": encode_headers(hold.headers),
                "partition": hold.partition,
            },
        )
        pipe.zadd(f"{self._p}queue:{pool}", {item_id: meta["sla_deadline_ms"] or 0})
        pipe.zadd(f"{self._p}age:{pool}", {item_id: meta["held_at_ms"]})
        pipe.sadd(f"{self._p}domain:{meta['domain']}", item_id)
        pipe.sadd(f"{self._p}pools", pool)
        pipe.zadd(f"{self._p}sla:{hold.partition}", {item_id: meta.get("next_check_ms") or 0})
        pipe.delete(f"{self._p}closed:{item_id}")

    def _remove(
        self,
        pipe: Any,
        item_id: str,
        previous: tuple[str, str] | None,
        decision_id: str,
        partition: int,
    ) -> None:
        if previous is not None:
            pipe.zrem(f"{self._p}queue:{previous[0]}", item_id)
            pipe.zrem(f"{self._p}age:{previous[0]}", item_id)
            pipe.srem(f"{self._p}domain:{previous[1]}", item_id)
        pipe.delete(f"{self._p}hold:{item_id}")
        pipe.zrem(f"{self._p}sla:{partition}", item_id)
        pipe.set(f"{self._p}closed:{item_id}", decision_id, ex=CLOSED_TTL_S)

    # -- reads -----------------------------------------------------------------------------

    async def get(self, item_id: str) -> IndexedHold | None:
        try:
            found = await self._r.hgetall(f"{self._p}hold:{item_id}")
            raw = {_bytes(k): _bytes(v) for k, v in found.items()}
        except RedisError as exc:
            raise InfrastructureError(f"redis read failed: {exc!r}") from exc
        if not raw:
            return None
        return IndexedHold(
            meta=orjson.loads(raw[b"meta"]),
            value=raw[b"value"],
            key=raw[b"key"] if raw.get(b"has_key") == b"1" else None,
            headers=decode_headers(raw[b"headers"]),
            partition=int(raw[b"partition"]),
        )

    async def closed_by(self, item_id: str) -> str | None:
        value = await self._r.get(f"{self._p}closed:{item_id}")
        return _text(value) if value is not None else None

    async def result(self, decision_id: str) -> dict[str, Any] | None:
        raw = await self._r.get(f"{self._p}decision:{decision_id}")
        return orjson.loads(raw) if raw else None

    async def applied_offset(self, topic: str, partition: int) -> int | None:
        raw = await self._r.get(f"{self._p}applied:{topic}:{partition}")
        return int(raw) if raw is not None else None

    async def queue(
        self, pool: str, *, order: str = "deadline", offset: int = 0, limit: int = 50
    ) -> tuple[int, list[dict[str, Any]]]:
        """A page of a pool's queue (nearest deadline or oldest first) and its total size."""
        key = f"{self._p}queue:{pool}" if order == "deadline" else f"{self._p}age:{pool}"
        try:
            total = await self._r.zcard(key)
            ids = await self._r.zrange(key, offset, offset + limit - 1)
            if not ids:
                return total, []
            async with self._r.pipeline(transaction=False) as pipe:
                for item_id in ids:
                    pipe.hget(f"{self._p}hold:{_text(item_id)}", "meta")
                metas = await pipe.execute()
        except RedisError as exc:
            raise InfrastructureError(f"redis read failed: {exc!r}") from exc
        return total, [orjson.loads(m) for m in metas if m]

    async def due(self, partition: int, now_ms: int, limit: int = 500) -> list[str]:
        """Items of ``partition`` whose next SLA check is due."""
        ids = await self._r.zrangebyscore(
            f"{self._p}sla:{partition}", 1, now_ms, start=0, num=limit
        )
        return [_text(i) for i in ids]

    async def pools(self) -> set[str]:
        """Every pool that has held an item, including ``unassigned`` (no policy names it)."""
        try:
            return {_text(p) for p in await self._r.smembers(f"{self._p}pools")}
        except RedisError as exc:
            raise InfrastructureError(f"redis read failed: {exc!r}") from exc

    async def backlog(self, pool: str, now_ms: int) -> tuple[int, int | None, int]:
        """Items waiting in ``pool``, the oldest hold time (ms), and how many are past SLA."""
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.zcard(f"{self._p}queue:{pool}")
                pipe.zrange(f"{self._p}age:{pool}", 0, 0, withscores=True)
                pipe.zcount(f"{self._p}queue:{pool}", 1, now_ms)
                count, first, past = await pipe.execute()
        except RedisError as exc:
            raise InfrastructureError(f"redis read failed: {exc!r}") from exc
        oldest = int(first[0][1]) if first else None
        return int(count), oldest, int(past)

    async def domain_counts(self, domains: list[str]) -> dict[str, int]:
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                for domain in domains:
                    pipe.scard(f"{self._p}domain:{domain}")
                sizes = await pipe.execute()
        except RedisError as exc:
            raise InfrastructureError(f"redis read failed: {exc!r}") from exc
        return {d: int(n) for d, n in zip(domains, sizes, strict=True)}
