"""Leases on held items against the real Redis: a single-review item has one seat, a
consensus item as many as it still needs; renewing keeps the first time taken; a lease
nobody renews runs out; put back frees the seat at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from hitl_gateway.review.leases import Leases

from .kafka_io import fresh_settings

pytestmark = pytest.mark.integration


async def test_seats_renewals_expiry_and_put_back() -> None:
    leases = Leases(fresh_settings().redis, ttl_s=0.6)
    try:
        first = await leases.take("single", "ana", seats=1)
        assert first.granted
        mine = first.of("ana")
        assert mine is not None
        refused = await leases.take("single", "ben", seats=1)
        assert not refused.granted
        assert [h.reviewer for h in refused.holders] == ["ana"]
        await asyncio.sleep(0.2)
        renewed = await leases.take("single", "ana", seats=1)
        again = renewed.of("ana")
        assert again is not None
        assert again.taken_ms == mine.taken_ms  # the time on item counts from the first take
        assert again.expires_ms > mine.expires_ms

        # A consensus item needing two more reviewers: two seats, a third reviewer waits.
        assert (await leases.take("panel", "leo", seats=2)).granted
        assert (await leases.take("panel", "lia", seats=2)).granted
        third = await leases.take("panel", "sam", seats=2)
        assert not third.granted
        assert {h.reviewer for h in third.holders} == {"leo", "lia"}
        await leases.release("panel", "lia")  # put back
        assert (await leases.take("panel", "sam", seats=2)).granted

        # Nobody renews: the lease runs out and the item is free again.
        await asyncio.sleep(0.8)
        now_ms = int(time.time() * 1000)
        assert await leases.holders(["single", "panel"], now_ms) == {}
        assert (await leases.take("single", "ben", seats=1)).granted
    finally:
        await leases.stop()
