"""The local stack: a real Apache Kafka broker (KRaft, one node) and a real Redis, on loopback.

    python deploy/local/stack.py up | down [--purge] | status

``up`` installs what is missing (Debian packages, Kafka jars from Maven Central), starts what
is not running, waits until each service answers a real client call, and creates the gateway's
topics. It is idempotent: a second ``up`` finds everything ready and changes nothing.

Settings (environment): STACK_DIR (default .cache/stack in the repository), STACK_KAFKA_PORT
(9092), STACK_CONTROLLER_PORT (9093), STACK_REDIS_PORT (6379), STACK_KAFKA_HEAP (1g),
STACK_READY_TIMEOUT_S (180). Topic names and partition counts come from the gateway's own
HITL_* settings, so the stack creates exactly what the gateway will use.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POM = Path(__file__).resolve().parent / "pom.xml"
KAFKA_VERSION = "3.9.1"  # keep in step with pom.xml


class StackError(Exception):
    """A problem the user must fix; the message says what and how."""


@dataclass(frozen=True)
class StackConfig:
    root: Path
    kafka_port: int
    controller_port: int
    redis_port: int
    kafka_heap: str
    ready_timeout_s: float

    @classmethod
    def from_env(cls) -> StackConfig:
        def port(name: str, default: int) -> int:
            raw = os.environ.get(name, str(default))
            if not raw.isdigit() or not 0 < int(raw) < 65_536:
                raise StackError(f"{name}={raw!r} is not a TCP port")
            return int(raw)

        return cls(
            root=Path(os.environ.get("STACK_DIR", REPO / ".cache" / "stack")).resolve(),
            kafka_port=port("STACK_KAFKA_PORT", 9092),
            controller_port=port("STACK_CONTROLLER_PORT", 9093),
            redis_port=port("STACK_REDIS_PORT", 6379),
            kafka_heap=os.environ.get("STACK_KAFKA_HEAP", "1g"),
            ready_timeout_s=float(os.environ.get("STACK_READY_TIMEOUT_S", "180")),
        )

    @property
    def libs(self) -> Path:
        return self.root / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"


# -- installing what is missing ---------------------------------------------------------------


def _apt_install(packages: list[str]) -> None:
    if shutil.which("apt-get") is None:
        raise StackError(
            f"missing {', '.join(packages)} and apt-get is not available to install them; "
            "install them with your package manager"
        )
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    print(f"stack: installing {' '.join(packages)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run([*prefix, "apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    except subprocess.CalledProcessError as exc:
        raise StackError(f"apt-get could not install {', '.join(packages)}: {exc}") from exc


def ensure_tools() -> None:
    wanted = {
        "java": "default-jre-headless",
        "mvn": "maven",
        "redis-server": "redis-server",
        "promtool": "prometheus",  # lints the metrics and tests the alert rules
        "kcat": "kcat",  # produces records with raw header bytes (test_poison_records)
        "chromium": "chromium",  # the reviewer workspace's browser tests (Playwright drives it)
    }
    missing = [pkg for tool, pkg in wanted.items() if shutil.which(tool) is None]
    if missing:
        _apt_install(missing)
    still = [tool for tool in wanted if shutil.which(tool) is None]
    if still:
        raise StackError(f"still missing after install: {', '.join(still)}")


def ensure_kafka_jars(cfg: StackConfig) -> None:
    marker = cfg.libs / f"kafka_2.13-{KAFKA_VERSION}.jar"
    if marker.exists():
        return
    print(f"stack: resolving Kafka {KAFKA_VERSION} jars from Maven Central", flush=True)
    cfg.libs.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={cfg.libs}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not marker.exists():
        raise StackError(f"Maven could not resolve the Kafka jars:\n{result.stdout}{result.stderr}")


# -- processes --------------------------------------------------------------------------------


def _pid_alive(pidfile: Path, needle: str) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return pid if needle in cmdline else None


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _spawn(cmd: list[str], log_path: Path, pidfile: Path) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the shell that ran `up`
        )
    pidfile.write_text(str(proc.pid))
    return proc.pid


def _stop(pidfile: Path, needle: str, name: str, timeout_s: float = 30.0) -> None:
    pid = _pid_alive(pidfile, needle)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        print(f"stack: {name} not running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _pid_alive(pidfile, needle):
        time.sleep(0.2)
    if _pid_alive(pidfile, needle):
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    print(f"stack: {name} stopped (pid {pid})")


def _write_kafka_config(cfg: StackConfig) -> Path:
    data = cfg.root / "kafka-data"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{cfg.controller_port}",
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{cfg.kafka_port},CONTROLLER://127.0.0.1:{cfg.controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{cfg.kafka_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data),
        "num.partitions": "3",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Lets tests use short consumer sessions; production brokers keep the 6 s default.
        "group.min.session.timeout.ms": "1000",
        "auto.create.topics.enable": "false",
    }
    path = cfg.root / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64, unpadded (22 characters).

    Like Kafka's own ``Uuid.randomUuid``, it never starts with '-', which the format tool
    would read as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def start_kafka(cfg: StackConfig) -> bool:
    pidfile = cfg.root / "kafka.pid"
    if _pid_alive(pidfile, "kafka.Kafka"):
        return False
    if _port_open(cfg.kafka_port) or _port_open(cfg.controller_port):
        raise StackError(
            f"port {cfg.kafka_port} or {cfg.controller_port} is in use by a process this stack "
            "did not start; stop it or set STACK_KAFKA_PORT / STACK_CONTROLLER_PORT"
        )
    props = _write_kafka_config(cfg)
    classpath = f"{cfg.libs}/*"
    if not (cfg.root / "kafka-data" / "meta.properties").exists():
        formatted = subprocess.run(
            ["java", "-cp", classpath, "kafka.tools.StorageTool", "format",
             "-t", new_cluster_id(), "-c", str(props), "-g"],
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        if formatted.returncode != 0:
            raise StackError(f"formatting the Kafka log directory failed:\n{formatted.stderr}")
    log4j = cfg.root / "log4j.properties"
    log4j.write_text(
        "log4j.rootLogger=WARN, stdout\n"
        "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        "log4j.logger.kafka.server.KafkaServer=INFO\n"
        "log4j.logger.kafka.server.BrokerServer=INFO\n"
    )
    _spawn(
        ["java", "-Xms256m", f"-Xmx{cfg.kafka_heap}", "-XX:+UseG1GC",
         f"-Dlog4j.configuration=file:{log4j}", "-cp", classpath, "kafka.Kafka", str(props)],
        cfg.root / "logs" / "kafka.log", pidfile,
    )  # fmt: skip
    return True


def start_redis(cfg: StackConfig) -> bool:
    pidfile = cfg.root / "redis.pid"
    if _pid_alive(pidfile, "redis-server"):
        return False
    if _port_open(cfg.redis_port):
        raise StackError(
            f"port {cfg.redis_port} is in use by a process this stack did not start; "
            "stop it or set STACK_REDIS_PORT"
        )
    data = cfg.root / "redis-data"
    data.mkdir(parents=True, exist_ok=True)
    _spawn(
        ["redis-server", "--port", str(cfg.redis_port), "--bind", "127.0.0.1",
         "--dir", str(data), "--appendonly", "yes", "--appendfsync", "everysec",
         "--save", "", "--protected-mode", "yes", "--daemonize", "no"],
        cfg.root / "logs" / "redis.log", pidfile,
    )  # fmt: skip
    return True


# -- readiness by real client calls -----------------------------------------------------------


async def _kafka_ready(cfg: StackConfig) -> None:
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - needs the venv

    deadline = time.monotonic() + cfg.ready_timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not _pid_alive(cfg.root / "kafka.pid", "kafka.Kafka"):
            raise StackError(f"Kafka exited; see {cfg.root / 'logs' / 'kafka.log'}")
        admin = AIOKafkaAdminClient(bootstrap_servers=cfg.bootstrap, request_timeout_ms=5_000)
        try:
            await admin.start()
            await admin.list_topics()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
        else:
            await admin.close()
            await warm(cfg.bootstrap, deadline)
            return
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise StackError(f"Kafka not ready within {cfg.ready_timeout_s}s: {last!r}")


async def warm(bootstrap: str, deadline: float) -> None:
    """Create what a broker makes on first use before anyone waits on it: the consumer
    offsets topic (on the first group coordinator lookup) and the transaction state topic
    (on the first transactional producer). Without this the gateway's first start meets
    GroupCoordinatorNotAvailable and NotEnoughReplicas answers while they are created."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - needs the venv
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, transactional_id="stack-warmup", request_timeout_ms=5_000
        )
        try:
            await admin.start()
            await admin.list_consumer_group_offsets("stack-warmup")
            await producer.start()  # InitProducerId: the transaction coordinator is ready
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
        else:
            return
        finally:
            await producer.stop()
            await admin.close()
        await asyncio.sleep(0.5)
    raise StackError(f"Kafka's coordinators not ready: {last!r}")


