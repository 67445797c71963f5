"""The gateway, as its own process, against a secured broker (deploy/local/secure.py: TLS,
SASL/SCRAM-SHA-512 and OAUTHBEARER, the ACL authorizer allowing nothing without an ACL):

- with the least-privileged user, records flow exactly once over SASL_SSL;
- with OAUTHBEARER, tokens come from a local OAuth token endpoint, one for every connection;
- each refusal stops the start within seconds, exit 2, a ``kafka_access_refused`` event and a
  stderr line naming the cause, never a retry loop: a wrong password, an untrusted CA, a
  certificate for another host, each missing ACL, a refused client secret, a token the
  broker refuses.

The secured broker has its own ports (SECURE_BASE_PORT) beside the normal stack, which
provides Redis; this module starts it and removes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from hitl_gateway.settings import (
    HttpSettings,
    KafkaSettings,
    PolicySettings,
    RedisSettings,
    RuntimeSettings,
    Settings,
)

from .kafka_io import FIXTURES, REDIS_URL, produce, read_all
from .oauth_issuer import TokenIssuer
from .processes import GatewayProcess

pytestmark = pytest.mark.integration

SECURE = Path(__file__).resolve().parents[2] / "deploy" / "local" / "secure.py"
EXIT_CONFIG = 2
REFUSED_WITHIN_S = 30
N = 2_000


@pytest.fixture(scope="module")
def secured() -> Iterator[dict[str, Any]]:
    """A new secured broker for this module (so the group starts with nothing to read);
    what a client needs (client.json)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}  # default names

    def secure(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(SECURE), *args], env=env, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip

    secure("down", "--purge")
    try:
        up = secure("up")
        assert up.returncode == 0, up.stdout + up.stderr
        path = up.stdout.strip().rsplit("clients: ", 1)[1]
        yield json.loads(Path(path).read_text())
    finally:
        secure("down", "--purge")


