"""A secured local Kafka: TLS, SASL/SCRAM-SHA-512 and OAUTHBEARER users, and ACLs, on loopback.

    python deploy/local/secure.py up | down [--purge] | status

One KRaft node (broker and controller) beside the one-broker stack (``stack.py``, which
provides Redis), with its own ports and directory (``.cache/secure``):

- ``SECURE_BASE_PORT`` (default 19510): the clients' listener, SASL_SSL, with the mechanisms
  SCRAM-SHA-512 (users created at format time) and OAUTHBEARER (JWTs signed by a local key,
  checked against its JWKS file);
- the port after it: the controller listener, TLS with client certificates;
- the port after that: the inter-broker listener, TLS with client certificates.

No listener takes a connection without a certificate or a password. ``up`` makes a CA and
the broker's certificate (names 127.0.0.1 and localhost), a second CA nobody trusts and a
certificate for another host name (for the tests), the users and their passwords, turns on
the ACL authorizer (``StandardAuthorizer``, nothing allowed without an ACL) and grants the
gateway's user the least it needs (docs/security.md). Topic names, the group and the
transactional id prefix come from the gateway's own HITL_* settings, like stack.py's topics.
Everything a client needs (addresses, CA files, users and passwords) is written to
``.cache/secure/client.json``; ``admin.properties`` is the same for Kafka's Java tools.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from acls import GATEWAY_USER, SUPER_USER, TEST_USERS, create_acls, user_grants
from stack import (  # the one-broker stack's helpers, beside this file
    REPO,
    StackConfig,
    StackError,
    _pid_alive,
    _port_open,
    _spawn,
    _stop,
    ensure_kafka_jars,
    ensure_tools,
    new_cluster_id,
)

BROKER_PRINCIPAL = "User:CN=kafka-broker"  # the broker's certificate, on its own listeners
OAUTH_AUDIENCE = "kafka"
OAUTH_ISSUER = "hitl-local-issuer"
WARMUP_TOPIC = "secure.warmup"  # one transaction at start (wait_ready)


@dataclass(frozen=True)
class SecureConfig:
    root: Path
    base_port: int
    heap: str
    ready_timeout_s: float
    stack: StackConfig  # where the Kafka jars are

    @classmethod
    def from_env(cls) -> SecureConfig:
        raw = os.environ.get("SECURE_BASE_PORT", "19510")
        if not raw.isdigit() or not 0 < int(raw) < 65_000:
            raise StackError(f"SECURE_BASE_PORT={raw!r} is not a TCP port")
        return cls(
            root=Path(os.environ.get("SECURE_DIR", REPO / ".cache" / "secure")).resolve(),
            base_port=int(raw),
            heap=os.environ.get("SECURE_KAFKA_HEAP", "512m"),
            ready_timeout_s=float(os.environ.get("SECURE_READY_TIMEOUT_S", "180")),
            stack=StackConfig.from_env(),
        )

    @property
    def port(self) -> int:
        return self.base_port

    @property
    def controller_port(self) -> int:
        return self.base_port + 1

    @property
    def broker_port(self) -> int:
        return self.base_port + 2

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def pidfile(self) -> Path:
        return self.root / "kafka.pid"


# -- users ------------------------------------------------------------------------------------


def ensure_passwords(cfg: SecureConfig) -> dict[str, str]:
    """A random password per user, made once; the broker learns them at format time."""
    from pki import write_private  # noqa: PLC0415 - needs the venv (cryptography)

    path = cfg.root / "passwords.json"
    if path.exists():
        found: dict[str, str] = json.loads(path.read_text())
        return found
    users = [SUPER_USER, GATEWAY_USER, *TEST_USERS]
    passwords = {user: secrets.token_urlsafe(24) for user in users}
    write_private(path, json.dumps(passwords, indent=2).encode())
    return passwords


# -- the broker -------------------------------------------------------------------------------


def _properties(cfg: SecureConfig) -> Path:
    tls, oauth = cfg.tls, cfg.root / "oauth"
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    bearer = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;"
    validator = "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{cfg.controller_port}",
        "listeners": (
            f"SECURE://127.0.0.1:{cfg.port},CONTROLLER://127.0.0.1:{cfg.controller_port},"
            f"BROKER://127.0.0.1:{cfg.broker_port}"
        ),
        "advertised.listeners": f"SECURE://127.0.0.1:{cfg.port},BROKER://127.0.0.1:{cfg.broker_port}",
        "listener.security.protocol.map": "SECURE:SASL_SSL,CONTROLLER:SSL,BROKER:SSL",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "BROKER",
        # TLS on every listener; the broker's own listeners want its certificate back.
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls / "broker-keystore.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls / "ca.pem"),
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
        "listener.name.controller.ssl.client.auth": "required",
        "listener.name.broker.ssl.client.auth": "required",
        # Clients: SCRAM-SHA-512 (users in the metadata log) or OAuth bearer tokens.
        "listener.name.secure.sasl.enabled.mechanisms": "SCRAM-SHA-512,OAUTHBEARER",
        "listener.name.secure.scram-sha-512.sasl.jaas.config": scram,
        "listener.name.secure.oauthbearer.sasl.jaas.config": bearer,
        "listener.name.secure.oauthbearer.sasl.server.callback.handler.class": validator,
        "listener.name.secure.oauthbearer.sasl.oauthbearer.jwks.endpoint.url": (
            (oauth / "jwks.json").as_uri()
        ),
        "listener.name.secure.oauthbearer.sasl.oauthbearer.expected.audience": OAUTH_AUDIENCE,
        "listener.name.secure.oauthbearer.sasl.oauthbearer.expected.issuer": OAUTH_ISSUER,
        # Nothing is allowed without an ACL; the broker itself and the admin are super users.
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"{BROKER_PRINCIPAL};User:{SUPER_USER}",
        "allow.everyone.if.no.acl.found": "false",
        "log.dirs": str(cfg.root / "data"),
        "num.partitions": "3",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
        "auto.create.topics.enable": "false",
    }
    path = cfg.root / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def _format(cfg: SecureConfig, props: Path, passwords: dict[str, str]) -> None:
    scram = []
    for user, password in passwords.items():
        scram += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
    formatted = subprocess.run(
        ["java", "-cp", f"{cfg.stack.libs}/*", "kafka.tools.StorageTool", "format",
         "-t", new_cluster_id(), "-c", str(props), *scram],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    if formatted.returncode != 0:
        raise StackError(f"formatting the secured broker failed:\n{formatted.stderr}")


def start_broker(cfg: SecureConfig, passwords: dict[str, str]) -> bool:
    if _pid_alive(cfg.pidfile, "kafka.Kafka"):
        return False
    for port in (cfg.port, cfg.controller_port, cfg.broker_port):
        if _port_open(port):
            raise StackError(
                f"port {port} is in use by a process this script did not start; "
                "stop it or set SECURE_BASE_PORT"
            )
    props = _properties(cfg)
    if not (cfg.root / "data" / "meta.properties").exists():
        _format(cfg, props, passwords)
    log4j = cfg.root / "log4j.properties"
    log4j.write_text(
        "log4j.rootLogger=WARN, stdout\n"
        "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        "log4j.logger.kafka.server.BrokerServer=INFO\n"
        # Refused logins and denied requests, for whoever reads the log after a failed test.
        "log4j.logger.org.apache.kafka.common.network.Selector=INFO\n"
        "log4j.logger.kafka.authorizer.logger=INFO\n"
    )
    jwks = (cfg.root / "oauth" / "jwks.json").as_uri()
    _spawn(
        ["java", "-Xms128m", f"-Xmx{cfg.heap}", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
         f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={jwks}",
         f"-Dlog4j.configuration=file:{log4j}", "-cp", f"{cfg.stack.libs}/*", "kafka.Kafka",
         str(props)],
        cfg.root / "logs" / "kafka.log", cfg.pidfile,
    )  # fmt: skip
    return True


# -- readiness, topics and ACLs, as the admin user --------------------------------------------


def admin_settings(cfg: SecureConfig, passwords: dict[str, str]) -> Any:
    """The gateway's own settings, connected as the admin user over SASL_SSL."""
    from hitl_gateway.settings import load_settings  # noqa: PLC0415 - needs the venv

    settings = load_settings()
    kafka = settings.kafka.model_copy(
        update={
            "bootstrap_servers": cfg.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": SUPER_USER,
            "sasl_plain_password": _secret(passwords[SUPER_USER]),
            "ssl_cafile": cfg.tls / "ca.pem",
        }
    )
    policy = settings.policy
    if not policy.dir.is_absolute():  # the repository's policies, wherever this runs from
        policy = policy.model_copy(update={"dir": REPO / policy.dir})
    return settings.model_copy(update={"kafka": kafka, "policy": policy})


