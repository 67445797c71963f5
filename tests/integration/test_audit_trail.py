"""The keyed audit trail against the real broker: a gateway seals with one key, a restarted
one takes the partitions over with the next (sequence numbers and checkpoint ranges go on),
checkpoints land in the same partitions; the live topic and its export verify, and each kind
of tampering with the export is reported by ``audit verify --file`` with its partition,
offset, sequence number and kind."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from hitl_gateway.admin import ensure_topics
from hitl_gateway.audit import CHECKPOINT, canonical, checkpoint_mac, link
from hitl_gateway.settings import AuditSettings, Settings

from .gateways import start_gateway
from .kafka_io import (
    BOOTSTRAP,
    FIXTURES,
    delete_topics,
    fresh_settings,
    read_all,
    settings_env,
    wait_until,
)

KEYS = {"k1": b"1" * 32, "k2": b"2" * 32}
DAY_MS = 86_400_000
Row = dict[str, Any]


def _keys_file(path: Path, names: list[str]) -> Path:
    path.write_text("".join(f"{k}: {base64.b64encode(KEYS[k]).decode()}\n" for k in names))
    return path


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
    env.update(settings_env(settings))
    return subprocess.run(
        [sys.executable, "-m", "hitl_gateway.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def _produce(settings: Settings, counts: dict[int, int], first: int) -> int:
    """Records of the audited domain, ``counts[p]`` to input partition p; returns the next
    record number."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=True)
    await producer.start()
    n, topic = first, settings.topics.outputs
    try:
        sent = []
        for partition, count in counts.items():
            for _ in range(count):
                body = {"id": f"a{n}", "domain": "audited", "output": {"text": f"answer {n}"}}
                value, key = orjson.dumps(body), f"a{n}".encode()
                sent.append(await producer.send(topic, value, key=key, partition=partition))
                n += 1
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return n


async def _trail(settings: Settings) -> list[Row]:
    records = await read_all(settings.topics.audit)
    return [{"partition": r.partition, "offset": r.offset, "event": orjson.loads(r.value)}
            for r in sorted(records, key=lambda r: (r.partition, r.offset))]  # fmt: skip


async def _audited(settings: Settings, routed: int) -> list[Row]:
    """The trail once ``routed`` records are on it."""
    found: list[Row] = []

    async def done() -> bool:
        nonlocal found
        found = await _trail(settings)
        return sum(r["event"]["type"] == "routed" for r in found) >= routed

    await wait_until(done, timeout_s=30)
    return found


async def _run(settings: Settings, counts: dict[int, int], first: int) -> int:
    """A gateway taking every partition, routing these records, stopped."""
    gateway, task = await start_gateway(settings)
    try:
        n = await _produce(settings, counts, first)
        trail = await _audited(settings, n)
        # Until partition 0 ends with an event no checkpoint vouches for yet (at most two
        # more single records: a checkpoint closes every fourth event).
        while [r for r in trail if r["partition"] == 0][-1]["event"]["type"] == CHECKPOINT:
            n = await _produce(settings, {0: 1}, n)
            trail = await _audited(settings, n)
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, 30)
    return n


