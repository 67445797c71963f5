"""Verifying the OIDC issuer's JWTs (joserfc): the signature against the issuer's keys
(review/issuer.py), then ``iss``, ``aud``, ``exp``, ``nbf`` and ``iat`` with the leeway, and
for the workspace's ID tokens the ``nonce`` and ``azp``.

Only the algorithms the settings allow, all asymmetric: ``none`` and HS* never verify, and
the key must be of the algorithm's type. Apart from the key lookup this is CPU-light: one
signature check per request, bounded in size before any parsing.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
    SecurityWarning,
)

from hitl_gateway.errors import GatewayError
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.review.issuer import Issuer
from hitl_gateway.settings import OidcSettings

# "EdDSA" is the name RFC 9864 deprecates in favour of "Ed25519"; issuers still sign with
# it, and the settings name which of the two are accepted.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)

MAX_TOKEN_BYTES = 16 * 1024  # many groups make large tokens; anything past this is not one
_PART = re.compile(r"^[A-Za-z0-9_-]+$")


class TokenError(GatewayError):
    """A token that proves nothing (401). ``reason`` is a bounded label
    (``hitl_oidc_tokens_total``); ``message`` says what is wrong, without echoing the token."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def looks_like_jwt(credential: str) -> bool:
    """Three dot-separated base64url parts (a reviewers-file token has no dot)."""
    parts = credential.split(".")
    return len(parts) == 3 and all(_PART.match(p) for p in parts)


def unverified_header(token: str) -> dict[str, Any]:
    """The token's protected header, read before anything is trusted (to pick the key)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError("malformed", f"the token is over {MAX_TOKEN_BYTES} bytes")
    if not looks_like_jwt(token):
        raise TokenError("malformed", "the token is not a signed JWT (three base64url parts)")
    first = token.split(".", 1)[0]
    try:
        header = orjson.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise TokenError("malformed", "the token's header is not base64url JSON") from exc
    if not isinstance(header, dict):
        raise TokenError("malformed", "the token's header is not a JSON object")
    return header


class Verifier:
    def __init__(
        self,
        settings: OidcSettings,
        issuer: Issuer,
        *,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert settings.issuer is not None
        assert settings.audience is not None
        self.settings = settings
        self.issuer = issuer
        self._metrics = metrics
        self._clock = clock

    async def verify(
        self,
        token: str,
        *,
        audience: str | None = None,
        nonce: str | None = None,
        authorized_party: str | None = None,
    ) -> dict[str, Any]:
        """The token's claims once everything checks out; ``TokenError`` otherwise (and
        ``IssuerUnavailable`` when the issuer's keys cannot be had). ``audience``: what
        ``aud`` must name (the API's audience by default); ``nonce`` and
        ``authorized_party`` (``azp``): ID tokens of the workspace's sign-in."""
        try:
            claims = await self._verify(token, audience or self.settings.audience, nonce,
                                        authorized_party)  # fmt: skip
        except TokenError as exc:
            self._count(exc.reason)
            raise
        self._count("accepted")
        return claims

    async def _verify(
        self, token: str, audience: str | None, nonce: str | None, azp: str | None
    ) -> dict[str, Any]:
        header = unverified_header(token)
        alg = header.get("alg")
        allowed = self.settings.algorithms
        if not isinstance(alg, str) or alg not in allowed:
            raise TokenError("algorithm", f"alg {str(alg)[:16]!r} is not accepted"
                             f" (accepted: {', '.join(allowed)})")  # fmt: skip
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenError("malformed", "the token's kid is not a string")
        key = await self.issuer.key(kid, alg)
        if key is None:
            raise TokenError("unknown_key", f"no key {str(kid)[:64]!r} for {alg} in the"
                             " issuer's key set")  # fmt: skip
        try:
            claims = jwt.decode(token, key, algorithms=[alg]).claims
        except BadSignatureError as exc:
            raise TokenError("signature", "the token's signature does not verify") from exc
        except JoseError as exc:
            raise TokenError("malformed", f"the token cannot be read: {exc.error}") from exc
        check_claims(claims, self.settings, audience, now=int(self._clock()))
        if nonce is not None and not _same(claims.get("nonce"), nonce):
            raise TokenError("nonce", "the ID token's nonce is not this sign-in's")
        if azp is not None:
            check_azp(claims, azp)
        return claims

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.oidc_tokens.labels(outcome=outcome).inc()


def check_claims(
    claims: dict[str, Any], settings: OidcSettings, audience: str | None, *, now: int
) -> None:
    """``iss`` is the issuer, ``aud`` names ``audience``, ``exp`` is required and not past,
    ``nbf`` and ``iat`` are not in the future (each with the leeway)."""
    registry = jwt.JWTClaimsRegistry(
        now=now,
        leeway=settings.leeway_s,
        iss={"essential": True, "value": settings.issuer or ""},
        aud={"essential": True, "value": audience or ""},
        exp={"essential": True},
    )
    try:
        registry.validate(claims)
    except ExpiredTokenError as exc:
        when = datetime.fromtimestamp(claims["exp"], UTC).isoformat(timespec="seconds")
        raise TokenError("expired", f"the token expired at {when}") from exc
    except MissingClaimError as exc:
        raise TokenError("claims", f"the token has no {exc.claim}") from exc
    except ClaimError as exc:
        raise _claim_error(exc.claim) from exc


def _claim_error(claim: str) -> TokenError:
    if claim in ("nbf", "iat"):
        return TokenError("not_yet_valid", f"the token is not valid yet ({claim} is ahead)")
    if claim == "iss":
        return TokenError("issuer", "the token is not from the configured issuer")
    if claim == "aud":
        return TokenError("audience", "the token is not issued for this gateway (aud)")
    return TokenError("claims", f"the token's {claim} is invalid")


def check_azp(claims: dict[str, Any], client_id: str) -> None:
    """OpenID Connect Core 3.1.3.7: an ID token for several audiences names its authorized
    party, and an authorized party other than this client is refused."""
    aud = claims.get("aud")
    several = isinstance(aud, list) and len(aud) > 1
    azp = claims.get("azp")
    if (several and azp is None) or (azp is not None and not _same(azp, client_id)):
        raise TokenError("audience", "the ID token was issued to another client (azp)")


def _same(value: object, expected: str) -> bool:
    return isinstance(value, str) and hmac.compare_digest(value.encode(), expected.encode())
