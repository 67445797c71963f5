"""Process settings: read once from the environment (prefix ``HITL_``, nesting with ``__``).

Frozen and strict: an unknown ``HITL_*`` variable is an error naming it, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from hitl_gateway import kafka_options
from hitl_gateway.errors import ConfigError

ENV_PREFIX = "HITL_"
NESTED_DELIMITER = "__"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    """Connection, group and transaction options; security options pass straight to aiokafka."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "hitl-gateway"
    group_id: str = "hitl-gateway"
    # Static membership: a restarted instance with the same id takes its partitions back
    # without waiting for the session timeout (StatefulSet pod names are a natural choice).
    group_instance_id: str | None = None
    transactional_id_prefix: str = "hitl-gateway"
    # false: at-least-once. No transactions: outputs are acknowledged, then the offsets are
    # committed through the group; a crash or rebalance in between publishes some twice.
    exactly_once: bool = True
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    transaction_timeout_ms: int = Field(default=60_000, ge=1_000)
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    max_batch_records: int = Field(default=1_000, ge=1, le=100_000)
    poll_timeout_ms: int = Field(default=200, ge=0, le=60_000)
    # A partition's transaction opens with its first records and takes what arrives after
    # them, routed and sent as it comes; it commits once max_batch_records are in it, or this
    # long after its first record was fetched: fewer, larger transactions at moderate load,
    # for at most this much added latency. At most half of transaction_timeout_ms.
    commit_interval_ms: int = Field(default=20, ge=0, le=60_000)
    # A partition's next transaction usually starts while the broker still writes the last
    # one's markers; the broker answers CONCURRENT_TRANSACTIONS and the client retries after
    # this pause (aiokafka's fixed 20 ms otherwise, which then bounds every transaction).
    concurrent_transactions_backoff_ms: int = Field(default=2, ge=1, le=1_000)
    # A record the Kafka client cannot parse (a header name that is not UTF-8, an unreadable
    # batch): dead-letter it and go on, or stop the process naming its partition and offset.
    poison_records: Literal["deadletter", "fail"] = "deadletter"
    fetch_max_bytes: int = Field(default=52_428_800, ge=1_024)
    # The broker answers a fetch once this many bytes are there for it, or after
    # fetch_max_wait_ms. Under load, fewer and larger fetches: each partition's lane routes
    # fewer, larger chunks into its open transaction (fewer Redis round trips, fewer fetch
    # requests for the broker); a record waits at most fetch_max_wait_ms more to be
    # fetched (docs/performance.md). 1 and any wait: every record is fetched at once.
    fetch_min_bytes: int = Field(default=65_536, ge=1)
    fetch_max_wait_ms: int = Field(default=5, ge=0, le=1_000)
    # Any other aiokafka option, HITL_KAFKA__CLIENT__<option> (kafka_options.py): checked
    # against the clients' signatures at start, given to every client that takes it.
    client: dict[str, str | int | float | bool] = Field(default_factory=dict)
    max_partition_fetch_bytes: int = Field(default=1_048_576, ge=1_024)
    linger_ms: int = Field(default=5, ge=0)
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"] = (
        "PLAIN"
    )
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    # SASL/OAUTHBEARER: tokens from an OAuth 2.0 token endpoint, client credentials grant
    # (oauth.py). https, or http to a loopback address only: the request carries the secret.
    oauth_token_url: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: SecretStr | None = None
    oauth_scope: str | None = None

    @field_validator("client", mode="before")
    @classmethod
    def _check_client(cls, value: Any) -> Any:
        if not isinstance(value, Mapping) or not value:
            return value
        return kafka_options.validate(value, frozenset(cls.model_fields))

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        uses_sasl = self.security_protocol.startswith("SASL")
        if (
            uses_sasl
            and self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
            and (self.sasl_plain_username is None or self.sasl_plain_password is None)
        ):
            raise ValueError(
                f"security_protocol={self.security_protocol} with sasl_mechanism="
                f"{self.sasl_mechanism} needs sasl_plain_username and sasl_plain_password"
            )
        if uses_sasl and self.sasl_mechanism == "OAUTHBEARER":
            _check_oauth(self)
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        if self.fetch_min_bytes > self.fetch_max_bytes:
            # The broker would answer every fetch only when fetch_max_wait_ms ran out.
            raise ValueError(
                f"fetch_min_bytes ({self.fetch_min_bytes}) must be at most fetch_max_bytes "
                f"({self.fetch_max_bytes})"
            )
        if 2 * self.commit_interval_ms > self.transaction_timeout_ms:
            # A transaction stays open while its records arrive, up to the commit interval:
            # the broker would abort one that outlived its timeout under the lane.
            raise ValueError(
                f"commit_interval_ms ({self.commit_interval_ms}) must be at most half of "
                f"transaction_timeout_ms ({self.transaction_timeout_ms})"
            )
        return self

    def client_options(self) -> dict[str, Any]:
        """Connection keyword arguments shared by every aiokafka client."""
        return {"bootstrap_servers": self.bootstrap_servers, **self.security_options()}

    def producer_options(self) -> dict[str, Any]:
        """Connection and pass-through keyword arguments for a producer."""
        return {**self.client_options(), **kafka_options.for_client(self.client, "producer")}

    def consumer_options(self) -> dict[str, Any]:
        """Connection and pass-through keyword arguments for a consumer."""
        return {**self.client_options(), **kafka_options.for_client(self.client, "consumer")}

    def admin_options(self) -> dict[str, Any]:
        """Connection and pass-through keyword arguments for the admin client."""
        return {**self.client_options(), **kafka_options.for_client(self.client, "admin")}

    def security_options(self) -> dict[str, Any]:
        """Keyword arguments for every aiokafka client (consumer, producer, admin)."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context  # noqa: PLC0415 - only when SSL is on

            options["ssl_context"] = create_ssl_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
                certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
                keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
                password=self.ssl_password.get_secret_value() if self.ssl_password else None,
            )
        if self.security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism == "OAUTHBEARER":
                options["sasl_oauth_token_provider"] = self.token_provider()
                return options
            options["sasl_plain_username"] = self.sasl_plain_username
            if self.sasl_plain_password is not None:
                options["sasl_plain_password"] = self.sasl_plain_password.get_secret_value()
        return options

    def token_provider(self) -> Any:
        """The process's one OAuth token provider for these settings (OAUTHBEARER only)."""
        from hitl_gateway.oauth import shared_provider  # noqa: PLC0415 - only with OAUTHBEARER

        url, client, secret = self.oauth_token_url, self.oauth_client_id, self.oauth_client_secret
        if url is None or client is None or secret is None:  # the validator requires them
            raise ConfigError("OAUTHBEARER needs oauth_token_url, oauth_client_id and secret")
        return shared_provider(
            url,
            client,
            secret.get_secret_value(),
            self.oauth_scope,
            min(self.request_timeout_ms / 1000, 30.0),
        )

    def identity(self) -> str:
        """Who this client is to the broker, for messages (never a secret)."""
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism == "OAUTHBEARER":
                return f"OAuth client {self.oauth_client_id!r} (OAUTHBEARER)"
            if self.sasl_mechanism == "GSSAPI":
                return "the Kerberos principal (GSSAPI)"
            return f"user {self.sasl_plain_username!r} ({self.sasl_mechanism})"
        if self.ssl_certfile is not None:
            return f"the client certificate {self.ssl_certfile}"
        return f"the anonymous client ({self.security_protocol})"


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _check_oauth(kafka: KafkaSettings) -> None:
    missing = [
        f"oauth_{name} (HITL_KAFKA__OAUTH_{name.upper()})"
        for name, value in (
            ("token_url", kafka.oauth_token_url),
            ("client_id", kafka.oauth_client_id),
            ("client_secret", kafka.oauth_client_secret),
        )
        if not value
    ]
    if missing:
        raise ValueError(
            f"sasl_mechanism=OAUTHBEARER gets its tokens from an OAuth token endpoint with the "
            f"client credentials grant; set {', '.join(missing)}"
        )
    url = urlsplit(kafka.oauth_token_url or "")
    secure = url.scheme == "https" or (url.scheme == "http" and url.hostname in _LOOPBACK)
    if not url.hostname or not secure:
        raise ValueError(
            f"oauth_token_url {kafka.oauth_token_url!r} must be an https:// URL (http:// only "
            "to a loopback address): the client secret is sent with every token request"
        )


