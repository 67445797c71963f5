"""Redis wrapper: how many API requests each reviewer may make in a window.

A fixed window per reviewer, shared by every gateway instance (one Redis counter, set to
expire with its window): within ``window_s`` a reviewer may make ``requests`` authenticated
requests; past that the API answers 429 with ``Retry-After`` (the window's remaining time).
``requests`` 0 turns the limit off.
"""

from __future__ import annotations

import math

import redis.asyncio as aioredis

from hitl_gateway.errors import redis_errors
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.redis_client import RedisWrapper
from hitl_gateway.settings import RedisSettings

# Count the request; start the window with the first one. Returns the window's remaining
# milliseconds when the count is over the limit, else -1.
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); left = tonumber(ARGV[1]) end
  return left
end
return -1
"""


class RequestLimiter(RedisWrapper):
    def __init__(
        self,
        settings: RedisSettings,
        requests: int,
        window_s: float,
        client: aioredis.Redis | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        super().__init__(settings, client)
        self._p = settings.key_prefix
        self.requests = requests
        self.window_s = window_s
        self.metrics = metrics
        self._window_ms = max(1, int(window_s * 1000))
        self._count = self._r.register_script(_COUNT)

    async def retry_after(self, reviewer: str) -> int | None:
        """None when ``reviewer`` may go on; else the seconds until the window ends."""
        if self.requests <= 0:
            return None
        with redis_errors("redis rate limit"):
            left = await self._count(
                keys=[f"{self._p}ratelimit:{reviewer}"], args=[self._window_ms, self.requests]
            )
        left = int(left)
        return None if left < 0 else max(1, math.ceil(left / 1000))
