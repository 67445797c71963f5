"""``hitl-gateway audit verify|export|new-key``: the audit trail from the command line.

``verify`` reads the topic (with its own retention) or an export, with the keys file, and
prints each problem and each partition's chain (audit_verify.py); ``export`` writes events
as JSON lines with their coordinates; ``new-key`` prints a line for the keys file.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from hitl_gateway.audit_keys import KeyRing, load_keys, new_key
from hitl_gateway.audit_report import Verification, render
from hitl_gateway.audit_verify import Record, Retention, verify
from hitl_gateway.settings import Settings

DAY_MS = 86_400_000


def add_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="export and verify the tamper-evident audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify_cmd = audit_sub.add_parser(
        "verify", help="recompute the chains and check their checkpoints; exit 1 on any problem"
    )
    verify_cmd.add_argument("--file", type=Path, help="verify an export instead of the topic")
    verify_cmd.add_argument(
        "--keys", type=Path, help="the audit keys file (default: HITL_AUDIT__KEYS_FILE)"
    )
    verify_cmd.add_argument(
        "--retention-days",
        type=_retention_days,
        metavar="DAYS|unlimited",
        help="what retention may have removed from the front (default: the topic's own"
        " retention.ms; an export: not checked)",
    )
    verify_cmd.add_argument(
        "--anchor",
        type=Path,
        action="append",
        default=[],
        help="an earlier export whose checkpoints must be found again (repeatable)",
    )
    export = audit_sub.add_parser("export", help="write audit events as JSON lines")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--item", help="only this item's events")
    export.add_argument("--since", type=_iso_ms, help="ISO 8601 start (inclusive)")
    export.add_argument("--until", type=_iso_ms, help="ISO 8601 end (exclusive)")
    key = audit_sub.add_parser("new-key", help="print a new key line for the keys file")
    key.add_argument("--id", required=True, help="the key id (A-Z a-z 0-9 _ . -)")


def _retention_days(text: str) -> float:
    """Days, or ``unlimited`` (-1)."""
    if text == "unlimited":
        return -1.0
    try:
        days = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number of days or 'unlimited': {text!r}") from exc
    if days <= 0:
        raise argparse.ArgumentTypeError("retention days must be above 0 (or 'unlimited')")
    return days


def _iso_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def print_new_key(args: argparse.Namespace) -> int:
    """``audit new-key``: raises ``ConfigError`` on a bad id."""
    print(new_key(args.id))
    return 0


def verify_file(args: argparse.Namespace, settings: Settings) -> int:
    """``audit verify --file``: an export; the retention only when given."""
    from hitl_gateway.review.trail import read_export  # noqa: PLC0415

    keys = _keys(args, settings)
    if args.retention_days is None:
        retention, source = None, "not checked (--retention-days)"
    else:
        retention, source = _retention(args.retention_days * DAY_MS, "--retention-days")
    result = verify(read_export(args.file), keys, retention=retention, anchor=_anchors(args))
    return _report(result, keys, source)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """``audit verify`` (the topic) and ``audit export``."""
    from hitl_gateway.review.trail import read_trail, select  # noqa: PLC0415

    if args.audit_command == "verify":
        return await _verify_topic(settings, args)
    trail = await read_trail(settings)
    rows = select(trail, item_id=args.item, since_ms=args.since, until_ms=args.until)
    count = 0
    with args.out.open("wb") as out:
        for row in rows:
            out.write(orjson.dumps(row) + b"\n")
            count += 1
    print(f"wrote {count} event(s) to {args.out}")
    return 0


async def _verify_topic(settings: Settings, args: argparse.Namespace) -> int:
    from hitl_gateway.review.trail import read_trail, topic_retention  # noqa: PLC0415

    keys = _keys(args, settings)
    if args.retention_days is not None:
        retention, source = _retention(args.retention_days * DAY_MS, "--retention-days")
    else:
        retention_ms, source = await topic_retention(settings)
        retention = None
        if retention_ms is not None:
            retention, source = _retention(retention_ms, source)
    trail = await read_trail(settings)
    result = verify(trail, keys, retention=retention, anchor=_anchors(args))
    return _report(result, keys, source)


def _keys(args: argparse.Namespace, settings: Settings) -> KeyRing:
    path = args.keys or settings.audit.keys_file
    return load_keys(path) if path is not None else {}


def _anchors(args: argparse.Namespace) -> list[Record]:
    from hitl_gateway.review.trail import read_export  # noqa: PLC0415

    return [record for path in args.anchor for record in read_export(path)]


def _retention(retention_ms: float, source: str) -> tuple[Retention, str]:
    if retention_ms < 0:
        return Retention(None), f"unlimited ({source})"
    retention = Retention.of(int(retention_ms), int(time.time() * 1000))
    return retention, f"{retention_ms / DAY_MS:g} days ({source})"


def _report(result: Verification, keys: KeyRing, retention: str) -> int:
    for line in render(result):
        print(line)
    if result.keyed:
        print(f"keys held: {', '.join(sorted(keys)) or 'none'}; retention: {retention}")
    return 1 if result.problems else 0
