"""Redis index of held items, for the review API and the SLA sweeper.

Kafka's compacted ``hitl.holds`` topic is the record; this is an index over it, updated
after each commit (idempotently, by item id) and rebuilt from the topic when it is empty or
behind (``applied_offset`` per holds partition). Losing Redis costs availability, never a hold.

Keys: ``hold:{id}`` hash (meta JSON, value, key, headers, partition), ``queue:{pool}`` and
``age:{pool}`` and ``uqueue:{pool}`` sorted sets (by SLA deadline, by hold time, and most
uncertain first: ``uncertainty_score``), the same per domain within a pool
(``dqueue:{pool}:{domain}``, ``dage:``, ``duqueue:``: pages for reviewers granted some
domains only), ``domain:{d}`` sets, ``sla:{partition}`` sorted set (next SLA check),
``closed:{id}`` (the decision id that closed it and its reviewer), ``id:{id}`` (the id's
claim, ids.py), ``result:{item id}\0
{reviewer}\0{decision id}`` (a decision's result: decision ids are scoped to their item and
reviewer, so one reviewer's id can neither read nor squat another's), ``switch:{partition}``
hash (the partition's stop switch events, by scope and effective offset: stopswitch.py),
``applied.v4:{topic}:{partition}`` (v4 added the uncertainty queues). The applied offsets
are named by the key layout's version: after a layout change, every partition's index is
rebuilt from the topic.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog

from hitl_gateway.errors import RedisUnavailable, redis_errors
from hitl_gateway.ids import claim_source, claim_value
from hitl_gateway.index_entries import (
    IndexedHold,
    ResultKey,
    decode_headers,
    encode_headers,
    result_key,
)
from hitl_gateway.models import HoldMeta
from hitl_gateway.redis_client import CLOSED_TTL_S, RedisWrapper
from hitl_gateway.review.state import ClosedBy
from hitl_gateway.settings import RedisSettings
from hitl_gateway.stopswitch import SwitchEvent, merged

RESULT_TTL_S = 7 * 86_400
# The applied offsets' key, named by the key layout's version (the module docstring).
APPLIED = "applied.v4:"
ORDERS = ("deadline", "age", "uncertainty")
# Uncertainty steps of 1/1000, each wide enough for a millisecond deadline (< 8e12: the
# year 2223): the largest score, 1000 steps, stays an exact integer in a double (< 2**53).
_STEP = 8 * 10**12


def uncertainty_score(meta: HoldMeta) -> int:
    """The ``uqueue`` score: most uncertain first (active learning's uncertainty, in steps
    of 1/1000), then nearest deadline. An item with no uncertainty (not from an active
    learning rule) counts as the least uncertain."""
    u = meta.uncertainty if meta.uncertainty is not None else 0.0
    step = round((1.0 - min(1.0, max(0.0, u))) * 1000)
    return step * _STEP + min(meta.sla_deadline_ms or 0, _STEP - 1)


log = structlog.get_logger(__name__)


def _claim(meta: HoldMeta) -> str:
    """The id claim of the record that made this hold (see ids.py)."""
    source = meta.source or {}
    where = claim_source(
        source.get("topic", "?"), source.get("partition", -1), source.get("offset", -1)
    )
    return claim_value(meta.content_hash, where)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


# One batch's index changes, atomically. ARGV: prefix, the counts of upserts, removals,
# results and applied offsets, the closed-marker and result TTLs, the upserts' fields as one
# JSON array ([id, pool, domain, sla deadline, held at, next check, partition, has key, id
# claim] per upsert: one argument instead of nine per hold for the client to pack), then 4
# values per upsert (meta, value, key, headers), 3 per removal, 3 per result (key, JSON,
# "nx" to keep an existing one), 2 per offset, then the count of stop switch events and 3
# per event (partition, field, JSON). An item moving pools leaves its old
# queues. An open hold's id claim (ids.py) is written back if Redis lost it and does not
# expire; a closed item's claim lives as long as its closed marker.
_APPLY = """
local p = ARGV[1]
local applied = '{applied}'
local nu, nr, nres, nap = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local closed_ttl, result_ttl = ARGV[6], ARGV[7]
local fields = cjson.decode(ARGV[8])
-- A fence: an update whose holds offsets are behind the index's belongs to an owner that
-- lost the partition (a paused instance waking up after the next owner restored and moved
-- on): it would bring back holds closed since. Nothing of it is applied.
-- And a follow-up update (not a restore) finds the index it follows gone (Redis wiped):
-- applying it would make a partial index look whole.
local a = 9 + #fields * 4 + nr * 3 + nres * 3
local follow = ARGV[a + nap * 2 + 1 + tonumber(ARGV[a + nap * 2] or '0') * 3] == 'follow'
for _ = 1, nap do
  local raw = redis.call('GET', p .. applied .. ARGV[a])
  if not raw and follow then return -2 end
  if tonumber(raw or '-1') > tonumber(ARGV[a + 1]) then return -1 end
  a = a + 2
