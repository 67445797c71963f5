"""Redis wrapper: what an OIDC reviewer's token granted when they last published a decision
or a command, for the decision applier (which knows reviewers by id, and may run on another
instance than the API that verified the token).

One key per reviewer id: the groups the groups file mapped, and the token's ``exp``. Written
just before the API or the workspace publishes; read by the partition's owner as it applies
the record, which maps the groups again with the groups file in force then and refuses a
record made after the token's expiry. Kept a day past that expiry, so that a decision
applied late (a rebalance, an outage) is still judged by what its token granted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis

from hitl_gateway.errors import redis_errors
from hitl_gateway.redis_client import RedisWrapper
from hitl_gateway.settings import RedisSettings

KEEP_AFTER_EXPIRY_S = 86_400


@dataclass(frozen=True, slots=True)
class SignedIn:
    groups: tuple[str, ...]
    expires_at_s: int


class OidcRecords(RedisWrapper):
    def __init__(self, settings: RedisSettings, client: aioredis.Redis | None = None) -> None:
        super().__init__(settings, client)
        self._p = settings.key_prefix

    def _key(self, reviewer_id: str) -> str:
        return f"{self._p}oidc:reviewer:{reviewer_id}"

    async def remember(self, reviewer_id: str, signed_in: SignedIn) -> None:
        ttl_s = max(1, signed_in.expires_at_s - int(time.time()) + KEEP_AFTER_EXPIRY_S)
        body = orjson.dumps({"groups": signed_in.groups, "exp": signed_in.expires_at_s})
        with redis_errors("redis oidc record"):
            await self._r.set(self._key(reviewer_id), body, ex=ttl_s)

    async def recall(self, reviewer_id: str) -> SignedIn | None:
        with redis_errors("redis oidc record"):
            raw = await self._r.get(self._key(reviewer_id))
        if raw is None:
            return None
        found = orjson.loads(raw)
        return SignedIn(tuple(str(g) for g in found["groups"]), int(found["exp"]))
