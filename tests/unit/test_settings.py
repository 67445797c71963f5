"""Settings: validated, frozen, unknown HITL_* variables rejected, secrets masked."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hitl_gateway.errors import ConfigError
from hitl_gateway.settings import (
    ENV_PREFIX,
    KafkaSettings,
    Settings,
    known_env_names,
    load_settings,
    unknown_env_names,
)


def test_defaults_name_the_design_topics() -> None:
    topics = Settings().topics
    assert (topics.outputs, topics.delivered, topics.deadletter) == (
        "hitl.outputs",
        "hitl.delivered",
        "hitl.deadletter",
    )
    assert len(set(topics.all_names())) == 10


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_KAFKA__BOOTSTRAP_SERVERS", "broker:9093")
    monkeypatch.setenv("HITL_TOPICS__PARTITIONS", "12")
    monkeypatch.setenv("HITL_LIMITS__MAX_RECORD_BYTES", "2048")
    s = load_settings()
    assert s.kafka.bootstrap_servers == "broker:9093"
    assert s.topics.partitions == 12
    assert s.limits.max_record_bytes == 2048


def test_unknown_variable_is_rejected_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_KAFKA__BOOTSTRAP_SERVER", "typo:9092")
    with pytest.raises(ConfigError, match="HITL_KAFKA__BOOTSTRAP_SERVER"):
        load_settings()


def test_unknown_env_names_ignores_other_prefixes() -> None:
    env = {"HITL_KAFKA__GROUP_ID": "g", "HITL_NOPE": "x", "PATH": "/bin", "HITLER": "no"}
    assert unknown_env_names(env) == ["HITL_NOPE"]


def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_TOPICS__PARTITIONS", "zero")
    with pytest.raises(ConfigError, match="HITL_TOPICS__PARTITIONS"):
        load_settings()


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.kafka.group_id = "other"  # type: ignore[misc]


def test_secrets_are_masked_when_printed() -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="svc",
        sasl_plain_password="hunter2",  # type: ignore[arg-type]
    )
    assert "hunter2" not in Settings(kafka=kafka).model_dump_json()
    assert "hunter2" not in repr(kafka)
    options = kafka.security_options()
    assert options["sasl_plain_password"] == "hunter2"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert "ssl_context" in options


def test_sasl_without_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="sasl_plain_username"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT")


def test_plaintext_passes_no_security_extras() -> None:
    assert KafkaSettings().security_options() == {"security_protocol": "PLAINTEXT"}


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    sections = {name.upper() for name in Settings.model_fields}
    leaves = known_env_names(Settings, ENV_PREFIX) - {f"{ENV_PREFIX}{s}" for s in sections}
    missing = sorted(name for name in leaves if f"`{name}`" not in doc)
    assert not missing, f"undocumented settings: {missing}"


def test_oauthbearer_without_a_token_url_is_refused_naming_the_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HITL_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("HITL_KAFKA__SASL_MECHANISM", "OAUTHBEARER")
    monkeypatch.setenv("HITL_KAFKA__OAUTH_CLIENT_ID", "hitl")
    monkeypatch.setenv("HITL_KAFKA__OAUTH_CLIENT_SECRET", "s3cret")
    with pytest.raises(ConfigError, match="HITL_KAFKA__OAUTH_TOKEN_URL") as refused:
        load_settings()
    assert "client credentials" in str(refused.value)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    ["http://idp.example/token", "ftp://idp.example/token", "https:///token", "idp.example"],
)
def test_a_token_url_that_would_expose_the_secret_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="https://"):
        KafkaSettings(
            security_protocol="SASL_SSL",
            sasl_mechanism="OAUTHBEARER",
            oauth_token_url=url,
            oauth_client_id="hitl",
            oauth_client_secret="s3cret",  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    "url", ["https://idp.example/oauth2/token", "http://127.0.0.1:8080/token", "http://localhost/t"]
)
def test_oauthbearer_settings_give_every_client_one_token_provider(url: str) -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        oauth_token_url=url,
        oauth_client_id="hitl",
        oauth_client_secret="s3cret",  # type: ignore[arg-type]
        oauth_scope="kafka",
    )
    first, second = kafka.security_options(), kafka.consumer_options()
    assert first["sasl_mechanism"] == "OAUTHBEARER"
    assert first["sasl_oauth_token_provider"] is second["sasl_oauth_token_provider"]
    assert "sasl_plain_password" not in first
    assert "s3cret" not in Settings(kafka=kafka).model_dump_json()
    assert kafka.identity() == "OAuth client 'hitl' (OAUTHBEARER)"


def test_the_client_is_named_in_messages_without_its_secret() -> None:
    scram = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="hitl",
        sasl_plain_password="hunter2",  # type: ignore[arg-type]
    )
    assert scram.identity() == "user 'hitl' (SCRAM-SHA-512)"
    assert KafkaSettings().identity() == "the anonymous client (PLAINTEXT)"


def test_tls_checks_the_host_name_by_default() -> None:
    context = KafkaSettings(security_protocol="SSL").security_options()["ssl_context"]
    assert context.check_hostname
    assert context.verify_mode.name == "CERT_REQUIRED"


def test_a_commit_interval_over_half_the_transaction_timeout_is_refused() -> None:
    # A transaction stays open for up to the commit interval while its records arrive.
    KafkaSettings(commit_interval_ms=30_000, transaction_timeout_ms=60_000)
    with pytest.raises(ValidationError, match=r"commit_interval_ms \(30001\) must be at most half"):
        KafkaSettings(commit_interval_ms=30_001, transaction_timeout_ms=60_000)


def test_fetch_min_bytes_is_at_most_fetch_max_bytes() -> None:
    KafkaSettings(fetch_min_bytes=1_048_576, fetch_max_bytes=1_048_576)
    with pytest.raises(ValidationError, match=r"fetch_min_bytes \(1048577\) must be at most"):
        KafkaSettings(fetch_min_bytes=1_048_577, fetch_max_bytes=1_048_576)
