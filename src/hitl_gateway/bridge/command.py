"""``hitl-gateway bridge label-studio [--once]``: the bridge's parts built from the
settings, run until a signal (or for one cycle)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import httpx
import structlog

from hitl_gateway.errors import ConfigError, GatewayError
from hitl_gateway.settings import Settings

log = structlog.get_logger(__name__)


def add_parser(sub: Any) -> None:
    bridge = sub.add_parser("bridge", help="mirror review work into annotation tools")
    bridge_sub = bridge.add_subparsers(dest="bridge_command", required=True)
    ls = bridge_sub.add_parser(
        "label-studio",
        help="mirror held items of HITL_LABEL_STUDIO__POOLS into Label Studio; publish "
        "submitted annotations as decisions",
    )
    ls.add_argument("--once", action="store_true", help="one reconciliation, then exit")


def _required(settings: Settings) -> None:
    s = settings.label_studio
    token = s.token.get_secret_value() if s.token is not None else ""
    missing = [name for name, value in (("HITL_LABEL_STUDIO__TOKEN", token),
                                        ("HITL_LABEL_STUDIO__POOLS", s.pools),
                                        ("HITL_LABEL_STUDIO__ANNOTATORS_FILE",
                                         s.annotators_file)) if not value]  # fmt: skip
    if missing:
        raise ConfigError(f"the Label Studio bridge needs {', '.join(missing)}")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    # Imported here: label-studio-sdk is an extra (pip install 'hitl-gateway[label-studio]').
    try:
        from label_studio_sdk import AsyncLabelStudio  # noqa: PLC0415
        from label_studio_sdk.core.api_error import ApiError  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError(
            f"the bridge needs label-studio-sdk ({exc}): pip install 'hitl-gateway[label-studio]'"
        ) from exc
    from hitl_gateway.bridge.label_studio import Bridge, load_annotators, vars_of  # noqa: PLC0415
    from hitl_gateway.holds import HoldIndex  # noqa: PLC0415
    from hitl_gateway.policy.loader import load_policy_set  # noqa: PLC0415
    from hitl_gateway.review.auth import Reviewers  # noqa: PLC0415
    from hitl_gateway.review.signing import tool_signer  # noqa: PLC0415
    from hitl_gateway.sink import Publisher  # noqa: PLC0415

    _required(settings)
    s = settings.label_studio
    assert s.token is not None
    assert s.annotators_file is not None
    p = settings.policy
    policies = load_policy_set(p.dir, p.pools_file, p.routing_file)
    annotators = load_annotators(s.annotators_file, Reviewers.load(settings.review.reviewers_file))
    # The SDK's constructor has no annotations (label-studio-sdk 2.x).
    token = s.token.get_secret_value()
    client = AsyncLabelStudio(base_url=s.url, api_key=token)  # type: ignore[no-untyped-call]
    signer = None
    if s.signing_key_id is not None and s.signing_key is not None:
        secret = s.signing_key.get_secret_value()
        signer = tool_signer(s.signing_key_id, s.signing_algorithm, secret)
    index = HoldIndex(settings.redis)
    publisher = Publisher(settings.kafka, settings.limits.max_record_bytes)
    await publisher.start()
    try:
        bridge = Bridge(s, client, index, publisher, policies=policies, annotators=annotators,
                        decisions_topic=settings.topics.review_decisions, signer=signer,
                        validity_s=settings.decisions.validity_s)  # fmt: skip
        if args.once:
            try:
                report = await bridge.sync()
            except (httpx.HTTPError, ApiError, GatewayError) as exc:
                log.error("label_studio_sync_failed", error=f"{type(exc).__name__}: {exc}")
                return 1
            log.info("label_studio_synced", **vars_of(report))
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("label_studio_bridge_started", url=s.url, pools=list(s.pools),
                 signing_key_id=s.signing_key_id)  # fmt: skip
        await bridge.run(stop)
        return 0
    finally:
        await publisher.stop()
        await index.stop()
