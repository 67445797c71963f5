"""One error hierarchy for the gateway, and the one place that maps library errors onto it.

Bad *data* is never an exception (see ``codec``). Every call into aiokafka, redis or an
OpenID Connect issuer runs inside ``kafka_errors``, ``redis_errors`` or ``issuer_errors`` (in
the spirit of httpx's ``map_exceptions``): the library errors named here are infrastructure,
which callers retry with backoff and the API answers with 503; anything else is a bug and
propagates, stopping the gateway rather than skipping records.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError


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


# Infrastructure, per library: connection and protocol failures, time-outs, and every error
# the library itself reports (aiokafka's carry a ``retriable`` flag; callers that must tell
# them apart, like the transaction path, catch those first).
KAFKA_FAULTS: tuple[type[BaseException], ...] = (KafkaError, OSError, TimeoutError)
REDIS_FAULTS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


@contextlib.contextmanager
def kafka_errors(doing: str) -> Iterator[None]:
    """Raise ``KafkaUnavailable("{doing} failed: ...")`` for a Kafka fault inside."""
    try:
        yield
    except KAFKA_FAULTS as exc:
        raise KafkaUnavailable(f"{doing} failed: {exc!r}") from exc


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
