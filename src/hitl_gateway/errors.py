"""One error hierarchy for the gateway, and the one place that maps library errors onto it.

Bad *data* is never an exception (see ``codec``). Every call into aiokafka, redis or an
OpenID Connect issuer runs inside ``kafka_errors``, ``redis_errors`` or ``issuer_errors`` (in
the spirit of httpx's ``map_exceptions``): the library errors named here are infrastructure,
which callers retry with backoff and the API answers with 503; anything else is a bug and
propagates, stopping the gateway rather than skipping records. One kind of Kafka error is
neither: a refusal of this client (its certificate check, credentials, token or
permissions), which no retry cures. It becomes a ``KafkaAccessError`` and stops the process
with a message naming the cause.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator

import httpx
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)
from redis.exceptions import RedisError

# The process's exit codes for a stop it could not carry on from (``cli``).
EXIT_FAILURE = 1
EXIT_CONFIG = 2  # settings, files or a refusal by Kafka (ConfigError)


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """Settings or files are invalid; the process must not start with them."""


class InfrastructureError(GatewayError):
    """Kafka or Redis failed in a way retries did not cure. ``component`` labels the
    ``hitl_infrastructure_errors_total`` metric."""

    component = "kafka"


class KafkaUnavailable(InfrastructureError):
    """The broker did not answer, or answered with a (retriable) error."""


class RedisUnavailable(InfrastructureError):
    """Redis did not answer, or refused a command."""

    component = "redis"


class FencedError(KafkaUnavailable):
    """Another instance took over a partition's transactional id; this one must stop using it."""


class KafkaAccessError(ConfigError):
    """Kafka refused this client: the broker's certificate failed the check (untrusted, or
    not for the host connected to), the credentials or the OAuth token were refused, or an
    ACL is missing. Not infrastructure: retrying cannot cure it, so nothing retries it.

    ``cause`` is ``tls``, ``authentication``, ``token`` or ``authorization``; ``who`` names
    the client (its user or OAuth client and mechanism) once the composition root knows it.
    """

    def __init__(self, cause: str, detail: str, who: str | None = None) -> None:
        self.cause = cause
        self.detail = detail
        self.who = who
        super().__init__(self._render())

    def naming(self, who: str) -> KafkaAccessError:
        """The same refusal, naming the client (kept if already named)."""
        return self if self.who else KafkaAccessError(self.cause, self.detail, who)

    def _render(self) -> str:
        who = self.who or "this client"
        if self.cause == "authentication":
            return f"Kafka refused the credentials of {who}: {self.detail}"
        if self.cause == "authorization":
            return f"Kafka refused {who} {self.detail}"
        return self.detail


class TokenEndpointError(KafkaConnectionError):  # type: ignore[misc]  # untyped base
    """The OAuth token endpoint gave no token. Raised inside aiokafka's connection set-up, so
    it is one of aiokafka's connection errors there (a later refresh that fails is retried
    like a failed connection); ``refused`` when the endpoint turned the client down."""

    def __init__(self, message: str, *, refused: bool) -> None:
        super().__init__(message)
        self.message = message
        self.refused = refused


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH = (62, 64)
# What each authorization error was about, for the message.
_AUTHORIZATION: dict[type[KafkaError], str] = {
    TopicAuthorizationFailedError: "topic",
    GroupAuthorizationFailedError: "consumer group",
    TransactionalIdAuthorizationFailed: "transactional id",
    ClusterAuthorizationFailedError: "cluster",
}
_AUTHENTICATION: tuple[type[KafkaError], ...] = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
)


def kafka_refusal(exc: BaseException) -> KafkaAccessError | None:
    """The refusal in ``exc`` or its causes, if Kafka (or its token endpoint) refused this
    client; None for anything a retry may cure."""
    for err in _causes(exc):
        if isinstance(err, KafkaAccessError):
            return err
        if isinstance(err, ssl.SSLCertVerificationError):
            return KafkaAccessError("tls", tls_refusal(err))
        if isinstance(err, TokenEndpointError):
            return KafkaAccessError("token", err.message)
        if isinstance(err, _AUTHENTICATION):
            return KafkaAccessError("authentication", _reason(err))
        for kind, what in _AUTHORIZATION.items():
            if isinstance(err, kind):
                return KafkaAccessError("authorization", authorization_refusal(what, err))
    return None


