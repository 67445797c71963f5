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


RETRIES = """
import logging, sys
from aiokafka import errors
from hitl_gateway.logs import configure_logging, count_expected_retries
configure_logging(sys.argv[1], "json")
seen = []
count_expected_retries(seen.append)
sender = logging.getLogger("aiokafka.producer.sender")
coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
template = "Got error produce response on topic-partition %s, retrying. Error: %s"
sender.warning(template, "tp-0", errors.NotEnoughReplicasError)
sender.warning(template, "tp-1", errors.NotEnoughReplicasError())
unavailable = errors.GroupCoordinatorNotAvailableError()
coordinator.error("Group Coordinator Request failed: %s", unavailable)
coordinator.warning("Heartbeat failed for group %s because it is rebalancing", "g")
fetcher = logging.getLogger("aiokafka.consumer.fetcher")
fetcher.error("Failed fetch offsets from %s: %s", 1, errors.NotLeaderForPartitionError())
sender.warning(template, "tp-2", errors.KafkaStorageError)
coordinator.error("Group Coordinator Request failed: %s", errors.GroupAuthorizationFailedError())
print(",".join(seen))
"""


def _retries(level: str) -> tuple[list[str], list[dict[str, str]]]:
    done = subprocess.run([sys.executable, "-c", RETRIES, level], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return done.stdout.strip().split(","), [orjson.loads(x) for x in done.stderr.splitlines()]


def test_expected_kafka_retries_are_counted_and_not_shown() -> None:
    seen, lines = _retries("INFO")
    assert seen == ["NotEnoughReplicasError", "NotEnoughReplicasError",
                    "GroupCoordinatorNotAvailableError", "RebalanceInProgressError",
                    "NotLeaderForPartitionError"]  # fmt: skip
    # What the client does not simply retry is shown as it was.
    assert [(line["level"], line["event"].rsplit(".", 1)[-1]) for line in lines] == [
        ("warning", "KafkaStorageError'>"),
        ("error", "Group Coordinator Request failed: [Error 30] GroupAuthorizationFailedError"),
    ]


def test_expected_kafka_retries_are_debug_lines_at_debug_level() -> None:
    seen, lines = _retries("DEBUG")
    assert len(seen) == 5
    assert [line["level"] for line in lines] == ["debug"] * 5 + ["warning", "error"]
    assert "NotEnoughReplicasError" in lines[0]["event"]
