"""The OIDC verifier against a local issuer whose keys the tests generate (served through
httpx's mock transport: no network): valid tokens of each accepted algorithm; expired, not
yet valid, wrong audience, wrong issuer, wrong key; an unknown key id fetched once (key
rotation) and a flood of them fetched no more often than the interval; ``alg: none`` and
HS256 signed with the public key refused; the issuer unreachable."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from hitl_gateway.errors import IssuerUnavailable
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.review.issuer import Issuer
from hitl_gateway.review.oidc import TokenError, Verifier, looks_like_jwt
from hitl_gateway.settings import OidcSettings

from ..oidc_issuer import AUDIENCE, CLIENT_ID, LocalIssuer, ec_key, ed_key, rsa_key


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def settings(issuer: LocalIssuer, **overrides: Any) -> OidcSettings:
    return OidcSettings(issuer=issuer.url, audience=AUDIENCE, groups_file=Path("groups.yaml"),
                        **overrides)  # fmt: skip


class Setup:
    def __init__(self, issuer: LocalIssuer | None = None, **overrides: Any) -> None:
        self.issuer = issuer or LocalIssuer()
        self.clock = Clock()
        self.metrics = GatewayMetrics(CollectorRegistry())
        s = settings(self.issuer, **overrides)
        client = httpx.AsyncClient(transport=self.issuer.transport())
        self.verifier = Verifier(
            s, Issuer(s, client, metrics=self.metrics, clock=self.clock), metrics=self.metrics
        )

    async def refused(self, token: str, **kwargs: Any) -> str:
        with pytest.raises(TokenError) as caught:
            await self.verifier.verify(token, **kwargs)
        return caught.value.reason

    def counted(self, outcome: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            "hitl_oidc_tokens_total", {"outcome": outcome}
        )


@pytest.mark.parametrize("make_key", [rsa_key, ec_key, ed_key])
async def test_a_valid_token_of_each_algorithm_is_accepted(make_key: Any) -> None:
    key = make_key("k1")
    s = Setup(LocalIssuer(signing=key))
    claims = await s.verifier.verify(s.issuer.mint(groups=["clinicians-team"]))
    assert claims["sub"] == "dr-oidc"
    assert claims["groups"] == ["clinicians-team"]
    assert s.counted("accepted") == 1


async def test_expiry_and_not_yet_valid_with_the_leeway() -> None:
    s = Setup(leeway_s=60)
    now = int(time.time())
    assert await s.refused(s.issuer.mint(exp=now - 120)) == "expired"
    await s.verifier.verify(s.issuer.mint(exp=now - 30))  # within the clock-skew leeway
    assert await s.refused(s.issuer.mint(nbf=now + 300)) == "not_yet_valid"
    assert await s.refused(s.issuer.mint(iat=now + 300)) == "not_yet_valid"
    await s.verifier.verify(s.issuer.mint(nbf=now + 30, iat=now + 30))
    assert await s.refused(s.issuer.mint(exp=None)) == "claims"  # exp is required
    assert s.counted("expired") == 1


async def test_wrong_audience_and_wrong_issuer_are_refused() -> None:
    s = Setup()
    assert await s.refused(s.issuer.mint(aud="another-service")) == "audience"
    assert await s.refused(s.issuer.mint(aud=None)) == "claims"
    await s.verifier.verify(s.issuer.mint(aud=["another-service", AUDIENCE]))
    assert await s.refused(s.issuer.mint(iss="http://127.0.0.1:2")) == "issuer"
    assert s.counted("audience") == 1


async def test_a_token_signed_by_another_key_with_the_same_kid_is_refused() -> None:
    s = Setup()
    impostor = rsa_key("k1")  # same kid, another key: as a forger would try
    assert await s.refused(s.issuer.mint(key=impostor)) == "signature"
    assert await s.refused(s.issuer.mint(key=ec_key("k1"))) == "unknown_key"  # EC, kid of RSA


async def test_alg_none_and_hs256_with_the_public_key_are_refused() -> None:
    s = Setup()
    good = s.issuer.mint()
    _, payload, _ = good.split(".")

    def b64(value: dict[str, Any]) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}."
    assert not looks_like_jwt(unsigned)
    assert await s.refused(unsigned) == "malformed"
    assert await s.refused(f"{b64({'alg': 'none'})}.{payload}.c2ln") == "algorithm"

    # The classic confusion: HMAC "signed" with the issuer's public key, which anyone has.
    public_pem = s.issuer.signing.as_pem(private=False)
    head = b64({"alg": "HS256", "kid": "k1"})
    mac = hmac.new(public_pem, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{head}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert await s.refused(forged) == "algorithm"
    with pytest.raises(ValidationError):
        settings(s.issuer, algorithms=("HS256",))
    with pytest.raises(ValidationError):
        settings(s.issuer, algorithms=("none",))
    assert s.counted("algorithm") == 2


async def test_only_the_configured_algorithms_are_accepted() -> None:
    s = Setup(LocalIssuer(signing=ec_key("k1")), algorithms=("RS256",))
    assert await s.refused(s.issuer.mint()) == "algorithm"


async def test_key_rotation_refetches_once_and_a_flood_of_unknown_kids_does_not() -> None:
    s = Setup(jwks_refetch_interval_s=10)
    await s.verifier.verify(s.issuer.mint())
    assert s.issuer.jwks_requests == 1
    await s.verifier.verify(s.issuer.mint())
    assert s.issuer.jwks_requests == 1  # cached

    s.clock.now += 11
    k2 = rsa_key("k2")
    s.issuer.rotate(k2)  # the issuer publishes k2 beside k1 and signs with it
    await s.verifier.verify(s.issuer.mint())  # unknown kid k2: fetched again, accepted
    assert s.issuer.jwks_requests == 2

    forged = [s.issuer.mint(key=rsa_key(f"bogus-{n}")) for n in range(30)]
    for token in forged:
        assert await s.refused(token) == "unknown_key"
    assert s.issuer.jwks_requests == 2  # within the interval of the last fetch: none
    s.clock.now += 11
    assert await s.refused(forged[0]) == "unknown_key"
    assert s.issuer.jwks_requests == 3  # one per interval, whatever the flood

    # k2 withdrawn (k3 alone published): once the key set is fetched again, k2 is refused.
    s.issuer.rotate(rsa_key("k3"), keep_old=False)
    s.clock.now += 301
    assert await s.refused(s.issuer.mint(key=k2)) == "unknown_key"
    await s.verifier.verify(s.issuer.mint())


async def test_the_key_set_expires_and_is_fetched_again() -> None:
    s = Setup(jwks_cache_s=60)
    await s.verifier.verify(s.issuer.mint())
    s.clock.now += 61
    await s.verifier.verify(s.issuer.mint())
    assert s.issuer.jwks_requests == 2
    fetched = s.metrics.registry.get_sample_value(
        "hitl_oidc_jwks_fetches_total", {"outcome": "success"}
    )
    assert fetched == 2


async def test_a_token_without_kid_is_accepted_only_when_one_key_fits() -> None:
    s = Setup()
    await s.verifier.verify(s.issuer.mint(header={"kid": None}))
    s.issuer.rotate(rsa_key("k2"))
    s.clock.now += 301  # the cached set expires: two keys now, and no kid to choose by
    assert await s.refused(s.issuer.mint(header={"kid": None})) == "unknown_key"


async def test_an_unreachable_issuer_is_unavailable_and_known_keys_keep_working() -> None:
    issuer = LocalIssuer()
    broken = {"on": True}

    def respond(request: httpx.Request) -> httpx.Response:
        if broken["on"]:
            raise httpx.ConnectError("refused", request=request)
        found = issuer.handle(request.method, request.url.raw_path.decode(), b"", {})
        return httpx.Response(found.status, headers=found.headers, content=found.body)

    s = Setup(issuer, jwks_cache_s=60, jwks_refetch_interval_s=10)
    s.verifier.issuer._client = httpx.AsyncClient(transport=httpx.MockTransport(respond))
    with pytest.raises(IssuerUnavailable):
        await s.verifier.verify(issuer.mint())
    with pytest.raises(IssuerUnavailable, match="retry"):  # not fetched again at once
        await s.verifier.verify(issuer.mint())
    broken["on"] = False
    s.clock.now += 11
    await s.verifier.verify(issuer.mint())
    broken["on"] = True
    s.clock.now += 61  # the cache is stale and the issuer down: the keys in hand still serve
    await s.verifier.verify(issuer.mint())


async def test_an_id_token_is_checked_for_this_client_and_this_sign_in() -> None:
    s = Setup()
    token = s.issuer.mint(aud=CLIENT_ID, nonce="n-1")
    kwargs = {"audience": CLIENT_ID, "authorized_party": CLIENT_ID}
    await s.verifier.verify(token, nonce="n-1", **kwargs)
    assert await s.refused(token, nonce="n-2", **kwargs) == "nonce"
    several = s.issuer.mint(aud=[CLIENT_ID, "other"], nonce="n-1")
    assert await s.refused(several, nonce="n-1", **kwargs) == "audience"  # no azp
    named = s.issuer.mint(aud=[CLIENT_ID, "other"], azp="other", nonce="n-1")
    assert await s.refused(named, nonce="n-1", **kwargs) == "audience"


async def test_oversized_and_garbled_tokens_are_malformed() -> None:
    s = Setup()
    assert await s.refused("a" * 20_000) == "malformed"
    assert await s.refused("bm90LWpzb24.e30.c2ln") == "malformed"
    assert s.issuer.jwks_requests == 0  # nothing fetched for tokens that cannot be one