def tls_refusal(err: ssl.SSLCertVerificationError, broker: str | None = None) -> str:
    """Why the broker's certificate was refused, in words an operator can act on."""
    at = f" at {broker}" if broker else ""
    reason = err.verify_message or str(err)
    if err.verify_code in _NAME_MISMATCH:
        return (
            f"the TLS certificate of the Kafka broker{at} is not valid for the host name the "
            f"gateway connected to ({reason}); host-name checking is always on: connect by a "
            "name the certificate lists"
        )
    return (
        f"the TLS certificate of the Kafka broker{at} is not trusted ({reason}); "
        "HITL_KAFKA__SSL_CAFILE must name the CA that signed it"
    )


def authorization_refusal(
    what: str, err: KafkaError, names: list[str] | None = None, needs: str = ""
) -> str:
    """``access to <what> '<name>' (<ERROR_CODE>): ...`` for a missing ACL; the names are the
    error's own (aiokafka puts the refused topics, group or transactional id there) unless
    given; ``needs`` says which grant would cure it."""
    found = names if names is not None else _names(err)
    if len(found) > 1:
        what = f"{what}s"
    subject = f"{what} {', '.join(repr(n) for n in found)}" if found else what
    code = getattr(err, "message", type(err).__name__)
    cure = f"{needs}; " if needs else ""
    return f"access to {subject} ({code}): an ACL is missing ({cure}docs/security.md lists them)"


def _names(err: BaseException) -> list[str]:
    names: list[str] = []
    for arg in err.args:
        if isinstance(arg, set | frozenset | list | tuple):
            names += sorted(str(a) for a in arg)
        elif isinstance(arg, str) and arg:
            names.append(arg)
    return names


def _reason(err: BaseException) -> str:
    return "; ".join(str(a) for a in err.args if a) or type(err).__name__


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def kafka_failure(doing: str, exc: BaseException) -> GatewayError:
    """The gateway's error for a Kafka fault met while ``doing``: a refusal stops the
    process (``KafkaAccessError``); anything else is retried (``KafkaUnavailable``)."""
    refused = kafka_refusal(exc)
    if refused is not None:
        return refused
    return KafkaUnavailable(f"{doing} failed: {exc!r}")


# Infrastructure, per library: connection and protocol failures, time-outs, and every error
# the library itself reports (aiokafka's carry a ``retriable`` flag; callers that must tell
# them apart, like the transaction path, catch those first).
KAFKA_FAULTS: tuple[type[BaseException], ...] = (KafkaError, OSError, TimeoutError)
REDIS_FAULTS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


@contextlib.contextmanager
def kafka_errors(doing: str) -> Iterator[None]:
    """Raise ``KafkaUnavailable("{doing} failed: ...")`` for a Kafka fault inside, or
    ``KafkaAccessError`` if Kafka refused this client."""
    try:
        yield
    except KAFKA_FAULTS as exc:
        raise kafka_failure(doing, exc) from exc


@contextlib.contextmanager
def redis_errors(doing: str) -> Iterator[None]:
    """Raise ``RedisUnavailable("{doing} failed: ...")`` for a Redis fault inside."""
    try:
        yield
    except REDIS_FAULTS as exc:
        raise RedisUnavailable(f"{doing} failed: {exc!r}") from exc


class IssuerUnavailable(InfrastructureError):
    """The OpenID Connect issuer (its discovery document, keys or token endpoint) did not
    answer, or answered with something unusable."""

    component = "oidc"


ISSUER_FAULTS: tuple[type[BaseException], ...] = (httpx.HTTPError, OSError, TimeoutError)


@contextlib.contextmanager
def issuer_errors(doing: str) -> Iterator[None]:
    """Raise ``IssuerUnavailable("{doing} failed: ...")`` for an HTTP fault inside."""
    try:
        yield
    except ISSUER_FAULTS as exc:
        raise IssuerUnavailable(f"{doing} failed: {exc!r}") from exc
