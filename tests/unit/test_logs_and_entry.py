"""Every log line is JSON when logs are not a terminal, the standard library's too (aiokafka,
uvicorn); ``python -m hitl_gateway`` and ``hitl-gateway --version`` work."""

from __future__ import annotations

import subprocess
import sys

import orjson

from hitl_gateway import __version__

SCRIPT = """
import logging, structlog
from hitl_gateway.logs import configure_logging
configure_logging("INFO", "auto")
logging.getLogger("aiokafka.producer.sender").warning("Got error produce response %s", "x")
structlog.get_logger("hitl").info("gateway_starting", version="v")
"""


def test_stdlib_and_structlog_lines_are_json_off_a_terminal() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          check=True)  # fmt: skip
    lines = [orjson.loads(line) for line in done.stderr.splitlines()]
    assert lines[0]["logger"] == "aiokafka.producer.sender"
    assert (lines[0]["level"], lines[0]["event"]) == ("warning", "Got error produce response x")
    assert (lines[1]["event"], lines[1]["version"]) == ("gateway_starting", "v")
    assert all("timestamp" in line for line in lines)


def test_module_entry_point_and_version_flag() -> None:
    for argv in (["-m", "hitl_gateway", "--version"], ["-m", "hitl_gateway.cli", "--version"]):
        done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=True)
        assert done.stdout.strip() == f"hitl-gateway {__version__}"
