"""A real Label Studio on loopback, for the Label Studio bridge and its tests.

    python deploy/local/labelstudio.py up | down [--purge] | status

``up`` installs Label Studio from PyPI into its own virtual environment (its pins would
clash with the gateway's), starts it on SQLite with an administrator whose legacy API token
is enabled for the organisation (1.23 disables legacy tokens by default), waits until
``/health`` answers, and writes the URL, e-mail, password and token to ``admin.json`` in its
directory (mode 600). It is idempotent: a second ``up`` finds it running and changes nothing.

Settings (environment): LABEL_STUDIO_DIR (default .cache/label-studio in the repository),
LABEL_STUDIO_PORT (28100), LABEL_STUDIO_READY_TIMEOUT_S (300).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERSION = "1.23.2"  # the version the bridge is tested with
NEEDLE = "label-studio start"


class LabelStudioError(Exception):
    """A problem the user must fix; the message says what."""


@dataclass(frozen=True)
class Config:
    root: Path
    port: int
    ready_timeout_s: float

    @classmethod
    def from_env(cls) -> Config:
        raw = os.environ.get("LABEL_STUDIO_PORT", "28100")
        if not raw.isdigit() or not 0 < int(raw) < 65_536:
            raise LabelStudioError(f"LABEL_STUDIO_PORT={raw!r} is not a TCP port")
        root = Path(os.environ.get("LABEL_STUDIO_DIR", REPO / ".cache" / "label-studio"))
        timeout = float(os.environ.get("LABEL_STUDIO_READY_TIMEOUT_S", "300"))
        return cls(root.resolve(), int(raw), timeout)

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.root / "label-studio.pid"

    @property
    def admin_file(self) -> Path:
        return self.root / "admin.json"


def _install(cfg: Config) -> None:
    done = cfg.venv / f".installed-{VERSION}"  # written last: a killed install starts over
    if done.exists():
        return
    print(f"label-studio: installing label-studio=={VERSION} into {cfg.venv} (a few minutes)")
    shutil.rmtree(cfg.venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(cfg.venv)], check=True)
    pip = [str(cfg.venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"label-studio=={VERSION}"], check=True)
    done.touch()


def _alive(cfg: Config) -> int | None:
    try:
        pid = int(cfg.pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return pid if NEEDLE in cmdline and f"--port {cfg.port}" in cmdline else None


def _healthy(cfg: Config) -> bool:
    try:
        with urllib.request.urlopen(f"{cfg.url}/health", timeout=2) as response:  # noqa: S310 - our own loopback URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _admin(cfg: Config) -> dict[str, str]:
    """The administrator's credentials: made once, kept with the data they belong to."""
    if cfg.admin_file.exists():
        admin: dict[str, str] = json.loads(cfg.admin_file.read_text())
        return admin
    admin = {"email": "hitl-admin@example.com", "password": secrets.token_urlsafe(16),
             "token": secrets.token_hex(20)}  # fmt: skip
    cfg.root.mkdir(parents=True, exist_ok=True)
    cfg.admin_file.write_text(json.dumps(admin))
    cfg.admin_file.chmod(0o600)
    return admin


def up(cfg: Config) -> None:
    """One ``up`` at a time (a test and a make target may race): the others wait."""
    cfg.root.mkdir(parents=True, exist_ok=True)
    with (cfg.root / "up.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _up(cfg)


def _up(cfg: Config) -> None:
    started = time.monotonic()
    _install(cfg)
    admin = _admin(cfg)
    proc: subprocess.Popen[bytes] | None = None
    if _alive(cfg) is None:
        env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(cfg.root / "data")}
        cmd = [str(cfg.venv / "bin" / "label-studio"), "start", "--no-browser",
               "--internal-host", "127.0.0.1", "--port", str(cfg.port),
               "--username", admin["email"], "--password", admin["password"],
               "--user-token", admin["token"], "--enable-legacy-api-token"]  # fmt: skip
        with (cfg.root / "label-studio.log").open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)  # fmt: skip
        cfg.pidfile.write_text(str(proc.pid))
    deadline = time.monotonic() + cfg.ready_timeout_s
    while not _healthy(cfg):
        # The process started here is asked directly: a healthy start was once taken for an
        # exit when its /proc cmdline, read while it started, did not show the command yet.
        if (proc.poll() is not None) if proc is not None else (_alive(cfg) is None):
            raise LabelStudioError(f"label-studio exited: see {cfg.root / 'label-studio.log'}")
        if time.monotonic() > deadline:
            raise LabelStudioError(f"label-studio not healthy within {cfg.ready_timeout_s} s")
        time.sleep(0.5)
    admin_view = {**admin, "url": cfg.url}
    cfg.admin_file.write_text(json.dumps(admin_view))
    print(f"label-studio: ready in {time.monotonic() - started:.1f}s at {cfg.url}"
          f" (credentials in {cfg.admin_file})")  # fmt: skip


def down(cfg: Config, purge: bool) -> None:
    pid = _alive(cfg)
    if pid is not None:
        os.killpg(pid, signal.SIGTERM)  # its own session: the server and its children
        deadline = time.monotonic() + 30
        while _alive(cfg) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(cfg) is not None:
            os.killpg(pid, signal.SIGKILL)
        print(f"label-studio: stopped (pid {pid})")
    else:
        print("label-studio: not running")
    cfg.pidfile.unlink(missing_ok=True)
    if purge:
        shutil.rmtree(cfg.root / "data", ignore_errors=True)
        cfg.admin_file.unlink(missing_ok=True)
        print("label-studio: data removed")


def status(cfg: Config) -> bool:
    pid = _alive(cfg)
    healthy = _healthy(cfg)
    print(f"label-studio {'running' if pid else 'stopped'} pid={pid or '-'} url={cfg.url}"
          f" healthy={healthy}")  # fmt: skip
    return pid is not None and healthy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--purge", action="store_true", help="down: also delete its data")
    args = parser.parse_args()
    try:
        cfg = Config.from_env()
        if args.command == "up":
            up(cfg)
        elif args.command == "down":
            down(cfg, args.purge)
        else:
            return 0 if status(cfg) else 1
    except (LabelStudioError, subprocess.CalledProcessError) as exc:
        print(f"label-studio: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