def _kafka(client: dict[str, Any], user: str, **changes: Any) -> KafkaSettings:
    options: dict[str, Any] = {
        "bootstrap_servers": client["bootstrap_servers"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": user,
        "sasl_plain_password": client["users"].get(user, "not-the-password"),
        "ssl_cafile": client["ssl_cafile"],
        "session_timeout_ms": 6_000,
        "heartbeat_interval_ms": 500,
        "request_timeout_ms": 15_000,
        "poll_timeout_ms": 100,
    }
    return KafkaSettings(**{**options, **changes})


def _settings(kafka: KafkaSettings) -> Settings:
    """The gateway's default topics, group and transactional ids (what the ACLs name)."""
    return Settings(
        kafka=kafka,
        policy=PolicySettings(dir=FIXTURES / "passthrough" / "policies", reload_interval_s=0.2),
        redis=RedisSettings(url=REDIS_URL, key_prefix=f"t{uuid.uuid4().hex[:10]}:"),
        http=HttpSettings(port=0),
        runtime=RuntimeSettings(log_format="json", shutdown_timeout_s=20),
    )


def _secrets(kafka: KafkaSettings) -> dict[str, str]:
    """The secrets a subprocess needs as they are (the settings print them masked)."""
    found = {
        "HITL_KAFKA__SASL_PLAIN_PASSWORD": kafka.sasl_plain_password,
        "HITL_KAFKA__OAUTH_CLIENT_SECRET": kafka.oauth_client_secret,
    }
    return {name: value.get_secret_value() for name, value in found.items() if value}


def _admin(client: dict[str, Any]) -> dict[str, Any]:
    """Security options for the test's own clients, as the admin (a super user)."""
    return _kafka(client, client["super_user"]).security_options()


def _record(run: str, i: int) -> tuple[bytes, bytes]:
    body = {"id": f"{run}-{i}", "domain": "d", "output": {"seq": i}}
    return f"{run}-{i % 50}".encode(), orjson.dumps(body)


async def _run_until(kafka: KafkaSettings, records: int, log_dir: Path) -> str:
    """Run the gateway until it has committed ``records`` (all there is to read)."""
    gateway = GatewayProcess(_settings(kafka), log_dir, "gateway", "--max-records",
                             str(records), secrets=_secrets(kafka))  # fmt: skip
    gateway.start()
    try:
        code = await asyncio.to_thread(gateway.wait, 120)
    finally:
        gateway.kill()
    assert code == 0, gateway.log()[-3_000:]
    return gateway.log()


async def _delivered_once(client: dict[str, Any], run: str, count: int) -> list[Any]:
    """Every record of ``run`` delivered exactly once (a read_committed reader)."""
    delivered = await read_all(
        "hitl.delivered", bootstrap=client["bootstrap_servers"], security=_admin(client)
    )
    ids = Counter(orjson.loads(r.value)["id"] for r in delivered)
    mine = {i: n for i, n in ids.items() if i.startswith(f"{run}-")}
    assert len(mine) == count, f"{count - len(mine)} records of the run missing"
    assert set(mine.values()) == {1}, "a record delivered twice"
    return delivered


async def test_records_flow_exactly_once_with_the_least_privileged_user(
    secured: dict[str, Any], tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    admin = _admin(secured)
    bootstrap = secured["bootstrap_servers"]
    await produce("hitl.outputs", [_record(run, i) for i in range(N)], bootstrap=bootstrap,
                  security=admin)  # fmt: skip
    log = await _run_until(_kafka(secured, secured["gateway_user"]), N, tmp_path)
    assert '"event": "kafka_access_checked"' in log
    delivered = await _delivered_once(secured, run, N)

    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **admin)
    await client.start()
    try:
        committed = await client.list_consumer_group_offsets("hitl-gateway")
        (meta,) = await client.describe_topics(["hitl.delivered"])
    finally:
        await client.close()
    # The group committed every input record (inside the transactions, as no other path can).
    ends = await _end_offsets(secured, "hitl.outputs", admin)
    assert {
        tp.partition: m.offset for tp, m in committed.items() if tp.topic == "hitl.outputs"
    } == ends
    # Transaction markers take offsets: more offsets than committed records.
    delivered_ends = await _end_offsets(secured, "hitl.delivered", admin)
    assert len(meta["partitions"]) == len(delivered_ends)
    assert sum(delivered_ends.values()) > len(delivered)


async def _end_offsets(client: dict[str, Any], topic: str, admin: dict[str, Any]) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415

    consumer = AIOKafkaConsumer(bootstrap_servers=client["bootstrap_servers"], **admin)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


def _issuer(client: dict[str, Any], secret: str, audience: str | None = None) -> TokenIssuer:
    oauth = client["oauth"]
    return TokenIssuer(Path(oauth["signing_keyfile"]), oauth["kid"], oauth["issuer"],
                       audience or oauth["audience"], {client["gateway_user"]: secret})  # fmt: skip


def _oauth(client: dict[str, Any], url: str, secret: str) -> KafkaSettings:
    return _kafka(client, "", sasl_mechanism="OAUTHBEARER", sasl_plain_username=None,
                  sasl_plain_password=None, oauth_token_url=url,
                  oauth_client_id=client["gateway_user"], oauth_client_secret=secret,
                  oauth_scope="kafka")  # fmt: skip


async def test_records_flow_with_oauthbearer_tokens_from_the_token_endpoint(
    secured: dict[str, Any], tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    await produce("hitl.outputs", [_record(run, i) for i in range(300)],
                  bootstrap=secured["bootstrap_servers"], security=_admin(secured))  # fmt: skip
    with _issuer(secured, "client-secret").running() as issuer:
        log = await _run_until(_oauth(secured, issuer.url, "client-secret"), 300, tmp_path)
    assert '"client": "OAuth client \'hitl\' (OAUTHBEARER)"' in log
    await _delivered_once(secured, run, 300)
    # The check, the producers, the consumers and the reader: one token for all of them.
    assert issuer.issued == [secured["gateway_user"]]


@contextmanager
def _tls_server(certfile: str, keyfile: str) -> Iterator[int]:
    """A TLS server presenting ``certfile`` (signed by the trusted CA, for another host)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                # The client refuses the certificate: the handshake fails, as the test wants.
                with contextlib.suppress(ssl.SSLError, OSError):
                    context.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


REFUSALS = {
    "wrong password": ("authentication", "Kafka refused the credentials of user 'hitl' "
                       "(SCRAM-SHA-512): Authentication failed"),
    "untrusted CA": ("tls", "is not trusted (self-signed certificate in certificate chain)"),
    "certificate for another host": ("tls", "is not valid for the host name the gateway "
                                     "connected to (IP address mismatch"),
    "no ACL at all": ("authorization", "Kafka refused user 'nobody' (SCRAM-SHA-512) access to "
                      "topics 'hitl.audit'"),
    "no group ACL": ("authorization", "access to consumer group 'hitl-gateway' "
                     "(GROUP_AUTHORIZATION_FAILED)"),
    "no transactional id ACL": ("authorization", "access to transactional id "
                                "'hitl-gateway.hitl-gateway.hitl.outputs.0' "
                                "(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)"),
    "READ instead of WRITE on an output": ("authorization", "Kafka refused user 'hitl-no-write' "
                                           "(SCRAM-SHA-512) access to topic 'hitl.delivered' "
                                           "(TOPIC_AUTHORIZATION_FAILED)"),
    "a refused client secret": ("token", "refused client 'hitl' (HTTP 401, invalid_client"),
    "a token the broker refuses": ("authentication", "the token was refused with "
                                   '{"status":"invalid_token"}'),
}  # fmt: skip


@contextmanager
def _case(name: str, client: dict[str, Any]) -> Iterator[KafkaSettings]:
    """The gateway's Kafka settings for one refusal (and what it talks to meanwhile)."""
    if name == "wrong password":
        yield _kafka(client, "hitl", sasl_plain_password="not-the-password")
    elif name == "untrusted CA":
        yield _kafka(client, "hitl", ssl_cafile=client["untrusted_cafile"])
    elif name == "certificate for another host":
        with _tls_server(client["wrong_host_certfile"], client["wrong_host_keyfile"]) as port:
            yield _kafka(client, "hitl", bootstrap_servers=f"127.0.0.1:{port}")
    elif name in ("a refused client secret", "a token the broker refuses"):
        audience = "someone-else" if name == "a token the broker refuses" else None
        with _issuer(client, "client-secret", audience).running() as issuer:
            secret = "wrong-secret" if name == "a refused client secret" else "client-secret"
            yield _oauth(client, issuer.url, secret)
    else:
        user = {"no ACL at all": "nobody", "no group ACL": "hitl-no-group",
                "no transactional id ACL": "hitl-no-txn",
                "READ instead of WRITE on an output": "hitl-no-write"}[name]  # fmt: skip
        yield _kafka(client, user)


@pytest.mark.parametrize("name", list(REFUSALS))
async def test_a_refusal_stops_the_start_naming_its_cause(
    name: str, secured: dict[str, Any], tmp_path: Path
) -> None:
    cause, words = REFUSALS[name]
    if name == "READ instead of WRITE on an output":  # refused only when it writes
        await produce("hitl.outputs", [_record("w", i) for i in range(3)],
                      bootstrap=secured["bootstrap_servers"], security=_admin(secured))  # fmt: skip
    with _case(name, secured) as kafka:
        gateway = GatewayProcess(_settings(kafka), tmp_path, "gateway", secrets=_secrets(kafka))
        started = time.monotonic()
        gateway.start()
        try:
            code = await asyncio.to_thread(gateway.wait, REFUSED_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after {REFUSED_WITHIN_S}s:\n{gateway.log()[-3_000:]}")
        finally:
            gateway.kill()
    took = time.monotonic() - started
    log = gateway.log()
    assert code == EXIT_CONFIG, log[-3_000:]
    stderr = [line for line in log.splitlines() if line.startswith("hitl-gateway: ")]
    assert len(stderr) == 1, log[-3_000:]
    assert words in stderr[0], stderr[0]
    events = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    (refused,) = [e for e in events if e["event"] == "kafka_access_refused"]
    assert refused["cause"] == cause
    assert not [e for e in events if e["event"] == "infrastructure_error_retrying"]
    print(f"{name}: exit {code} after {took:.1f}s: {stderr[0]}")