class TopicSettings(_Section):
    """Topic names and layout. All data topics share one partition count (co-partitioned)."""

    outputs: str = "hitl.outputs"
    delivered: str = "hitl.delivered"
    deadletter: str = "hitl.deadletter"
    holds: str = "hitl.holds"
    review_tasks: str = "hitl.review.tasks"
    review_decisions: str = "hitl.review.decisions"
    blocked: str = "hitl.blocked"
    training: str = "hitl.training"
    audit: str = "hitl.audit"
    calibration: str = "hitl.calibration"
    partitions: int = Field(default=3, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=32)
    # Replicas that must have a write before it is acknowledged (acks=all); None: the
    # broker's default. With replication_factor 3, 2 keeps writing through one broker's loss.
    min_insync_replicas: int | None = Field(default=None, ge=1, le=32)

    @model_validator(mode="after")
    def _isr(self) -> TopicSettings:
        if (
            self.min_insync_replicas is not None
            and self.min_insync_replicas > self.replication_factor
        ):
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) cannot exceed"
                f" replication_factor ({self.replication_factor})"
            )
        return self

    def all_names(self) -> list[str]:
        return [
            self.outputs,
            self.delivered,
            self.deadletter,
            self.holds,
            self.review_tasks,
            self.review_decisions,
            self.blocked,
            self.training,
            self.audit,
            self.calibration,
        ]


