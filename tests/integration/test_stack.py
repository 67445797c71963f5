"""The local stack script on its own ports and directory: ``up`` twice is safe, ``status``
tells the truth, and ``down`` stops exactly what ``up`` started."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import orjson
import redis

from .kafka_io import BOOTSTRAP, REDIS_URL

REPO = Path(__file__).resolve().parents[2]
STACK = [sys.executable, str(REPO / "deploy" / "local" / "stack.py")]


def _stack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STACK, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _pid(path: Path) -> int:
    return int(path.read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too; only a running process counts.
    state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    return state != "Z"


def test_up_is_idempotent_and_down_stops_what_up_started(tmp_path: Path) -> None:
    cache = Path(os.environ.get("STACK_DIR", REPO / ".cache" / "stack"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "STACK_"))},
        "STACK_DIR": str(tmp_path),
        "STACK_KAFKA_PORT": "19092",
        "STACK_CONTROLLER_PORT": "19093",
        "STACK_REDIS_PORT": "16379",
        "STACK_KAFKA_HEAP": "512m",
    }
    # Reuse the jars the main stack already resolved instead of resolving them again.
    if (cache / "kafka-3.9.1").exists():
        (tmp_path / "kafka-3.9.1").symlink_to(cache / "kafka-3.9.1")
    try:
        first = _stack(env, "up")
        assert first.returncode == 0, first.stderr
        assert "started: kafka, redis" in first.stdout
        kafka_pid, redis_pid = _pid(tmp_path / "kafka.pid"), _pid(tmp_path / "redis.pid")
        assert _alive(kafka_pid)
        assert _alive(redis_pid)

        second = _stack(env, "up")
        assert second.returncode == 0, second.stderr
        assert "started: nothing (already running)" in second.stdout
        assert "topics created: none" in second.stdout
        assert (_pid(tmp_path / "kafka.pid"), _pid(tmp_path / "redis.pid")) == (
            kafka_pid,
            redis_pid,
        )
        assert _stack(env, "status").returncode == 0
        assert (tmp_path / "redis-data" / "appendonlydir").is_dir(), "Redis must persist (AOF)"
    finally:
        down = _stack(env, "down", "--purge")
    assert down.returncode == 0, down.stderr
    assert not _alive(kafka_pid)
    assert not _alive(redis_pid)
    assert _stack(env, "status").returncode == 1
    # The main stack on the default ports is untouched.
    assert _stack({**env, "STACK_DIR": str(cache), "STACK_KAFKA_PORT": "9092",
                   "STACK_CONTROLLER_PORT": "9093", "STACK_REDIS_PORT": "6379"},
                  "status").returncode == 0  # fmt: skip


def test_bad_port_setting_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "STACK_DIR": str(tmp_path), "STACK_KAFKA_PORT": "ninety"}
    result = _stack(env, "status")
    assert result.returncode == 1
    assert "STACK_KAFKA_PORT='ninety' is not a TCP port" in result.stderr


def test_review_benchmark_smoke_run(tmp_path: Path) -> None:
    """The review benchmark runs end to end on the stack and writes its results (no timing
    assertions: figures are read by people, not by tests)."""
    results = REPO / "loadtest" / "results"
    before = set(results.glob("review-*.json")) if results.exists() else set()
    script = str(REPO / "loadtest" / "bench_review.py")
    run = subprocess.run(
        [sys.executable, script, "--decisions", "5", "--holds", "200"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "decision -> delivered" in run.stdout
    written = set(results.glob("review-*.json")) - before
    assert len(written) == 1
    data = orjson.loads(written.pop().read_bytes())
    assert data["decision_to_delivery"]["decisions"] == 5
    assert data["queue_listing"]["holds"] == 200


def test_throughput_benchmark_smoke_run(tmp_path: Path) -> None:
    """The side-by-side benchmark runs every mode on a tiny backlog, one latency load and a
    small review run, and writes its JSON and PNG (no timing assertions)."""
    run = subprocess.run(
        [sys.executable, str(REPO / "loadtest" / "bench.py"), "--records", "3000", "--runs", "1",
         "--loads", "0.5", "--latency-seconds", "2", "--review-holds", "200",
         "--review-decisions", "3", "--quiet", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "HITL_KAFKA__BOOTSTRAP_SERVERS": BOOTSTRAP,
             "HITL_REDIS__URL": REDIS_URL},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "D-tx/A-tx" in run.stdout
    (written,) = tmp_path.glob("bench-*.json")
    data = orjson.loads(written.read_bytes())
    # The peers (Q, F) run where the bench extra is installed.
    peers = {m for m, module in (("Q", "quixstreams"), ("F", "faust"))
             if importlib.util.find_spec(module) is not None}  # fmt: skip
    assert {d["mode"] for d in data["drains"]} == {
        "K-consume", "K-produce", "A", "A-tx", "A-eq", "D", "D-tx", *peers
    }  # fmt: skip
    assert all(d["records_per_s"] > 0 for d in data["drains"])
    assert all(d["check"]["ok"] for d in data["drains"] if d["check"])
    assert {(lat["mode"], lat["load"]) for lat in data["latency"]} == {
        (m, 0.5) for m in ("A", "A-tx", "A-eq", "D", "D-tx", *peers)
    }  # fmt: skip
    assert all(lat["samples"] > 0 for lat in data["latency"])
    assert data["review"]["queue_listing"]["holds"] == 200
    assert data["environment"]["cores"] == os.cpu_count()
    assert written.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_benchmark_smoke_run() -> None:
    """The per-stage benchmark runs on the generated mix against the real Redis, timed and
    counted under valgrind, and leaves no keys behind (no timing assertions)."""
    script = str(REPO / "loadtest" / "stages.py")
    timed = subprocess.run(
        [sys.executable, script, "--records", "2000", "--reps", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert timed.returncode == 0, timed.stderr[-2000:]
    stages = [line.split()[0] for line in timed.stdout.splitlines()]
    assert stages == ["route", "index_changes", "index_apply", "total"]
    assert "output records per record" in timed.stdout
    leftover = redis.Redis.from_url(REDIS_URL)
    try:
        assert list(leftover.scan_iter(match="stages-*")) == []
    finally:
        leftover.close()
    counted = subprocess.run(
        [sys.executable, script, "--records", "200", "--instructions"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert counted.returncode == 0, counted.stderr[-2000:]
    per_record = int(counted.stdout.split()[1].replace(",", ""))
    assert per_record > 0
