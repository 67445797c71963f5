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

import orjson
import pytest

from hitl_gateway.settings import Settings

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
