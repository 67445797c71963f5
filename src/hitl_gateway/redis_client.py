"""The Redis connection every Redis wrapper (holds, ids, budgets, calibration) builds on."""

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
