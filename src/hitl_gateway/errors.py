"""One error hierarchy for the gateway. Bad *data* is never an exception (see ``codec``)."""


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """Settings or files are invalid; the process must not start with them."""


class InfrastructureError(GatewayError):
    """Kafka or Redis failed in a way retries did not cure."""


class FencedError(InfrastructureError):
    """Another instance took over a partition's transactional id; this one must stop using it."""