def _write(path: Path, rows: list[Row]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def _rows(path: Path) -> list[Row]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _of(rows: list[Row], partition: int) -> list[Row]:
    return [r for r in rows if r["partition"] == partition]


def _where(row: Row) -> str:
    return f"partition {row['partition']} offset {row['offset']} seq {row['event']['seq']}"


def _rehash(event: dict[str, Any], key: bytes | None = None) -> None:
    """Relink an edited event as someone without the key would: plain SHA-256, or an HMAC
    under a guessed key."""
    if key is None:
        message = event["prev_hash"].encode() + b"\n" + canonical(event)
        event["hash"] = hashlib.sha256(message).hexdigest()
    else:
        event["hash"] = link(event["prev_hash"], event, key)


def _broken(settings: Settings, path: Path, *args: str) -> str:
    run = _cli(settings, "audit", "verify", "--file", str(path), *args)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.startswith("BROKEN: "), run.stdout
    return run.stdout


async def test_a_keyed_trail_verifies_and_each_tampering_is_reported(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "audited.yaml").write_text(
        "domain: audited\naudit: {level: full, retention_days: 30}\n"
    )
    (tmp_path / "pools.yaml").write_text((FIXTURES / "passthrough" / "pools.yaml").read_text())
    keys_file = _keys_file(tmp_path / "audit-keys.yaml", ["k1", "k2"])
    base = fresh_settings(policy_dir=policies)

    def sealed_with(key_id: str) -> Settings:
        audit = AuditSettings(keys_file=keys_file, active_key_id=key_id, checkpoint_every=4,
                              checkpoint_interval_s=3_600)  # fmt: skip
        return base.model_copy(update={"audit": audit})

    first, second = sealed_with("k1"), sealed_with("k2")
    await ensure_topics(first)  # the audit topic keeps 30 days (the policy's retention)
    try:
        n = await _run(first, {0: 5, 1: 5, 2: 5}, 0)
        await _run(second, {0: 5, 1: 5, 2: 5}, n)  # restarted with the next key: rotation

        live = await asyncio.to_thread(_cli, second, "audit", "verify")
        assert live.returncode == 0, live.stdout + live.stderr
        assert live.stdout.startswith("ok: "), live.stdout
        assert "checkpoint(s), key(s) k1, k2; front: the chain's start" in live.stdout
        assert "keys held: k1, k2; retention: 30 days" in live.stdout

        export = tmp_path / "trail.jsonl"
        exported = await asyncio.to_thread(_cli, second, "audit", "export", "--out", str(export))
        assert exported.returncode == 0, exported.stderr
        rows = _rows(export)
        for p in range(3):
            events = [r["event"] for r in _of(rows, p)]
            assert [e["seq"] for e in events] == list(range(len(events)))
            checkpoints = [e for e in events if e["type"] == CHECKPOINT]
            assert len(checkpoints) >= 2, events
            assert {e["key_id"] for e in checkpoints} == {"k1", "k2"}
            # The second gateway found the first one's last checkpoint: the ranges join up.
            starts = [0] + [c["seq"] + 1 for c in checkpoints[:-1]]
            assert [c["first_seq"] for c in checkpoints] == starts
        untouched = _cli(second, "audit", "verify", "--file", str(export))
        assert untouched.returncode == 0, untouched.stdout + untouched.stderr
        assert "retention: not checked" in untouched.stdout

        await asyncio.to_thread(_tampering, second, tmp_path, rows)
    finally:
        await delete_topics(first)


def _tampering(settings: Settings, tmp_path: Path, rows: list[Row]) -> None:
    export = tmp_path / "trail.jsonl"
    # In the middle: partition 1's first event says another route (its hash left alone).
    middle = [dict(r, event=dict(r["event"])) for r in rows]
    row = _of(middle, 1)[0]
    row["event"]["route"] = "hold"
    out = _broken(settings, _write(tmp_path / "middle.jsonl", middle))
    assert f"{_where(row)}: hash_mismatch: hash does not match the event" in out

    # At the end: partition 0's last event changed and relinked without the key.
    end = [dict(r, event=dict(r["event"])) for r in rows]
    row = _of(end, 0)[-1]
    assert row["event"]["type"] == "routed"
    row["event"]["route"] = "hold"
    _rehash(row["event"])
    out = _broken(settings, _write(tmp_path / "end.jsonl", end))
    assert f"{_where(row)}: tail_tampered: " in out

    # At the front: partition 2's first two events cut. Retention (30 days) did not do it.
    front = [r for r in rows if not (r["partition"] == 2 and r["event"]["seq"] < 2)]
    path = _write(tmp_path / "front.jsonl", front)
    out = _broken(settings, path, "--retention-days", "30")
    assert f"{_where(_of(front, 2)[0])}: front_truncated: events before seq 2 were removed" in out
    # Cut past every checkpoint: partition 0 keeps only what follows its last one.
    vouched = max(r["event"]["seq"] for r in _of(rows, 0) if r["event"]["type"] == CHECKPOINT)
    cut = [r for r in rows if r["partition"] != 0 or r["event"]["seq"] > vouched]
    out = _broken(settings, _write(tmp_path / "cut.jsonl", cut))
    assert f"{_where(_of(cut, 0)[0])}: front_truncated: the trail starts at seq" in out
    assert "no checkpoint vouches for where it starts" in out

    # A forged checkpoint: partition 1's first one claims its range began 60 days ago.
    forged = [dict(r, event=dict(r["event"])) for r in rows]
    row = next(r for r in _of(forged, 1) if r["event"]["type"] == CHECKPOINT)
    event = row["event"]
    event["since_ms"] -= 60 * DAY_MS
    event["mac"] = checkpoint_mac(event, b"guessed" * 5)
    _rehash(event, b"guessed" * 5)
    out = _broken(settings, _write(tmp_path / "forged.jsonl", forged))
    assert f"{_where(row)}: forged_checkpoint: its MAC does not match" in out

    # A verifier without the retired key: the events sealed with it name an unknown key.
    only_new = _keys_file(tmp_path / "only-k2.yaml", ["k2"])
    out = _broken(settings, export, "--keys", str(only_new))
    first = _of(rows, 0)[0]
    assert f"{_where(first)} (and the next" in out
    assert "unknown_key_id: sealed with key id 'k1'" in out

    # The end cut off from the last checkpoint on: shows against the earlier export.
    p2 = _of(rows, 2)
    last = max(r["event"]["seq"] for r in p2 if r["event"]["type"] == CHECKPOINT)
    shorter = [r for r in rows if r["partition"] != 2 or r["event"]["seq"] < last]
    path = _write(tmp_path / "shorter.jsonl", shorter)
    assert _cli(settings, "audit", "verify", "--file", str(path)).returncode == 0  # on its own
    out = _broken(settings, path, "--anchor", str(export))
    assert f"seq {last}: tail_truncated: the trail ends at seq {last - 1}" in out
