"""The router's outcomes, record by record, with the shipped policies: what each route
writes, with which headers and keys, and how duplicates, conflicts, poison records and
invalid records end. Redis is faked (the id claims); the real scripts are tested against
the real server in tests/integration."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from hitl_gateway.audit import GENESIS, AuditChain, Sealing, SealingKey
from hitl_gateway.ids import Claim, Claimed
from hitl_gateway.outputs import MAX_MESSAGE_CHARS, dead_letter, wire_size
from hitl_gateway.policy.loader import load_policy_set
from hitl_gateway.routing import DUPLICATE, Router
from hitl_gateway.settings import LimitSettings, PolicySettings, Settings

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NOW_MS = 1_795_000_000_000


@dataclass
class Consumed:
    """The fields of an aiokafka ConsumerRecord the gateway reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class FakeIds:
    """Id claims as the Redis script answers them, from a table of (id -> status)."""

    def __init__(self, answers: dict[str, Claim] | None = None) -> None:
        self.answers = answers or {}
        self.asked: list[tuple[str, str, str]] = []

    async def claim(self, items: list[tuple[str, str, str]]) -> list[Claimed]:
        self.asked += items
        return [Claimed(self.answers.get(i, Claim.NEW), "outputs:1:7") for i, _, _ in items]


@pytest.fixture
def settings() -> Settings:
    return Settings(policy=PolicySettings(dir=CONFIGS / "policies"))


def _policies():  # type: ignore[no-untyped-def]
    return load_policy_set(CONFIGS / "policies", CONFIGS / "pools.yaml", CONFIGS / "routing.yaml")


def _record(offset: int, body: dict[str, object] | bytes, **kw: object) -> Consumed:
    value = body if isinstance(body, bytes) else orjson.dumps(body)
    defaults: dict[str, object] = {"key": b"k", "headers": ()}
    return Consumed("outputs", 2, offset, NOW_MS, value=value, **{**defaults, **kw})  # type: ignore[arg-type]


def _by_topic(out: list, settings: Settings) -> dict[str, list]:  # type: ignore[type-arg]
    topics = settings.topics
    names = {topics.delivered: "delivered", topics.holds: "holds", topics.audit: "audit",
             topics.review_tasks: "tasks", topics.deadletter: "dead"}  # fmt: skip
    grouped: dict[str, list] = {}  # type: ignore[type-arg]
    for o in out:
        grouped.setdefault(names.get(o.topic, o.topic), []).append(o)
    return grouped


async def test_a_clinical_summary_is_held_with_its_task_and_audit_event(settings: Settings) -> None:
    ids = FakeIds()
    router = Router(settings, None, ids)  # type: ignore[arg-type]
    body = {"id": "c-1", "domain": "clinical-summaries", "confidence": 0.97, "output": "x"}
    record = _record(11, body, headers=(("trace", b"t-1"),))
    out, tally = await router.route([record], _policies(), AuditChain())
    got = _by_topic(out, settings)
    assert sorted(got) == ["audit", "holds", "tasks"], "held: never delivered before review"
    hold = got["holds"][0]
    assert (hold.key, hold.value, hold.partition) == (b"c-1", record.value, 2)
    headers = dict(hold.headers)
    meta = orjson.loads(headers["hitl.hold"])
    content_hash = "sha256:" + hashlib.sha256(record.value).hexdigest()  # type: ignore[arg-type]
    assert (meta["pool"], meta["state"], meta["content_hash"]) == ("clinicians", "pending",
                                                                  content_hash)  # fmt: skip
    assert meta["source"] == {"topic": "outputs", "partition": 2, "offset": 11}
    assert (headers["trace"], headers["hitl.hold.key"]) == (b"t-1", b"k")  # the producer's own
    task = orjson.loads(got["tasks"][0].value)
    assert (task["item_id"], task["pool"], task["blocking"]) == ("c-1", "clinicians", True)
    assert task["record"] == body
    assert ids.asked == [("c-1", content_hash, "outputs:2:11")]
    assert tally.routes == {("clinical-summaries", "hold"): 1}
    assert tally.review_tasks == {"clinicians": 1}


async def test_a_confident_support_answer_passes_as_produced(settings: Settings) -> None:
    ids = FakeIds()
    router = Router(settings, None, ids)  # type: ignore[arg-type]
    record = _record(3, {"id": "s-1", "domain": "support-chat", "confidence": 0.99,
                         "language": "en", "output": "hi"})  # fmt: skip
    out, tally = await router.route([record], _policies(), AuditChain())
    delivered = _by_topic(out, settings)["delivered"]
    assert [(o.value, o.key, o.partition, o.timestamp_ms) for o in delivered] == [
        (record.value, b"k", 2, NOW_MS)
    ]
    headers = dict(delivered[0].headers)
    assert headers["hitl.route"] == b"pass"
    assert headers["hitl.source.offset"] == b"3"
    assert ids.asked == [], "records that are only forwarded claim no id"
    assert tally.delivered == 1


