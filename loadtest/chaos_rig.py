"""The fault matrix's moving parts: the three-broker cluster, a Redis of its own, a Toxiproxy
server between the gateways and both, and the gateway instances as real processes.

Ports come from the environment, with defaults: the cluster's from ``deploy/local/cluster.py``
(``CLUSTER_BASE_PORT``), ``CHAOS_REDIS_PORT`` (16379), ``CHAOS_TOXIPROXY_PORT`` (8474, the
Toxiproxy API), ``CHAOS_PROXY_BASE_PORT`` (18474: the three brokers' proxied listeners are
bound on base..base+2, Toxiproxy listens for them on base+10..base+12 and for Redis on
base+20), ``CHAOS_HTTP_BASE_PORT`` (18500: gateway n serves its API on base+n).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
import yaml

from hitl_gateway.review.auth import new_token
from hitl_gateway.review.signing import Signer, new_key, tool_signer
from hitl_gateway.settings import (
    AuditSettings,
    DecisionSettings,
    HttpSettings,
    KafkaSettings,
    PolicySettings,
    RedisSettings,
    ReviewSettings,
    RuntimeSettings,
    Settings,
    TopicSettings,
)

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "deploy" / "local" / "cluster.py"
CONFIGS = REPO / "configs"
TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0"
TOXIPROXY = REPO / ".cache" / "toxiproxy" / "server"
REVIEWERS_PER_POOL = 4
AUDIT_KEY = b"chaos-audit-key-0123456789abcdef"
DECISION_TOOL, GATEWAY_KEY = "chaos-reviewer", "chaos-gateway"  # the decision keys' ids


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65_000:
        raise SystemExit(f"{name}={raw!r} is not a TCP port")
    return int(raw)


@dataclass(frozen=True)
class Ports:
    cluster_base: int = field(default_factory=lambda: _port("CLUSTER_BASE_PORT", 19092))
    redis: int = field(default_factory=lambda: _port("CHAOS_REDIS_PORT", 16379))
    toxiproxy: int = field(default_factory=lambda: _port("CHAOS_TOXIPROXY_PORT", 8474))
    proxy_base: int = field(default_factory=lambda: _port("CHAOS_PROXY_BASE_PORT", 18474))
    http_base: int = field(default_factory=lambda: _port("CHAOS_HTTP_BASE_PORT", 18500))

    @property
    def direct_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.cluster_base + 2 * b}" for b in range(3))

    @property
    def proxied_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.proxy_base + 10 + b}" for b in range(3))

    @property
    def proxied_redis(self) -> int:
        return self.proxy_base + 20

    def cluster_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CLUSTER_BASE_PORT": str(self.cluster_base),
            "CLUSTER_PROXIED_LISTEN_BASE": str(self.proxy_base),
            "CLUSTER_PROXIED_ADVERTISED_BASE": str(self.proxy_base + 10),
        }


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not _port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} is not listening on {port} within {timeout_s}s")
        time.sleep(0.1)


class Cluster:
    """``deploy/local/cluster.py`` with the proxied listener on."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    def run(self, *args: str) -> None:
        done = subprocess.run(
            [sys.executable, str(CLUSTER), *args], env=self.ports.cluster_env(),
            capture_output=True, text=True, timeout=400, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"cluster {' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    def kill_broker(self, broker: int) -> None:
        self.run("stop-broker", str(broker), "--kill")

    def stop_broker(self, broker: int) -> None:
        self.run("stop-broker", str(broker))

    def start_broker(self, broker: int) -> None:
        self.run("start-broker", str(broker))


class RedisServer:
    """A redis-server of the harness's own (it is killed and wiped on purpose)."""

    def __init__(self, port: int, root: Path) -> None:
        self.port, self.root = port, root
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if _port_open(self.port):
            raise RuntimeError(f"port {self.port} is in use; set CHAOS_REDIS_PORT")
        data = self.root / "redis"
        data.mkdir(parents=True, exist_ok=True)
        with (self.root / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--dir", str(data), "--appendonly", "yes", "--appendfsync", "always",
                 "--save", "", "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        _wait_port(self.port, 30, "redis-server")
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 60
        while True:  # until the append-only file is loaded
            try:
                client.ping()
                break
            except redis.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def ensure_toxiproxy() -> Path:
    """The Toxiproxy server, built from its Go module into .cache the first time."""
    if not TOXIPROXY.is_file():
        if shutil.which("go") is None:
            raise RuntimeError("Go is needed to build the Toxiproxy server (see README.md)")
        subprocess.run(
            ["go", "install", TOXIPROXY_MODULE], cwd=REPO, check=True, timeout=1_500,
            env={**os.environ, "GOBIN": str(TOXIPROXY.parent)},
        )  # fmt: skip
    return TOXIPROXY


class Toxiproxy:
    """A real Toxiproxy server and its HTTP API: one proxy per broker and one for Redis."""

    def __init__(self, ports: Ports, root: Path) -> None:
        self.ports, self.root = ports, root
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{ports.toxiproxy}", timeout=10)

    def start(self) -> None:
        binary = ensure_toxiproxy()
        if _port_open(self.ports.toxiproxy):
            raise RuntimeError(f"port {self.ports.toxiproxy} is in use; set CHAOS_TOXIPROXY_PORT")
        with (self.root / "toxiproxy.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(binary), "-host", "127.0.0.1", "-port", str(self.ports.toxiproxy)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        _wait_port(self.ports.toxiproxy, 30, "toxiproxy")
        p = self.ports
        for b in range(3):
            self._proxy(f"kafka{b + 1}", p.proxy_base + 10 + b, p.proxy_base + b)
        self._proxy("redis", p.proxied_redis, p.redis)

    def _proxy(self, name: str, listen: int, upstream: int) -> None:
        body = {"name": name, "listen": f"127.0.0.1:{listen}", "upstream": f"127.0.0.1:{upstream}"}
        self.api.post("/proxies", json=body).raise_for_status()

    def proxies(self, target: str) -> list[str]:
        return ["redis"] if target == "redis" else ["kafka1", "kafka2", "kafka3"]

    def add(self, target: str, kind: str, attributes: dict[str, int]) -> None:
        for name in self.proxies(target):
            for stream in ("downstream", "upstream"):
                toxic = {"name": f"{kind}-{stream}", "type": kind, "stream": stream,
                         "toxicity": 1.0, "attributes": attributes}  # fmt: skip
                self.api.post(f"/proxies/{name}/toxics", json=toxic).raise_for_status()

    def enable(self, target: str, enabled: bool) -> None:
        for name in self.proxies(target):
            self.api.post(f"/proxies/{name}", json={"enabled": enabled}).raise_for_status()

    def heal(self) -> None:
        """Every toxic removed and every proxy enabled."""
        for name, proxy in self.api.get("/proxies").json().items():
            for toxic in proxy.get("toxics", []):
                self.api.delete(f"/proxies/{name}/toxics/{toxic['name']}").raise_for_status()
            if not proxy.get("enabled", True):
                self.api.post(f"/proxies/{name}", json={"enabled": True}).raise_for_status()

    def stop(self) -> None:
        self.api.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def write_reviewers(path: Path, tokens: dict[str, str]) -> dict[str, list[str]]:
    """A reviewers file: REVIEWERS_PER_POOL reviewers for each shipped pool, plus a
    ``service-bot`` reviewer granted every pool, which is also the producing service of some
    records (for self-approval attempts); returns each pool's reviewer ids and fills
    ``tokens`` (reviewer id: bearer token, for the review API)."""
    pools = [p["name"] for p in yaml.safe_load((CONFIGS / "pools.yaml").read_text())["pools"]]
    grants: dict[str, list[str]] = {}
    lines = ["reviewers:"]
    for pool in pools:
        grants[pool] = [f"{pool}-r{n}" for n in range(REVIEWERS_PER_POOL)]
        for who in grants[pool]:
            tokens[who], digest = new_token()
            lines.append(f"  - {{id: {who}, token_sha256: {digest}, pools: [{pool}]}}")
    _, digest = new_token()
    lines.append(f"  - {{id: service-bot, token_sha256: {digest}, pools: [{', '.join(pools)}]}}")
    path.write_text("\n".join(lines) + "\n")
    return grants


def write_decision_keys(path: Path) -> Signer:
    """The gateways' decision keys file: the reviewer process's Ed25519 key (as a review tool
    would have) and the gateways' own HMAC key (the review API signs with it); returns the
    reviewer's signer."""
    secret, tool_entry = new_key(DECISION_TOOL, "ed25519")
    _, gateway_entry = new_key(GATEWAY_KEY, "hmac-sha256")
    path.write_text(tool_entry + gateway_entry)
    return tool_signer(DECISION_TOOL, "ed25519", secret)


def gateway_settings(ports: Ports, root: Path, session_timeout_ms: int) -> Settings:
    """One scenario's settings: fresh topics, group and key prefix; replicated topics; the
    shipped policies; a keyed audit trail; signed decisions (``write_decision_keys``)."""
    uid = uuid.uuid4().hex[:8]
    names = {
        f: f"chaos{uid}.{f}"
        for f in TopicSettings.model_fields
        if f not in ("partitions", "replication_factor", "min_insync_replicas")
    }
    (root / "audit-keys.yaml").write_text(f"k1: {base64.b64encode(AUDIT_KEY).decode()}\n")
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=ports.proxied_bootstrap,
            group_id=f"chaos{uid}",
            transactional_id_prefix=f"chaos{uid}",
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(100, session_timeout_ms // 6),
            request_timeout_ms=15_000,
            max_batch_records=500,
        ),
        topics=TopicSettings(partitions=6, replication_factor=3, min_insync_replicas=2, **names),
        policy=PolicySettings(dir=CONFIGS / "policies", reload_interval_s=0),
        redis=RedisSettings(
            url=f"redis://127.0.0.1:{ports.proxied_redis}/0",
            key_prefix=f"chaos{uid}:",
            socket_timeout_s=3,
        ),
        review=ReviewSettings(reviewers_file=root / "reviewers.yaml", rate_limit_requests=0),
        decisions=DecisionSettings(
            keys_file=root / "decision-keys.yaml", gateway_key_id=GATEWAY_KEY
        ),
        http=HttpSettings(port=0),
        runtime=RuntimeSettings(log_format="json", shutdown_timeout_s=20),
        audit=AuditSettings(
            keys_file=root / "audit-keys.yaml",
            active_key_id="k1",
            checkpoint_every=200,
            checkpoint_interval_s=2,
        ),
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The HITL_* environment that reproduces ``settings`` in a gateway process."""
    env: dict[str, str] = {}
    for section, values in settings.model_dump(mode="json").items():
        for name, value in values.items():
            key = f"HITL_{section}__{name}".upper()
            if isinstance(value, dict):
                for option, setting in value.items():
                    env[f"{key}__{option}".upper()] = str(setting)
            elif isinstance(value, list):
                env[key] = json.dumps(value)
            elif value is not None:
                env[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class GatewayProcess:
    """One ``hitl-gateway run`` process: killed, paused and restarted for real."""

    def __init__(self, settings: Settings, root: Path, index: int, http_port: int) -> None:
        self.settings, self.index = settings, index
        self.log_path = root / f"gateway-{index}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
        self.env.update(settings_env(settings))
        self.env["HITL_HTTP__PORT"] = str(http_port)
        self.http_port = http_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hitl_gateway.cli", "run"], env=self.env, cwd=REPO,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.running:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self, timeout_s: float = 60) -> int | None:
        """SIGTERM and wait; the exit code (None if it was not running)."""
        if self.proc is None:
            return None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode
