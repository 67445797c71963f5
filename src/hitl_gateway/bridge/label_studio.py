"""The Label Studio bridge: the held items of chosen pools mirrored into Label Studio
projects (one per pool and rubric), and each submitted annotation published as a decision on
the decisions topic, the gateway's one decision path (docs/label-studio.md).

Every cycle reconciles the hold index (what is open now) with the projects (what is
mirrored), so the bridge keeps no state of its own: a task is created once per item and
project, a task whose item was decided elsewhere (the workspace, the API) and that nobody
annotated is removed, and after downtime the next cycle catches up. A decision's id is the
annotation's (``ls-{project}-{annotation}``): publishing one twice is one decision.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog
from label_studio_sdk import AsyncLabelStudio

from hitl_gateway import yamlfile
from hitl_gateway.bridge.labeling import (
    Unusable,
    decision,
    instructions,
    label_config,
    task_data,
)
from hitl_gateway.errors import ConfigError
from hitl_gateway.holds import HoldIndex
from hitl_gateway.models import HoldMeta
from hitl_gateway.policy.loader import PolicySet
from hitl_gateway.review.auth import Reviewers
from hitl_gateway.review.signing import Signer
from hitl_gateway.settings import LabelStudioSettings
from hitl_gateway.sink import Publisher

log = structlog.get_logger(__name__)

_PAGE = 500
_CHANGES = ("created", "removed", "published", "unusable", "unmapped")


async def publish_decision(
    publisher: Publisher,
    topic: str,
    body: dict[str, Any],
    signer: Signer | None = None,
    validity_s: float = 300.0,
) -> None:
    """The bridge's one way onto the decisions topic: the decision as JSON, keyed by its item
    id like every decision (the applier forwards it to the hold's partition if need be),
    signed with the bridge's own key when it has one (review/signing.py: valid
    ``validity_s`` from now, a fresh nonce)."""
    value = orjson.dumps(body)
    signed = None
    if signer is not None:
        signed = signer.headers(value, expires_ms=int((time.time() + validity_s) * 1000))
    await publisher.publish(topic, value, body["item_id"].encode(), None, signed)


def load_annotators(path: Path, reviewers: Reviewers | None) -> dict[str, str]:
    """``annotators: {e-mail: reviewer id}``; every reviewer id must be in the reviewers
    file (which grants its pools and domains)."""
    raw = yamlfile.load_file(path, "annotators file")
    mapping = raw.get("annotators") if isinstance(raw, dict) else None
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ConfigError(f"annotators file {path}: expected 'annotators: {{e-mail: reviewer id}}'")
    if reviewers is not None:
        unknown = sorted(set(mapping.values()) - reviewers.names())
        if unknown:
            raise ConfigError(
                f"annotators file {path}: reviewer id(s) not in the reviewers file: "
                + ", ".join(unknown)
            )
    return {k.lower(): v for k, v in mapping.items()}


@dataclass(slots=True)
class Report:
    """What one cycle did."""

    open_items: int = 0
    created: int = 0
    removed: int = 0
    published: int = 0
    unusable: int = 0
    unmapped: int = 0


@dataclass(slots=True)
class _Task:
    task_id: int
    project: int
    data: dict[str, Any]
    annotations: list[dict[str, Any]] = field(default_factory=list)


class Bridge:
    def __init__(
        self,
        settings: LabelStudioSettings,
        client: AsyncLabelStudio,
        index: HoldIndex,
        publisher: Publisher,
        *,
        decisions_topic: str,
        policies: PolicySet,
        annotators: Mapping[str, str],
        signer: Signer | None = None,
        validity_s: float = 300.0,
    ) -> None:
        unknown = sorted(set(settings.pools) - set(policies.pools))
        if unknown:
            raise ConfigError(f"label_studio.pools: not in pools.yaml: {', '.join(unknown)}")
        self._s = settings
        self._ls = client
        self._index = index
        self._publisher = publisher
        self._topic = decisions_topic
        self._policies = policies
        self._annotators = annotators
        self._signer = signer
        self._validity_s = validity_s
        self._projects: dict[str, int] = {}
        self._published: set[str] = set()
        self._told: set[str] = set()  # annotations already reported unusable or unmapped

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile every ``interval_s`` until ``stop`` is set. A cycle that fails (Label
        Studio, Redis or Kafka unreachable) is logged and the next one tries again: each
        cycle starts from what is, so nothing is lost in between."""
        while not stop.is_set():
            try:
                report = await self.sync()
            except Exception as exc:  # noqa: BLE001 - the loop's one broad except: retried next cycle
                log.warning("label_studio_sync_failed", error=f"{type(exc).__name__}: {exc}")
            else:
                changed = any(vars_of(report)[k] for k in _CHANGES)
                (log.info if changed else log.debug)("label_studio_synced", **vars_of(report))
            try:
                await asyncio.wait_for(stop.wait(), self._s.interval_s)
            except TimeoutError:
                continue

    async def sync(self) -> Report:
        report = Report()
        open_items = await self._open_items()
        report.open_items = len(open_items)
        await self._known_projects()
        mirrored = await self._mirrored()
        users = await self._users()
        for item_id, meta in open_items.items():
            project = await self._project(meta.pool, meta.rubric)
            tasks = [t for t in mirrored.get(item_id, []) if t.project == project]
            if not tasks:
                report.created += await self._create(project, meta)
            for task in tasks:
                await self._decide(task, users, report)
        for item_id, tasks in mirrored.items():
            held = open_items.get(item_id)
            home = self._projects.get(self._title(held.pool, held.rubric)) if held else None
            for task in tasks:
                if task.project != home and not _submitted(task):
                    await self._ls.tasks.delete(str(task.task_id))
                    report.removed += 1
        return report

    # -- the gateway's side ------------------------------------------------------------

    async def _open_items(self) -> dict[str, HoldMeta]:
        found: dict[str, HoldMeta] = {}
        for pool in self._s.pools:
            order = self._policies.pools[pool].queue_order
            offset = 0
            while True:
                total, metas = await self._index.queue(pool, order=order, offset=offset,
                                                       limit=_PAGE)  # fmt: skip
                found.update((m.item_id, m) for m in metas)
                offset += _PAGE
                if offset >= total or not metas:
                    break
        return found

    async def _decide(self, task: _Task, users: dict[int, str], report: Report) -> None:
        """Publish each submitted annotation of ``task`` not yet published."""
        for annotation in task.annotations:
            if annotation.get("was_cancelled"):
                continue
            decision_id = f"ls-{task.project}-{annotation['id']}"
            # An unusable annotation is looked at again once its annotator updates it.
            version = f"{decision_id}@{annotation.get('updated_at')}"
            if decision_id in self._published or version in self._told:
                continue
            email = users.get(int(annotation.get("completed_by") or 0), "")
            reviewer = self._annotators.get(email.lower())
            if reviewer is None:
                self._told.add(version)
                report.unmapped += 1
                log.warning("label_studio_annotator_unmapped", annotator=email,
                            decision_id=decision_id)  # fmt: skip
                continue
            body = decision(annotation, task.data, reviewer, decision_id)
            if isinstance(body, Unusable):
                self._told.add(version)
                report.unusable += 1
                log.warning("label_studio_annotation_unusable", reason=body.reason,
                            decision_id=decision_id)  # fmt: skip
                continue
            await publish_decision(self._publisher, self._topic, body, self._signer,
                                   self._validity_s)  # fmt: skip
            self._published.add(decision_id)
            report.published += 1

    # -- Label Studio's side -----------------------------------------------------------

    def _title(self, pool: str, rubric: str | None) -> str:
        return f"{self._s.project_prefix}: {pool} / {rubric or 'no rubric'}"

    async def _known_projects(self) -> None:
        prefix = f"{self._s.project_prefix}: "
        # The SDK's pagers have no annotations (label-studio-sdk 2.x).
        pager = await self._ls.projects.list(page_size=100)  # type: ignore[no-untyped-call]
        async for project in pager:
            title = project.title or ""
            if title.startswith(prefix) and project.id is not None:
                self._projects.setdefault(title, project.id)

    async def _project(self, pool: str, rubric_name: str | None) -> int:
        title = self._title(pool, rubric_name)
        if title not in self._projects:
            rubric = self._policies.routing.rubrics.get(rubric_name or "")
            created = await self._ls.projects.create(
                title=title,
                label_config=label_config(rubric),
                expert_instruction=instructions(rubric_name, rubric),
                show_instruction=True,
                show_skip_button=False,
            )
            assert created.id is not None
            self._projects[title] = created.id
            log.info("label_studio_project_created", title=title, project=created.id)
        return self._projects[title]

    async def _mirrored(self) -> dict[str, list[_Task]]:
        found: dict[str, list[_Task]] = {}
        for project in self._projects.values():
            # The SDK's pagers have no annotations (label-studio-sdk 2.x).
            pager = await self._ls.tasks.list(  # type: ignore[no-untyped-call]
                project=project, fields="all", page_size=100
            )
            async for task in pager:
                data = dict(task.data or {})
                item_id = data.get("item_id")
                if isinstance(item_id, str) and task.id is not None:
                    annotations = [a if isinstance(a, dict) else a.dict()
                                   for a in (task.annotations or [])]  # fmt: skip
                    found.setdefault(item_id, []).append(
                        _Task(int(task.id), project, data, annotations)
                    )
        return found

    async def _users(self) -> dict[int, str]:
        listed = await self._ls.users.list()
        return {int(u.id): (u.email or "") for u in listed if u.id}

    async def _create(self, project: int, meta: HoldMeta) -> int:
        held = await self._index.get(meta.item_id)
        if held is None:  # closed between the queue and now: the next cycle will know
            return 0
        await self._ls.tasks.create(project=project, data=task_data(held.meta, held.value),
                                    overlap=max(1, held.meta.reviewers))  # fmt: skip
        return 1


def _submitted(task: _Task) -> bool:
    return any(not a.get("was_cancelled") for a in task.annotations)


def vars_of(report: Report) -> dict[str, int]:
    return {name: getattr(report, name) for name in Report.__slots__}
