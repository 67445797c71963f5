"""The Label Studio bridge against a real Label Studio (deploy/local/labelstudio.py), the
real broker and Redis: held clinical summaries mirrored into a project whose interface comes
from the rubric, annotated through Label Studio's API by a clinician with her own token,
and released (approve, edit) or blocked (reject) by the gateway with one audit event each;
an item decided elsewhere leaves Label Studio; a restarted bridge catches up and a decision
published twice is applied once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from label_studio_sdk import AsyncLabelStudio
from pydantic import SecretStr

from hitl_gateway.bridge.label_studio import Bridge, load_annotators, publish_decision
from hitl_gateway.bridge.labeling import label_config
from hitl_gateway.holds import HoldIndex
from hitl_gateway.models import InputRecord
from hitl_gateway.policy.budget import MemoryLedger
from hitl_gateway.policy.engine import decide
from hitl_gateway.policy.loader import load_policy_set
from hitl_gateway.review.auth import Reviewers
from hitl_gateway.review.signing import Signer, new_key, tool_signer
from hitl_gateway.settings import DecisionSettings, LabelStudioSettings, ReviewSettings, Settings
from hitl_gateway.sink import Publisher

from .gateways import ApiStack, serving, write_reviewers
from .kafka_io import (
    CONFIGS,
    committed_offsets,
    end_offset_total,
    fresh_settings,
    produce,
    read_all,
    settings_env,
    wait_until,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LabelStudio:
    url: str
    token: str

    async def sign_up(self, email: str) -> str:
        """A new member of the organisation (through an invite link, as a person would
        join) and that member's own API token."""
        admin = {"Authorization": f"Token {self.token}"}
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            invite = (await http.get("/api/invite", headers=admin)).json()["token"]
            await http.get(f"/user/signup/?token={invite}")
            form = {"csrfmiddlewaretoken": http.cookies["csrftoken"], "email": email,
                    "password": uuid.uuid4().hex, "how_find_us": "Other",
                    "allow_newsletters": "false"}  # fmt: skip
            joined = await http.post(f"/user/signup/?token={invite}", data=form,
                                     headers={"Referer": f"{self.url}/user/signup/"})  # fmt: skip
            assert joined.status_code == 302, joined.text[:500]
            token: str = (await http.get("/api/current-user/token")).json()["token"]
            return token

    async def personal_access_token(self, legacy_token: str) -> str:
        """A personal access token (a JWT refresh token) for the member whose legacy token
        this is; the SDK exchanges it for access tokens itself."""
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            made = await http.post(
                "/api/token/", headers={"Authorization": f"Token {legacy_token}"}
            )
            assert made.status_code == 201, made.text[:500]
            token: str = made.json()["token"]
            return token


@pytest.fixture(scope="module")
def label_studio() -> LabelStudio:
    """Label Studio started by the project's script (idempotent: quick when it runs)."""
    started = time.monotonic()
    subprocess.run([sys.executable, str(REPO / "deploy/local/labelstudio.py"), "up"],
                   check=True, timeout=900)  # fmt: skip
    print(f"label-studio up in {time.monotonic() - started:.1f}s")
    root = Path(os.environ.get("LABEL_STUDIO_DIR", REPO / ".cache" / "label-studio"))
    admin = json.loads((root / "admin.json").read_text())
    return LabelStudio(admin["url"], admin["token"])


@dataclass
class Rig:
    api: ApiStack
    ls: LabelStudio
    settings: Settings
    bridge: Bridge
    signer: Signer
    publisher: Publisher
    admin: AsyncLabelStudio
    clinician: AsyncLabelStudio
    stranger: AsyncLabelStudio
    lawyers: dict[str, AsyncLabelStudio]