end
local i = 9
local function previous(id)
  local meta = redis.call('HGET', p .. 'hold:' .. id, 'meta')
  if not meta then return nil end
  return cjson.decode(meta)
end
-- Scores and partitions arrive as JSON numbers: written with %d, never as 1.7e+12.
local function int(n) return string.format('%d', n) end
-- An item leaves its pool's queues, by deadline and by age, whole and per domain.
local function leave(id, old)
  redis.call('ZREM', p .. 'queue:' .. old['pool'], id)
  redis.call('ZREM', p .. 'age:' .. old['pool'], id)
  redis.call('ZREM', p .. 'dqueue:' .. old['pool'] .. ':' .. old['domain'], id)
  redis.call('ZREM', p .. 'dage:' .. old['pool'] .. ':' .. old['domain'], id)
  redis.call('ZREM', p .. 'uqueue:' .. old['pool'], id)
  redis.call('ZREM', p .. 'duqueue:' .. old['pool'] .. ':' .. old['domain'], id)
end
for u = 1, nu do
  local f = fields[u]
  local id, pool, domain, partition = f[1], f[2], f[3], int(f[7])
  local old = previous(id)
  if old and old['pool'] ~= pool then
    leave(id, old)
  end
  redis.call('HSET', p .. 'hold:' .. id, 'meta', ARGV[i], 'value', ARGV[i + 1],
    'key', ARGV[i + 2], 'has_key', f[8], 'headers', ARGV[i + 3], 'partition', partition)
  redis.call('ZADD', p .. 'queue:' .. pool, int(f[4]), id)
  redis.call('ZADD', p .. 'age:' .. pool, int(f[5]), id)
  redis.call('ZADD', p .. 'dqueue:' .. pool .. ':' .. domain, int(f[4]), id)
  redis.call('ZADD', p .. 'dage:' .. pool .. ':' .. domain, int(f[5]), id)
  redis.call('ZADD', p .. 'uqueue:' .. pool, int(f[10]), id)
  redis.call('ZADD', p .. 'duqueue:' .. pool .. ':' .. domain, int(f[10]), id)
  redis.call('SADD', p .. 'domain:' .. domain, id)
  redis.call('SADD', p .. 'pools', pool)
  redis.call('ZADD', p .. 'sla:' .. partition, int(f[6]), id)
  redis.call('DEL', p .. 'closed:' .. id)
  redis.call('SET', p .. 'id:' .. id, f[9], 'NX')
  redis.call('PERSIST', p .. 'id:' .. id)
  i = i + 4
end
for _ = 1, nr do
  local id, decision, partition = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = previous(id)
  if old then
    leave(id, old)
    redis.call('SREM', p .. 'domain:' .. old['domain'], id)
  end
  redis.call('DEL', p .. 'hold:' .. id)
  redis.call('ZREM', p .. 'sla:' .. partition, id)
  redis.call('SET', p .. 'closed:' .. id, decision, 'EX', closed_ttl)
  redis.call('EXPIRE', p .. 'id:' .. id, closed_ttl)
  i = i + 3
end
for _ = 1, nres do
  if ARGV[i + 2] == 'nx' then
    redis.call('SET', p .. 'result:' .. ARGV[i], ARGV[i + 1], 'NX', 'EX', result_ttl)
  else
    redis.call('SET', p .. 'result:' .. ARGV[i], ARGV[i + 1], 'EX', result_ttl)
  end
  i = i + 3
end
for _ = 1, nap do
  redis.call('SET', p .. applied .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
local nsw = tonumber(ARGV[i] or '0')
i = i + 1
for _ = 1, nsw do
  redis.call('HSET', p .. 'switch:' .. ARGV[i], ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
return nu + nr
""".replace("{applied}", APPLIED)


class HoldIndex(RedisWrapper):
    def __init__(self, settings: RedisSettings, client: aioredis.Redis | None = None) -> None:
        super().__init__(settings, client)
        self._p = settings.key_prefix
        self._apply = self._r.register_script(_APPLY)

    # -- writes (after a commit, by the partition owner) --------------------------------------

    async def apply(
        self,
        upserts: list[IndexedHold],
        removals: list[tuple[str, str, int]],
        results: dict[ResultKey, dict[str, Any]],
        applied: dict[tuple[str, int], int],
        switches: Sequence[tuple[int, SwitchEvent]] = (),
        *,
        follow: bool = False,
    ) -> None:
        """Upsert holds, remove closed ones ((item, closing decision, partition)), store
        decision results, stop switch events ((partition, event)) and advance the applied
        offsets: one atomic script call. An update whose offsets are behind the index's is
        a former owner's, late: it is dropped whole (logged ``hold_index_update_stale``).
        ``follow``: an update after a commit, refused (RedisUnavailable) when the index it
        follows lost its applied offset, so the partition is retaken and the index rebuilt."""
        args: list[Any] = [self._p, len(upserts), len(removals), len(results), len(applied),
                           CLOSED_TTL_S, RESULT_TTL_S]  # fmt: skip
        fields: list[list[Any]] = []
        blobs: list[Any] = []
        for hold in upserts:
            meta = hold.meta
            fields.append([
                meta.item_id,
                meta.pool,
                meta.domain,
                meta.sla_deadline_ms or 0,
                meta.held_at_ms,
                meta.next_check_ms or 0,
                hold.partition,
                "1" if hold.key is not None else "0",
                _claim(meta),
                uncertainty_score(meta),
            ])  # fmt: skip
            blobs += [
                hold.meta_json if hold.meta_json is not None else meta.to_json(),
                hold.value,
                hold.key if hold.key is not None else b"",
                encode_headers(hold.headers),
            ]
        args += [orjson.dumps(fields), *blobs]
        for item_id, decision_id, partition in removals:
            args += [item_id, decision_id, partition]
        for (item_id, reviewer, decision_id), result in results.items():
            # A repeat or a refusal of a decision id keeps the result it already has: the
            # decision was applied (or refused) the first time, and that result stands.
            keep = "nx" if result.get("state") in ("duplicate", "refused") else ""
            args += [result_key(item_id, reviewer, decision_id), orjson.dumps(result), keep]
        for (topic, partition), offset in applied.items():
            args += [f"{topic}:{partition}", offset]
        args.append(len(switches))
        for partition, event in switches:
            args += [partition, event.field, event.model_dump_json()]
        args.append("follow" if follow else "restore")
        with redis_errors("redis hold index update"):
            changed = await self._apply(args=args)
        if changed == -2:
            raise RedisUnavailable("redis hold index update: the index it follows is gone")
        if changed == -1:
            log.warning("hold_index_update_stale", offsets=sorted(applied.values()))

    # -- reads -----------------------------------------------------------------------------

    async def get(self, item_id: str) -> IndexedHold | None:
        with redis_errors("redis read"):
            found = await self._r.hgetall(f"{self._p}hold:{item_id}")
            raw = {_bytes(k): _bytes(v) for k, v in found.items()}
        if not raw:
            return None
        return IndexedHold(
            meta=HoldMeta.from_json(raw[b"meta"]),
            value=raw[b"value"],
            key=raw[b"key"] if raw.get(b"has_key") == b"1" else None,
            headers=decode_headers(raw[b"headers"]),
            partition=int(raw[b"partition"]),
        )

    async def closed_by(self, item_id: str) -> ClosedBy | None:
        with redis_errors("redis read"):
            value = await self._r.get(f"{self._p}closed:{item_id}")
        return ClosedBy.parse(_text(value)) if value is not None else None

    async def result(self, item_id: str, reviewer: str, decision_id: str) -> dict[str, Any] | None:
        """The result of ``reviewer``'s decision ``decision_id`` on ``item_id``."""
        with redis_errors("redis read"):
            raw = await self._r.get(f"{self._p}result:{result_key(item_id, reviewer, decision_id)}")
        return orjson.loads(raw) if raw else None

    async def switches(self, partition: int) -> list[SwitchEvent]:
        """The stop switch events of ``partition``, by effective offset."""
        with redis_errors("redis read"):
            raw = await self._r.hvals(f"{self._p}switch:{partition}")
        return merged([], (SwitchEvent.model_validate_json(v) for v in raw))

    async def intact(self, topic: str, partition: int) -> bool:
        """Whether the partition's index is still there: taking a partition always records
        its applied offset, so a missing one means Redis lost the index since (wiped, or a
        replica promoted without it)."""
        with redis_errors("redis read"):
            return bool(await self._r.exists(f"{self._p}{APPLIED}{topic}:{partition}"))

    async def applied_offset(self, topic: str, partition: int) -> int | None:
        with redis_errors("redis read"):
            raw = await self._r.get(f"{self._p}{APPLIED}{topic}:{partition}")
        return int(raw) if raw is not None else None

    async def queue(
        self,
        pool: str,
        *,
        order: str = "deadline",
        offset: int = 0,
        limit: int = 50,
        domains: Collection[str] | None = None,
    ) -> tuple[int, list[HoldMeta]]:
        """A page of a pool's queue (nearest deadline, oldest, or most uncertain first) and
        its total size; with ``domains``, of those domains' items only (paged and counted
        among them)."""
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        whole = {"deadline": "queue", "age": "age", "uncertainty": "uqueue"}[order]
        if domains is None:
            keys = [f"{self._p}{whole}:{pool}"]
        else:
            keys = [f"{self._p}d{whole}:{pool}:{d}" for d in sorted(set(domains))]
        with redis_errors("redis read"):
            if len(keys) == 1:
                total = await self._r.zcard(keys[0])
                ids = await self._r.zrange(keys[0], offset, offset + limit - 1)
            else:  # each domain's first offset + limit, merged in the sorted sets' own order
                async with self._r.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.zcard(key)
                        pipe.zrange(key, 0, offset + limit - 1, withscores=True)
                    replies = await pipe.execute()
                total = sum(replies[0::2])
                merged = heapq.merge(*(((s, m) for m, s in r) for r in replies[1::2]))
                ids = [m for _, m in itertools.islice(merged, offset, offset + limit)]
            if not ids:
                return total, []
            async with self._r.pipeline(transaction=False) as pipe:
                for item_id in ids:
                    pipe.hget(f"{self._p}hold:{_text(item_id)}", "meta")
                metas = await pipe.execute()
        return total, [HoldMeta.from_json(m) for m in metas if m]

    async def due(self, partition: int, now_ms: int, limit: int = 500) -> list[str]:
        """Items of ``partition`` whose next SLA check is due."""
        with redis_errors("redis read"):
            ids = await self._r.zrangebyscore(
                f"{self._p}sla:{partition}", 1, now_ms, start=0, num=limit
            )
        return [_text(i) for i in ids]

    async def members(self, pool: str) -> list[str]:
        """Every item waiting in ``pool`` (for the re-router and bulk reassignment)."""
        with redis_errors("redis read"):
            return [_text(i) for i in await self._r.zrange(f"{self._p}queue:{pool}", 0, -1)]

    async def open_ids(self, partition: int) -> list[str]:
        """Every open hold of ``partition`` (its SLA set holds them all, due or not)."""
        with redis_errors("redis read"):
            return [_text(i) for i in await self._r.zrange(f"{self._p}sla:{partition}", 0, -1)]

    async def pools(self) -> set[str]:
        """Every pool that has held an item, including ``unassigned`` (no policy names it)."""
        with redis_errors("redis read"):
            return {_text(p) for p in await self._r.smembers(f"{self._p}pools")}

    async def backlog(self, pool: str, now_ms: int) -> tuple[int, int | None, int]:
        """Items waiting in ``pool``, the oldest hold time (ms), and how many are past SLA."""
        with redis_errors("redis read"):
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.zcard(f"{self._p}queue:{pool}")
                pipe.zrange(f"{self._p}age:{pool}", 0, 0, withscores=True)
                pipe.zcount(f"{self._p}queue:{pool}", 1, now_ms)
                count, first, past = await pipe.execute()
        oldest = int(first[0][1]) if first else None
        return int(count), oldest, int(past)

    async def domain_counts(self, domains: list[str]) -> dict[str, int]:
        with redis_errors("redis read"):
            async with self._r.pipeline(transaction=False) as pipe:
                for domain in domains:
                    pipe.scard(f"{self._p}domain:{domain}")
                sizes = await pipe.execute()
        return {d: int(n) for d, n in zip(domains, sizes, strict=True)}