async def _redis_ready(cfg: StackConfig) -> None:
    import redis.asyncio as aioredis  # noqa: PLC0415 - needs the venv

    deadline = time.monotonic() + cfg.ready_timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        client = aioredis.Redis(host="127.0.0.1", port=cfg.redis_port, socket_timeout=2)
        try:
            if await client.ping():
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
        finally:
            await client.aclose()
        await asyncio.sleep(0.2)
    raise StackError(f"Redis not ready within {cfg.ready_timeout_s}s: {last!r}")


async def _create_topics(cfg: StackConfig) -> list[str]:
    from hitl_gateway.admin import ensure_topics  # noqa: PLC0415 - needs the venv
    from hitl_gateway.settings import load_settings  # noqa: PLC0415

    settings = load_settings()
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": cfg.bootstrap})
    policy = settings.policy
    if not policy.dir.is_absolute():  # the repository's policies, wherever this runs from
        policy = policy.model_copy(update={"dir": REPO / policy.dir})
    update = {"kafka": kafka, "policy": policy}
    changes = await ensure_topics(settings.model_copy(update=update))
    return changes.created


# -- commands ---------------------------------------------------------------------------------


def up(cfg: StackConfig) -> None:
    started_at = time.monotonic()
    ensure_tools()
    ensure_kafka_jars(cfg)
    cfg.root.mkdir(parents=True, exist_ok=True)
    started = [name for name, fn in (("kafka", start_kafka), ("redis", start_redis)) if fn(cfg)]
    asyncio.run(_wait_ready(cfg))
    created = asyncio.run(_create_topics(cfg))
    took = time.monotonic() - started_at
    print(
        f"stack: ready in {took:.1f}s (kafka {cfg.bootstrap}, redis 127.0.0.1:{cfg.redis_port}); "
        f"started: {', '.join(started) or 'nothing (already running)'}; "
        f"topics created: {', '.join(created) or 'none'}",
        flush=True,
    )


