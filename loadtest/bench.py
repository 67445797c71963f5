"""Throughput and latency, side by side with the bare Kafka client, on one broker.

    .venv/bin/python loadtest/bench.py [--records 200000] [--payload-bytes 1024] [--runs 2]
        [--latency-seconds 20] [--soak-seconds 0] [--profile] [--out loadtest/results]

On the local stack (make stack-up), one pre-loaded topic of realistic records, drained in
alternating runs by:

- K: the broker's own perf tools (ConsumerPerformance, ProducerPerformance): the ceiling;
- A / A-tx: loadtest/passthrough.py, bare aiokafka consume -> produce, plain or with a
  transaction per batch (the gateway's commit interval);
- A-eq: the passthrough with transactions doing the gateway's I/O without its work: per
  input the records the gateway writes for the same mix (their number and sizes, from the
  gateway's router on a sample: loadtest/equal_work.py) and per held record the hold
  index's Redis writes, pipelined;
- D / D-tx: the gateway (``hitl-gateway run``) routing the realistic mix, at-least-once
  (``HITL_KAFKA__EXACTLY_ONCE=false``) or exactly-once (the default);
- Q / F: the gateway's job (its codec, policy engine and output builders) as a Quix Streams
  and a faust-streaming application with exactly-once processing (loadtest/peers/; the
  ``bench`` extra); each drain is checked: every input committed, one outcome per input.

The broker and Redis are ``HITL_KAFKA__BOOTSTRAP_SERVERS`` and ``HITL_REDIS__URL`` (or
127.0.0.1 at ``STACK_KAFKA_PORT`` and ``STACK_REDIS_PORT``, as ``make stack-up`` starts them).

Each drain reports records per second, CPU milliseconds per 1,000 records and peak and steady
memory of the process. Then end-to-end latency (p50/p99/p99.9, read_committed, from the
record timestamp) at 25/50/75% of each mode's own drain rate, and the review path (memory per held
item in Redis, queue listing with 100,000 holds, decision to delivery). Prints a table,
writes bench-<time>.json and bench-<time>.png. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiokafka
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "loadtest"))
import bench_review  # noqa: E402
import equal_work  # noqa: E402
import generate  # noqa: E402
from hitl_gateway.settings import TopicSettings  # noqa: E402
from records import make_stream  # noqa: E402

# The gateway's topics besides its input, the delivered one first.
_LAYOUT = ("outputs", "delivered", "partitions", "replication_factor", "min_insync_replicas")
GATEWAY_OUTPUTS = ("delivered", *(
    name for name in TopicSettings.model_fields if name not in _LAYOUT
))  # fmt: skip
# The local stack's addresses (deploy/local/stack.py takes the same variables).
BOOTSTRAP = os.environ.get("HITL_KAFKA__BOOTSTRAP_SERVERS") or (
    f"127.0.0.1:{os.environ.get('STACK_KAFKA_PORT', '9092')}"
)
REDIS_URL = os.environ.get("HITL_REDIS__URL") or (
    f"redis://127.0.0.1:{os.environ.get('STACK_REDIS_PORT', '6379')}/0"
)
MODES = ("K", "A", "A-tx", "A-eq", "D", "D-tx", "Q", "F")
# The topics a peer (Q, F) writes, by the gateway's setting names.
PEER_OUTPUTS = ("delivered", "holds", "review_tasks", "deadletter")
PYTHON = ROOT / ".venv" / "bin" / "python"
GATEWAY = ROOT / ".venv" / "bin" / "hitl-gateway"
KAFKA_LIBS = ROOT / ".cache" / "stack" / "kafka-3.9.1" / "libs"
# The offered load's generator shares the two cores with what it measures: C1 only and the
# serial collector halve its CPU (about 0.3 of a core at 8,000 records/s, against 0.65 with
# the JVM's defaults). The K drains keep the defaults: they measure the ceiling.
LIGHT_JVM = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Drain:
    mode: str
    run: int
    records: int
    seconds: float
    records_per_s: float
    cpu_ms_per_1k: float
    peak_rss_mb: float
    steady_rss_mb: float
    records_out: int = 0  # records the process produced (all topics)
    note: str = ""
    check: dict[str, Any] = field(default_factory=dict)  # Q, F, D-tx: outcomes counted
    load: str = ""  # the host's load average (1, 5, 15 minutes) at the drain's end


@dataclass
class Latency:
    mode: str
    load: float  # share of D-tx's drain rate
    offered_per_s: float
    samples: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    peak_rss_mb: float = 0.0
    loadavg: str = ""  # the host's load average (1, 5, 15 minutes) at the run's end


@dataclass
class Results:
    environment: dict[str, Any]
    settings: dict[str, Any]
    drains: list[Drain] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    soak: dict[str, Any] = field(default_factory=dict)
    review: dict[str, Any] = field(default_factory=dict)
    profile: list[tuple[str, float]] = field(default_factory=list)


# -- process measurement ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its reaped children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1e6


async def committed(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(o.offset for tp, o in offsets.items() if tp.topic == topic and o.offset > 0)


async def end_offsets(bootstrap: str, topics: list[str]) -> int:
    """Records in ``topics`` (the sum of their end offsets, transaction markers included)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(t, p) for t in topics for p in cluster.partitions_for_topic(t) or ()]
        return sum((await consumer.end_offsets(tps)).values()) if tps else 0
    finally:
        await stop_consumer(consumer)


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """aiokafka may cancel an internal task of a consumer stopped soon after starting and
    then re-raise that cancellation from ``stop()``; only a cancellation of ours counts."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def watch_drain(
    proc: subprocess.Popen[bytes],
    admin: AIOKafkaAdminClient,
    group: str,
    topic: str,
    total: int,
    *,
    timeout_s: float,
) -> tuple[float, int, float, list[tuple[float, float]]]:
    """Poll the group's committed offsets until ``total``: (seconds, records timed, CPU
    seconds, [(time, rss)]), timed from the first commit seen."""
    start: tuple[float, int, float] | None = None
    idle: tuple[float, int, float] | None = None
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the process exited early with {proc.returncode}")
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"not drained in {timeout_s:.0f} s")
        done = await committed(admin, group, topic)
        cpu = cpu_seconds(proc.pid)
        samples.append((now, rss_mb(proc.pid)))
        if start is None and done > 0:
            # From the first commit; a drain done within one poll counts from the poll before.
            start = (now, done, cpu) if done < total or idle is None else idle
        elif start is None:
            idle = (now, 0, cpu)
        if start is not None and done >= total:
            t0, c0, cpu0 = start
            return now - t0, total - c0, cpu - cpu0, samples
        await asyncio.sleep(0.05)


async def cleanup(admin: AIOKafkaAdminClient, topics: list[str], run_id: str | None) -> None:
    """Delete a run's topics and Redis keys, so runs do not slow each other down (a growing
    Redis rewrites its append-only file; a growing broker log dir costs disk)."""
    with contextlib.suppress(Exception):
        await admin.delete_topics(topics)
    if run_id is None:
        return
    await bench_review.drop_redis_keys(REDIS_URL, f"bench-{run_id}:")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def memory(samples: list[tuple[float, float]]) -> tuple[float, float]:
    """Peak, and the median over the second half (steady state)."""
    rss = [r for _, r in samples]
    return max(rss), statistics.median(rss[len(rss) // 2 :])


# -- the modes --------------------------------------------------------------------------------


@dataclass
class Mode:
    name: str
    bootstrap: str
    partitions: int
    uvloop: bool = False
    log_dir: Path = Path(tempfile.gettempdir())
    max_batch: int = 1_000
    commit_interval_ms: int | None = None  # the gateway's default if None
    plan: Path | None = None  # A-eq: the gateway's outputs per input (equal_work.py)
    peer_commit_interval_ms: dict[str, int] = field(default_factory=dict)  # Q, F
    gateway_settings: dict[str, str] = field(default_factory=dict)  # D, D-tx: HITL_* values

    async def start(
        self, run_id: str, source: str
    ) -> tuple[subprocess.Popen[bytes], str, list[str]]:
        """Start the process on ``source``; returns it, its group and its output topics (the
        delivered one first)."""
        log = (self.log_dir / f"{self.name}-{run_id}.log").open("wb")
        group = f"bench-{self.name.lower()}-{run_id}"
        if self.name in ("Q", "F"):
            return await self.start_peer(run_id, source, group, log)
        if self.name.startswith("A"):
            # A-eq writes the gateway's topics: its --output is their names' prefix.
            out = f"bench.{run_id}." + ("" if self.name == "A-eq" else "out")
            outputs = [out]
            argv = [str(PYTHON), str(ROOT / "loadtest" / "passthrough.py"),
                    "--bootstrap", self.bootstrap, "--input", source, "--output", out,
                    "--group", group, "--max-batch", str(self.max_batch)]  # fmt: skip
            if self.name == "A-eq":
                assert self.plan is not None
                outputs = [f"bench.{run_id}.{name}" for name in GATEWAY_OUTPUTS]
                argv += ["--plan", str(self.plan), "--redis-url", REDIS_URL,
                         "--redis-prefix", f"bench-{run_id}:"]  # fmt: skip
            for topic in outputs:
                await generate.create_topic(self.bootstrap, topic, self.partitions)
            if self.name in ("A-tx", "A-eq"):
                argv.append("--transactional")
            if self.uvloop:
                argv.append("--uvloop")
            return subprocess.Popen(argv, stdout=log, stderr=log), group, outputs
        env = self.gateway_env(run_id, source, group)
        subprocess.run([str(GATEWAY), "topics", "ensure"], env=env, check=True,
                       stdout=log, stderr=log)  # fmt: skip
        proc = subprocess.Popen([str(GATEWAY), "run"], env=env, stdout=log, stderr=log)
        return proc, group, [f"bench.{run_id}.{name}" for name in GATEWAY_OUTPUTS]

    async def start_peer(
        self, run_id: str, source: str, group: str, log: Any
    ) -> tuple[subprocess.Popen[bytes], str, list[str]]:
        """Q or F on ``source``, writing the gateway's topics that a peer writes."""
        outputs = [f"bench.{run_id}.{kind}" for kind in PEER_OUTPUTS]
        for topic in outputs:
            await generate.create_topic(self.bootstrap, topic, self.partitions)
        app = "quix_app.py" if self.name == "Q" else "faust_app.py"
        argv = [str(PYTHON), str(ROOT / "loadtest" / "peers" / app), "--bootstrap",
                self.bootstrap, "--input", source, "--group", group, "--output-prefix",
                f"bench.{run_id}."]  # fmt: skip
        # Q commits like the gateway (its interval); F keeps Faust's own unless told.
        interval = self.peer_commit_interval_ms.get(self.name)
        if interval is not None:
            argv += ["--commit-interval-ms", str(interval)]
        return subprocess.Popen(argv, stdout=log, stderr=log), group, outputs

    def gateway_env(self, run_id: str, source: str, group: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
        if self.commit_interval_ms is not None:
            env["HITL_KAFKA__COMMIT_INTERVAL_MS"] = str(self.commit_interval_ms)
        env |= self.gateway_settings
        env |= {f"HITL_TOPICS__{n.upper()}": f"bench.{run_id}.{n}" for n in GATEWAY_OUTPUTS}
        return env | {
            "HITL_TOPICS__OUTPUTS": source,
            "HITL_TOPICS__PARTITIONS": str(self.partitions),
            "HITL_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "HITL_KAFKA__GROUP_ID": group,
            "HITL_KAFKA__MAX_BATCH_RECORDS": str(self.max_batch),
            "HITL_KAFKA__TRANSACTIONAL_ID_PREFIX": f"bench-{run_id}",
            "HITL_KAFKA__EXACTLY_ONCE": "true" if self.name == "D-tx" else "false",
            "HITL_REDIS__KEY_PREFIX": f"bench-{run_id}:",
            "HITL_REDIS__URL": REDIS_URL,
            "HITL_HTTP__ENABLED": "false",
            "HITL_POLICY__DIR": str(ROOT / "configs" / "policies"),
            "HITL_RUNTIME__EVENT_LOOP": "uvloop" if self.uvloop else "asyncio",
            "HITL_RUNTIME__LOG_FORMAT": "json",
            "HITL_RUNTIME__LOG_LEVEL": "WARNING",
        }


async def drain_run(
    mode: Mode, admin: AIOKafkaAdminClient, source: str, total: int, run: int
) -> Drain:
    run_id = uuid.uuid4().hex[:8]
    proc, group, outputs = await mode.start(run_id, source)
    try:
        seconds, timed, cpu, samples = await watch_drain(
            proc, admin, group, source, total, timeout_s=max(120.0, total / 500)
        )
    finally:
        stop(proc)
    peak, steady = memory(samples)
    produced = await end_offsets(mode.bootstrap, outputs)
    check = {}
    if mode.name in ("Q", "F", "D-tx"):
        check = await outcomes(mode.bootstrap, outputs, total)
    await cleanup(admin, outputs, run_id)
    return Drain(mode.name, run, timed, round(seconds, 3), round(timed / seconds),
                 round(cpu * 1e6 / timed, 1), round(peak, 1), round(steady, 1),
                 produced, check=check, load=load_average())  # fmt: skip


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def outcomes(bootstrap: str, outputs: list[str], total: int) -> dict[str, Any]:
    """Read a drain's outputs as a read_committed consumer: records per topic, and whether
    every input ended in exactly one outcome (delivered, held for review before release, or
    dead-lettered; a deliver-and-review item is delivered and has a non-blocking hold)."""
    counts: dict[str, int] = {}
    blocking = 0
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await consumer.start()
    try:
        for topic in outputs:
            kind = topic.rsplit(".", 1)[1]
            if kind not in PEER_OUTPUTS:
                continue
            parts = (await consumer._client.fetch_all_metadata()).partitions_for_topic(topic)
            tps = [TopicPartition(topic, p) for p in parts or ()]
            ends = await consumer.end_offsets(tps)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            n = 0
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    n += len(records)
                    if kind == "holds":
                        blocking += sum(_blocking_hold(r.headers) for r in records)
            counts[kind] = n
    finally:
        await stop_consumer(consumer)
    ended = counts.get("delivered", 0) + blocking + counts.get("deadletter", 0)
    ok = ended == total and counts.get("review_tasks") == counts.get("holds")
    return counts | {"blocking_holds": blocking, "inputs": total, "outcomes": ended, "ok": ok}


def _blocking_hold(hdrs: Any) -> bool:
    """A hold that blocks its record (not a deliver-and-review copy, not a gold item)."""
    meta = next((v for k, v in hdrs if k == "hitl.hold"), None)
    if meta is None:
        return False
    hold = orjson.loads(meta)
    return bool(hold.get("blocking")) and hold.get("gold") is None


def kafka_tool(cls: str, *args: str, jvm: tuple[str, ...] = ()) -> tuple[str, float]:
    """Run a Kafka perf tool: its output and the CPU seconds it used."""
    before = os.times()
    proc = subprocess.run(
        ["java", "-Xmx512m", *jvm, "-cp", f"{KAFKA_LIBS}/*", f"org.apache.kafka.tools.{cls}",
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900, check=False,
    )  # fmt: skip
    after = os.times()
    cpu = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    output = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{cls} failed: {output[-800:]}")
    return output, cpu


def k_consume(bootstrap: str, topic: str, total: int, run: int) -> Drain:
    out, cpu = kafka_tool("ConsumerPerformance", "--bootstrap-server", bootstrap, "--topic", topic,
                          "--messages", str(total), "--group", f"bench-k-{uuid.uuid4().hex[:8]}",
                          "--timeout", "60000", "--hide-header")  # fmt: skip
    line = next(x for x in out.splitlines()[::-1] if x.count(",") >= 9)
    rate = float(line.split(",")[9])  # fetch.nMsg.sec: excludes JVM start and the group join
    return Drain("K-consume", run, total, round(total / rate, 3), round(rate),
                 round(cpu * 1e6 / total, 1), 0.0, 0.0,
                 note="CPU includes JVM start-up")  # fmt: skip


def k_produce(bootstrap: str, topic: str, total: int, size: int, run: int) -> Drain:
    out, cpu = kafka_tool("ProducerPerformance", "--topic", topic, "--num-records", str(total),
                          "--record-size", str(size), "--throughput", "-1", "--producer-props",
                          f"bootstrap.servers={bootstrap}", "acks=all", "linger.ms=5")  # fmt: skip
    match = re.search(r"(\d+) records sent, ([\d.]+) records/sec", out)
    if match is None:
        raise RuntimeError(f"ProducerPerformance said: {out[-500:]}")
    rate = float(match.group(2))
    return Drain("K-produce", run, total, round(total / rate, 3), round(rate),
                 round(cpu * 1e6 / total, 1), 0.0, 0.0, total,
                 note="CPU includes JVM start-up")  # fmt: skip


# -- latency at a fixed offered load ----------------------------------------------------------


async def latency_run(
    mode: Mode,
    admin: AIOKafkaAdminClient,
    load: float,
    rate: float,
    seconds: float,
    *,
    payload_file: Path,
) -> tuple[Latency, list[tuple[float, float]]]:
    """Offered load from ProducerPerformance (timestamps at send, linger 1 ms) into a fresh
    topic; a read_committed consumer measures now - timestamp on the delivered records."""
    run_id = uuid.uuid4().hex[:8]
    source = f"bench.{run_id}.in"
    await generate.create_topic(mode.bootstrap, source, mode.partitions)
    proc, group, outputs = await mode.start(run_id, source)
    delivered = outputs[0]
    samples: list[tuple[float, float]] = []
    try:
        warm = 300
        await generate.backlog(mode.bootstrap, source, warm, quiet=True)
        await watch_drain(proc, admin, group, source, warm, timeout_s=120)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=mode.bootstrap, isolation_level="read_committed", fetch_max_wait_ms=5
        )
        await consumer.start()
        latencies: list[float] = []
        try:
            cluster = await consumer._client.fetch_all_metadata()
            tps = [TopicPartition(delivered, p)
                   for p in cluster.partitions_for_topic(delivered) or ()]  # fmt: skip
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            count = int(rate * seconds)
            measure_from_ms = time.time() * 1000 + min(2_000.0, seconds * 250)
            producer = asyncio.create_task(asyncio.to_thread(
                kafka_tool, "ProducerPerformance", "--topic", source, "--num-records", str(count),
                "--throughput", str(int(rate)), "--payload-file", str(payload_file),
                "--producer-props", f"bootstrap.servers={mode.bootstrap}", "acks=1", "linger.ms=1",
                jvm=LIGHT_JVM,
            ))  # fmt: skip
            quiet_since = time.monotonic()
            last_rss = 0.0
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=10_000)
                now_ms = time.time() * 1000
                for records in batch.values():
                    latencies += [now_ms - r.timestamp for r in records
                                  if r.timestamp >= measure_from_ms]  # fmt: skip
                if batch:
                    quiet_since = time.monotonic()
                if time.monotonic() - last_rss > 0.5:
                    last_rss = time.monotonic()
                    samples.append((last_rss, rss_mb(proc.pid)))
                if producer.done() and time.monotonic() - quiet_since > 2.0:
                    break
            await producer
        finally:
            await stop_consumer(consumer)
    finally:
        stop(proc)
        await cleanup(admin, [source, *outputs], run_id)
    if not latencies:
        raise RuntimeError(f"{mode.name}: no delivered record measured")
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    peak = max((r for _, r in samples), default=0.0)
    return Latency(mode.name, load, round(rate), len(ordered), pct(0.5), pct(0.99), pct(0.999),
                   round(peak, 1), load_average()), samples  # fmt: skip


