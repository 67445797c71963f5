"""Redis wrapper: workspace sign-in sessions and their CSRF tokens.

Signing in exchanges a reviewer's bearer token (``reviewers.yaml``) for a random session id
kept in an HttpOnly, SameSite=Strict cookie; the session names the reviewer and carries a
CSRF token that every form (and the page's own lease renewals) must send back. Sessions last
``TTL_S`` and end on sign-out. The token itself is never stored or echoed.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis

from hitl_gateway.errors import redis_errors
from hitl_gateway.redis_client import RedisWrapper
from hitl_gateway.settings import RedisSettings

COOKIE = "hitl_session"
TTL_S = 12 * 3_600


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    reviewer: str
    csrf: str
    # The reviewer's token hash at sign-in: a session ends when the reviewers file no longer
    # grants that token (revoked or replaced), not only when the reviewer is removed.
    token_sha256: str = ""

    def csrf_ok(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(self.csrf, sent)


class Sessions(RedisWrapper):
    def __init__(self, settings: RedisSettings, client: aioredis.Redis | None = None) -> None:
        super().__init__(settings, client)
        self._p = settings.key_prefix

    async def start(self, reviewer: str, token_sha256: str) -> Session:
        session = Session(secrets.token_urlsafe(32), reviewer, secrets.token_urlsafe(32),
                          token_sha256)  # fmt: skip
        body = orjson.dumps({"reviewer": reviewer, "csrf": session.csrf, "token": token_sha256})
        with redis_errors("redis session"):
            await self._r.set(f"{self._p}session:{session.sid}", body, ex=TTL_S)
        return session

    async def get(self, sid: str | None) -> Session | None:
        if not sid or len(sid) > 128:
            return None
        with redis_errors("redis session"):
            raw = await self._r.get(f"{self._p}session:{sid}")
        if raw is None:
            return None
        found = orjson.loads(raw)
        return Session(sid, str(found["reviewer"]), str(found["csrf"]), str(found.get("token", "")))

    async def end(self, sid: str) -> None:
        with redis_errors("redis session"):
            await self._r.delete(f"{self._p}session:{sid}")