async def _wait_ready(cfg: StackConfig) -> None:
    # Refused connections are expected while the broker boots; the deadline reports failure.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    await asyncio.gather(_kafka_ready(cfg), _redis_ready(cfg))


def down(cfg: StackConfig, purge: bool) -> None:
    _stop(cfg.root / "kafka.pid", "kafka.Kafka", "kafka")
    _stop(cfg.root / "redis.pid", "redis-server", "redis")
    if purge:
        for sub in ("kafka-data", "redis-data", "logs"):
            shutil.rmtree(cfg.root / sub, ignore_errors=True)
        print("stack: data removed")


def status(cfg: StackConfig) -> int:
    ok = True
    for name, pidfile, needle, port in (
        ("kafka", cfg.root / "kafka.pid", "kafka.Kafka", cfg.kafka_port),
        ("redis", cfg.root / "redis.pid", "redis-server", cfg.redis_port),
    ):
        pid = _pid_alive(pidfile, needle)
        answering = _port_open(port)
        ok = ok and pid is not None and answering
        state = "running" if pid else "stopped"
        print(f"{name:6} {state:8} pid={pid or '-'} port={port} answering={answering}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="install, start and wait for Kafka and Redis; create topics")
    down_cmd = sub.add_parser("down", help="stop what up started")
    down_cmd.add_argument("--purge", action="store_true", help="also delete data and logs")
    sub.add_parser("status", help="show what runs (exit 1 unless all do)")
    args = parser.parse_args(argv)
    try:
        cfg = StackConfig.from_env()
        if args.command == "up":
            up(cfg)
        elif args.command == "down":
            down(cfg, args.purge)
        else:
            return status(cfg)
    except StackError as exc:
        print(f"stack: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
