"""Kafka client options the gateway does not name pass through (HITL_KAFKA__CLIENT__*),
checked against aiokafka's own signatures, converted, and given only to clients that take
them; anything else stops the start naming the variable."""

from __future__ import annotations

import inspect

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError

from hitl_gateway import kafka_options
from hitl_gateway.errors import ConfigError
from hitl_gateway.settings import KafkaSettings, load_settings


def test_values_are_converted_to_the_options_types() -> None:
    given = {"CLIENT_RACK": "eu-1a", "metadata_max_age_ms": "60000", "retry_backoff_ms": 50,
             "exclude_internal_topics": "false"}  # fmt: skip
    s = KafkaSettings(client=given)
    assert s.client == {"client_rack": "eu-1a", "metadata_max_age_ms": 60_000,
                        "retry_backoff_ms": 50, "exclude_internal_topics": False}  # fmt: skip


def test_each_client_gets_only_the_options_it_takes() -> None:
    s = KafkaSettings(client={"client_rack": "r1", "metadata_max_age_ms": "60000"})
    assert s.consumer_options()["client_rack"] == "r1"
    assert "client_rack" not in s.producer_options()
    assert "client_rack" not in s.admin_options()
    for options in (s.producer_options(), s.consumer_options(), s.admin_options()):
        assert options["metadata_max_age_ms"] == 60_000
        assert options["bootstrap_servers"] == s.bootstrap_servers


def test_bad_options_are_named_with_what_to_do() -> None:
    with pytest.raises(ValidationError) as caught:
        KafkaSettings(client={"metadata_max_age": "1", "isolation_level": "read_uncommitted",
                              "session_timeout_ms": "5", "retry_backoff_ms": "soon",
                              "exclude_internal_topics": "maybe"})  # fmt: skip
    text = str(caught.value)
    assert "HITL_KAFKA__CLIENT__METADATA_MAX_AGE: no aiokafka client takes an option" in text
    assert "(did you mean metadata_max_age_ms?)" in text
    assert "HITL_KAFKA__CLIENT__ISOLATION_LEVEL: isolation_level is set by the gateway" in text
    assert "use HITL_KAFKA__SESSION_TIMEOUT_MS" in text
    assert "HITL_KAFKA__CLIENT__RETRY_BACKOFF_MS: 'soon' is not an integer" in text
    assert "'maybe' is not a boolean" in text


def test_the_environment_reaches_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_KAFKA__CLIENT__CLIENT_RACK", "eu-1b")
    monkeypatch.setenv("HITL_KAFKA__CLIENT__CONNECTIONS_MAX_IDLE_MS", "600000")
    settings = load_settings()
    assert settings.kafka.client == {"client_rack": "eu-1b", "connections_max_idle_ms": 600_000}
    monkeypatch.setenv("HITL_KAFKA__CLIENT__NOT_AN_OPTION", "1")
    with pytest.raises(ConfigError, match="HITL_KAFKA__CLIENT__NOT_AN_OPTION"):
        load_settings()


def test_every_option_passed_through_is_in_the_clients_signatures() -> None:
    """The table follows the installed aiokafka: nothing reserved is offered, and what is
    offered is a real keyword of the client it is given to."""
    by_client = kafka_options.options_by_client()
    clients: tuple[tuple[kafka_options.Client, type], ...] = (
        ("producer", AIOKafkaProducer),
        ("consumer", AIOKafkaConsumer),
    )
    for client, cls in clients:
        params = inspect.signature(cls.__init__).parameters
        offered = set(by_client[client]) - kafka_options.RESERVED
        assert offered <= set(params)
        assert {"retry_backoff_ms", "metadata_max_age_ms"} <= offered
    assert "client_rack" in by_client["consumer"]
