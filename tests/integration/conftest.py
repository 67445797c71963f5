"""Integration fixtures: the real local broker and Redis, started by deploy/local/stack.py.

No skipping: if the stack is not up, every test here fails with the command that starts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from hitl_gateway.admin import ensure_topics
from hitl_gateway.settings import Settings

from .kafka_io import BOOTSTRAP, REDIS_URL, delete_topics, fresh_settings

pytestmark = pytest.mark.integration


async def _check_stack() -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=5_000)
    try:
        await admin.start()
        await admin.list_topics()
    except Exception as exc:  # noqa: BLE001 - any failure: the stack is not up
        pytest.fail(f"Kafka at {BOOTSTRAP} is not reachable ({exc!r}); run `make stack-up`")
    finally:
        await admin.close()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Redis at {REDIS_URL} is not reachable ({exc!r}); run `make stack-up`")
    finally:
        await client.aclose()


@pytest.fixture(scope="session", autouse=True)
def _stack_is_up() -> None:
    asyncio.run(_check_stack())


@pytest.fixture
async def settings() -> AsyncIterator[Settings]:
    """A fresh, isolated set of topics and a fresh group for one test."""
    s = fresh_settings()
    await ensure_topics(s)
    yield s
    await delete_topics(s)
