"""The container image, built here by ``deploy/local/image.py`` (podman, a Debian base made
with debootstrap, a wheelhouse built on the host) and run as users of the image would run it:
two gateway containers in one group against the local stack, non-root, read-only root
filesystem, host networking. Records flow exactly once, ``/readyz`` answers and the image's
HEALTHCHECK passes, every log line is JSON, and SIGTERM drains: each container exits 0 and
the committed offsets account for exactly what was delivered.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from hitl_gateway.settings import Settings
from tests.deploy.test_helm_chart import CHART, run_helm

from .kafka_io import FIXTURES, committed_offsets, produce, read_all, settings_env, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))
import image  # noqa: E402 - deploy/local is a directory of scripts, not a package

N = 20_000
POLICIES_IN_CONTAINER = "/etc/hitl-test"


@pytest.fixture(scope="module")
def built() -> str:
    """Build (or reuse from podman's layer cache) the image from this checkout."""
    done = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "local" / "image.py"), "build"],
        capture_output=True, text=True, timeout=1_200, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return f"{image.IMAGE}:{image.version()}"


def _podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], env=image.podman_env(), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Container:
    """One ``podman run -d`` of the image, named so the test can signal, wait and clean up."""

    def __init__(self, tag: str, settings: Settings, name: str) -> None:
        self.name = f"hitl-test-{name}-{uuid.uuid4().hex[:6]}"
        self.port = _free_port()
        env = settings_env(settings)
        env["HITL_HTTP__PORT"] = str(self.port)
        env["HITL_POLICY__DIR"] = f"{POLICIES_IN_CONTAINER}/policies"
        env.pop("HITL_RUNTIME__LOG_FORMAT", None)  # the image's default: JSON off a terminal
        flags = [f"--env={k}={v}" for k, v in sorted(env.items())]
        started = _podman(
            "run", "-d", "--name", self.name, "--network", "host", "--read-only",
            "--volume", f"{FIXTURES / 'passthrough'}:{POLICIES_IN_CONTAINER}:ro",
            *flags, tag,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def inspect(self, template: str) -> str:
        return _podman("inspect", "--format", template, self.name).stdout.strip()

    def logs(self) -> str:
        done = _podman("logs", self.name)
        return done.stdout + done.stderr

    def remove(self) -> None:
        _podman("rm", "--force", "--time", "0", self.name)


def _stop(c: Container) -> None:
    stopped = _podman("stop", "--time", "60", c.name, timeout=90)
    assert stopped.returncode == 0, stopped.stderr
    log = c.logs()
    assert c.inspect("{{.State.ExitCode}}") == "0", log[-3000:]
    assert '"event": "signal_received"' in log, log[-3000:]
    lines = [line for line in log.splitlines() if line.strip()]
    not_json = [line for line in lines if not line.startswith("{")]
    assert not not_json, f"{c.name}: lines that are not JSON: {not_json[:5]}"
    for line in lines:
        orjson.loads(line)


@pytest.fixture
def containers(built: str, settings: Settings) -> Iterator[list[Container]]:
    running = [Container(built, settings, "a"), Container(built, settings, "b")]
    try:
        yield running
    finally:
        for c in running:
            c.remove()


def test_the_image_runs_as_non_root_and_ships_checked_policies(built: str) -> None:
    user = _podman("image", "inspect", "--format", "{{.Config.User}}", built)
    assert user.stdout.strip() == "65532:65532"
    health = _podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", built)
    assert "/readyz" in health.stdout, health.stdout
    check = _podman(
        "run", "--rm", "--network", "host", "--read-only", built,
        "policy", "check", "/etc/hitl-gateway/policies",
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    version = _podman("run", "--rm", built, "--version")
    assert version.stdout.strip() == f"hitl-gateway {image.version()}", version.stdout


async def test_two_containers_deliver_exactly_once_and_drain_on_sigterm(
    containers: list[Container], settings: Settings
) -> None:
    records = [
        (f"k{i % 500}".encode(), orjson.dumps({"id": f"r{i}", "domain": "d", "output": i}))
        for i in range(N)
    ]
    await produce(settings.topics.outputs, records[: N // 2])

    async def both_ready() -> bool:
        return all(c.ready() for c in containers)

    await wait_until(both_ready, timeout_s=90, interval_s=0.5)
    for c in containers:
        health = _podman("healthcheck", "run", c.name)
        assert health.returncode == 0, f"{c.name}: {health.stdout}{health.stderr}"

    def committed_reach(n: int) -> Callable[[], Awaitable[bool]]:
        async def reached() -> bool:
            return sum((await committed_offsets(settings)).values()) >= n

        return reached

    await wait_until(committed_reach(N // 2), timeout_s=120, interval_s=0.5)

    # SIGTERM (the image's STOPSIGNAL, what `podman stop` and Kubernetes send) while the
    # second half streams in: the first container drains and exits 0, the second takes its
    # partitions over and finishes; then the second one stops the same way.
    feeding = asyncio.create_task(produce(settings.topics.outputs, records[N // 2 :]))
    await asyncio.sleep(0.5)
    await asyncio.to_thread(_stop, containers[0])
    await feeding
    await wait_until(committed_reach(N), timeout_s=120, interval_s=0.5)
    await asyncio.to_thread(_stop, containers[1])

    delivered = await read_all(settings.topics.delivered)
    ids = Counter(orjson.loads(r.value)["id"] for r in delivered)
    assert len(ids) == N, f"{N - len(ids)} records were lost"
    assert max(ids.values()) == 1, f"duplicated: {[i for i, n in ids.items() if n > 1][:5]}"
    committed = await committed_offsets(settings)
    assert sum(committed.values()) == N


# -- the Helm chart's pod, run by podman ------------------------------------------------------


def _chart_pod(tag: str, settings: Settings, port: int) -> dict[str, Any]:
    """The chart's Deployment as rendered for this test's topics, group and Redis prefix,
    with the two changes a single host needs: the host's network (so no container ports;
    probes by number) and the configuration directory from the repository instead of the
    ConfigMap (podman 4.3 cannot lay out a ConfigMap's items in subdirectories, such as
    policies/)."""
    t = settings.topics
    names = {"outputs": t.outputs, "delivered": t.delivered, "deadletter": t.deadletter,
             "holds": t.holds, "reviewTasks": t.review_tasks,
             "reviewDecisions": t.review_decisions, "blocked": t.blocked,
             "training": t.training, "audit": t.audit, "calibration": t.calibration}  # fmt: skip
    repository, version = tag.rsplit(":", 1)
    sets = {
        "keda.enabled": "false", "replicaCount": "1", "image.repository": repository,
        "image.tag": version, "kafka.bootstrapServers": settings.kafka.bootstrap_servers,
        "kafka.groupId": settings.kafka.group_id,
        "kafka.transactionalIdPrefix": settings.kafka.transactional_id_prefix,
        "redis.url": settings.redis.url, "redis.keyPrefix": settings.redis.key_prefix,
        "http.port": str(port), "runtime.shutdownTimeoutSeconds": "20",
        **{f"topics.{k}": v for k, v in names.items()},
    }  # fmt: skip
    flags = [x for k, v in sets.items() for x in ("--set-string", f"{k}={v}")]
    done = run_helm("template", "gw", str(CHART), *flags)
    assert done.returncode == 0, done.stderr
    (deployment,) = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    pod["hostNetwork"] = True
    (gateway,) = pod["containers"]
    gateway.pop("ports")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        gateway[probe]["httpGet"]["port"] = port
    for volume in pod["volumes"]:
        if "configMap" in volume:
            del volume["configMap"]
            volume["hostPath"] = {"path": str(REPO / "configs"), "type": "Directory"}
    return deployment


async def test_the_charts_pod_runs_under_podman_kube_play(built: str, settings: Settings,
                                                          tmp_path: Path) -> None:  # fmt: skip
    port = _free_port()
    manifest = tmp_path / "gateway.yaml"
    deployment = _chart_pod(built, settings, port)
    manifest.write_text(yaml.safe_dump(deployment))
    played = _podman("kube", "play", "--network", "host", str(manifest), timeout=180)
    assert played.returncode == 0, played.stderr
    container = f"{deployment['metadata']['name']}-pod-0-gateway"
    try:
        user = _podman("inspect", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}",
                       container)  # fmt: skip
        assert user.stdout.split() == ["65532:65532", "true"], user.stdout + user.stderr
        caps = _podman("inspect", "--format", "{{.EffectiveCaps}}", container).stdout
        assert caps.strip() == "[]", caps  # capabilities: drop ALL
        records = [(f"k{i}".encode(), orjson.dumps({"id": f"r{i}", "domain": "general-assistant",
                    "output": "ok", "model": "m", "confidence": 0.99}))
                   for i in range(2_000)]  # fmt: skip
        await produce(settings.topics.outputs, records)

        async def all_committed() -> bool:
            return sum((await committed_offsets(settings)).values()) == len(records)

        await wait_until(all_committed, timeout_s=120, interval_s=0.5)
        url = f"http://127.0.0.1:{port}/readyz"
        ready = await asyncio.to_thread(urllib.request.urlopen, url, timeout=5)
        assert ready.status == 200
        stopped = _podman("pod", "stop", "--time", "60", f"{deployment['metadata']['name']}-pod-0",
                          timeout=90)  # fmt: skip
        assert stopped.returncode == 0, stopped.stderr
        code = _podman("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
        assert code == "0", _podman("logs", container).stderr[-3000:]
    finally:
        _podman("kube", "down", str(manifest), timeout=120)