# -- profile ----------------------------------------------------------------------------------


async def profile_run(mode: Mode, admin: AIOKafkaAdminClient, source: str, total: int,
                      out: Path) -> list[tuple[str, float]]:  # fmt: skip
    """Drain once more under py-spy; the top functions by own time (share of samples)."""
    run_id = uuid.uuid4().hex[:8]
    proc, group, outputs = await mode.start(run_id, source)
    raw = out.with_suffix(".pyspy.txt")
    spy = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(proc.pid), "--format",
         "raw", "--output", str(raw), "--rate", "1000", "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await watch_drain(proc, admin, group, source, total, timeout_s=max(120.0, total / 500))
    finally:
        spy.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(30)
        stop(proc)
        await cleanup(admin, outputs, run_id)
    own: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines() if raw.exists() else ():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        leaf = re.sub(r":\d+\)$", ")", stack.split(";")[-1])  # by function, not by line
        n = int(count)
        samples += n
        own[leaf] = own.get(leaf, 0) + n
    top = sorted(own.items(), key=lambda kv: -kv[1])[:25]
    return [(name, round(n / samples, 4)) for name, n in top] if samples else []


# -- report -----------------------------------------------------------------------------------


def environment(bootstrap: str) -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())  # fmt: skip
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mb": mem,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "aiokafka": aiokafka.__version__,
        "kafka": KAFKA_LIBS.parent.name,
        "java": (java.stderr.splitlines() or ["?"])[0],
        "bootstrap": bootstrap,
        "broker": "same machine",
        "load": load_average(),  # at the start; each drain records its own
    }


def summary(results: Results) -> dict[str, Any]:
    by_mode: dict[str, list[Drain]] = {}
    for d in results.drains:
        by_mode.setdefault(d.mode, []).append(d)
    out: dict[str, Any] = {}
    for mode, runs in by_mode.items():
        out[mode] = {
            "records_per_s": round(statistics.median(r.records_per_s for r in runs)),
            "cpu_ms_per_1k": round(statistics.median(r.cpu_ms_per_1k for r in runs), 1),
            "peak_rss_mb": max(r.peak_rss_mb for r in runs),
            "steady_rss_mb": round(statistics.median(r.steady_rss_mb for r in runs), 1),
        }
    ratios = {}
    for d, a in (("D", "A"), ("D-tx", "A-tx"), ("D-tx", "A-eq"), ("D-tx", "Q"), ("D-tx", "F")):
        if d in out and a in out:
            ratios[f"{d}/{a}"] = round(out[d]["records_per_s"] / out[a]["records_per_s"], 3)
    if "D-tx" in out and "A-eq" in out:  # the goal's sense: A-eq's CPU over D-tx's
        ratios["CPU A-eq/D-tx"] = round(
            out["A-eq"]["cpu_ms_per_1k"] / out["D-tx"]["cpu_ms_per_1k"], 3
        )
    checks = [d.check.get("ok") for d in results.drains if d.check]
    return {"by_mode": out, "ratios": ratios, "checks_ok": all(checks) if checks else None}


def print_table(results: Results, summ: dict[str, Any]) -> None:
    print("\ndrain (median of runs)     rec/s   CPU ms/1k   peak MB   steady MB   load (last run)")
    for mode, s in summ["by_mode"].items():
        last = [d.load for d in results.drains if d.mode == mode][-1:] or [""]
        print(f"  {mode:<20}{s['records_per_s']:>10,}{s['cpu_ms_per_1k']:>12}"
              f"{s['peak_rss_mb']:>10}{s['steady_rss_mb']:>12}   {last[0]}")  # fmt: skip
    for name, value in summ["ratios"].items():
        print(f"  {name}: {value:.2f}")
    if results.latency:
        print("\nend-to-end latency (read_committed, from the record timestamp)")
        print("  mode     load   offered/s   samples    p50 ms    p99 ms  p99.9 ms   host load")
        for lat in results.latency:
            print(f"  {lat.mode:<8}{lat.load:>5.0%}{lat.offered_per_s:>12,}{lat.samples:>10,}"
                  f"{lat.p50_ms:>10}{lat.p99_ms:>10}{lat.p999_ms:>10}   {lat.loadavg}")  # fmt: skip
    if results.soak:
        s = results.soak
        print(f"\nsoak {s['seconds']:.0f} s at {s['offered_per_s']:,}/s: RSS first minute "
              f"{s['first_minute_mb']} MB, last minute {s['last_minute_mb']} MB, "
              f"peak {s['peak_mb']} MB")  # fmt: skip
    if results.profile:
        print("\nprofile, own time (D-tx drain, py-spy):")
        for name, share in results.profile[:12]:
            print(f"  {share:>6.1%}  {name}")


