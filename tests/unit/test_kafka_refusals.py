"""The one error mapper: Kafka refusing this client (certificate, credentials, token, ACL)
is a stop-and-say-why configuration error; everything else Kafka raises stays retriable."""

from __future__ import annotations

import ssl

import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NotEnoughReplicasError,
    RequestTimedOutError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)

from hitl_gateway.errors import (
    ConfigError,
    InfrastructureError,
    KafkaAccessError,
    KafkaUnavailable,
    TokenEndpointError,
    kafka_errors,
    kafka_refusal,
)


def _cert_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    err = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    err.verify_code = code
    err.verify_message = message
    return err


@pytest.mark.parametrize(
    ("error", "cause", "words"),
    [
        (SaslAuthenticationFailed("invalid credentials"), "authentication", "invalid credentials"),
        (UnsupportedSaslMechanismError("no PLAIN"), "authentication", "no PLAIN"),
        (TopicAuthorizationFailedError({"t.b", "t.a"}), "authorization", "topics 't.a', 't.b'"),
        (GroupAuthorizationFailedError("g1"), "authorization", "consumer group 'g1'"),
        (TransactionalIdAuthorizationFailed("tx.0"), "authorization", "transactional id 'tx.0'"),
        (ClusterAuthorizationFailedError(), "authorization", "cluster (CLUSTER_AUTHORIZATION"),
        (_cert_error(19, "self-signed certificate in certificate chain"), "tls", "not trusted"),
        (_cert_error(62, "Hostname mismatch"), "tls", "not valid for the host name"),
        (_cert_error(64, "IP address mismatch"), "tls", "not valid for the host name"),
        (TokenEndpointError("the endpoint said no", refused=True), "token", "the endpoint said no"),
    ],
)
def test_each_refusal_is_classified_with_its_cause(
    error: BaseException, cause: str, words: str
) -> None:
    refused = kafka_refusal(error)
    assert refused is not None
    assert refused.cause == cause
    assert words in str(refused)


@pytest.mark.parametrize(
    "error",
    [
        KafkaConnectionError("Unable to bootstrap"),
        RequestTimedOutError(),
        KafkaTimeoutError(),
        NotEnoughReplicasError(),
        ConnectionRefusedError(111, "refused"),
        ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
        TimeoutError(),
    ],
)
def test_what_a_retry_may_cure_is_not_a_refusal(error: BaseException) -> None:
    assert kafka_refusal(error) is None
    with pytest.raises(KafkaUnavailable), kafka_errors("fetch"):
        raise error


def test_a_refusal_inside_a_connection_error_is_found() -> None:
    outer = KafkaConnectionError("Unable to bootstrap")
    outer.__cause__ = SaslAuthenticationFailed("bad password")
    refused = kafka_refusal(outer)
    assert refused is not None
    assert refused.cause == "authentication"


def test_the_mapper_raises_a_refusal_that_no_retry_loop_catches() -> None:
    with pytest.raises(KafkaAccessError) as caught, kafka_errors("fetch"):
        raise GroupAuthorizationFailedError("hitl-gateway")
    # The retry loops catch InfrastructureError; a refusal must pass through them.
    assert not isinstance(caught.value, InfrastructureError)
    assert isinstance(caught.value, ConfigError)
    assert isinstance(caught.value.__cause__, GroupAuthorizationFailedError)


def test_messages_name_the_client_once_known() -> None:
    refused = kafka_refusal(SaslAuthenticationFailed("invalid credentials"))
    assert refused is not None
    named = refused.naming("user 'hitl' (SCRAM-SHA-512)")
    assert str(named) == (
        "Kafka refused the credentials of user 'hitl' (SCRAM-SHA-512): invalid credentials"
    )
    assert named.naming("someone else") is named  # the first name stays
    denied = kafka_refusal(GroupAuthorizationFailedError("g"))
    assert denied is not None
    assert str(denied.naming("user 'hitl' (SCRAM-SHA-512)")).startswith(
        "Kafka refused user 'hitl' (SCRAM-SHA-512) access to consumer group 'g' "
        "(GROUP_AUTHORIZATION_FAILED): an ACL is missing"
    )
