"""A replicated local Kafka: three KRaft brokers (each also a controller) on loopback.

    python deploy/local/cluster.py up | down [--purge] | status | stop-broker N | start-broker N

Its own ports and directory, so it runs beside the one-broker stack (``stack.py``, which
provides Redis): brokers on 19092, 19094 and 19096, controllers on 19093, 19095 and 19097
(``CLUSTER_BASE_PORT``, default 19092), data under ``.cache/cluster``. Replication factor 3
and ``min.insync.replicas`` 2 for the internal topics (offsets, transactions) and as the
default for new topics, so a write survives one broker's loss and keeps being accepted while
one broker is down. ``stop-broker`` stops one broker cleanly (SIGTERM: a controlled
shutdown); ``--kill`` stops it hard. ``up`` waits until all three brokers answer and the
cluster reports three.

With ``CLUSTER_PROXIED_LISTEN_BASE`` and ``CLUSTER_PROXIED_ADVERTISED_BASE`` set, each broker
also listens on ``LISTEN_BASE + n - 1`` and advertises that listener as ``ADVERTISED_BASE +
n - 1``: a fault proxy (Toxiproxy) between the two puts faults on the way of the clients that
bootstrap through it (``loadtest/chaos.py``), while the brokers' own replication and the other
clients keep the direct listener.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import (  # the one-broker stack's helpers, beside this file
    REPO,
    StackConfig,
    StackError,
    _pid_alive,
    _port_open,
    _spawn,
    _stop,
    ensure_kafka_jars,
    ensure_tools,
    new_cluster_id,
    warm,
)

BROKERS = (1, 2, 3)


@dataclass(frozen=True)
class ClusterConfig:
    root: Path
    base_port: int
    heap: str
    ready_timeout_s: float
    stack: StackConfig  # where the Kafka jars are
    proxied: tuple[int, int] | None = None  # (listen base, advertised base) of PROXIED

    @classmethod
    def from_env(cls) -> ClusterConfig:
        raw = os.environ.get("CLUSTER_BASE_PORT", "19092")
        if not raw.isdigit() or not 0 < int(raw) < 65_000:
            raise StackError(f"CLUSTER_BASE_PORT={raw!r} is not a TCP port")
        return cls(
            root=Path(os.environ.get("CLUSTER_DIR", REPO / ".cache" / "cluster")).resolve(),
            base_port=int(raw),
            heap=os.environ.get("CLUSTER_KAFKA_HEAP", "512m"),
            ready_timeout_s=float(os.environ.get("CLUSTER_READY_TIMEOUT_S", "180")),
            stack=StackConfig.from_env(),
            proxied=_proxied_ports(),
        )

    def port(self, broker: int) -> int:
        return self.base_port + 2 * (broker - 1)

    def controller_port(self, broker: int) -> int:
        return self.port(broker) + 1

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port(b)}" for b in BROKERS)

    def dir(self, broker: int) -> Path:
        return self.root / f"broker-{broker}"

    def pidfile(self, broker: int) -> Path:
        return self.dir(broker) / "kafka.pid"


def _proxied_ports() -> tuple[int, int] | None:
    listen = os.environ.get("CLUSTER_PROXIED_LISTEN_BASE", "")
    advertised = os.environ.get("CLUSTER_PROXIED_ADVERTISED_BASE", "")
    if not listen and not advertised:
        return None
    if not (listen.isdigit() and advertised.isdigit()):
        raise StackError(
            "CLUSTER_PROXIED_LISTEN_BASE and CLUSTER_PROXIED_ADVERTISED_BASE must both be ports"
        )
    return int(listen), int(advertised)


def _properties(cfg: ClusterConfig, broker: int) -> Path:
    voters = ",".join(f"{b}@127.0.0.1:{cfg.controller_port(b)}" for b in BROKERS)
    port, controller = cfg.port(broker), cfg.controller_port(broker)
    props = {
        "process.roles": "broker,controller",
        "node.id": str(broker),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(cfg.dir(broker) / "data"),
        "num.partitions": "3",
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "offsets.topic.replication.factor": "3",
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "transaction.state.log.num.partitions": "3",
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
        "auto.create.topics.enable": "false",
        "unclean.leader.election.enable": "false",
    }
    if cfg.proxied is not None:
        listen, advertised = (base + broker - 1 for base in cfg.proxied)
        props["listeners"] += f",PROXIED://127.0.0.1:{listen}"
        props["advertised.listeners"] += f",PROXIED://127.0.0.1:{advertised}"
        props["listener.security.protocol.map"] += ",PROXIED:PLAINTEXT"
    path = cfg.dir(broker) / "server.properties"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def start_broker(cfg: ClusterConfig, broker: int, cluster_id: str) -> bool:
    if _pid_alive(cfg.pidfile(broker), "kafka.Kafka"):
        return False
    ports = [cfg.port(broker), cfg.controller_port(broker)]
    if cfg.proxied is not None:
        ports.append(cfg.proxied[0] + broker - 1)
    for port in ports:
        if _port_open(port):
            raise StackError(f"port {port} is in use by a process this cluster did not start")
    props = _properties(cfg, broker)
    classpath = f"{cfg.stack.libs}/*"
    if not (cfg.dir(broker) / "data" / "meta.properties").exists():
        formatted = subprocess.run(
            ["java", "-cp", classpath, "kafka.tools.StorageTool", "format",
             "-t", cluster_id, "-c", str(props), "-g"],
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        if formatted.returncode != 0:
            raise StackError(f"formatting broker {broker} failed:\n{formatted.stderr}")
    log4j = cfg.root / "log4j.properties"
    log4j.write_text(
        "log4j.rootLogger=WARN, stdout\n"
        "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
    )
    _spawn(
        ["java", "-Xms128m", f"-Xmx{cfg.heap}", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
         f"-Dlog4j.configuration=file:{log4j}", "-cp", classpath, "kafka.Kafka", str(props)],
        cfg.dir(broker) / "kafka.log", cfg.pidfile(broker),
    )  # fmt: skip
    return True


def _cluster_id(cfg: ClusterConfig) -> str:
    path = cfg.root / "cluster.id"
    if not path.exists():
        cfg.root.mkdir(parents=True, exist_ok=True)
        path.write_text(new_cluster_id())
    return path.read_text().strip()


async def wait_ready(cfg: ClusterConfig, brokers: int = 3) -> None:
    """Until the cluster answers and reports ``brokers`` live brokers."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - needs the venv

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    deadline = time.monotonic() + cfg.ready_timeout_s
    last: object = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=cfg.bootstrap, request_timeout_ms=5_000)
        try:
            await admin.start()
            found = await admin.describe_cluster()
            last = f"{len(found['brokers'])} brokers"
            if len(found["brokers"]) >= brokers:
                await admin.list_topics()
                await warm(cfg.bootstrap, deadline)
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise StackError(f"the cluster is not ready within {cfg.ready_timeout_s}s: {last!r}")


