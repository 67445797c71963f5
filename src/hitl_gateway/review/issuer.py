"""The OpenID Connect issuer over HTTP (httpx): its discovery document and its signing keys.

The key set (JWKS) is cached for ``jwks_cache_s``. A token signed with a key id the cache
does not hold makes the key set be fetched again, which is how a key rotation reaches the
gateway; fetches are at least ``jwks_refetch_interval_s`` apart and one at a time, so a
flood of made-up key ids costs the issuer one request per interval. When a fetch fails the
keys in hand stay in use (an unreachable issuer does not sign everyone out); with none in
hand, verification answers "issuer unavailable" (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import structlog
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, Key, OKPKey, RSAKey

from hitl_gateway.errors import IssuerUnavailable, issuer_errors
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.settings import OidcSettings

log = structlog.get_logger(__name__)

# Bounds on what the issuer's documents may cost to read and hold.
MAX_DOCUMENT_BYTES = 512 * 1024
MAX_KEYS = 100
_KEY_TYPES: dict[str, type[Key]] = {"RS": RSAKey, "PS": RSAKey, "ES": ECKey, "Ed": OKPKey}


@dataclass(frozen=True, slots=True)
class Endpoints:
    """What the discovery document says (and ``jwks_url`` overrides)."""

    jwks_uri: str
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None


def key_type_for(alg: str) -> type[Key]:
    """The key type an algorithm verifies with (``RS256`` -> RSA, ``ES256`` -> EC, ...)."""
    return _KEY_TYPES[alg[:2]]


class Issuer:
    def __init__(
        self,
        settings: OidcSettings,
        client: httpx.AsyncClient | None = None,
        *,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert settings.issuer is not None
        self.settings = settings
        self.issuer = settings.issuer
        self._client = client or httpx.AsyncClient(timeout=settings.http_timeout_s)
        self._owns_client = client is None
        self._metrics = metrics
        self._clock = clock
        self._endpoints: Endpoints | None = None
        self._keys: list[Key] = []
        self._fetched_at: float | None = None  # the last successful fetch of the keys
        self._tried_at: float | None = None  # the last attempt, successful or not
        self._lock = asyncio.Lock()

    @property
    def client(self) -> httpx.AsyncClient:
        return self._client

    async def stop(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # -- discovery ------------------------------------------------------------------------

    async def endpoints(self) -> Endpoints:
        """The issuer's endpoints, from its discovery document (read once)."""
        if self._endpoints is not None:
            return self._endpoints
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = await self._get_json(url, "oidc discovery")
        if doc.get("issuer") != self.issuer:  # OpenID Connect Discovery 1.0, section 4.3
            raise IssuerUnavailable(
                f"the discovery document at {url} names issuer {doc.get('issuer')!r},"
                f" not {self.issuer!r}"
            )
        jwks_uri = self.settings.jwks_url or _str(doc, "jwks_uri")
        if jwks_uri is None:
            raise IssuerUnavailable(f"the discovery document at {url} names no jwks_uri")
        self._endpoints = Endpoints(
            jwks_uri=jwks_uri,
            authorization_endpoint=_str(doc, "authorization_endpoint"),
            token_endpoint=_str(doc, "token_endpoint"),
        )
        return self._endpoints

    async def _jwks_uri(self) -> str:
        if self.settings.jwks_url is not None:
            return self.settings.jwks_url  # no discovery needed to verify tokens
        return (await self.endpoints()).jwks_uri

    # -- keys -----------------------------------------------------------------------------

    async def warm(self) -> None:
        """Fetch the keys at start; a failure is logged, and verification tries again."""
        with contextlib.suppress(IssuerUnavailable):
            await self._refresh("initial")

    async def key(self, kid: str | None, alg: str) -> Key | None:
        """The issuer's key for ``kid`` that can verify ``alg`` (None: no such key, even
        after fetching the key set again where the interval allows). Raises
        ``IssuerUnavailable`` when no key set was ever fetched and fetching fails."""
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at >= self.settings.jwks_cache_s:
            await self._refresh("expired" if self._fetched_at is not None else "initial")
        found = self._find(kid, alg)
        if found is None:
            await self._refresh("unknown_kid")
            found = self._find(kid, alg)
        return found

    def _find(self, kid: str | None, alg: str) -> Key | None:
        wanted = key_type_for(alg)
        usable = [
            k
            for k in self._keys
            if isinstance(k, wanted) and k.get("use") in (None, "sig") and k.alg in (None, alg)
        ]
        if kid is None:  # allowed only when the choice is not a guess
            return usable[0] if len(usable) == 1 else None
        return next((k for k in usable if k.kid == kid), None)

    async def _refresh(self, why: str) -> None:
        """Fetch the key set, unless an attempt was made within the refetch interval (then
        the keys in hand are what there is)."""
        started = self._tried_at
        async with self._lock:
            if self._tried_at != started:
                return  # another request fetched (or tried) while this one waited
            now = self._clock()
            interval = self.settings.jwks_refetch_interval_s
            if self._tried_at is not None and now - self._tried_at < interval:
                if self._fetched_at is None:
                    raise IssuerUnavailable("the issuer's keys could not be fetched: retry")
                return
            self._tried_at = now
            try:
                keys = await self._fetch_keys()
            except IssuerUnavailable as exc:
                self._count_fetch("failure")
                log.warning("oidc_jwks_fetch_failed", reason=why, problem=str(exc)[:500],
                            keeping=len(self._keys))  # fmt: skip
                if self._fetched_at is None:
                    raise
                return
            self._count_fetch("success")
            before = {k.kid for k in self._keys}
            self._keys, self._fetched_at = keys, now
            after = {k.kid for k in keys}
            if before != after:
                log.info("oidc_jwks_fetched", reason=why, keys=len(keys),
                         added=sorted(str(k) for k in after - before)[:10],
                         removed=sorted(str(k) for k in before - after)[:10])  # fmt: skip

    async def _fetch_keys(self) -> list[Key]:
        uri = await self._jwks_uri()
        doc = await self._get_json(uri, "oidc jwks")
        raw = doc.get("keys")
        if not isinstance(raw, list):
            raise IssuerUnavailable(f"the key set at {uri} has no keys list")
        keys: list[Key] = []
        for entry in raw[:MAX_KEYS]:
            # Symmetric keys never verify here, and a key this library cannot read must
            # not cost the others (RFC 7517, section 5: ignore what is not understood).
            if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
                continue
            try:
                keys.append(JWKRegistry.import_key(entry))
            except (JoseError, ValueError, TypeError) as exc:
                log.warning("oidc_jwks_key_skipped", kid=str(entry.get("kid"))[:64],
                            problem=str(exc)[:200])  # fmt: skip
        return keys

    async def _get_json(self, url: str, doing: str) -> dict[str, Any]:
        with issuer_errors(doing):
            async with self._client.stream("GET", url, headers={"Accept": "application/json"}) as r:
                if r.status_code != 200:
                    raise IssuerUnavailable(f"{doing}: GET {url} answered {r.status_code}")
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise IssuerUnavailable(f"{doing}: {url} is over {MAX_DOCUMENT_BYTES} B")
        try:
            doc = orjson.loads(bytes(body))
        except orjson.JSONDecodeError as exc:
            raise IssuerUnavailable(f"{doing}: {url} is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise IssuerUnavailable(f"{doing}: {url} is not a JSON object")
        return doc

    def _count_fetch(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.oidc_jwks_fetches.labels(outcome=outcome).inc()


def _str(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    return value if isinstance(value, str) and value else None