def _secret(value: str) -> Any:
    from pydantic import SecretStr  # noqa: PLC0415

    return SecretStr(value)


async def wait_ready(cfg: SecureConfig, settings: Any) -> None:
    """Until the broker answers the admin over TLS and SCRAM, and its coordinators work:
    one transaction is committed, so a transaction's first write to a partition has been
    verified with the transaction coordinator (Kafka 3.6+) over the broker's own TLS
    listener, whose first connection is slow on a busy machine. Until then those writes
    are refused as NOT_ENOUGH_REPLICAS and retried, and a gateway started at once would
    spend its first seconds on them."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - needs the venv
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    deadline = time.monotonic() + cfg.ready_timeout_s
    last: object = None
    while time.monotonic() < deadline:
        if not _pid_alive(cfg.pidfile, "kafka.Kafka"):
            raise StackError(f"the secured broker exited; see {cfg.root / 'logs' / 'kafka.log'}")
        admin = AIOKafkaAdminClient(request_timeout_ms=5_000, **settings.kafka.admin_options())
        producer = AIOKafkaProducer(
            transactional_id="secure-warmup", request_timeout_ms=5_000,
            **settings.kafka.producer_options(),
        )  # fmt: skip
        try:
            await admin.start()
            await admin.list_topics()
            # The offsets and transaction state topics, made on first use (see stack.warm).
            await admin.list_consumer_group_offsets("secure-warmup")
            if WARMUP_TOPIC not in await admin.list_topics():
                await admin.create_topics([NewTopic(WARMUP_TOPIC, 1, 1)])
            await producer.start()
            await producer.begin_transaction()
            await producer.send_and_wait(WARMUP_TOPIC, b"warm")
            await producer.commit_transaction()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
        else:
            return
        finally:
            await producer.stop()
            await admin.close()
        await asyncio.sleep(0.5)
    raise StackError(f"the secured broker is not ready within {cfg.ready_timeout_s}s: {last!r}")


async def _prepare(cfg: SecureConfig, settings: Any) -> tuple[list[str], int]:
    from hitl_gateway.admin import ensure_topics  # noqa: PLC0415 - needs the venv

    await wait_ready(cfg, settings)
    changes = await ensure_topics(settings)
    return changes.created, await create_acls(settings)


def write_client_files(cfg: SecureConfig, settings: Any, passwords: dict[str, str]) -> Path:
    """client.json for the tests and scripts; admin.properties for Kafka's Java tools."""
    from pki import write_private  # noqa: PLC0415 - needs the venv (cryptography)

    tls, oauth = cfg.tls, cfg.root / "oauth"
    summary = {
        "bootstrap_servers": cfg.bootstrap,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "ssl_cafile": str(tls / "ca.pem"),
        "untrusted_cafile": str(tls / "untrusted-ca.pem"),
        "wrong_host_certfile": str(tls / "wrong-host.pem"),
        "wrong_host_keyfile": str(tls / "wrong-host-key.pem"),
        "users": passwords,
        "super_user": SUPER_USER,
        "gateway_user": GATEWAY_USER,
        "test_users": TEST_USERS,
        "grants": {
            user: [str(g) for g in grants] for user, grants in user_grants(settings).items()
        },
        "oauth": {
            "issuer": OAUTH_ISSUER,
            "audience": OAUTH_AUDIENCE,
            "signing_keyfile": str(oauth / "signing-key.pem"),
            "kid": (oauth / "kid").read_text().strip(),
        },
    }
    path = cfg.root / "client.json"
    write_private(path, json.dumps(summary, indent=2).encode())
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{SUPER_USER}" password="{passwords[SUPER_USER]}";'
    )
    write_private(
        cfg.root / "admin.properties",
        (
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
            f"sasl.jaas.config={jaas}\n"
            f"ssl.truststore.type=PEM\nssl.truststore.location={tls / 'ca.pem'}\n"
        ).encode(),
    )
    return path