class PolicySettings(_Section):
    """Where the policy files are; relative paths resolve against the working directory."""

    dir: Path = Path("configs/policies")
    pools_file: Path | None = None  # default: <dir>/../pools.yaml
    routing_file: Path | None = None  # default: <dir>/../routing.yaml
    reload_interval_s: float = Field(default=5.0, ge=0)  # 0: reload on SIGHUP only


class ReviewSettings(_Section):
    """Reviewer identities and the review API's behaviour."""

    reviewers_file: Path = Path("configs/reviewers.yaml")
    decision_wait_s: float = Field(default=10.0, gt=0)  # how long the API waits for the result
    sla_check_interval_s: float = Field(default=5.0, gt=0)  # how often owned holds are swept
    # Holds one transaction of a bulk reassignment moves; the rest follow in further ones.
    reassign_chunk: int = Field(default=200, ge=1, le=5_000)
    # How long taking an item reserves it for a reviewer; their open page renews it.
    lease_s: float = Field(default=600.0, gt=0, le=86_400)
    # How often the reviewers file is checked for changes (0: read at start only).
    reload_interval_s: float = Field(default=2.0, ge=0)
    # Authenticated API requests a reviewer may make per window (0: no limit); past it 429.
    rate_limit_requests: int = Field(default=300, ge=0)
    rate_limit_window_s: float = Field(default=10.0, gt=0, le=3_600)


# Signature algorithms an issuer's tokens may use: asymmetric only. ``none`` and the HMAC
# family (HS*) are not expressible: an HS256 token "signed" with the issuer's public key
# would otherwise verify against the very key the gateway publishes trust in.
SigningAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
    "Ed25519",
]  # fmt: skip
CALLBACK_PATH = "/workspace/oidc/callback"


def _secure_url(name: str, url: str) -> str:
    """An https URL, or http on a loopback address (a local issuer, tests)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an https:// URL, got {url!r}")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError(f"{name} must use https (plain http only on a loopback address)")
    if parts.fragment:
        raise ValueError(f"{name} must not carry a #fragment")
    return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OidcSettings(_Section):
    """Reviewers signed in by an OpenID Connect issuer (docs/review.md): JWTs checked against
    the issuer's keys, a claim naming the reviewer, groups granting pools. Off while
    ``issuer`` is unset; the reviewers file works either way."""

    issuer: str | None = None
    # What the API's bearer tokens must name in ``aud``; the workspace's ID tokens must name
    # ``client_id`` (which defaults to this).
    audience: str | None = Field(default=None, min_length=1, max_length=512)
    jwks_url: str | None = None  # default: ``jwks_uri`` from the issuer's discovery document
    id_claim: Literal["sub", "preferred_username", "email"] = "sub"
    groups_claim: str = Field(default="groups", min_length=1, max_length=128)
    groups_file: Path | None = None  # group -> pools, domains, operator (required when on)
    algorithms: tuple[SigningAlgorithm, ...] = Field(
        default=("RS256", "ES256", "EdDSA"), min_length=1
    )
    leeway_s: int = Field(default=60, ge=0, le=300)  # clock skew allowed on exp, nbf, iat
    jwks_cache_s: float = Field(default=300.0, ge=1, le=86_400)
    # The least time between two fetches of the key set: an unknown key id (a rotation)
    # fetches it again at most this often, whatever a flood of made-up ids asks for.
    jwks_refetch_interval_s: float = Field(default=10.0, ge=0.1, le=3_600)
    http_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # The workspace's authorization-code sign-in (with PKCE): on when both are set.
    client_id: str | None = Field(default=None, min_length=1, max_length=512)
    client_secret: SecretStr | None = None
    redirect_url: str | None = None
    scopes: str = Field(default="openid", min_length=1, max_length=512)

    @property
    def enabled(self) -> bool:
        return self.issuer is not None

    @property
    def code_flow(self) -> bool:
        return self.enabled and self.client_id is not None and self.redirect_url is not None

    @property
    def id_token_audience(self) -> str:
        """The audience the workspace's ID tokens are issued for (the client id)."""
        audience = self.client_id or self.audience
        assert audience is not None
        return audience

    @model_validator(mode="after")
    def _check(self) -> OidcSettings:
        for name in ("issuer", "jwks_url", "redirect_url"):
            value = getattr(self, name)
            if value is not None:
                _secure_url(name, value)
        if self.issuer is None:
            orphans = ("audience", "jwks_url", "groups_file", "client_id", "redirect_url")
            given = [name for name in orphans if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} set without issuer (OIDC is off)")
            return self
        if self.audience is None:
            raise ValueError("issuer is set: audience is required (the tokens' aud)")
        if self.groups_file is None:
            raise ValueError("issuer is set: groups_file is required (groups -> pools)")
        if (self.client_id is None) != (self.redirect_url is None):
            raise ValueError("the workspace's OIDC sign-in needs both client_id and redirect_url")
        if self.client_secret is not None and self.client_id is None:
            raise ValueError("client_secret is set without client_id")
        if self.redirect_url is not None and not urlsplit(self.redirect_url).path.endswith(
            CALLBACK_PATH
        ):
            raise ValueError(f"redirect_url must end with the gateway's {CALLBACK_PATH}")
        if "openid" not in self.scopes.split():
            raise ValueError("scopes must include openid")
        return self


