"""The Redis connection: one client (and its connection pool) per process, which every Redis
wrapper (holds, ids, budgets, calibration) shares."""

from __future__ import annotations

import redis.asyncio as aioredis

from hitl_gateway.settings import RedisSettings

# How long the marks of a finished item live: who closed it, and which record held its id.
CLOSED_TTL_S = 30 * 86_400


def redis_client(settings: RedisSettings) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        settings.url,
        password=settings.password.get_secret_value() if settings.password else None,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
    )


class RedisWrapper:
    """Base of the Redis wrappers (holds, ids, budgets, calibration): they share the process's
    one client (``client``, closed by whoever made it, the composition root) or, standing
    alone (tools, tests), make and close their own."""

    def __init__(self, settings: RedisSettings, client: aioredis.Redis | None = None) -> None:
        self._r = client if client is not None else redis_client(settings)
        self._owns_client = client is None

    async def stop(self) -> None:
        if self._owns_client:
            await self._r.aclose()