def chart(results: Results, summ: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only for the chart

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(16, 4.8))
    modes = list(summ["by_mode"])
    colors = {m: plt.get_cmap("tab10")(n % 10) for n, m in enumerate(MODES)}
    drains = [summ["by_mode"][m]["records_per_s"] for m in modes]
    left.bar(modes, drains, color=[colors.get(m, "#4878a8") for m in modes])
    left.set_title("Draining a backlog: records per second")
    left.tick_params(axis="x", rotation=20)
    cpu = [summ["by_mode"][m]["cpu_ms_per_1k"] for m in modes]
    mid.bar(modes, cpu, color=[colors.get(m, "#4878a8") for m in modes])
    mid.set_title("CPU ms per 1,000 records (drain)")
    mid.tick_params(axis="x", rotation=20)
    for mode in [m for m in MODES if any(lat.mode == m for lat in results.latency)]:
        rows = [lat for lat in results.latency if lat.mode == mode]
        loads = [f"{lat.load:.0%}" for lat in rows]
        right.plot(loads, [lat.p99_ms for lat in rows], marker="s", color=colors[mode],
                   label=f"{mode} p99")  # fmt: skip
        right.plot(loads, [lat.p50_ms for lat in rows], marker="o", linestyle=":",
                   color=colors[mode], label=f"{mode} p50")  # fmt: skip
    right.set_title("Latency (ms), share of own drain rate")
    if results.latency:
        right.set_yscale("log")
        right.legend(fontsize=7, ncol=2)
    else:
        right.text(0.5, 0.5, "not measured (--latency-seconds 0)", ha="center", va="center")
    fig.suptitle(f"hitl-gateway (D, D-tx) vs bare aiokafka (A, A-tx, A-eq), Quix Streams (Q) "
                 f"and Faust (F); {results.environment['cores']} cores, "
                 f"{results.settings['payload_bytes']} B records, load average "
                 f"{results.environment.get('load', '?')}")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- main -------------------------------------------------------------------------------------