def up(cfg: ClusterConfig) -> None:
    began = time.monotonic()
    ensure_tools()
    ensure_kafka_jars(cfg.stack)
    cluster_id = _cluster_id(cfg)
    started = [str(b) for b in BROKERS if start_broker(cfg, b, cluster_id)]
    asyncio.run(wait_ready(cfg))
    print(
        f"cluster: ready in {time.monotonic() - began:.1f}s ({cfg.bootstrap}); "
        f"started brokers: {', '.join(started) or 'none (already running)'}",
        flush=True,
    )


def stop_broker(cfg: ClusterConfig, broker: int, kill: bool) -> None:
    pid = _pid_alive(cfg.pidfile(broker), "kafka.Kafka")
    if pid is not None and kill:
        os.kill(pid, signal.SIGKILL)
    _stop(cfg.pidfile(broker), "kafka.Kafka", f"broker {broker}")


def down(cfg: ClusterConfig, purge: bool) -> None:
    for broker in BROKERS:
        _stop(cfg.pidfile(broker), "kafka.Kafka", f"broker {broker}")
    if purge:
        shutil.rmtree(cfg.root, ignore_errors=True)
        print("cluster: data removed")


def status(cfg: ClusterConfig) -> int:
    ok = True
    for broker in BROKERS:
        pid = _pid_alive(cfg.pidfile(broker), "kafka.Kafka")
        answering = _port_open(cfg.port(broker))
        ok = ok and pid is not None and answering
        state = "running" if pid else "stopped"
        print(f"broker {broker} {state:8} pid={pid or '-'} port={cfg.port(broker)} "
              f"answering={answering}")  # fmt: skip
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="install, start and wait for three brokers")
    down_cmd = sub.add_parser("down", help="stop every broker")
    down_cmd.add_argument("--purge", action="store_true", help="also delete data and logs")
    sub.add_parser("status", help="show what runs (exit 1 unless every broker does)")
    stop_cmd = sub.add_parser("stop-broker", help="stop one broker (SIGTERM; --kill: SIGKILL)")
    stop_cmd.add_argument("broker", type=int, choices=BROKERS)
    stop_cmd.add_argument("--kill", action="store_true")
    start_cmd = sub.add_parser("start-broker", help="start one broker again and wait for it")
    start_cmd.add_argument("broker", type=int, choices=BROKERS)
    args = parser.parse_args(argv)
    try:
        cfg = ClusterConfig.from_env()
        if args.command == "up":
            up(cfg)
        elif args.command == "down":
            down(cfg, args.purge)
        elif args.command == "stop-broker":
            stop_broker(cfg, args.broker, args.kill)
        elif args.command == "start-broker":
            start_broker(cfg, args.broker, _cluster_id(cfg))
            asyncio.run(wait_ready(cfg))
            print(f"cluster: broker {args.broker} back")
        else:
            return status(cfg)
    except StackError as exc:
        print(f"cluster: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