@pytest.mark.parametrize(
    ("claim", "expected"),
    [(Claim.DUPLICATE, {}), (Claim.CONFLICT, {"dead": ["duplicate_id"]})],
)
async def test_an_id_held_by_another_record_is_not_held_again(
    settings: Settings, claim: Claim, expected: dict[str, list[str]]
) -> None:
    router = Router(settings, None, FakeIds({"c-2": claim}))  # type: ignore[arg-type]
    record = _record(5, {"id": "c-2", "domain": "clinical-summaries", "output": "y"})
    out, tally = await router.route([record], _policies(), AuditChain())
    reasons = {
        name: [dict(o.headers)["hitl.dlq.reason"].decode() for o in outs]
        for name, outs in _by_topic(out, settings).items()
    }
    assert reasons == expected
    if claim is Claim.DUPLICATE:
        assert tally.routes == {("-", DUPLICATE): 1}
    else:
        message = dict(out[0].headers)["hitl.dlq.message"].decode()
        assert "outputs:1:7" in message  # names the record that holds the id
        assert out[0].value == record.value


async def test_invalid_and_poison_records_are_dead_letters_with_coordinates(
    settings: Settings,
) -> None:
    router = Router(settings, None, FakeIds())  # type: ignore[arg-type]
    records = [
        _record(1, b'{"id": "n", "domain": "support-chat", "output": NaN}'),
        _record(2, {"id": "u", "domain": "no-such-domain"}),
        _record(3, {"id": "h", "domain": "support-chat"}, headers=(("\udce9t\udce9", b"v"),)),
    ]
    out, tally = await router.route(records, _policies(), AuditChain())
    dead = _by_topic(out, settings)["dead"]
    assert [dict(o.headers)["hitl.dlq.reason"] for o in dead] == [
        b"not_json",
        b"unknown_domain",
        b"bad_header",
    ]
    assert [dict(o.headers)["hitl.source.offset"] for o in dead] == [b"1", b"2", b"3"]
    bad = dict(dead[2].headers)
    assert bad["hitl.dlq.header.key"] == b"\xe9t\xe9"  # the name's raw bytes, recoverable
    assert [o.value for o in dead] == [r.value for r in records]
    assert sum(tally.dead_letters.values()) == 3


async def test_a_record_whose_hold_would_not_fit_is_a_dead_letter_and_leaves_no_audit_link(
    settings: Settings,
) -> None:
    """The hold carries the record and, in its metadata, the producing service's name: a
    100 KB name doubles it past what the topics take, so the record is dead-lettered before
    any transaction (which would otherwise be retried forever); the audit chain does not
    keep the event of the record that was not held."""
    limited = settings.model_copy(update={"limits": LimitSettings(max_record_bytes=100_000)})
    router = Router(limited, None, FakeIds())  # type: ignore[arg-type]
    big = {"id": "c-9", "domain": "clinical-summaries", "metadata": {"service": "s" * 95_000}}
    small = {"id": "c-10", "domain": "clinical-summaries", "output": "fine"}
    chain = AuditChain()
    out, tally = await router.route([_record(1, big), _record(2, small)], _policies(), chain)
    got = _by_topic(out, limited)
    [dead] = got["dead"]
    headers = dict(dead.headers)
    assert headers["hitl.dlq.reason"] == b"too_large"
    assert b"hitl.holds" in headers["hitl.dlq.message"] or b"holds" in headers["hitl.dlq.message"]
    assert [h.key for h in got["holds"]] == [b"c-10"]
    [event] = [orjson.loads(a.value) for a in got["audit"]]
    assert event["item_id"] == "c-10"
    assert event["prev_hash"] == AuditChain().head.hash, "the dropped record's event left no link"
    assert tally.dead_letters == {"too_large": 1}
    keyed = AuditChain(sealing=Sealing(SealingKey("k1", b"k" * 32)))
    out, _ = await router.route([_record(1, big), _record(2, small)], _policies(), keyed)
    [event] = [orjson.loads(a.value) for a in _by_topic(out, limited)["audit"]]
    assert (event["seq"], event["prev_hash"]) == (0, GENESIS), "nor a sequence number"


def test_a_dead_letter_always_fits() -> None:
    record = _record(4, b"x" * 10_000, headers=(("h", b"v" * 500),))
    letter = dead_letter("dlq", record, "not_json", "m" * 50_000, policy_set_version="v",
                         gateway_version=b"1", max_wire_bytes=6_000)  # fmt: skip
    message = dict(letter.headers)["hitl.dlq.message"].decode()
    assert len(message) < MAX_MESSAGE_CHARS + 100, "a message never quotes a payload at length"
    assert wire_size(letter) <= 6_000
    assert 2_000 < len(letter.value or b"") < 10_000
    assert letter.value == b"x" * len(letter.value or b"")  # cut, never altered
    assert "bytes kept" in message
    whole = dead_letter("dlq", record, "not_json", "short", policy_set_version="v",
                        gateway_version=b"1", max_wire_bytes=1_000_000)  # fmt: skip
    assert whole.value == record.value