def peer_intervals(args: argparse.Namespace) -> dict[str, int]:
    """Q commits at the gateway's interval; F at Faust's own unless told."""
    intervals = {"Q": 20 if args.commit_interval is None else args.commit_interval}
    if args.faust_commit_interval is not None:
        intervals["F"] = args.faust_commit_interval
    return intervals


def gateway_settings(pairs: list[str]) -> dict[str, str]:
    """``--gateway-setting NAME=VALUE`` pairs; only HITL_* names (the gateway refuses unknown
    ones at start, naming them)."""
    settings: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("HITL_"):
            raise SystemExit(f"--gateway-setting {pair!r}: expected HITL_<NAME>=<value>")
        settings[name] = value
    return settings


async def main(args: argparse.Namespace) -> Path:
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = gateway_settings(args.gateway_setting)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results = Results(environment(args.bootstrap), {
        "records": args.records, "payload_bytes": args.payload_bytes,
        "partitions": args.partitions, "runs": args.runs, "domains": args.domains or "all",
        "max_batch_records": args.max_batch, "commit_interval_ms": args.commit_interval,
        "linger_ms": 5, "invalid_share": args.invalid_share, "event_loop": args.event_loop,
        "faust_commit_interval_ms": args.faust_commit_interval,
        "gateway_settings": extra,
    })  # fmt: skip
    run_id = uuid.uuid4().hex[:8]
    source = f"bench.{run_id}.src"
    await generate.create_topic(args.bootstrap, source, args.partitions)
    print(f"pre-loading {args.records:,} records of {args.payload_bytes} B into {source}")
    await generate.backlog(args.bootstrap, source, args.records, sizes=(args.payload_bytes,),
                           invalid_share=args.invalid_share, quiet=args.quiet,
                           domains=args.domains)  # fmt: skip
    logs = out_dir / f"logs-{stamp}"
    logs.mkdir(exist_ok=True)
    uvloop = args.event_loop == "uvloop"
    plan = None
    if "A-eq" in args.modes:  # the gateway's outputs per input for this mix, from its router
        plan = out_dir / f"plan-{stamp}.json"
        shapes = await equal_work.make_plan(2_000, args.payload_bytes, args.invalid_share,
                                            REDIS_URL)  # fmt: skip
        plan.write_bytes(orjson.dumps(shapes))
        results.settings["a_eq_outputs_per_input"] = round(
            sum(len(s) for s in shapes) / len(shapes), 3
        )
    modes = {n: Mode(n, args.bootstrap, args.partitions, uvloop, logs, args.max_batch,
                     args.commit_interval, plan, peer_intervals(args), extra)
             for n in args.modes}  # fmt: skip
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    await admin.start()
    try:
        for run in range(args.runs):
            order = args.modes if run % 2 == 0 else args.modes[::-1]  # alternate
            if "K" in args.modes and run % 2 == 0:
                results.drains.append(k_consume(args.bootstrap, source, args.records, run))
                sink = f"bench.{run_id}.k{run}"
                await generate.create_topic(args.bootstrap, sink, args.partitions)
                results.drains.append(k_produce(args.bootstrap, sink, args.records,
                                                args.payload_bytes, run))  # fmt: skip
            for name in order:
                if name == "K":
                    continue
                drain = await drain_run(modes[name], admin, source, args.records, run)
                print(f"  run {run} {name}: {drain.records_per_s:,} rec/s, "
                      f"{drain.cpu_ms_per_1k} CPU ms/1k, peak {drain.peak_rss_mb} MB, "
                      f"{drain.records_out / drain.records:.2f} out/in (load {drain.load})"
                      + (f"; check {drain.check}" if drain.check else ""))  # fmt: skip
                results.drains.append(drain)
        summ = summary(results)
        # The offered loads' reference: this run's D-tx drain, or a given rate (to offer two
        # code versions the same rates on a machine whose speed drifts).
        rates = {m: args.rate or summ["by_mode"].get(m, {}).get("records_per_s") or 0
                 for m in modes}  # fmt: skip
        top = rates.get("D-tx")
        if args.latency_seconds > 0 and any(rates.values()):
            payload = out_dir / f"payloads-{stamp}.jsonl"
            payload.write_bytes(b"\n".join(
                r.value for r in make_stream(5_000, run_id=f"lat{run_id}",
                                             payload_bytes=args.payload_bytes)
                if r.value is not None
            ))  # fmt: skip
            for load in args.loads:
                for name in [m for m in MODES if m in modes and rates[m]]:
                    lat, _ = await latency_run(modes[name], admin, load, rates[name] * load,
                                               args.latency_seconds,
                                               payload_file=payload)  # fmt: skip
                    print(f"  latency {name} at {load:.0%} ({lat.offered_per_s:,}/s): p50 "
                          f"{lat.p50_ms} ms, p99 {lat.p99_ms} ms, p99.9 {lat.p999_ms} ms "
                          f"(load {lat.loadavg})")  # fmt: skip
                    results.latency.append(lat)
            if args.soak_seconds > 0 and top:
                _, samples = await latency_run(modes["D-tx"], admin, 0.5, top * 0.5,
                                               args.soak_seconds, payload_file=payload)  # fmt: skip
                first = [r for t, r in samples if t - samples[0][0] <= 60]
                last = [r for t, r in samples if samples[-1][0] - t <= 60]
                results.soak = {
                    "seconds": args.soak_seconds, "offered_per_s": round(top * 0.5),
                    "first_minute_mb": round(statistics.median(first), 1),
                    "last_minute_mb": round(statistics.median(last), 1),
                    "peak_mb": round(max(r for _, r in samples), 1),
                    "rss_mb": [round(r, 1) for _, r in samples[:: max(1, len(samples) // 120)]],
                }  # fmt: skip
        if args.profile and "D-tx" in modes:
            results.profile = await profile_run(modes["D-tx"], admin, source, args.records,
                                                out_dir / f"bench-{stamp}")  # fmt: skip
        await cleanup(admin, [source, *(f"bench.{run_id}.k{r}" for r in range(args.runs))], None)
    finally:
        await admin.close()
    if args.review_holds > 0:
        results.review = await bench_review.main(args.review_decisions, args.review_holds,
                                                 out_dir)  # fmt: skip
    summ = summary(results)
    print_table(results, summ)
    path = out_dir / f"bench-{stamp}.json"
    document = asdict(results) | {"summary": summ}
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    chart(results, summ, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return path


def available_modes() -> list[str]:
    """Every mode, less the peers whose framework is not installed (the bench extra)."""
    missing = {m for m, module in (("Q", "quixstreams"), ("F", "faust"))
               if importlib.util.find_spec(module) is None}  # fmt: skip
    return [m for m in MODES if m not in missing]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=BOOTSTRAP)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--payload-bytes", type=int, default=1_024)
    parser.add_argument("--invalid-share", type=float, default=0.0)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--domains", type=lambda t: tuple(t.split(",")), default=None,
                        help="only these domains of the mix (default: all ten)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=1_000,
                        help="records per fetch, both clients (gateway default)")  # fmt: skip
    parser.add_argument(
        "--commit-interval",
        type=int,
        default=None,
        help="the gateway's HITL_KAFKA__COMMIT_INTERVAL_MS (default: its own)",
    )
    parser.add_argument("--gateway-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for D and D-tx, e.g. HITL_KAFKA__FETCH_MIN_BYTES=1 "
                        "(repeatable)")  # fmt: skip
    parser.add_argument("--faust-commit-interval", type=int, default=None,
                        help="F's broker_commit_interval in ms (default: Faust's own, "
                        "2.8 s; Q always commits at the gateway's interval)")  # fmt: skip
    parser.add_argument("--modes", nargs="+", default=available_modes(), choices=MODES,
                        help="default: every mode whose client is installed (Q and F need "
                        "the bench extra)")  # fmt: skip
    parser.add_argument("--loads", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--rate", type=float, default=None,
                        help="records/s the loads are shares of (default: each mode's own "
                        "drain rate in this run); with --runs 0, latency only")  # fmt: skip
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--soak-seconds", type=float, default=0.0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="for both the passthrough and the gateway")  # fmt: skip
    parser.add_argument("--review-holds", type=int, default=100_000)
    parser.add_argument("--review-decisions", type=int, default=300)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
