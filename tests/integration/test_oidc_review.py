"""Reviewers signed in by OpenID Connect, against a real gateway, broker and Redis and a
local issuer on 127.0.0.1 (keys the test generates, its key set and endpoints served over
HTTP): an OIDC reviewer lists their pool's queue and decides a held item (applied by the
partition's owner, which knows them only by id), is refused a pool their groups do not
grant, an expired or foreign token gets 401, the issuer's key rotation works mid-run, a
decision naming an OIDC reviewer who never published one is refused; the workspace signs in
through the authorization-code flow with PKCE (state and nonce single-use, bound to the
browser) and its session ends with the ID token, or when the groups file stops granting."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from hitl_gateway.settings import HttpSettings, OidcSettings, ReviewSettings

from ..oidc_issuer import AUDIENCE, CLIENT_ID, LocalIssuer, ServedIssuer, rsa_key
from .browser import chromium
from .gateways import serving, write_reviewers
from .kafka_io import CONFIGS, fresh_settings, produce, read_all, wait_until

GROUPS = """\
groups:
  clinicians-team: {pools: [clinicians]}
  counsel: {pools: [lawyers], domains: [legal-drafts]}
"""
SECRET = "workspace-client-secret"
# The callback as the browser would reach it through the gateway's public address; the test
# carries the issuer's redirect to the in-process gateway itself.
REDIRECT = "http://127.0.0.1/workspace/oidc/callback"


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with ServedIssuer(LocalIssuer(client_secret=SECRET)) as served:
        yield served


@dataclass
class Oidc:
    issuer: LocalIssuer
    http: httpx.AsyncClient
    settings: Any
    groups_file: Path

    def bearer(self, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.mint(**claims)}"}

    async def hold(self, item_id: str, who: dict[str, str]) -> dict[str, Any]:
        body = {"id": item_id, "domain": "clinical-summaries", "confidence": 0.9,
                "output": {"text": item_id}}  # fmt: skip
        await produce(self.settings.topics.outputs, [(item_id.encode(), orjson.dumps(body))])

        async def visible() -> bool:
            return (await self.http.get(f"/v1/items/{item_id}", headers=who)).status_code == 200

        await wait_until(visible, timeout_s=30, interval_s=0.05)
        found: dict[str, Any] = (await self.http.get(f"/v1/items/{item_id}", headers=who)).json()
        return found


@pytest.fixture
async def oidc(issuer: LocalIssuer, tmp_path: Path) -> AsyncIterator[Oidc]:
    write_reviewers(tmp_path / "reviewers.yaml", {"ana": ["clinicians"]})
    groups = tmp_path / "groups.yaml"
    groups.write_text(GROUPS)
    settings = fresh_settings(policy_dir=CONFIGS / "policies").model_copy(update={
        "review": ReviewSettings(reviewers_file=tmp_path / "reviewers.yaml",
                                 reload_interval_s=0.3),
        "oidc": OidcSettings(issuer=issuer.url, audience=AUDIENCE, groups_file=groups,
                             client_id=CLIENT_ID, client_secret=SECRET, redirect_url=REDIRECT,
                             jwks_refetch_interval_s=0.1),
    })  # fmt: skip
    async with serving(settings) as (_, http):
        yield Oidc(issuer, http, settings, groups)


async def test_an_oidc_reviewer_lists_decides_and_is_refused_where_not_granted(
    oidc: Oidc,
) -> None:
    s, issuer = oidc, oidc.issuer
    who = s.bearer(sub="dr-oidc", groups=["clinicians-team", "unmapped"])
    item = await s.hold("o1", who)
    page = await s.http.get("/v1/pools/clinicians/items", headers=who)
    assert page.status_code == 200, page.text
    assert [i["item_id"] for i in page.json()["items"]] == ["o1"]
    other = await s.http.get("/v1/pools/lawyers/items", headers=who)
    assert other.status_code == 403
    body = {"decision_id": "d-o1", "verdict": "approve", "content_hash": item["content_hash"]}
    decided = await s.http.post("/v1/items/o1/decisions", headers=who, json=body)
    assert (decided.status_code, decided.json()["state"]) == (200, "approved"), decided.text
    delivered = await read_all(s.settings.topics.delivered)
    assert [r.key for r in delivered] == [b"o1"]
    trail = [orjson.loads(r.value) for r in await read_all(s.settings.topics.audit)]
    assert any(e["type"] == "decided" and e.get("reviewer") == "dr-oidc" for e in trail), trail

    # Tokens that prove nothing: 401, saying why; a valid one granting nothing: 403.
    url = "/v1/pools/clinicians/items"
    expired = await s.http.get(url, headers=s.bearer(sub="dr-oidc", groups=["clinicians-team"],
                                                     exp=int(time.time()) - 120))  # fmt: skip
    assert expired.status_code == 401
    assert "expired" in expired.json()["detail"]
    assert expired.headers["WWW-Authenticate"].startswith("Bearer")
    foreign = await s.http.get(url, headers=s.bearer(aud="other", groups=["clinicians-team"]))
    assert foreign.status_code == 401, "a token for another audience was accepted"
    assert "aud" in foreign.json()["detail"]
    forged = s.issuer.mint(key=rsa_key("k1"), groups=["clinicians-team"])  # same kid, other key
    refused = await s.http.get(url, headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401
    nothing = await s.http.get(url, headers=s.bearer(sub="dr-none", groups=["unmapped"]))
    assert nothing.status_code == 403
    assert "none of its 1 groups" in nothing.json()["detail"]
    clash = await s.http.get(url, headers=s.bearer(sub="ana", groups=["clinicians-team"]))
    assert clash.status_code == 403  # the reviewers file's ana is not the issuer's
    static = await s.http.get(url, headers={"Authorization": "Bearer not-a-token"})
    assert static.status_code == 401

    # The issuer rotates its key mid-run: tokens signed with the new one work at once.
    fetched = issuer.jwks_requests
    issuer.rotate(rsa_key("k2"))
    who = s.bearer(sub="dr-oidc", groups=["clinicians-team"])
    item = await s.hold("o2", who)
    assert issuer.jwks_requests == fetched + 1
    decided = await s.http.post("/v1/items/o2/decisions", headers=who, json={
        "decision_id": "d-o2", "verdict": "reject", "content_hash": item["content_hash"],
        "reason": "unsafe"})  # fmt: skip
    assert (decided.status_code, decided.json()["state"]) == (200, "rejected"), decided.text


async def test_a_topic_decision_for_an_unknown_oidc_reviewer_is_refused(oidc: Oidc) -> None:
    s = oidc
    who = s.bearer(sub="dr-oidc", groups=["clinicians-team"])
    item = await s.hold("g1", who)
    # Nobody named dr-ghost ever published a decision through the API: the applier knows no
    # grants for them, whatever the record claims.
    forged = {"decision_id": "ghost-1", "item_id": "g1", "reviewer": "dr-ghost",
              "verdict": "approve", "content_hash": item["content_hash"]}  # fmt: skip
    await produce(s.settings.topics.review_decisions, [(b"g1", orjson.dumps(forged))])

    async def refused() -> bool:
        trail = [orjson.loads(r.value) for r in await read_all(s.settings.topics.audit)]
        return any(e.get("refusal") == "not_allowed" and e.get("reviewer") == "dr-ghost"
                   for e in trail)  # fmt: skip

    await wait_until(refused, timeout_s=30)
    assert (await s.http.get("/v1/items/g1", headers=who)).status_code == 200  # still held


async def _sign_in(s: Oidc, http: httpx.AsyncClient) -> httpx.Response:
    """The browser's part of the code flow: to the issuer and back to the gateway."""
    start = await http.get("/workspace/oidc/start")
    assert start.status_code == 303, start.text
    authorize = start.headers["location"]
    assert authorize.startswith(f"{s.issuer.url}/authorize?")
    assert "code_challenge_method=S256" in authorize
    at_issuer = await http.get(authorize)  # the issuer signs its user in and sends them back
    assert at_issuer.status_code == 302, at_issuer.text
    back = urlsplit(at_issuer.headers["location"])
    assert f"http://{back.netloc}{back.path}" == REDIRECT
    return await http.get(f"{back.path}?{back.query}")