@pytest.fixture
async def rig(label_studio: LabelStudio, tmp_path: Path) -> AsyncIterator[Rig]:
    uid = uuid.uuid4().hex[:8]
    ana_email, stranger_email = f"ana-{uid}@example.com", f"stranger-{uid}@example.com"
    ana_token = await label_studio.sign_up(ana_email)
    stranger_token = await label_studio.sign_up(stranger_email)
    lawyer_tokens = {who: await label_studio.sign_up(f"{who}-{uid}@example.com")
                     for who in ("leo", "lia")}  # fmt: skip
    grants = {"ana": ["clinicians"], "leo": ["lawyers"], "lia": ["lawyers"]}
    tokens = write_reviewers(tmp_path / "reviewers.yaml", grants)
    mapping = "".join(f"  {who}-{uid}@example.com: {who}\n" for who in ("leo", "lia"))
    (tmp_path / "annotators.yaml").write_text(f"annotators:\n  {ana_email}: ana\n{mapping}")
    # Decision signing on: the gateway trusts the bridge's Ed25519 key and refuses unsigned
    # decisions (no shipped policy accepts them).
    bridge_secret, bridge_entry = new_key("label-studio-bridge", "ed25519")
    _, gateway_entry = new_key("gateway-1", "hmac-sha256")
    (tmp_path / "decision-keys.yaml").write_text(bridge_entry + gateway_entry)
    # The bridge works as a member of its own, with a personal access token.
    bridge_token = await label_studio.personal_access_token(
        await label_studio.sign_up(f"bridge-{uid}@example.com")
    )
    ls = LabelStudioSettings(url=label_studio.url, token=SecretStr(bridge_token),
                             pools=("clinicians", "domain-experts", "lawyers"),
                             annotators_file=tmp_path / "annotators.yaml",
                             project_prefix=f"t{uid}", signing_key_id="label-studio-bridge",
                             signing_key=SecretStr(bridge_secret))  # fmt: skip
    decisions = DecisionSettings(keys_file=tmp_path / "decision-keys.yaml",
                                 gateway_key_id="gateway-1")  # fmt: skip
    settings = fresh_settings(policy_dir=CONFIGS / "policies").model_copy(
        update={
            "review": ReviewSettings(reviewers_file=tmp_path / "reviewers.yaml"),
            "label_studio": ls,
            "decisions": decisions,
        }
    )
    admin = AsyncLabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    async with serving(settings) as (gateway, http):
        index = HoldIndex(settings.redis)
        publisher = Publisher(settings.kafka, settings.limits.max_record_bytes)
        await publisher.start()
        reviewers = Reviewers.load(tmp_path / "reviewers.yaml")
        annotators = load_annotators(tmp_path / "annotators.yaml", reviewers)
        signer = tool_signer("label-studio-bridge", "ed25519", bridge_secret)
        client = AsyncLabelStudio(base_url=label_studio.url, api_key=bridge_token)
        bridge = Bridge(ls, client, index, publisher, annotators=annotators,
                        decisions_topic=settings.topics.review_decisions,
                        policies=load_policy_set(CONFIGS / "policies"), signer=signer)  # fmt: skip
        try:
            url = label_studio.url
            yield Rig(ApiStack(settings, gateway, tokens, http), label_studio, settings, bridge,
                      signer, publisher,
                      admin, AsyncLabelStudio(base_url=url, api_key=ana_token),
                      AsyncLabelStudio(base_url=url, api_key=stranger_token),
                      {who: AsyncLabelStudio(base_url=url, api_key=token)
                       for who, token in lawyer_tokens.items()})  # fmt: skip
        finally:
            await publisher.stop()
            await index.stop()


def _sampled_blind() -> str:
    """An id the engineering-answers policy samples (2%, blind): routing is a pure function
    of the id, so the engine finds one before the gateway sees it."""
    policies = load_policy_set(CONFIGS / "policies")
    for n in range(10_000):
        record = InputRecord.model_validate({"id": f"e-{n}", "domain": "engineering-answers"})
        d = decide(record, policies, timestamp_ms=0, budgets=MemoryLedger())
        if d.rule == "sampling" and d.blind:
            return record.id
    raise AssertionError("no sampled id among 10,000")


async def _tasks(admin: AsyncLabelStudio, project: int) -> dict[str, Any]:
    pager = await admin.tasks.list(project=project, fields="all", page_size=100)
    return {t.data["item_id"]: t async for t in pager}


def _choice(name: str, value: str) -> dict[str, Any]:
    return {"from_name": name, "to_name": "output", "type": "choices",
            "value": {"choices": [value]}}  # fmt: skip


def _text(name: str, value: str) -> dict[str, Any]:
    return {"from_name": name, "to_name": "output", "type": "textarea",
            "value": {"text": [value]}}  # fmt: skip


