"""A gateway stopping for a failure (a lane's refused ACL, a bug) must end within its
shutdown budget even when a client's close never returns: named on stderr with the exit
code the failure calls for, and the log naming what the close waited on. The CI once saw a
refused gateway log its refusal and then sit for more than 30 s without exiting.

The gateway is the real command against the real broker and Redis; the refusal and the
close that never ends are injected (a hang cannot be produced on demand).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from hitl_gateway.settings import Settings

from .kafka_io import settings_env

BUDGET_S = 3.0

SCRIPT = """
import asyncio
import sys

from hitl_gateway import cli
from hitl_gateway.errors import KafkaAccessError
from hitl_gateway.pipeline import Pipeline

KIND = sys.argv[1]


async def failing(self, stop, **kwargs):
    await asyncio.sleep(1)  # started: partitions assigned, clients open
    if KIND == "refusal":
        raise KafkaAccessError(
            "authorization",
            "Kafka refused this client access to topic 'hitl.delivered' "
            "(TOPIC_AUTHORIZATION_FAILED): an ACL is missing",
        )
    raise ZeroDivisionError("a bug in a lane")


async def never_closes(self):
    await asyncio.Event().wait()  # a client's close that never returns


Pipeline.run = failing
Pipeline.stop = never_closes
sys.exit(cli.main(["run"]))
"""


@pytest.mark.parametrize(("kind", "code"), [("refusal", 2), ("bug", 1)])
def test_a_failed_run_whose_close_hangs_ends_within_its_budget(
    settings: Settings, tmp_path: Path, kind: str, code: int
) -> None:
    settings = settings.model_copy(
        update={"runtime": settings.runtime.model_copy(update={"shutdown_timeout_s": BUDGET_S})}
    )
    script = tmp_path / "gateway.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
    env.update(settings_env(settings))
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(script), kind], env=env, capture_output=True, timeout=60,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"still running after 60 s:\n{(exc.stdout or b'')[-3_000:].decode()}")
    took = time.monotonic() - started
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == code, out[-3_000:] + err[-3_000:]
    lines = (out + err).splitlines()  # the log is JSON lines, the CLI's message is not
    events = [orjson.loads(line) for line in lines if line.startswith("{")]
    [overrun] = [e for e in events if e["event"] == "shutdown_budget_exceeded"]
    assert overrun["budget_s"] == BUDGET_S
    assert any("never_closes" in w for w in overrun["waiting_on"]), overrun["waiting_on"]
    if kind == "refusal":
        # Named once, before the close began, and on stderr as the CLI names it.
        [refused] = [e for e in events if e["event"] == "kafka_access_refused"]
        assert refused["cause"] == "authorization"
        assert events.index(refused) < events.index(overrun)
        [line] = [x for x in lines if x.startswith("hitl-gateway: ")]
        assert "(TOPIC_AUTHORIZATION_FAILED)" in line, err
    else:
        [failed] = [e for e in events if e["event"] == "gateway_failed"]
        assert "ZeroDivisionError" in failed["error"]
    print(f"{kind}: exit {done.returncode} after {took:.1f}s (budget {BUDGET_S}s)")
