"""Redis wrapper for review budgets: quota and budget slots claimed atomically by record id.

Claims are written before the batch's Kafka transaction commits. A replayed record finds
its own slot (``SISMEMBER``) and routes as before; a slot is only ever granted under its cap,
across partitions and instances, because the check and the claim run in one Lua script.
Losing Redis resets the windows in progress (at most one extra quota); it never loses a hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson
import redis.asyncio as aioredis

from hitl_gateway.errors import redis_errors
from hitl_gateway.policy.budget import Claim, MemoryLedger
from hitl_gateway.redis_client import RedisWrapper
from hitl_gateway.settings import RedisSettings

# ARGV[1]: [[item_id, [[key, cap, ttl_or_0], ...]], ...] -> one 1 (granted) or 0 per group.
# A group is granted whole or not at all; a group whose id already holds every slot is a replay.
_CLAIM = """
local groups = cjson.decode(ARGV[1])
local out = {}
for i, group in ipairs(groups) do
  local id, claims = group[1], group[2]
  local ok, replay = 1, 1
  for _, c in ipairs(claims) do
    if redis.call('SISMEMBER', c[1], id) == 0 then
      replay = 0
      if redis.call('SCARD', c[1]) >= tonumber(c[2]) then ok = 0 end
    end
  end
  if ok == 1 and replay == 0 then
    for _, c in ipairs(claims) do
      redis.call('SADD', c[1], id)
      if tonumber(c[3]) > 0 and redis.call('TTL', c[1]) < 0 then
        redis.call('EXPIRE', c[1], tonumber(c[3]))
      end
    end
  end
  out[i] = ok
end
return out
"""


# ARGV[1]: [[key, [item_id, ...]], ...] -> per key [used, item ids that hold a slot]. One
# argument for the batch, so the client packs one string instead of every candidate id.
_SNAPSHOT = """
local out = {}
for i, entry in ipairs(cjson.decode(ARGV[1])) do
  local key, ids = entry[1], entry[2]
  local found = {redis.call('SCARD', key)}
  for start = 1, #ids, 1000 do
    local chunk = {unpack(ids, start, math.min(start + 999, #ids))}
    local flags = redis.call('SMISMEMBER', key, unpack(chunk))
    for j, flag in ipairs(flags) do
      if flag == 1 then found[#found + 1] = chunk[j] end
    end
  end
  out[i] = found
end
return out
"""


class RedisBudgets(RedisWrapper):
    def __init__(self, settings: RedisSettings, client: aioredis.Redis | None = None) -> None:
        super().__init__(settings, client)
        self._claim = self._r.register_script(_CLAIM)
        self._snapshot = self._r.register_script(_SNAPSHOT)
        self._prefix = f"{settings.key_prefix}budget:"

    async def snapshot(self, candidates: Mapping[str, Sequence[str]]) -> MemoryLedger:
        """How full each key is, and which of its candidate item ids already hold a slot."""
        keys = sorted(candidates)
        ledger = MemoryLedger()
        if not keys:
            return ledger
        query = [[self._prefix + key, candidates[key]] for key in keys]
        with redis_errors("redis budget read"):
            replies = await self._snapshot(args=[orjson.dumps(query)])
        for key, (used, *members) in zip(keys, replies, strict=True):
            ledger.preload(key, int(used), [m.decode() for m in members])
        return ledger

    async def claim(self, groups: Sequence[tuple[str, Sequence[Claim]]]) -> list[bool]:
        """Atomically claim each group's slots; False where a cap was reached meanwhile."""
        payload = [
            [item_id, [[self._prefix + c.key, c.cap, c.ttl_s or 0] for c in claims]]
            for item_id, claims in groups
        ]
        with redis_errors("redis budget claim"):
            granted = await self._claim(args=[orjson.dumps(payload)])
        return [bool(g) for g in granted]
