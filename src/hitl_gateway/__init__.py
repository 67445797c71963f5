"""hitl-gateway: a human-in-the-loop review gateway for AI model outputs on Kafka."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hitl-gateway")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