async def test_items_reviewed_in_label_studio_are_released_or_blocked_once(rig: Rig) -> None:
    s, topics = rig.api, rig.settings.topics
    ids = ["c-approve", "c-edit", "c-reject", "c-elsewhere"]
    records = [(i.encode(), orjson.dumps({"id": i, "domain": "clinical-summaries",
                                           "input": {"encounter": i}, "model": "summarizer",
                                           "confidence": 0.8, "output": {"text": f"draft {i}"}}))
               for i in ids]  # fmt: skip
    blind_id = _sampled_blind()
    records.append((blind_id.encode(), orjson.dumps({
        "id": blind_id, "domain": "engineering-answers", "output": "use a mutex",
        "judge": {"grade": "A", "score": 0.97, "model": "judge-v2"}})))  # fmt: skip
    await produce(topics.outputs, records)
    held = {i: await s.item("ana", i) for i in ids}

    async def blind_held() -> bool:
        return await rig.bridge._index.get(blind_id) is not None

    await wait_until(blind_held, timeout_s=30)

    # Mirrored once, however often the bridge runs.
    first = await rig.bridge.sync()
    assert (first.open_items, first.created) == (5, 5)
    assert (await rig.bridge.sync()).created == 0
    # A blind item: no judge in its task, though the hold keeps it for calibration.
    pager = await rig.admin.projects.list(title=f"{rig.settings.label_studio.project_prefix}: "
                                          "domain-experts / technical-accuracy")  # fmt: skip
    (experts,) = [p async for p in pager]
    blind_task = (await _tasks(rig.admin, experts.id))[blind_id]
    assert (blind_task.data["judge"], blind_task.data["output"]) == ("", "use a mutex")
    assert "judge-v2" not in json.dumps(blind_task.data)
    pager = await rig.admin.projects.list(title=f"{rig.settings.label_studio.project_prefix}: "
                                          "clinicians / clinical-accuracy")  # fmt: skip
    (project,) = [p async for p in pager]
    shown = (await rig.admin.projects.get(project.id)).label_config
    config = ET.fromstring(shown)  # noqa: S314 - the bridge's own config, read back
    grades = [c for c in config.iter("Choices") if c.get("name") == "grade_accuracy"]
    assert [o.get("value") for o in grades[0]] == ["5", "4", "3", "2", "1"]
    tasks = await _tasks(rig.admin, project.id)
    assert set(tasks) == set(ids)
    assert tasks["c-edit"].data["content_hash"] == held["c-edit"]["content_hash"]
    assert json.loads(tasks["c-edit"].data["output"]) == {"text": "draft c-edit"}

    # Decided in the workspace's API: the bridge removes its task.
    elsewhere = {"decision_id": "api-1", "verdict": "approve",
                 "content_hash": held["c-elsewhere"]["content_hash"]}  # fmt: skip
    decided = await s.http.post("/v1/items/c-elsewhere/decisions", json=elsewhere,
                                headers=s.auth("ana"))  # fmt: skip
    assert decided.status_code == 200
    assert (await rig.bridge.sync()).removed == 1
    assert set(await _tasks(rig.admin, project.id)) == set(ids) - {"c-elsewhere"}

    # The clinician annotates in Label Studio; someone the bridge does not know does too.
    await rig.clinician.annotations.create(
        id=tasks["c-approve"].id, result=[_choice("verdict", "approve"),
                                          _choice("grade_accuracy", "5")])  # fmt: skip
    await rig.clinician.annotations.create(
        id=tasks["c-edit"].id, result=[_choice("verdict", "edit"),
                                       _text("edited_output", '{"text": "fixed dose"}'),
                                       _choice("grade_accuracy", "3")])  # fmt: skip
    await rig.clinician.annotations.create(
        id=tasks["c-reject"].id, result=[_choice("verdict", "reject"),
                                         _choice("reject_reason", "unsafe advice")])  # fmt: skip
    await rig.stranger.annotations.create(
        id=tasks["c-approve"].id, result=[_choice("verdict", "approve")])  # fmt: skip

    # The bridge was down meanwhile: a new process catches up (the command, run once) ...
    signing_key, token = rig.settings.label_studio.signing_key, rig.settings.label_studio.token
    assert signing_key is not None
    assert token is not None
    env = {**os.environ, **settings_env(rig.settings),
           "HITL_LABEL_STUDIO__TOKEN": token.get_secret_value(),
           "HITL_LABEL_STUDIO__SIGNING_KEY": signing_key.get_secret_value()}  # fmt: skip
    started = time.monotonic()
    once = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hitl_gateway", "bridge", "label-studio", "--once", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(once.communicate(), 120)
    assert once.returncode == 0, err.decode()[-2000:]
    print(f"bridge --once took {time.monotonic() - started:.1f}s")
    lines = (out + err).decode().splitlines()
    synced = next((json.loads(line) for line in lines if '"label_studio_synced"' in line), None)
    assert synced is not None, lines[-20:]
    assert (synced["published"], synced["unmapped"]) == (3, 1)
    # ... and one with no memory of that run publishes again what is still open: the
    # decision ids are the same, so the gateway applies each decision once (below).
    await rig.bridge.sync()

    async def settled() -> bool:
        delivered = {r.key for r in await read_all(topics.delivered)}
        blocked = {r.key for r in await read_all(topics.blocked)}
        return {b"c-approve", b"c-edit"} <= delivered and b"c-reject" in blocked

    await wait_until(settled, timeout_s=60)
    # The edit's decision once more, as a bridge that died before remembering it would
    # publish it (signed anew): the gateway consumes it (its offset committed) and applies
    # nothing, and refuses nothing (a fresh signature is no replay).
    (edit_decision,) = [r for r in await read_all(topics.review_decisions)
                        if r.key == b"c-edit"]  # fmt: skip
    await publish_decision(rig.publisher, topics.review_decisions,
                           orjson.loads(edit_decision.value), rig.signer)  # fmt: skip
    end = await end_offset_total(topics.review_decisions)

    async def consumed() -> bool:
        offsets = await committed_offsets(rig.settings, topics.review_decisions)
        return sum(offsets.values()) >= end

    await wait_until(consumed, timeout_s=30)
    delivered = [r for r in await read_all(topics.delivered)
                 if r.key not in (b"c-elsewhere", blind_id.encode())]  # fmt: skip
    assert sorted(r.key for r in delivered) == [b"c-approve", b"c-edit"]
    released = {r.key: orjson.loads(r.value) for r in delivered}
    assert released[b"c-edit"]["output"] == {"text": "fixed dose"}
    assert released[b"c-approve"]["output"] == {"text": "draft c-approve"}
    (blocked,) = await read_all(topics.blocked)
    assert dict(blocked.headers)["hitl.reject.reason"] == b"unsafe advice"
    audit = [orjson.loads(r.value) for r in await read_all(topics.audit)]
    for item in ("c-approve", "c-edit", "c-reject"):
        decided_events = [e for e in audit if e["type"] == "decided" and e["item_id"] == item]
        assert len(decided_events) == 1, item
        assert decided_events[0]["reviewer"] == "ana"
        assert decided_events[0]["signer"] == "label-studio-bridge"
        assert decided_events[0]["decision_id"].startswith(f"ls-{project.id}-")
    assert not [e for e in audit if e["type"] == "decision_refused"]
    training = {orjson.loads(r.value)["item_id"]: orjson.loads(r.value)
                for r in await read_all(topics.training)}  # fmt: skip
    assert training["c-edit"]["edited_output"] == {"text": "fixed dose"}
    assert training["c-edit"]["grades"] == {"accuracy": "3"}
    assert training["c-edit"]["input"] == {"encounter": "c-edit"}

    # Annotated tasks stay in Label Studio (the record of who labelled what).
    final = await rig.bridge.sync()
    assert (final.open_items, final.created, final.removed) == (1, 0, 0)  # the blind item


