"""Before the Kafka clients start: does the broker accept this client, and may it do its job?

aiokafka's clients turn a refused certificate or refused credentials into "unable to
bootstrap" (the cause goes to a log line), and a missing ACL on a group or transactional id
into errors that look retriable to the gateway's loops. So the gateway first opens one
connection itself, which raises the refusal as it is (the TLS check, then SASL), and asks
what needs permissions without changing anything: metadata for its topics (DESCRIBE), the
group's coordinator (DESCRIBE on the group) and a transactional id's coordinator (DESCRIBE on
the transactional id, which WRITE grants; looking it up fences nobody). A refusal raises
``KafkaAccessError`` naming the cause; a broker that does not answer is left to the clients'
own start, as before. READ and WRITE are only checked by use: the error mapper turns their
refusal into the same error (errors.kafka_refusal).

With OAUTHBEARER the check runs the SASL exchange itself: aiokafka's takes the broker's
answer to a refused token (an error challenge) for success, and its clients then loop on a
connection the broker closes.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import structlog
from aiokafka import TopicPartition
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import SaslAuthenticationFailed, for_code
from aiokafka.protocol.admin import SaslAuthenticateRequest, SaslHandShakeRequest
from aiokafka.protocol.coordination import FindCoordinatorRequest
from aiokafka.protocol.metadata import MetadataRequest

from hitl_gateway.errors import (
    KAFKA_FAULTS,
    KafkaAccessError,
    TokenEndpointError,
    authorization_refusal,
    kafka_refusal,
    tls_refusal,
)
from hitl_gateway.settings import Settings
from hitl_gateway.sink import transactional_id

log = structlog.get_logger(__name__)

_GROUP, _TRANSACTION = 0, 1  # FindCoordinator key types
_TOPIC_AUTHORIZATION_FAILED = 29
_GROUP_AUTHORIZATION_FAILED = 30
_TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53


async def check_access(settings: Settings) -> None:
    """Raise ``KafkaAccessError`` if Kafka refuses this client or a permission it needs."""
    kafka = settings.kafka
    who = kafka.identity()
    options = kafka.security_options()
    provider = options.get("sasl_oauth_token_provider")
    token: str | None = None
    if provider is not None:
        try:
            token = await provider.token()
        except TokenEndpointError as exc:
            raise KafkaAccessError("token", exc.message, who) from exc
    conn = await _connect(settings, options, who, token)
    if conn is None:
        return
    try:
        await _check_permissions(conn, settings, who)
    finally:
        conn.close()
    log.info("kafka_access_checked", client=who)


async def _connect(settings: Settings, options: dict[str, Any], who: str, token: str | None) -> Any:
    """One connection to the first bootstrap server that answers (TLS and SASL done), or
    None if none does."""
    kafka = settings.kafka
    timeout_ms = min(kafka.request_timeout_ms, 10_000)
    if token is not None:  # TLS (or not) by aiokafka, the SASL exchange below
        tls = "SSL" if kafka.security_protocol == "SASL_SSL" else "PLAINTEXT"
        options = {"security_protocol": tls, "ssl_context": options.get("ssl_context")}
    for host, port, _ in collect_hosts(kafka.bootstrap_servers, randomize=False):
        conn = None
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host, port, client_id=f"{kafka.client_id}-check",
                    request_timeout_ms=timeout_ms, **options,
                ),
                timeout_ms / 1000,
            )  # fmt: skip
            if token is not None:
                await _bearer(conn, token)
        except KAFKA_FAULTS as exc:
            if conn is not None:
                conn.close()
            refused = _refusal(exc, f"{host}:{port}")
            if refused is not None:
                raise refused.naming(who) from exc
            log.info("kafka_access_check_skipped", broker=f"{host}:{port}", error=repr(exc))
        else:
            return conn
    return None


def _refusal(exc: BaseException, broker: str) -> KafkaAccessError | None:
    if isinstance(exc, ssl.SSLCertVerificationError):  # named with the broker's address
        return KafkaAccessError("tls", tls_refusal(exc, broker))
    return kafka_refusal(exc)


async def _bearer(conn: Any, token: str) -> None:
    """SASL/OAUTHBEARER (RFC 7628): send the token; a non-empty answer is the broker's error
    challenge, which the client acknowledges to get the final error."""
    handshake = await conn.send(SaslHandShakeRequest("OAUTHBEARER"))
    if handshake.error_code:
        offered = ", ".join(handshake.enabled_mechanisms)
        raise for_code(handshake.error_code)(f"the broker offers {offered}, not OAUTHBEARER")
    answer = await conn.send(
        SaslAuthenticateRequest(f"n,,\x01auth=Bearer {token}\x01\x01".encode())
    )
    if answer.error_code:
        raise for_code(answer.error_code)(answer.error_message)
    if answer.sasl_auth_bytes:
        challenge = bytes(answer.sasl_auth_bytes).decode(errors="replace")
        final = await conn.send(SaslAuthenticateRequest(b"\x01"))
        more = final.error_message if final.error_code else ""
        raise SaslAuthenticationFailed(
            f"the token was refused with {challenge}"
            + (f" ({more})" if more and more != challenge else "")
            + "; the broker's log names the check it failed (signature, issuer, audience, "
            "expiry or scope)"
        )


async def _check_permissions(conn: Any, settings: Settings, who: str) -> None:
    kafka, topics = settings.kafka, settings.topics
    names = topics.all_names()
    try:
        response = await conn.send(MetadataRequest(names, allow_auto_topic_creation=False))
        refused = sorted(t[1] for t in response.topics if t[0] == _TOPIC_AUTHORIZATION_FAILED)
        if refused:
            needs = "the gateway reads or writes each"
            _refuse(_TOPIC_AUTHORIZATION_FAILED, "topic", refused, who, needs)
        group = await conn.send(FindCoordinatorRequest(kafka.group_id, _GROUP))
        if group.error_code == _GROUP_AUTHORIZATION_FAILED:
            needs = "READ on the group"
            _refuse(_GROUP_AUTHORIZATION_FAILED, "consumer group", [kafka.group_id], who, needs)
        if kafka.exactly_once:
            txn = transactional_id(kafka, TopicPartition(topics.outputs, 0))
            found = await conn.send(FindCoordinatorRequest(txn, _TRANSACTION))
            if found.error_code == _TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
                needs = f"WRITE on the transactional ids prefixed {txn[:-1]!r}"
                _refuse(_TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "transactional id", [txn], who,
                        needs)  # fmt: skip
    except KAFKA_FAULTS as exc:  # not a refusal: the clients' own start meets it again
        log.info("kafka_access_check_incomplete", error=repr(exc))


def _refuse(code: int, what: str, names: list[str], who: str, needs: str) -> None:
    refusal = authorization_refusal(what, for_code(code)(), names, needs)
    raise KafkaAccessError("authorization", refusal, who)
