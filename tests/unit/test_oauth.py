"""OAuth client credentials for SASL/OAUTHBEARER: one token shared until shortly before it
expires, refusals told apart from outages, without a network (httpx's mock transport)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import orjson
import pytest

from hitl_gateway.errors import TokenEndpointError
from hitl_gateway.oauth import ClientCredentialsTokenProvider, lifetime_s

URL = "https://idp.example/oauth2/token"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _endpoint(
    answer: Callable[[int], httpx.Response], seen: list[httpx.Request]
) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(len(seen))

    return httpx.MockTransport(handle)


def _token(n: int, expires_in: object = 300) -> httpx.Response:
    return httpx.Response(
        200, json={"access_token": f"token-{n}", "token_type": "Bearer", "expires_in": expires_in}
    )


def _provider(
    transport: httpx.MockTransport, clock: Clock, scope: str | None = "kafka"
) -> ClientCredentialsTokenProvider:
    return ClientCredentialsTokenProvider(
        URL, "hitl", "s3cret", scope, clock=clock, transport=transport
    )


async def test_one_token_serves_every_connection_until_shortly_before_it_expires() -> None:
    seen: list[httpx.Request] = []
    clock = Clock()
    provider = _provider(_endpoint(_token, seen), clock)
    assert await provider.token() == "token-1"
    clock.now += 239  # 300 s lifetime: used until 60 s (at most 20%) before the end
    assert await provider.token() == "token-1"
    clock.now += 2
    assert await provider.token() == "token-2"
    assert len(seen) == 2


async def test_the_request_is_the_client_credentials_grant_with_basic_authentication() -> None:
    seen: list[httpx.Request] = []
    await _provider(_endpoint(_token, seen), Clock()).token()
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == URL
    form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    assert form == {"grant_type": "client_credentials", "scope": "kafka"}
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"hitl:s3cret").decode()


async def test_concurrent_connections_share_one_request() -> None:
    seen: list[httpx.Request] = []
    provider = _provider(_endpoint(_token, seen), Clock())
    tokens = await asyncio.gather(*(provider.token() for _ in range(20)))
    assert set(tokens) == {"token-1"}
    assert len(seen) == 1


async def test_a_failed_refresh_keeps_the_token_while_it_is_valid_then_raises() -> None:
    seen: list[httpx.Request] = []
    clock = Clock()

    def answer(n: int) -> httpx.Response:
        return _token(n) if n == 1 else httpx.Response(503)

    provider = _provider(_endpoint(answer, seen), clock)
    assert await provider.token() == "token-1"
    clock.now += 250  # due for refresh, still valid: the endpoint fails, the old one serves
    assert await provider.token() == "token-1"
    clock.now += 100  # expired
    with pytest.raises(TokenEndpointError, match="answered HTTP 503") as failed:
        await provider.token()
    assert not failed.value.refused


async def test_a_refused_client_is_told_apart_with_the_endpoints_reason() -> None:
    def answer(_: int) -> httpx.Response:
        return httpx.Response(
            401, json={"error": "invalid_client", "error_description": "bad secret"}
        )

    provider = _provider(_endpoint(answer, []), Clock())
    with pytest.raises(TokenEndpointError) as refused:
        await provider.token()
    assert refused.value.refused
    assert refused.value.message == (
        f"the OAuth token endpoint {URL} refused client 'hitl' (HTTP 401, invalid_client: "
        "bad secret)"
    )
    assert "s3cret" not in refused.value.message


async def test_an_unreachable_endpoint_is_not_a_refusal() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    provider = _provider(httpx.MockTransport(fail), Clock())
    with pytest.raises(TokenEndpointError, match="could not get an OAuth token") as failed:
        await provider.token()
    assert not failed.value.refused


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"token_type": "Bearer"}, "without an access_token"),
        ({"access_token": "x", "token_type": "mac"}, "not a bearer token"),
    ],
)
async def test_answers_that_carry_no_bearer_token_are_refused(
    body: dict[str, str], words: str
) -> None:
    provider = _provider(_endpoint(lambda _: httpx.Response(200, json=body), []), Clock())
    with pytest.raises(TokenEndpointError, match=words):
        await provider.token()


def _jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def test_lifetime_comes_from_expires_in_else_the_jwt_exp_else_none() -> None:
    assert lifetime_s(300, "opaque", 0) == 300
    assert lifetime_s("120", "opaque", 0) == 120
    assert lifetime_s(None, _jwt({"exp": 1_600}), 1_000) == 600
    assert lifetime_s(None, _jwt({"exp": 900}), 1_000) == 0
    assert lifetime_s(None, "opaque", 1_000) == 0
    assert lifetime_s(True, "opaque", 1_000) == 0
    assert lifetime_s(None, "a.!!!.c", 1_000) == 0


async def test_a_token_without_a_lifetime_is_fetched_for_each_connection() -> None:
    seen: list[httpx.Request] = []
    provider = _provider(_endpoint(lambda n: _token(n, expires_in=None), seen), Clock())
    assert [await provider.token() for _ in range(3)] == ["token-1", "token-2", "token-3"]