class RedisSettings(_Section):
    url: str = "redis://127.0.0.1:6379/0"
    # Namespaces every key, so several deployments (or test runs) can share one Redis.
    key_prefix: str = Field(default="hitl:", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    password: SecretStr | None = None
    socket_timeout_s: float = Field(default=5.0, gt=0)


class HttpSettings(_Section):
    """The gateway's HTTP server: ``/metrics``, health probes and the review API."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65_535)


class LimitSettings(_Section):
    max_record_bytes: int = Field(default=1_000_000, ge=256, le=50_000_000)
    max_id_length: int = Field(default=256, ge=1, le=4_096)

    @property
    def max_wire_bytes(self) -> int:
        """The largest record the gateway's topics take (their ``max.message.bytes``, and
        the producers' largest request): a record at the limit with room for headers."""
        return self.max_record_bytes + 64 * 1024


class RuntimeSettings(_Section):
    shutdown_timeout_s: float = Field(default=20.0, gt=0)
    metrics_interval_s: float = Field(default=5.0, gt=0)  # how often gauges are sampled
    stall_after_s: float = Field(default=60.0, gt=0)  # records waiting, no commit: not ready
    retry_backoff_initial_s: float = Field(default=0.5, gt=0)
    retry_backoff_max_s: float = Field(default=30.0, gt=0)
    event_loop: Literal["asyncio", "uvloop"] = "uvloop"  # uvloop: less overhead per await
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class NotifySettings(_Section):
    """Webhook alerts about held items (escalations, SLA warnings); best effort."""

    # A Slack webhook URL carries its token: a secret. None: off (counted as ``disabled``).
    webhook_url: SecretStr | None = None
    format: Literal["slack", "json"] = "json"
    timeout_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=6, ge=1)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    queue_size: int = Field(default=1_000, ge=1)
    sla_warning_share: float = Field(default=0.75, ge=0, lt=1)  # 0: no SLA warnings

    @model_validator(mode="after")
    def _check_url(self) -> NotifySettings:
        # Caught here, not as a failed POST per alert at runtime.
        url = self.webhook_url.get_secret_value() if self.webhook_url else None
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        return self


