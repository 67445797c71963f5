"""structlog setup: JSON lines in production, a console renderer on a terminal.

Events are snake_case facts with key-value data; payloads are never logged.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Literal

import structlog


def configure_logging(
    level: str = "INFO", log_format: Literal["auto", "json", "console"] = "auto"
) -> None:
    use_console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer()
    else:
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiokafka and uvicorn log through the standard library: their warnings go through the
    # same renderer (JSON lines when stderr is not a terminal), with the logger's name.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([] if use_console else [structlog.processors.dict_tracebacks]),
                renderer,
            ],
        )
    )
    _EXPECTED.show = level == "DEBUG"
    _install_expected_retries()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


# -- retries the Kafka client expects -------------------------------------------------------------
#
# aiokafka logs a WARNING (or an ERROR) for a response it simply retries. Two are expected on
# a healthy cluster: a transactional produce the broker could not yet verify against the
# transaction coordinator (Kafka 3.6+ reports a retriable coordinator error there as
# NOT_ENOUGH_REPLICAS, which asks for no metadata refresh), and a group or transaction
# coordinator that is still loading, moving or electing. Rebalances announce themselves in
# heartbeats. These become a counted metric (hitl_kafka_client_retries_total) and a DEBUG
# line; anything else aiokafka says is shown as it is.

# aiokafka's message templates, and where in their arguments the error is.
_RETRY_TEMPLATES: dict[str, int | str] = {
    "Got error produce response on topic-partition %s, retrying. Error: %s": 1,
    "Group Coordinator Request failed: %s": 0,
    "Failed fetch offsets from %s: %s": 1,  # a new partition's leader still being elected
    "Heartbeat failed for group %s because it is rebalancing": "RebalanceInProgressError",
    "Heartbeat failed for group %s: generation id is not  current.": "IllegalGenerationError",
    "Heartbeat failed for group %s: coordinator (node %s) is either not started or not valid": (
        "NotCoordinatorForGroupError"
    ),
}
EXPECTED_RETRY_ERRORS = frozenset(
    {
        "NotEnoughReplicasError",
        "NotEnoughReplicasAfterAppendError",
        "GroupCoordinatorNotAvailableError",
        "NotCoordinatorForGroupError",
        "GroupLoadInProgressError",
        "LeaderNotAvailableError",
        "NotLeaderForPartitionError",
        "ConcurrentTransactions",
        "RebalanceInProgressError",
        "IllegalGenerationError",
    }
)

_retry_sinks: list[Callable[[str], None]] = []


def count_expected_retries(sink: Callable[[str], None]) -> Callable[[], None]:
    """Call ``sink(error_name)`` for each expected retry the Kafka client reports; returns
    the function that stops it."""
    _install_expected_retries()
    _retry_sinks.append(sink)
    return lambda: _retry_sinks.remove(sink) if sink in _retry_sinks else None


def expected_retry(record: logging.LogRecord) -> str | None:
    """The error's name if ``record`` is aiokafka reporting a retry it expects, else None."""
    if not record.name.startswith("aiokafka") or not isinstance(record.msg, str):
        return None
    where = _RETRY_TEMPLATES.get(record.msg)
    if where is None:
        return None
    if isinstance(where, str):
        name = where
    else:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) <= where:
            return None
        error = args[where]
        name = error.__name__ if isinstance(error, type) else type(error).__name__
    return name if name in EXPECTED_RETRY_ERRORS else None


class ExpectedRetries(logging.Filter):
    """Counts aiokafka's expected retries and shows them as DEBUG lines (only when the log
    level is DEBUG); every other record passes unchanged."""

    def __init__(self, *, show: bool = False) -> None:
        super().__init__()
        self.show = show

    def filter(self, record: logging.LogRecord) -> bool:
        error = expected_retry(record)
        if error is None:
            return True
        for sink in tuple(_retry_sinks):
            sink(error)
        if not self.show:
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_EXPECTED = ExpectedRetries()
# The loggers that write the templates above. A filter on a logger sees only its own
# records, so it is installed on each (adding it again is a no-op).
_RETRY_LOGGERS = (
    "aiokafka.producer.sender",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.consumer.fetcher",
)


def _install_expected_retries() -> None:
    for name in _RETRY_LOGGERS:
        logging.getLogger(name).addFilter(_EXPECTED)