async def test_a_consensus_item_needs_two_annotators_in_label_studio(rig: Rig) -> None:
    s, topics = rig.api, rig.settings.topics
    body = {"id": "clause-1", "domain": "legal-drafts", "output": {"clause": "unlimited"}}
    await produce(topics.outputs, [(b"clause-1", orjson.dumps(body))])
    await s.item("leo", "clause-1")
    await rig.bridge.sync()
    pager = await rig.admin.projects.list(title=f"{rig.settings.label_studio.project_prefix}: "
                                          "lawyers / legal-soundness")  # fmt: skip
    (project,) = [p async for p in pager]
    task = (await _tasks(rig.admin, project.id))["clause-1"]
    assert task.overlap == 2  # Label Studio hands it to two annotators

    async def votes(n: int) -> bool:
        item = await s.http.get("/v1/items/clause-1", headers=s.auth("leo"))
        return item.status_code == 200 and item.json()["votes"] == n

    await rig.lawyers["leo"].annotations.create(id=task.id, result=[_choice("verdict", "approve")])
    assert (await rig.bridge.sync()).published == 1
    await wait_until(lambda: votes(1), timeout_s=30)
    assert not [r for r in await read_all(topics.delivered) if r.key == b"clause-1"]

    await rig.lawyers["lia"].annotations.create(id=task.id, result=[_choice("verdict", "approve")])
    assert (await rig.bridge.sync()).published == 1

    async def released() -> bool:
        return any(r.key == b"clause-1" for r in await read_all(topics.delivered))

    await wait_until(released, timeout_s=30)
    audit = [orjson.loads(r.value) for r in await read_all(topics.audit)
             if orjson.loads(r.value).get("item_id") == "clause-1"]  # fmt: skip
    kinds = [(e["type"], e.get("reviewer")) for e in audit if e["type"] != "routed"]
    assert kinds == [("vote_recorded", "leo"), ("decided", "lia")]


async def test_label_studio_accepts_the_interface_of_every_shipped_rubric(
    label_studio: LabelStudio,
) -> None:
    admin = AsyncLabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    rubrics = load_policy_set(CONFIGS / "policies").routing.rubrics
    uid = uuid.uuid4().hex[:8]
    for name, rubric in [*rubrics.items(), ("none", None)]:
        # Label Studio validates a labeling configuration when a project is created.
        project = await admin.projects.create(title=f"check-{uid}: {name}",
                                              label_config=label_config(rubric))  # fmt: skip
        assert project.id is not None
        await admin.projects.delete(project.id)
    assert len(rubrics) >= 3
