"""Helpers for tests that run a gateway in-process with reviewers and the review API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from hitl_gateway.admin import ensure_topics
from hitl_gateway.app import Gateway
from hitl_gateway.review.auth import new_token
from hitl_gateway.settings import Settings

from .kafka_io import delete_topics, wait_until


def write_reviewers(
    path: Path,
    grants: Mapping[str, Sequence[str]],
    domains: Mapping[str, Sequence[str]] | None = None,
    operators: Sequence[str] = (),
) -> dict[str, str]:
    """A reviewers file granting each reviewer its pools (and, where given, only these
    domains; ``operators`` are operators); returns their bearer tokens."""
    tokens: dict[str, str] = {}
    lines = ["reviewers:"]
    for who, pools in grants.items():
        token, digest = new_token()
        tokens[who] = token
        only = (domains or {}).get(who)
        limit = f", domains: [{', '.join(only)}]" if only else ""
        limit += ", operator: true" if who in operators else ""
        lines.append(
            f"  - {{id: {who}, token_sha256: {digest}, pools: [{', '.join(pools)}]{limit}}}"
        )
    path.write_text("\n".join(lines) + "\n")
    return tokens


async def start_gateway(settings: Settings) -> tuple[Gateway, asyncio.Task[None]]:
    """Run a gateway until it is ready (joined, broker and Redis answering, HTTP up)."""
    gateway = Gateway(settings, CollectorRegistry())
    task = asyncio.create_task(gateway.run())

    async def ready() -> bool:
        return gateway.http is not None and gateway.ready()

    await wait_until(ready, timeout_s=30, interval_s=0.02)
    return gateway, task


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    """Topics created, a ready gateway and an HTTP client for its API; stopped and the
    topics deleted afterwards."""
    await ensure_topics(settings)
    gateway, task = await start_gateway(settings)
    assert gateway.http is not None
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.http.port}", timeout=30
        ) as http:
            yield gateway, http
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, 30)
        await delete_topics(settings)


@dataclass
class ApiStack:
    """A served gateway, its reviewers' tokens and an HTTP client: what review tests share."""

    settings: Settings
    gateway: Gateway
    tokens: dict[str, str]
    http: httpx.AsyncClient

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def metric(self, name: str, **labels: str) -> float | None:
        return self.gateway.metrics.registry.get_sample_value(name, labels)

    async def item(self, who: str, item_id: str) -> dict[str, Any]:
        """The held item as ``who`` sees it, once it is visible."""

        async def visible() -> bool:
            response = await self.http.get(f"/v1/items/{item_id}", headers=self.auth(who))
            return response.status_code == 200

        await wait_until(visible, timeout_s=30, interval_s=0.05)
        response = await self.http.get(f"/v1/items/{item_id}", headers=self.auth(who))
        return response.json()  # type: ignore[no-any-return]
