"""Command line: ``hitl-gateway run``, ``topics ensure``, ``settings show``, ``version``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import structlog

from hitl_gateway import __version__
from hitl_gateway.errors import ConfigError, GatewayError
from hitl_gateway.logs import configure_logging
from hitl_gateway.settings import Settings, load_settings

log = structlog.get_logger(__name__)

EXIT_CONFIG = 2
EXIT_FAILURE = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hitl-gateway",
        description="Human-in-the-loop review gateway for AI outputs on Kafka. "
        "Settings come from HITL_* environment variables (see docs/configuration.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="consume, route and publish until stopped (SIGTERM/SIGINT)")
    run.add_argument("--max-records", type=int, default=None, help="stop after this many records")
    run.add_argument(
        "--idle-timeout", type=float, default=None, help="stop after this many idle seconds"
    )

    topics = sub.add_parser("topics", help="topic administration")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True)
    topics_sub.add_parser("ensure", help="create the gateway's topics if missing")

    settings = sub.add_parser("settings", help="inspect settings")
    settings_sub = settings.add_subparsers(dest="settings_command", required=True)
    settings_sub.add_parser("show", help="print the effective settings (secrets masked)")

    sub.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(__version__)
        return 0
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"hitl-gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.runtime.log_level, settings.runtime.log_format)
    try:
        if args.command == "settings":
            print(settings.model_dump_json(indent=2))
            return 0
        if args.command == "topics":
            created = asyncio.run(_ensure_topics(settings))
            print(f"created: {', '.join(created) if created else 'nothing (all present)'}")
            return 0
        if args.command == "run":
            asyncio.run(_run(settings, args.max_records, args.idle_timeout))
            return 0
    except ConfigError as exc:
        print(f"hitl-gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except GatewayError as exc:
        log.error("gateway_failed", error=str(exc))
        return EXIT_FAILURE
    raise AssertionError(f"unhandled command {args.command}")


async def _ensure_topics(settings: Settings) -> list[str]:
    from hitl_gateway.admin import ensure_topics  # noqa: PLC0415 - keeps `version` fast

    return await ensure_topics(settings)


async def _run(settings: Settings, max_records: int | None, idle_timeout_s: float | None) -> None:
    from hitl_gateway.app import Gateway  # noqa: PLC0415 - keeps `version` fast

    gateway = Gateway(settings)
    await gateway.run(max_records=max_records, idle_timeout_s=idle_timeout_s, handle_signals=True)


if __name__ == "__main__":
    sys.exit(main())
