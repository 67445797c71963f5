"""Kafka client options the gateway does not name, passed through to aiokafka.

``HITL_KAFKA__CLIENT__<option>=<value>`` sets ``<option>`` on every client that takes it (the
producers, the consumers, the admin client), for example ``HITL_KAFKA__CLIENT__CLIENT_RACK``
or ``HITL_KAFKA__CLIENT__METADATA_MAX_AGE_MS``. At start each name is checked against the
clients' own signatures and each value converted to the type of the option's default; a
name no client takes, an option the gateway sets itself, or a value of the wrong type stops
the start with a message naming the variable.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal

Client = Literal["producer", "consumer", "admin"]
Scalar = str | int | float | bool

ENV_PREFIX = "HITL_KAFKA__CLIENT__"

# Options a gateway client sets itself (from a named setting or because correctness depends
# on it: transactions, read_committed, the range assignor, manual commits, serializers).
RESERVED = frozenset(
    {
        "loop", "topics", "bootstrap_servers", "client_id", "group_id", "group_instance_id",
        "key_serializer", "value_serializer", "key_deserializer", "value_deserializer",
        "partitioner", "partition_assignment_strategy", "enable_idempotence",
        "transactional_id", "transaction_timeout_ms", "isolation_level", "enable_auto_commit",
        "auto_offset_reset", "acks", "security_protocol", "ssl_context", "sasl_mechanism",
        "sasl_plain_username", "sasl_plain_password", "sasl_oauth_token_provider",
        "session_timeout_ms", "heartbeat_interval_ms", "max_poll_interval_ms",
        "request_timeout_ms", "fetch_max_bytes", "max_partition_fetch_bytes",
        "fetch_max_wait_ms", "fetch_min_bytes", "compression_type", "linger_ms", "max_request_size",
        "max_batch_size",
    }
)  # fmt: skip

# Options whose default is None: the type a value must have.
_NONE_DEFAULTS: dict[str, type] = {
    "max_poll_records": int,
    "rebalance_timeout_ms": int,
    "client_rack": str,
    "api_version": str,
    "sasl_kerberos_domain_name": str,
}


@cache
def options_by_client() -> dict[Client, dict[str, type]]:
    """Each client's options that take a plain value, with the value's type."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: PLC0415 - only when used
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    classes: dict[Client, type] = {
        "producer": AIOKafkaProducer,
        "consumer": AIOKafkaConsumer,
        "admin": AIOKafkaAdminClient,
    }
    found: dict[Client, dict[str, type]] = {}
    for client, cls in classes.items():
        options: dict[str, type] = {}
        for name, param in inspect.signature(cls).parameters.items():
            default = param.default
            if isinstance(default, bool | int | float | str):
                options[name] = type(default)
            elif default is None and name in _NONE_DEFAULTS:
                options[name] = _NONE_DEFAULTS[name]
        found[client] = options
    return found


def validate(
    raw: Mapping[str, Any], named_settings: frozenset[str] = frozenset()
) -> dict[str, Scalar]:
    """The options converted to their types, or ValueError naming every bad one."""
    takes: dict[str, type] = {}
    for options in options_by_client().values():
        takes |= options
    problems: list[str] = []
    converted: dict[str, Scalar] = {}
    for key, value in raw.items():
        name = key.lower()
        var = f"{ENV_PREFIX}{name.upper()}"
        if name in RESERVED:
            instead = f": use HITL_KAFKA__{name.upper()}" if name in named_settings else ""
            problems.append(f"{var}: {name} is set by the gateway itself{instead}")
        elif name not in takes:
            close = difflib.get_close_matches(name, [*takes, *RESERVED], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{var}: no aiokafka client takes an option {name}{hint}")
        else:
            try:
                converted[name] = _convert(value, takes[name])
            except ValueError as exc:
                problems.append(f"{var}: {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return converted


def for_client(options: Mapping[str, Scalar], client: Client) -> dict[str, Scalar]:
    """The options this kind of client takes."""
    takes = options_by_client()[client]
    return {name: value for name, value in options.items() if name in takes}


def _convert(value: Any, kind: type) -> Scalar:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{value!r} is not a boolean (true or false)")
    if kind is int:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer")
        try:
            return int(str(value).strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
    if kind is float:
        try:
            return float(str(value).strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    return str(value)