class AuditSettings(_Section):
    """The audit trail's keys and checkpoints (docs/security.md). Without a keys file the
    chain's links are plain SHA-256, with no sequence numbers or checkpoints."""

    # A YAML file of ``key_id: base64 secret`` entries: the active key seals new events, and
    # every key in it verifies (a retired key stays while events sealed with it are kept).
    keys_file: Path | None = None
    active_key_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # A transaction ends with a checkpoint once this many events wait for one, or when
    # events wait and the last checkpoint is older than the interval.
    checkpoint_every: int = Field(default=1_000, ge=1, le=1_000_000)
    checkpoint_interval_s: float = Field(default=60.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _key_named(self) -> AuditSettings:
        if (self.keys_file is None) != (self.active_key_id is None):
            raise ValueError("keys_file and active_key_id are set together (or neither)")
        return self


class DecisionSettings(_Section):
    """Signed decisions on the decisions topic (review/signing.py, docs/security.md). Without
    a keys file decisions on the topic are not signature-checked (a warning at start)."""

    # A YAML file of the trusted signers: ``key_id: {algorithm: ed25519, public_key: ...}`` or
    # ``{algorithm: hmac-sha256, secret: ...}``. A Secret: it holds the HMAC secrets.
    keys_file: Path | None = None
    # The hmac-sha256 key in that file the gateway signs with: the review API's decisions, and
    # a checked decision it forwards to its hold's partition.
    gateway_key_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # How long the gateway's own signatures last, and the longest any signature may.
    validity_s: float = Field(default=300.0, gt=0, le=86_400)
    max_validity_s: float = Field(default=3_600.0, gt=0, le=7 * 86_400)

    @model_validator(mode="after")
    def _key_named(self) -> DecisionSettings:
        if (self.keys_file is None) != (self.gateway_key_id is None):
            raise ValueError("keys_file and gateway_key_id are set together (or neither)")
        if self.validity_s > self.max_validity_s:
            raise ValueError("validity_s may not exceed max_validity_s")
        return self


class LabelStudioSettings(_Section):
    """The Label Studio bridge (``hitl-gateway bridge label-studio``; docs/label-studio.md):
    which pools it mirrors, where Label Studio is, and who its annotators are."""

    url: str = "http://127.0.0.1:8080"
    # The bridge's Label Studio personal access token (or a legacy API token).
    token: SecretStr | None = None
    pools: tuple[str, ...] = ()
    # YAML: ``annotators: {<Label Studio user e-mail>: <reviewer id>}``; the reviewers file
    # grants each reviewer id its pools and domains.
    annotators_file: Path | None = None
    interval_s: float = Field(default=5.0, gt=0, le=3_600)
    project_prefix: str = Field(default="hitl", min_length=1, max_length=40)
    # The bridge's decision signing key (``hitl-gateway decisions keygen``): its id in the
    # gateway's decision keys file, its algorithm, and the secret the keygen gave the tool.
    signing_key_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    signing_algorithm: Literal["ed25519", "hmac-sha256"] = "ed25519"
    signing_key: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("url must be an http:// or https:// URL")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _signing_key_named(self) -> LabelStudioSettings:
        if (self.signing_key_id is None) != (self.signing_key is None):
            raise ValueError("signing_key_id and signing_key are set together (or neither)")
        return self


class Settings(BaseSettings):
    """Everything the process reads from its environment, validated once at start."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    policy: PolicySettings = PolicySettings()
    review: ReviewSettings = ReviewSettings()
    oidc: OidcSettings = OidcSettings()
    redis: RedisSettings = RedisSettings()
    http: HttpSettings = HttpSettings()
    limits: LimitSettings = LimitSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    notify: NotifySettings = NotifySettings()
    audit: AuditSettings = AuditSettings()
    decisions: DecisionSettings = DecisionSettings()
    label_studio: LabelStudioSettings = LabelStudioSettings()


def known_env_names(model: type[BaseModel], prefix: str) -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        env_name = f"{prefix}{name}".upper()
        names.add(env_name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= known_env_names(annotation, f"{env_name}{NESTED_DELIMITER}")
    return names


def unknown_env_names(environ: Mapping[str, str]) -> list[str]:
    """``HITL_*`` variables that name no setting (typos would otherwise be ignored). Kafka
    client pass-through names (``HITL_KAFKA__CLIENT__*``) are checked by KafkaSettings."""
    known = known_env_names(Settings, ENV_PREFIX)
    candidates = (name for name in environ if name.upper().startswith(ENV_PREFIX))
    return sorted(
        name
        for name in candidates
        if name.upper() not in known and not name.upper().startswith(kafka_options.ENV_PREFIX)
    )


def load_settings(**overrides: Any) -> Settings:
    """Validate the environment into ``Settings`` or raise ``ConfigError`` naming each problem."""
    unknown = unknown_env_names(os.environ)
    if unknown:
        raise ConfigError(f"unknown setting(s) in the environment: {', '.join(unknown)}")
    try:
        return Settings(**overrides)
    except SettingsError as exc:  # a list or map setting whose value is not JSON
        raise ConfigError(
            f"invalid settings: {exc} ({exc.__cause__}; list settings take JSON, e.g. '[\"a\"]')"
        ) from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{NESTED_DELIMITER.join(str(p).upper() for p in err['loc'])}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