async def test_the_workspace_signs_in_with_the_code_flow(oidc: Oidc) -> None:
    s, issuer = oidc, oidc.issuer
    login = await s.http.get("/workspace/login")
    assert 'data-testid="oidc-sign-in"' in login.text
    issuer.user = {"sub": "dr-web", "groups": ["clinicians-team"]}
    who = s.bearer(sub="dr-web", groups=["clinicians-team"])
    item = await s.hold("w1", who)
    async with httpx.AsyncClient(base_url=str(s.http.base_url), timeout=30) as browser:
        signed = await _sign_in(s, browser)
        assert signed.status_code == 200, signed.text
        assert "dr-web" in signed.text
        assert "hitl_session" in browser.cookies
        assert issuer.token_requests == 1  # the code exchanged, with the client secret
        home = await browser.get("/workspace/")
        assert home.status_code == 200
        assert "dr-web" in home.text
        assert "clinicians" in home.text

        # Decide through the workspace: applied like any decision, as dr-web.
        page = await browser.get("/workspace/items/w1")
        csrf = re.search(r'data-csrf="([^"]+)"', page.text)
        assert csrf is not None
        result = await browser.post("/workspace/items/w1/decide", data={
            "csrf": csrf.group(1), "verdict": "approve", "decision_id": uuid.uuid4().hex,
            "content_hash": item["content_hash"]})  # fmt: skip
        assert result.status_code == 200
        assert "approved" in result.text, result.text

        # The groups file stops granting dr-web's group: the session ends.
        s.groups_file.write_text("groups:\n  counsel: {pools: [lawyers]}\n")

        async def ended() -> bool:
            return (await browser.get("/workspace/")).status_code == 303

        await wait_until(ended, timeout_s=5, interval_s=0.1)
        s.groups_file.write_text(GROUPS)
        await asyncio.sleep(0.7)  # one reload interval, twice over

    async with httpx.AsyncClient(base_url=str(s.http.base_url), timeout=30) as browser:
        start = await browser.get("/workspace/oidc/start")
        at_issuer = await browser.get(start.headers["location"])
        back = urlsplit(at_issuer.headers["location"])
        callback = f"{back.path}?{back.query}"
        # Another browser (no flow cookie) with the same callback gets nothing, and
        # spends nothing: the browser that started the sign-in completes it, once.
        async with httpx.AsyncClient(base_url=str(s.http.base_url)) as other:
            stolen = await other.get(callback)
        assert stolen.status_code == 401
        assert "another browser" in stolen.text
        assert (await browser.get(callback)).status_code == 200
        replay = await browser.get(callback)
        assert replay.status_code == 401
        assert "expired or was already used" in replay.text

    # A short ID token: the session ends with it.
    issuer.user = {"sub": "dr-brief", "groups": ["clinicians-team"], "exp": int(time.time()) + 3}
    async with httpx.AsyncClient(base_url=str(s.http.base_url), timeout=30) as browser:
        assert (await _sign_in(s, browser)).status_code == 200
        assert (await browser.get("/workspace/")).status_code == 200

        async def expired() -> bool:
            return (await browser.get("/workspace/")).status_code == 303

        await wait_until(expired, timeout_s=8, interval_s=0.2)

    # Pasting a token the API accepts into the sign-in form works too.
    async with httpx.AsyncClient(base_url=str(s.http.base_url), timeout=30) as browser:
        token = issuer.mint(sub="dr-paste", groups=["clinicians-team"])
        pasted = await browser.post("/workspace/login", data={"token": token})
        assert pasted.status_code == 303, pasted.text
        home = await browser.get("/workspace/")
        assert "dr-paste" in home.text
        wrong = await browser.post("/workspace/login",
                                   data={"token": issuer.mint(aud="someone-else")})  # fmt: skip
        assert wrong.status_code == 401


async def test_a_browser_signs_in_with_the_issuer(issuer: LocalIssuer, tmp_path: Path) -> None:
    """In a real Chromium: the sign-in page offers the organisation's sign-in, the click goes
    to the issuer and back, and the workspace greets the reviewer with their pools.
    Screenshots of both pages go to ``HITL_SCREENSHOTS_DIR`` when set."""
    with socket.socket() as probe:  # the redirect URL names the gateway's own port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    write_reviewers(tmp_path / "reviewers.yaml", {"ana": ["clinicians"]})
    groups = tmp_path / "groups.yaml"
    groups.write_text(GROUPS)
    settings = fresh_settings(policy_dir=CONFIGS / "policies").model_copy(update={
        "http": HttpSettings(port=port),
        "review": ReviewSettings(reviewers_file=tmp_path / "reviewers.yaml"),
        "oidc": OidcSettings(issuer=issuer.url, audience=AUDIENCE, groups_file=groups,
                             client_id=CLIENT_ID, client_secret=SECRET,
                             redirect_url=f"{base}/workspace/oidc/callback"),
    })  # fmt: skip
    issuer.user = {"sub": "dr-browser", "groups": ["clinicians-team"]}
    shots = Path(os.environ.get("HITL_SCREENSHOTS_DIR") or tmp_path)
    async with serving(settings), chromium() as browser:
        context = await browser.new_context(viewport={"width": 1360, "height": 900})
        page = await context.new_page()
        await page.goto(f"{base}/workspace/login")
        await page.screenshot(path=str(shots / "workspace-login-oidc.png"))
        await page.click('[data-testid="oidc-sign-in"]')
        # To the issuer, which signs dr-browser in and sends the browser back to the callback,
        # whose page moves on to the workspace by itself (a refresh at once: waiting for the
        # callback page's own load raced with it and could miss it).
        await page.wait_for_url(f"{base}/workspace/")
        body = await page.inner_text("body")
        assert "dr-browser" in body
        assert "clinicians" in body
        assert issuer.token_requests == 1
        await page.screenshot(path=str(shots / "workspace-home-oidc.png"), full_page=True)
