"""The reviewer workspace in a real headless Chromium (Debian's, driven by Playwright),
against the real gateway, broker and Redis: sign in, take a held clinical summary, edit it
and find the edit on the delivered topic; two browsers racing for one item; a lease that runs
out puts the item back; a blind item never shows the judge; an output carrying HTML renders
inert; a reviewer without the pool sees nothing of it.

Screenshots of the queue and the item page go to ``HITL_SCREENSHOTS_DIR`` when it is set
(``make screenshots`` writes the ones in docs/images), else to the test's temporary folder.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.async_api import Browser, Page

from hitl_gateway.admin import ensure_topics
from hitl_gateway.settings import ReviewSettings, Settings

from .browser import chromium
from .gateways import start_gateway, write_reviewers
from .kafka_io import CONFIGS, delete_topics, fresh_settings, produce, read_all, wait_until

GRANTS = {
    "ana": ["clinicians"],
    "ben": ["clinicians"],
    "cal": ["calibration-graders"],
    "eve": ["general-graders"],
}
GRADED = """\
domain: graded
sampling: {rate: 1.0, pool: calibration-graders, blind: true, rubric: overall-quality}
"""


async def _configs(tmp_path: Path, lease_s: float) -> tuple[Settings, dict[str, str]]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "pools.yaml").write_text((CONFIGS / "pools.yaml").read_text())
    (tmp_path / "routing.yaml").write_text((CONFIGS / "routing.yaml").read_text())
    for name in ("clinical-summaries.yaml", "support-chat.yaml"):
        (tmp_path / "policies" / name).write_text((CONFIGS / "policies" / name).read_text())
    (tmp_path / "policies" / "graded.yaml").write_text(GRADED)
    tokens = write_reviewers(tmp_path / "reviewers.yaml", GRANTS)
    review = ReviewSettings(reviewers_file=tmp_path / "reviewers.yaml", lease_s=lease_s)
    settings = fresh_settings(policy_dir=tmp_path / "policies").model_copy(
        update={"review": review}
    )
    await ensure_topics(settings)
    return settings, tokens


def _shots(tmp_path: Path) -> Path:
    return Path(os.environ.get("HITL_SCREENSHOTS_DIR") or tmp_path)


async def _sign_in(browser: Browser, base: str, token: str, shot: Path | None = None) -> Page:
    context = await browser.new_context(viewport={"width": 1360, "height": 900})
    page = await context.new_page()
    await page.goto(f"{base}/workspace/login")
    if shot is not None:
        await page.screenshot(path=str(shot))
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/workspace/")
    return page


async def _hold(settings: Settings, item_id: str, domain: str, **fields: Any) -> None:
    body = {"id": item_id, "domain": domain, "output": {"text": item_id}, **fields}
    await produce(settings.topics.outputs, [(item_id.encode(), orjson.dumps(body))])


async def _held(gateway: Any, *item_ids: str) -> None:
    async def all_held() -> bool:
        return all([await gateway.index.get(i) is not None for i in item_ids])

    await wait_until(all_held, timeout_s=30)


async def _grade_every_dimension(page: Page) -> None:
    for fieldset in await page.query_selector_all("fieldset.dimension"):
        first = await fieldset.query_selector("input[type=radio]")
        assert first is not None
        await first.check()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Settings, dict[str, str], Any, str]]:
    settings, tokens = await _configs(tmp_path, lease_s=2.0)
    gateway, task = await start_gateway(settings)
    assert gateway.http is not None
    try:
        yield settings, tokens, gateway, f"http://127.0.0.1:{gateway.http.port}"
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, 30)
        await delete_topics(settings)


async def test_a_clinician_takes_edits_and_releases_a_summary(
    served: tuple[Settings, dict[str, str], Any, str], tmp_path: Path
) -> None:
    settings, tokens, gateway, base = served
    summary = "Patient: 54-year-old with chest pain.\nPlan: aspirin 500 mg daily."
    await _hold(settings, "enc-1042", "clinical-summaries", output={"text": summary},
                model="clinical-summarizer-v3", confidence=0.91, language="en")  # fmt: skip
    hostile = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"
    await _hold(settings, "enc-1043", "clinical-summaries",
                output={"text": hostile + "\n**Assessment**: stable"})  # fmt: skip
    await _hold(settings, "enc-1044", "clinical-summaries", language="en")
    await _hold(settings, "g-1", "graded", output={"text": "an answer"},
                judge={"grade": "B", "score": 0.7731})  # fmt: skip
    await _held(gateway, "enc-1042", "enc-1043", "enc-1044", "g-1")
    shots = _shots(tmp_path)
    async with chromium() as browser:
        ana = await _sign_in(browser, base, tokens["ana"], shots / "workspace-login.png")
        assert "clinicians" in await ana.inner_text("[data-testid=pool-clinicians]")
        await ana.goto(f"{base}/workspace/pools/clinicians")
        assert await ana.inner_text("[data-testid=waiting]") == "3 waiting"
        await ana.screenshot(path=str(shots / "workspace-queue.png"), full_page=True)

        # Take it, edit it (the diff shows the change), submit.
        await ana.click("[data-testid=take-enc-1042]")
        await ana.wait_for_url("**/workspace/items/enc-1042")
        assert summary.splitlines()[0] in await ana.inner_text("[data-testid=output]")
        await _grade_every_dimension(ana)
        await ana.keyboard.press("e")
        fixed = summary.replace("500 mg", "81 mg")
        await ana.fill("#edited", fixed)
        diff = await ana.inner_text("[data-testid=diff]")
        assert "+ Plan: aspirin 81 mg daily." in diff
        assert "- Plan: aspirin 500 mg daily." in diff
        await ana.screenshot(path=str(shots / "workspace-item.png"), full_page=True)
        await ana.click("[data-testid=submit-edit]")
        await ana.wait_for_selector("[data-testid=result-state]")
        assert await ana.inner_text("[data-testid=result-state]") == "Released"

        # An output carrying HTML is shown as text: nothing runs, nothing loads.
        await ana.goto(f"{base}/workspace/items/enc-1043")
        shown = await ana.inner_text("[data-testid=output]")
        assert "<script>window.__pwned = 1</script>" in shown
        assert await ana.evaluate("window.__pwned") is None
        assert await ana.query_selector("[data-testid=output] script") is None
        assert await ana.query_selector("[data-testid=output] img") is None
        assert await ana.inner_text("[data-testid=output] strong") == "Assessment"

        # A blind review never shows the judge's verdict.
        cal = await _sign_in(browser, base, tokens["cal"])
        await cal.goto(f"{base}/workspace/items/g-1")
        page = await cal.content()
        assert "0.7731" not in page
        assert await cal.query_selector("[data-testid=judge]") is None
        assert "blind review" in page

        # My work counts the decision.
        await ana.goto(f"{base}/workspace/me")
        assert await ana.inner_text("[data-testid=decided]") == "1"
    delivered = {r.key: r for r in await read_all(settings.topics.delivered)}
    assert orjson.loads(delivered[b"enc-1042"].value)["output"] == {"text": fixed}
    assert dict(delivered[b"enc-1042"].headers)["hitl.route"] == b"edited"
    assert b"enc-1043" not in delivered  # looked at, not decided: still held


async def test_two_reviewers_race_and_a_lease_that_runs_out_puts_the_item_back(
    served: tuple[Settings, dict[str, str], Any, str],
) -> None:
    settings, tokens, gateway, base = served
    await _hold(settings, "enc-2001", "clinical-summaries")
    await _hold(settings, "enc-2002", "clinical-summaries")
    await _held(gateway, "enc-2001", "enc-2002")
    async with chromium() as browser:
        ana = await _sign_in(browser, base, tokens["ana"])
        ben = await _sign_in(browser, base, tokens["ben"])
        for page in (ana, ben):
            await page.goto(f"{base}/workspace/pools/clinicians")
        # Both click "take" on the same item at once: one gets it, the other is told.
        await asyncio.gather(
            ana.click("[data-testid=take-enc-2001]"), ben.click("[data-testid=take-enc-2001]")
        )
        await asyncio.gather(ana.wait_for_load_state(), ben.wait_for_load_state())
        winners = [p for p in (ana, ben) if p.url.endswith("/workspace/items/enc-2001")]
        assert len(winners) == 1
        loser = ben if winners[0] is ana else ana
        winner_name = "ana" if winners[0] is ana else "ben"
        notice = await loser.inner_text("[data-testid=notice]")
        assert notice == f"enc-2001 is being reviewed by {winner_name}"
        assert await loser.inner_text("[data-testid=holders-enc-2001]") == winner_name
        # The loser cannot take or decide it through the API either while the lease holds.
        held = await gateway.index.get("enc-2001")
        assert held is not None
        loser_name = "ben" if winner_name == "ana" else "ana"
        auth = {"Authorization": f"Bearer {tokens[loser_name]}"}
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as api:
            taken = await api.post("/v1/items/enc-2001/lease")
            assert (taken.status_code, taken.json()["detail"]) == (
                409, f"enc-2001 is being reviewed by {winner_name}"
            )  # fmt: skip
            body = {"decision_id": "d-race", "verdict": "approve",
                    "content_hash": held.meta.content_hash}  # fmt: skip
            refused = await api.post("/v1/items/enc-2001/decisions", json=body)
            assert refused.status_code == 409
            # Grades must fit the rubric the policy files declare for the item.
            other = await gateway.index.get("enc-2002")
            wrong = {**body, "decision_id": "d-grade", "grades": {"accuracy": 7},
                     "content_hash": other.meta.content_hash}  # fmt: skip
            graded = await api.post("/v1/items/enc-2002/decisions", json=wrong)
            assert (graded.status_code, graded.json()["message"]) == (
                422, "grade 'accuracy' must be one of 5, 4, 3, 2, 1 (got 7)"
            )  # fmt: skip
            rubric = (await api.get("/v1/rubrics/clinical-accuracy")).json()
            assert rubric["dimensions"]["accuracy"]["grades"] == ["5", "4", "3", "2", "1"]
            paths = (await api.get("/openapi.json")).json()["paths"]
            assert {"/v1/items/{item_id}/lease", "/v1/rubrics/{name}"} <= set(paths)

        # A lease nobody renews runs out (2 s here) and the item is back in the queue.
        await winners[0].goto(f"{base}/workspace/")  # leaves the item page: no renewals

        async def back_in_the_queue() -> bool:
            await loser.goto(f"{base}/workspace/pools/clinicians")
            return await loser.inner_text("[data-testid=holders-enc-2001]") == "\u2013"

        await wait_until(back_in_the_queue, timeout_s=15, interval_s=0.5)
        await loser.click("[data-testid=take-enc-2001]")
        await loser.wait_for_url("**/workspace/items/enc-2001")
        assert await loser.query_selector("[data-testid=decision]") is not None

        # While a reviewer keeps the page open, the lease is renewed past its 2 s.
        await ana.goto(f"{base}/workspace/pools/clinicians")
        await ana.click("[data-testid=take-enc-2002]")
        await ana.wait_for_url("**/workspace/items/enc-2002")
        await asyncio.sleep(4)
        await ben.goto(f"{base}/workspace/pools/clinicians")
        assert await ben.inner_text("[data-testid=holders-enc-2002]") == "ana"
        # Put back: free at once.
        await ana.click("[data-testid=put-back]")
        await ana.wait_for_url("**/workspace/pools/clinicians")
        await ben.goto(f"{base}/workspace/pools/clinicians")
        assert await ben.inner_text("[data-testid=holders-enc-2002]") == "\u2013"


async def test_a_reviewer_without_the_pool_sees_nothing_of_it(
    served: tuple[Settings, dict[str, str], Any, str],
) -> None:
    settings, tokens, gateway, base = served
    await _hold(settings, "enc-3001", "clinical-summaries", output={"text": "private"})
    await _held(gateway, "enc-3001")
    async with chromium() as browser:
        eve = await _sign_in(browser, base, tokens["eve"])
        assert await eve.query_selector("[data-testid=pool-clinicians]") is None
        assert await eve.query_selector("[data-testid=pool-general-graders]") is not None
        response = await eve.goto(f"{base}/workspace/pools/clinicians")
        assert response is not None
        assert response.status == 403
        response = await eve.goto(f"{base}/workspace/items/enc-3001")
        assert response is not None
        assert response.status == 403
        assert "private" not in await eve.content()
        # Forms need the session's CSRF token: a forged post is refused.
        forged = await eve.request.post(f"{base}/workspace/items/enc-3001/take",
                                        form={"back": "/"})  # fmt: skip
        assert forged.status == 403
        # Signed out, every page sends you to sign in.
        await eve.click("text=Sign out")
        await eve.wait_for_url(f"{base}/workspace/login")
        await eve.goto(f"{base}/workspace/pools/general-graders")
        assert eve.url == f"{base}/workspace/login"
