"""Redis wrapper: workspace sign-in sessions and their CSRF tokens, and the OIDC sign-ins
under way.

Signing in exchanges a reviewer's bearer token (``reviewers.yaml``), or the OIDC issuer's
ID token, for a random session id kept in an HttpOnly, SameSite=Strict cookie; the session
names the reviewer and carries a CSRF token that every form (and the page's own lease
renewals) must send back. Sessions last ``TTL_S`` (an OIDC session no longer than its ID
token) and end on sign-out. The token itself is never stored or echoed.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from hitl_gateway.errors import redis_errors
from hitl_gateway.redis_client import RedisWrapper
from hitl_gateway.settings import RedisSettings

COOKIE = "hitl_session"
TTL_S = 12 * 3_600
FLOW_TTL_S = 600  # an OIDC sign-in must come back from the issuer within this


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    reviewer: str
    csrf: str
    # The reviewer's token hash at sign-in: a session ends when the reviewers file no longer
    # grants that token (revoked or replaced), not only when the reviewer is removed.
    token_sha256: str = ""
    # An OIDC sign-in: the groups its ID token carried (mapped again with the groups file in
    # force at every request) and the token's expiry, past which the session is over.
    groups: tuple[str, ...] = ()
    expires_at_s: int | None = None

    def csrf_ok(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(self.csrf, sent)

    @property
    def ttl_s(self) -> int:
        """How long the session's cookie should live."""
        if self.expires_at_s is None:
            return TTL_S
        return max(1, min(TTL_S, self.expires_at_s - int(time.time())))


class Sessions(RedisWrapper):
    def __init__(self, settings: RedisSettings, client: aioredis.Redis | None = None) -> None:
        super().__init__(settings, client)
        self._p = settings.key_prefix

    async def start(
        self,
        reviewer: str,
        token_sha256: str = "",
        *,
        groups: tuple[str, ...] = (),
        expires_at_s: int | None = None,
    ) -> Session:
        """A session for a reviewers-file sign-in (``token_sha256``) or an OIDC one
        (``groups``, ``expires_at_s``)."""
        session = Session(secrets.token_urlsafe(32), reviewer, secrets.token_urlsafe(32),
                          token_sha256, groups, expires_at_s)  # fmt: skip
        body = orjson.dumps({"reviewer": reviewer, "csrf": session.csrf, "token": token_sha256,
                             "groups": groups, "exp": expires_at_s})  # fmt: skip
        with redis_errors("redis session"):
            await self._r.set(f"{self._p}session:{session.sid}", body, ex=session.ttl_s)
        return session

    async def get(self, sid: str | None) -> Session | None:
        if not sid or len(sid) > 128:
            return None
        with redis_errors("redis session"):
            raw = await self._r.get(f"{self._p}session:{sid}")
        if raw is None:
            return None
        found = orjson.loads(raw)
        exp = found.get("exp")
        groups = tuple(str(g) for g in found.get("groups") or ())
        return Session(sid, str(found["reviewer"]), str(found["csrf"]),
                       str(found.get("token", "")), groups,
                       int(exp) if exp is not None else None)  # fmt: skip

    async def end(self, sid: str) -> None:
        with redis_errors("redis session"):
            await self._r.delete(f"{self._p}session:{sid}")

    # -- OIDC sign-ins under way --------------------------------------------------------

    async def begin_flow(self, state: str, flow: dict[str, Any]) -> None:
        with redis_errors("redis oidc sign-in"):
            await self._r.set(f"{self._p}oidc:flow:{state}", orjson.dumps(flow), ex=FLOW_TTL_S)

    async def flow(self, state: str) -> dict[str, Any] | None:
        """The sign-in under way that ``state`` names."""
        if not state or len(state) > 128:
            return None
        with redis_errors("redis oidc sign-in"):
            raw = await self._r.get(f"{self._p}oidc:flow:{state}")
        if raw is None:
            return None
        found: dict[str, Any] = orjson.loads(raw)
        return found

    async def end_flow(self, state: str) -> bool:
        """Use up the sign-in ``state`` names: True for the one caller that does."""
        with redis_errors("redis oidc sign-in"):
            return bool(await self._r.delete(f"{self._p}oidc:flow:{state}"))
