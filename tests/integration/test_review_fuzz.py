"""Fuzzed requests against the live review API: never a 5xx, never a state change from a
refused request. Hypothesis drives bodies, paths, tokens and verdicts."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .kafka_io import read_all
from .test_review import Stack, stack  # noqa: F401 - the fixture

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "decision_id": st.text(max_size=200),
            "verdict": st.sampled_from(["approve", "edit", "reject", "maybe", ""]),
            "content_hash": st.text(max_size=80),
            "edited_output": json_values,
            "grades": json_values,
            "reason": json_values,
            "notes": json_values,
            "extra": json_values,
        },
    ),
)
paths = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60)


async def test_fuzzed_requests_get_4xx_and_change_nothing(stack: Stack) -> None:  # noqa: F811
    s = stack
    held = await s.hold("fz1", "clinical-summaries")
    requests: list[tuple[str, str, Any, str]] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
        target=st.sampled_from(["items", "pools", "decisions", "raw"]),
        item=st.sampled_from(["fz1", "nope"]) | paths,
        body=bodies,
        who=st.sampled_from(["ana", "eve", "svc-bot", "bad-token", None]),
    )
    def collect(method: str, target: str, item: str, body: Any, who: str | None) -> None:
        quoted = quote(item, safe="")
        url = {
            "items": f"/v1/items/{quoted}/decisions" if method == "POST" else f"/v1/items/{quoted}",
            "pools": f"/v1/pools/{quoted}/items?limit=5&order=age",
            "decisions": f"/v1/items/{quoted}/decisions/{quoted}",
            "raw": f"/v1/{quoted}",
        }[target]
        requests.append((method, url, body, who or ""))

    collect()
    statuses = []
    for method, url, body, who in requests:
        headers = {}
        if who == "bad-token":
            headers["Authorization"] = "Bearer not-a-token"
        elif who:
            headers.update(s.auth(who))
        if isinstance(body, dict) and body.get("content_hash") == "HOLD":
            body["content_hash"] = held["content_hash"]
        response = await s.http.request(method, url, json=body, headers=headers)
        statuses.append(response.status_code)
        assert response.status_code < 500, (method, url, body, response.text)
    assert any(400 <= code < 500 for code in statuses)
    await asyncio.sleep(0.5)
    still = await s.http.get("/v1/items/fz1", headers=s.auth("ana"))
    assert still.status_code == 200, "a fuzzed request released the held item"
    assert [r for r in await read_all(s.settings.topics.delivered)] == []
