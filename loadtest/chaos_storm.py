"""S9, the decision storm: every held item decided twice (each required reviewer's vote, then
the same vote again over the other channel), conflicting pairs from two reviewers of the
pool, and decisions for ids no hold has; half over the decisions topic, half over the
gateways' review API."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaos_load import Reviewer, send_decisions, verdict_for
from hitl_gateway.review.signing import Signer


@dataclass
class Storm:
    bootstrap: str
    topic: str
    api_ports: list[int]
    tokens: dict[str, str]
    signer: Signer  # the review tool's key, for the decisions over the topic
    conflicts: int = 1_000
    unknown: int = 500
    stormed: set[str] = field(default_factory=set)
    sent: dict[str, int] = field(default_factory=lambda: {"topic": 0, "api": 0})
    api_status: dict[int, int] = field(default_factory=dict)

    def plan(self, reviewer: Reviewer, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """(channel, decision) pairs, in the order they go out."""
        out: list[tuple[str, dict[str, Any]]] = []
        singles = 0
        for n, task in enumerate(list(reviewer.collected.values())[:limit]):
            item, pool = task["item_id"], task["pool"]
            wanted = max(1, int(task.get("reviewers") or 1))
            verdict = "reject" if verdict_for(item, wanted) == "reject" else "approve"
            channels = ("topic", "api") if n % 2 else ("api", "topic")
            votes = [{"decision_id": uuid.uuid4().hex, "item_id": item, "reviewer": who,
                      "verdict": verdict, "content_hash": task["content_hash"],
                      "grade": "B" if task.get("blind") else None}
                     for who in reviewer.grants[pool][:wanted]]  # fmt: skip
            for d in votes:  # each required reviewer's vote, once over each channel
                out += [(channels[0], d), (channels[1], d)]
            (reviewer.rejected if verdict == "reject" else reviewer.approved).add(item)
            if wanted == 1 and singles < self.conflicts:
                # another reviewer of the pool says the opposite: either may win the race
                singles += 1
                other = "approve" if verdict == "reject" else "reject"
                out.append((channels[1], {**votes[0], "decision_id": uuid.uuid4().hex,
                                          "reviewer": reviewer.grants[pool][1],
                                          "verdict": other}))  # fmt: skip
                reviewer.approved.add(item)
            self.stormed.add(item)
        pools = list(reviewer.grants)
        for n in range(self.unknown):
            who = reviewer.grants[pools[n % len(pools)]][0]
            out.append(
                (
                    "topic" if n % 2 else "api",
                    {
                        "decision_id": uuid.uuid4().hex,
                        "item_id": f"unknown-{uuid.uuid4().hex[:12]}",
                        "reviewer": who,
                        "verdict": "approve",
                        "content_hash": "sha256:" + "0" * 64,
                    },
                )
            )
        return out

    async def run(self, plan: list[tuple[str, dict[str, Any]]]) -> None:
        on_topic = [d for channel, d in plan if channel == "topic"]
        on_api = [d for channel, d in plan if channel == "api"]
        self.sent = {"topic": len(on_topic), "api": len(on_api)}
        await asyncio.gather(send_decisions(self.bootstrap, self.topic, on_topic, self.signer),
                             self._api(on_api))  # fmt: skip

    async def _api(self, decisions: list[dict[str, Any]]) -> None:
        ports = itertools.cycle(self.api_ports)
        queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
        for d in decisions:
            queue.put_nowait((next(ports), d))
        async with httpx.AsyncClient(timeout=30) as http:

            async def worker() -> None:
                while not queue.empty():
                    port, d = queue.get_nowait()
                    body = {k: v for k, v in d.items() if k not in ("item_id", "reviewer")}
                    headers = {"Authorization": f"Bearer {self.tokens[d['reviewer']]}"}
                    url = f"http://127.0.0.1:{port}/v1/items/{d['item_id']}/decisions"
                    try:
                        status = (await http.post(url, json=body, headers=headers)).status_code
                    except httpx.HTTPError:
                        status = 0
                    self.api_status[status] = self.api_status.get(status, 0) + 1

            await asyncio.gather(*(worker() for _ in range(16)))
