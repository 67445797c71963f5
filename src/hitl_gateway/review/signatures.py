"""Checking a decision record's signature as its partition's owner applies it.

A signed decision is accepted when its signature verifies with a trusted key
(review/signing.py), it has not expired and does not live longer than the settings allow, both
judged by the broker's timestamp (the decisions topic stamps records with
``LogAppendTime``, so a replay of a batch after a crash judges it exactly as before), and its
nonce has not been used by another record: each nonce is remembered in Redis with the
coordinates (partition, offset) of the record that used it first, until the signature expires,
so the same record applied again after a crash is not a replay, while a copy published again
is refused. An unsigned decision is accepted only for a domain whose policy says
``unsigned_decisions: accept``. Every refusal is audited by the applier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from hitl_gateway import headers
from hitl_gateway.errors import redis_errors
from hitl_gateway.redis_client import RedisWrapper
from hitl_gateway.review.signing import KeyRing, SignatureError, Signed, Signer, unsigned, verify
from hitl_gateway.settings import DecisionSettings, RedisSettings

LOG_APPEND_TIME = 1  # a record's timestamp type: set by the broker as it appended the record
NONCE_MARGIN_MS = 60_000  # a nonce is remembered this long past its signature's expiry


@dataclass(frozen=True, slots=True)
class Checked:
    """What the signature check found: a signer, unsigned (``signer`` None, no problem), or
    a problem (the refusal's message)."""

    signer: Signed | None = None
    problem: str | None = None


class Nonces(RedisWrapper):
    """Nonces in use: ``nonce:<key id>:<nonce>`` -> ``<partition>:<offset>`` of first use."""

    def __init__(self, settings: RedisSettings, client: aioredis.Redis | None = None) -> None:
        super().__init__(settings, client)
        self._p = settings.key_prefix

    async def first_use(self, signed: Signed, where: str, ttl_ms: int) -> str:
        """Claim the nonce for ``where``; returns the coordinates it was first used at."""
        key = f"{self._p}nonce:{signed.key_id}:{signed.nonce}"
        with redis_errors("redis nonce"):
            claimed = await self._r.set(key, where, nx=True, px=max(ttl_ms, 1_000))
            if claimed:
                return where
            first = await self._r.get(key)
        if first is None:  # expired between the two calls: this use is the first now
            return where
        return first.decode() if isinstance(first, bytes) else str(first)


class DecisionSignatures:
    def __init__(
        self, settings: DecisionSettings, keys: KeyRing, signer: Signer, nonces: Nonces
    ) -> None:
        self._keys = keys
        self._max_validity_ms = int(settings.max_validity_s * 1000)
        self._validity_ms = int(settings.validity_s * 1000)
        self.signer = signer  # the gateway's own: the API's decisions and re-signed forwards
        self._nonces = nonces

    async def check(self, record: Any, now_ms: int) -> Checked:
        """The signature check of one decision record (``now_ms``: the wall clock, for how
        long to remember its nonce)."""
        try:
            signed = verify(record.value, record.headers, self._keys)
        except SignatureError as exc:
            return Checked(problem=str(exc))
        if signed is None:
            return Checked()
        if getattr(record, "timestamp_type", 0) != LOG_APPEND_TIME:
            return Checked(
                problem="the decisions topic stamps records with the producer's clock"
                " (CreateTime); signatures are judged by the broker's: set"
                f" message.timestamp.type=LogAppendTime on {record.topic}"
                " (`hitl-gateway topics ensure`)"
            )
        at = int(record.timestamp)
        if at > signed.expires_ms:
            late = (at - signed.expires_ms) / 1000
            return Checked(problem=f"the signature expired {late:.1f} s before it was published")
        if signed.expires_ms - at > self._max_validity_ms:
            return Checked(
                problem=f"the signature is valid for {(signed.expires_ms - at) / 1000:.0f} s,"
                f" longer than the {self._max_validity_ms / 1000:.0f} s allowed"
            )
        where = f"{record.partition}:{record.offset}"
        ttl = signed.expires_ms - now_ms + NONCE_MARGIN_MS
        first = await self._nonces.first_use(signed, where, ttl)
        if first != where:
            return Checked(
                problem=f"replayed: nonce {signed.nonce} of key {signed.key_id} was used by the"
                f" decision at partition:offset {first}"
            )
        return Checked(signer=signed)

    def sign(self, value: bytes, now_ms: int, origin: str = "") -> list[tuple[str, bytes]]:
        """The gateway's signature headers for a decision it publishes or forwards."""
        return self.signer.headers(value, expires_ms=now_ms + self._validity_ms, origin=origin)

    def forwarded(self, record: Any, checked: Checked, now_ms: int) -> list[tuple[str, bytes]]:
        """The headers of a checked decision forwarded to its hold's partition: re-signed by
        the gateway (a new nonce; the first signer kept as the origin), or left unsigned."""
        rest = unsigned(record.headers)
        if checked.signer is None:
            return rest
        return rest + self.sign(record.value or b"", now_ms, origin=checked.signer.signer)


def signer_of(record_headers: Any) -> str | None:
    """The key id a record names as its signer (for audit events of refusals)."""
    for name, value in record_headers or ():
        if name == headers.SIG_KEY and value:
            try:
                return str(value.decode())
            except UnicodeDecodeError:
                return None
    return None
