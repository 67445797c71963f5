"""Run the real ``hitl-gateway`` command as a child process, to kill it for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hitl_gateway.settings import Settings

from .kafka_io import settings_env

GATEWAY = [sys.executable, "-m", "hitl_gateway.cli"]


class GatewayProcess:
    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        name: str,
        *args: str,
        secrets: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        # HITL_* variables the settings print masked (passwords), given as they are.
        self.secrets = secrets or {}
        self.log_path = log_dir / f"{name}.log"
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.env: dict[str, str] = {}

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
        env.update(settings_env(self.settings))
        env.update(self.secrets)
        self.env = env
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            self.proc = subprocess.Popen(
                [*GATEWAY, "run", *self.args], env=env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no leave-group, transactions left open."""
        if self.proc is not None and self.running:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self) -> None:
        if self.proc is not None and self.running:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def elapsed_since(start: float) -> float:
    return time.monotonic() - start
