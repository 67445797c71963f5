"""Bounds on the review API, against the real broker and Redis: a body over the limit is
refused 413 before it is read, a reviewer past the request rate gets 429 with Retry-After
(others are not slowed, and the window ends), and a token revoked in the reviewers file
stops working within seconds, for the API and for a workspace session, without a restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from hitl_gateway.review.auth import new_token
from hitl_gateway.settings import ReviewSettings

from .gateways import serving, write_reviewers
from .kafka_io import CONFIGS, fresh_settings, wait_until

GRANTS = {"ana": ["clinicians"], "eve": ["general-graders"]}
LIMIT = 20
WINDOW_S = 3.0


async def test_a_body_past_the_limit_and_a_burst_are_refused(tmp_path: Path) -> None:
    tokens = write_reviewers(tmp_path / "reviewers.yaml", GRANTS)
    review = ReviewSettings(reviewers_file=tmp_path / "reviewers.yaml",
                            rate_limit_requests=LIMIT, rate_limit_window_s=WINDOW_S)  # fmt: skip
    settings = fresh_settings(policy_dir=CONFIGS / "policies").model_copy(update={"review": review})

    def auth(who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[who]}"}

    async with serving(settings) as (gateway, http):
        # 10 MB: refused while it streams in, naming the limit; the server stays up.
        body = b"{" + b" " * 10_000_000 + b"}"
        headers = {**auth("ana"), "Content-Type": "application/json"}
        huge = await http.post("/v1/items/x/decisions", content=body, headers=headers)
        assert huge.status_code == 413, huge.text
        assert "bytes" in huge.text

        # A burst: the first LIMIT requests in the window are served, the rest get 429.
        url = "/v1/pools/clinicians/items"
        burst = await asyncio.gather(*(http.get(url, headers=auth("ana")) for _ in range(35)))
        codes = [r.status_code for r in burst]
        assert codes.count(200) == LIMIT, codes  # the 413 above was refused before any count
        limited = [r for r in burst if r.status_code == 429]
        assert len(limited) == 35 - LIMIT
        retry = int(limited[0].headers["Retry-After"])
        assert 1 <= retry <= WINDOW_S
        assert f"more than {LIMIT} requests" in limited[0].text
        # Another reviewer is not slowed by it.
        other = await http.get("/v1/pools/general-graders/items", headers=auth("eve"))
        assert other.status_code == 200
        limited_total = gateway.metrics.registry.get_sample_value("hitl_api_requests_limited_total")
        assert limited_total == len(limited)
        # The window ends.
        await asyncio.sleep(retry + 0.2)
        again = await http.get(url, headers=auth("ana"))
        assert again.status_code == 200, again.text


async def test_a_revoked_token_stops_working_within_seconds(tmp_path: Path) -> None:
    path = tmp_path / "reviewers.yaml"
    tokens = write_reviewers(path, GRANTS)
    review = ReviewSettings(reviewers_file=path, reload_interval_s=0.5)
    settings = fresh_settings(policy_dir=CONFIGS / "policies").model_copy(update={"review": review})
    async with serving(settings) as (gateway, http):
        ana = {"Authorization": f"Bearer {tokens['ana']}"}
        url = "/v1/pools/clinicians/items"
        assert (await http.get(url, headers=ana)).status_code == 200
        # ana signs in to the workspace: a session cookie.
        signed = await http.post("/workspace/login", data={"token": tokens["ana"]})
        assert signed.status_code == 303, signed.text
        assert "hitl_session" in http.cookies  # the client sends it from now on
        home = await http.get("/workspace/")
        assert home.status_code == 200
        assert "ana" in home.text

        # An invalid file is refused: the reviewers in force stay.
        path.write_text("reviewers: [{id: ana}]\n")
        await asyncio.sleep(1.2)
        assert (await http.get(url, headers=ana)).status_code == 200
        failed = gateway.metrics.registry.get_sample_value(
            "hitl_reviewers_reloads_total", {"outcome": "failure"}
        )
        assert failed == 1

        # ana's token is replaced (revoked); eve stays. Written as a Secret volume does it:
        # a new file renamed over the old one.
        _, new_digest = new_token()
        fresh = write_reviewers(tmp_path / "next.yaml", {"eve": ["general-graders"]})
        text = (tmp_path / "next.yaml").read_text().rstrip("\n")
        text += f"\n  - {{id: ana, token_sha256: {new_digest}, pools: [clinicians]}}\n"
        (tmp_path / "next.yaml").write_text(text)
        revoked_at = time.monotonic()
        (tmp_path / "next.yaml").replace(path)

        async def refused() -> bool:
            return (await http.get(url, headers=ana)).status_code == 401

        await wait_until(refused, timeout_s=5, interval_s=0.1)
        took = time.monotonic() - revoked_at
        assert took < 3, f"the revoked token worked for {took:.1f} s"
        # The session made with the old token has ended too.
        page = await http.get("/workspace/")
        assert page.status_code == 303
        assert page.headers["location"].endswith("/login")
        # eve's new token works at once.
        eve = await http.get(
            "/v1/pools/general-graders/items", headers={"Authorization": f"Bearer {fresh['eve']}"}
        )
        assert eve.status_code == 200
