"""Redis wrapper: a held item's id belongs to the record that first held it.

``id`` is the input contract's idempotency key, and the holds topic and its index are keyed
by it: a second record holding the same id would overwrite the first's index entry and
leave its hold unreachable. So before a batch's holds are written, each item id is claimed
for (content hash, source coordinates), atomically across partitions and instances:

- ``new``: nobody held it; the claim is now this record's.
- ``ours``: claimed by this very record (its batch was aborted and is being routed again).
- ``duplicate``: the same content from another record (a producer's retry): acknowledged
  once, not held again.
- ``conflict``: different content under the same id: dead-lettered, naming the first.

Claims live as long as closed markers (30 days), and the index writes them again (if absent)
whenever it stores a hold, so an index rebuilt from the holds topic restores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import orjson
import redis.asyncio as aioredis

from hitl_gateway.errors import redis_errors
from hitl_gateway.redis_client import CLOSED_TTL_S, RedisWrapper
from hitl_gateway.settings import RedisSettings

# ARGV: prefix, TTL, then one JSON array of [id, content hash, source]. Returns, per item,
# its status, with the claim's holder ("hash|source") for the two that are not this record.
_CLAIM = """
local p, ttl = ARGV[1], ARGV[2]
local items = cjson.decode(ARGV[3])
local out = {}
for i, item in ipairs(items) do
  local key = p .. 'id:' .. item[1]
  local mine = item[2] .. '|' .. item[3]
  local held = redis.call('GET', key)
  if not held then
    redis.call('SET', key, mine, 'EX', ttl)
    out[i] = 'new'
  elseif held == mine then
    out[i] = 'ours'
  elseif string.sub(held, 1, #item[2] + 1) == item[2] .. '|' then
    out[i] = 'duplicate|' .. held
  else
    out[i] = 'conflict|' .. held
  end
end
return out
"""


class Claim(StrEnum):
    NEW = "new"
    OURS = "ours"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class Claimed:
    status: Claim
    holder: str = ""  # for a duplicate or conflict: "topic:partition:offset" of the first

    @property
    def holds(self) -> bool:
        """This record may write the hold."""
        return self.status in (Claim.NEW, Claim.OURS)


def claim_source(topic: str, partition: int, offset: int) -> str:
    return f"{topic}:{partition}:{offset}"


def claim_value(content_hash: str, source: str) -> str:
    """The stored claim (what the index writes back when it stores a hold)."""
    return f"{content_hash}|{source}"


class HeldIds(RedisWrapper):
    def __init__(self, settings: RedisSettings, client: aioredis.Redis | None = None) -> None:
        super().__init__(settings, client)
        self._p = settings.key_prefix
        self._claim = self._r.register_script(_CLAIM)

    async def claim(self, items: list[tuple[str, str, str]]) -> list[Claimed]:
        """Claim (item id, content hash, source) in order: later items of the same list see
        earlier ones, so two records with one id in one batch are told apart too."""
        if not items:
            return []
        with redis_errors("redis id claim"):
            replies = await self._claim(args=[self._p, CLOSED_TTL_S, orjson.dumps(items)])
        out = []
        for reply in replies:
            status, _, held = (reply.decode() if isinstance(reply, bytes) else reply).partition("|")
            out.append(Claimed(Claim(status), held.partition("|")[2]))
        return out