# -- commands ---------------------------------------------------------------------------------


def up(cfg: SecureConfig) -> None:
    began = time.monotonic()
    ensure_tools()
    ensure_kafka_jars(cfg.stack)
    cfg.root.mkdir(parents=True, exist_ok=True)
    from pki import ensure_certificates  # noqa: PLC0415 - needs the venv (cryptography)

    made = ensure_certificates(cfg.tls, cfg.root / "oauth")
    passwords = ensure_passwords(cfg)
    started = start_broker(cfg, passwords)
    settings = admin_settings(cfg, passwords)
    created, acls = asyncio.run(_prepare(cfg, settings))
    summary = write_client_files(cfg, settings, passwords)
    print(
        f"secure: ready in {time.monotonic() - began:.1f}s ({cfg.bootstrap} SASL_SSL); "
        f"started: {'broker' if started else 'nothing (already running)'}; "
        f"made: {', '.join(made) or 'nothing'}; topics created: {', '.join(created) or 'none'}; "
        f"{acls} ACLs in place; clients: {summary}",
        flush=True,
    )


def down(cfg: SecureConfig, purge: bool) -> None:
    _stop(cfg.pidfile, "kafka.Kafka", "secured broker")
    if purge:
        shutil.rmtree(cfg.root, ignore_errors=True)
        print("secure: data, certificates and passwords removed")


def status(cfg: SecureConfig) -> int:
    pid = _pid_alive(cfg.pidfile, "kafka.Kafka")
    answering = _port_open(cfg.port)
    state = "running" if pid else "stopped"
    print(f"secured broker {state:8} pid={pid or '-'} port={cfg.port} answering={answering}")
    return 0 if pid is not None and answering else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="secure", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="make certificates and users, start the broker, grant the ACLs")
    down_cmd = sub.add_parser("down", help="stop the secured broker")
    down_cmd.add_argument(
        "--purge", action="store_true", help="also delete data, certificates and passwords"
    )
    sub.add_parser("status", help="show whether it runs (exit 1 unless it does)")
    args = parser.parse_args(argv)
    try:
        cfg = SecureConfig.from_env()
        if args.command == "up":
            up(cfg)
        elif args.command == "down":
            down(cfg, args.purge)
        else:
            return status(cfg)
    except StackError as exc:
        print(f"secure: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
