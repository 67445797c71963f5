"""Kafka's SASL/OAUTHBEARER tokens: OAuth 2.0 client credentials against a token endpoint.

aiokafka asks its token provider for a token on every new connection; the provider here
fetches one (RFC 6749 section 4.4, the client authenticating with HTTP Basic) and gives the
same token to every connection until shortly before it expires. A refresh that fails while
the cached token is still valid keeps the cached one. One provider per configuration is
shared by every Kafka client of the process.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import structlog
from aiokafka.abc import AbstractTokenProvider

from hitl_gateway.errors import TokenEndpointError

log = structlog.get_logger(__name__)

# A token is used until this share of its lifetime is left, at most this long before it ends.
REFRESH_SHARE = 0.2
REFRESH_MARGIN_S = 60.0
_DETAIL_CHARS = 200  # of an endpoint's error description, in messages


class ClientCredentialsTokenProvider(AbstractTokenProvider):  # type: ignore[misc]  # untyped base
    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        *,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self._scope = scope
        self._timeout_s = timeout_s
        self._clock = clock
        self._transport = transport
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self.fetches = 0  # token requests made (tests and logs)

    async def token(self) -> str:
        """A token that is valid now; fetched at most once at a time."""
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        async with self._lock():
            now = self._clock()
            if self._token is not None and now < self._refresh_at:
                return self._token  # another connection refreshed it meanwhile
            try:
                token, lifetime_s = await self._fetch()
            except TokenEndpointError as exc:
                if self._token is not None and now < self._expires_at:
                    log.warning("oauth_token_refresh_failed", error=str(exc),
                                valid_for_s=round(self._expires_at - now, 1))  # fmt: skip
                    return self._token
                raise
            self._token = token
            self._expires_at = now + lifetime_s
            self._refresh_at = now + lifetime_s - min(REFRESH_MARGIN_S, lifetime_s * REFRESH_SHARE)
            log.info("oauth_token_fetched", token_url=self.token_url, expires_in_s=lifetime_s)
            return token

    def _lock(self) -> asyncio.Lock:
        # An asyncio lock belongs to one event loop; the provider may outlive one (tests).
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            self._locks = {loop: (lock := asyncio.Lock())}
        return lock

    async def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        self.fetches += 1
        try:
            client = httpx.AsyncClient(timeout=self._timeout_s, transport=self._transport)
            async with client as http:
                response = await http.post(
                    self.token_url,
                    data=form,
                    auth=httpx.BasicAuth(self.client_id, self._secret),
                    headers={"Accept": "application/json"},
                )
        except httpx.HTTPError as exc:
            raise TokenEndpointError(
                f"could not get an OAuth token for client {self.client_id!r} from "
                f"{self.token_url}: {exc!r}",
                refused=False,
            ) from exc
        return self._parse(response)

    def _parse(self, response: httpx.Response) -> tuple[str, float]:
        body = _json(response.content)
        if response.status_code in (400, 401, 403):  # RFC 6749 5.2: invalid_client, ...
            error = str(body.get("error", "")) or "no error code"
            detail = str(body.get("error_description", ""))[:_DETAIL_CHARS]
            raise TokenEndpointError(
                f"the OAuth token endpoint {self.token_url} refused client {self.client_id!r} "
                f"(HTTP {response.status_code}, {error}{': ' + detail if detail else ''})",
                refused=True,
            )
        if response.status_code != 200:
            raise TokenEndpointError(
                f"the OAuth token endpoint {self.token_url} answered HTTP "
                f"{response.status_code} for client {self.client_id!r}",
                refused=False,
            )
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise TokenEndpointError(
                f"the OAuth token endpoint {self.token_url} answered without an access_token",
                refused=True,
            )
        if str(body.get("token_type", "bearer")).lower() != "bearer":
            raise TokenEndpointError(
                f"the OAuth token endpoint {self.token_url} issued a "
                f"{body.get('token_type')!r} token, not a bearer token",
                refused=True,
            )
        return token, lifetime_s(body.get("expires_in"), token, time.time())


def lifetime_s(expires_in: Any, token: str, now_s: float) -> float:
    """How long a token may be used: ``expires_in`` from the response, else the ``exp`` of a
    JWT (read, not verified: the broker verifies it), else 0 (fetched again each time)."""
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        return float(expires_in)
    if isinstance(expires_in, str) and expires_in.isdigit():
        return float(expires_in)
    parts = token.split(".")
    if len(parts) == 3:
        try:
            claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            return 0.0
        exp = claims.get("exp") if isinstance(claims, dict) else None
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            return max(0.0, float(exp) - now_s)
    return 0.0


def _json(content: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


@functools.cache
def shared_provider(
    token_url: str, client_id: str, client_secret: str, scope: str | None, timeout_s: float
) -> ClientCredentialsTokenProvider:
    """One provider (one cached token) per configuration, for every client of the process."""
    return ClientCredentialsTokenProvider(
        token_url, client_id, client_secret, scope, timeout_s=timeout_s
    )
