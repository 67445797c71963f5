"""``hitl-gateway holds reassign`` and ``hitl-gateway stop-switch on|off``: an operator
moves held work, or switches a domain to holding everything, from the command line.

The same command records as the API's ``POST /v1/reassignments`` (reassign.py) and
``POST /v1/stop-switch`` (stop_switch.py), published straight to the decisions topic; the
operator id must be an operator in the reviewers file, granted the domain (the applier
checks it again). Waits for every partition's result and prints the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import orjson
from pydantic import ValidationError

from hitl_gateway.errors import ConfigError
from hitl_gateway.holds import HoldIndex
from hitl_gateway.policy.loader import load_policy_set
from hitl_gateway.review import stop_switch as switch
from hitl_gateway.review.auth import Reviewers
from hitl_gateway.review.reassign import ReassignRequest, progress, submit
from hitl_gateway.review.state import first_error
from hitl_gateway.settings import Settings
from hitl_gateway.sink import Publisher


def add_parser(sub: Any) -> None:
    holds = sub.add_parser("holds", help="operate on held items")
    holds_sub = holds.add_subparsers(dest="holds_command", required=True)
    move = holds_sub.add_parser(
        "reassign", help="move one held item, or all of a pool or language, to another pool"
    )
    which = move.add_mutually_exclusive_group(required=True)
    which.add_argument("--item", dest="item_id", help="one held item's id")
    which.add_argument("--pool", help="every held item waiting in this pool")
    which.add_argument("--language", help="every held item in this language (pt: all pt-*)")
    move.add_argument("--to", dest="to_pool", required=True, help="the pool to move them to")
    move.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    move.add_argument("--operator", required=True, help="your id (an operator in reviewers.yaml)")
    move.add_argument("--request-id", default=None, help="idempotency key (default: new)")
    move.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the result")
    stop = sub.add_parser(
        "stop-switch", help="hold every record of a domain (or all) for review, or stop doing so"
    )
    stop.add_argument("state", choices=["on", "off"])
    stop.add_argument("--domain", required=True, help="a policy domain, or '*' for every one")
    stop.add_argument("--pool", help="where held items go (required with on)")
    stop.add_argument("--sla-s", type=int, default=None, help="held items' SLA in seconds")
    stop.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    stop.add_argument("--operator", required=True, help="your id (an operator in reviewers.yaml)")
    stop.add_argument("--request-id", default=None, help="idempotency key (default: new)")
    stop.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the result")


async def reassign(settings: Settings, args: argparse.Namespace) -> int:
    who = Reviewers.load(settings.review.reviewers_file).get(args.operator)
    if who is None or not who.operator:
        raise ConfigError(f"{args.operator} is not an operator in {settings.review.reviewers_file}")
    try:
        wanted = ReassignRequest(
            request_id=args.request_id or uuid.uuid4().hex,
            operator=args.operator,
            to_pool=args.to_pool,
            reason=args.reason,
            item_id=args.item_id,
            pool=args.pool,
            language=args.language,
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid reassignment: {first_error(exc)}") from exc
    index = HoldIndex(settings.redis)
    publisher = Publisher(settings.kafka, settings.limits.max_record_bytes)
    await publisher.start()
    try:
        covered = await submit(
            wanted, index, publisher.publish, topics=settings.topics,
            partitions=settings.topics.partitions,
        )  # fmt: skip
        if not covered:
            print(f"no held item {wanted.item_id}")
            return 1
        deadline = time.monotonic() + args.wait
        while True:
            found = await progress(index, wanted.request_id, wanted.operator, covered)
            if found["done"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await publisher.stop()
        await index.stop()
    print(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
    if not found["done"]:
        print(f"not done after {args.wait:g}s: the gateway goes on; poll GET /v1/reassignments/"
              f"{wanted.request_id}")  # fmt: skip
        return 2
    return 1 if found["errors"] else 0


async def stop_switch(settings: Settings, args: argparse.Namespace) -> int:
    try:
        wanted = switch.SwitchRequest(
            request_id=args.request_id or uuid.uuid4().hex,
            operator=args.operator,
            domain=args.domain,
            on=args.state == "on",
            reason=args.reason,
            pool=args.pool,
            sla_s=args.sla_s,
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid stop switch command: {first_error(exc)}") from exc
    who = Reviewers.load(settings.review.reviewers_file).get(args.operator)
    s = settings.policy
    policies = load_policy_set(s.dir, s.pools_file, s.routing_file)
    problem = switch.refusal(wanted, who, policies)
    if problem is not None:
        raise ConfigError(problem)
    index = HoldIndex(settings.redis)
    publisher = Publisher(settings.kafka, settings.limits.max_record_bytes)
    await publisher.start()
    partitions = settings.topics.partitions
    try:
        await switch.submit(wanted, index, publisher.publish, topics=settings.topics)
        deadline = time.monotonic() + args.wait
        while True:
            found = await switch.progress(index, wanted.request_id, wanted.operator, partitions)
            if found["done"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await publisher.stop()
        await index.stop()
    print(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
    if not found["done"]:
        print(f"not applied everywhere after {args.wait:g}s: the gateway goes on; poll GET"
              f" /v1/stop-switch/{wanted.request_id}")  # fmt: skip
        return 2
    return 1 if found["errors"] else 0
