"""Command line: ``hitl-gateway run``, ``policy check|simulate|schema``, ``plan``, ``audit
verify|export|new-key``, ``reviewers token``, ``topics ensure``, ``settings show``,
``training export``, ``bridge label-studio``, ``version``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import uvloop

from hitl_gateway import __version__, audit_cli, operator_cli, training_export
from hitl_gateway.bridge import command as bridge_command
from hitl_gateway.errors import EXIT_CONFIG, EXIT_FAILURE, ConfigError, GatewayError
from hitl_gateway.logs import configure_logging
from hitl_gateway.settings import Settings, load_settings

if TYPE_CHECKING:
    from hitl_gateway.admin import TopicChanges
    from hitl_gateway.policy.loader import PolicySet
    from hitl_gateway.review.signing import Algorithm

log = structlog.get_logger(__name__)

DEFAULT_POLICY_DIR = Path("configs/policies")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hitl-gateway",
        description="Human-in-the-loop review gateway for AI outputs on Kafka. "
        "Settings come from HITL_* environment variables (see docs/configuration.md).",
    )
    parser.add_argument("--version", action="version", version=f"hitl-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="consume, route and publish until stopped (SIGTERM/SIGINT)")
    run.add_argument("--max-records", type=int, default=None, help="stop after this many records")
    run.add_argument(
        "--idle-timeout", type=float, default=None, help="stop after this many idle seconds"
    )

    topics = sub.add_parser("topics", help="topic administration")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True)
    topics_sub.add_parser(
        "ensure",
        help="create the gateway's topics if missing; raise the audit topic's retention to the "
        "policies' longest",
    )

    settings = sub.add_parser("settings", help="inspect settings")
    settings_sub = settings.add_subparsers(dest="settings_command", required=True)
    settings_sub.add_parser("show", help="print the effective settings (secrets masked)")

    policy = sub.add_parser("policy", help="validate, simulate and document policy files")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser("check", help="validate every file; non-zero exit on errors")
    check.add_argument("dir", nargs="?", type=Path, default=DEFAULT_POLICY_DIR)
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    check.add_argument(
        "--reviewers", type=Path, help="also warn on pools no reviewer in this file may decide"
    )
    check.add_argument(
        "--traffic", type=Path, help="also warn on this profile's languages no pool speaks"
    )
    sim = policy_sub.add_parser("simulate", help="replay recorded records through the engine")
    sim.add_argument("--input", type=Path, required=True, help="JSON lines, one record each")
    sim.add_argument("--policies", type=Path, default=DEFAULT_POLICY_DIR)
    sim.add_argument("--diff", type=Path, metavar="OLD_DIR", help="compare with another set")
    schema = policy_sub.add_parser("schema", help="write the JSON Schemas of the policy files")
    schema.add_argument("--out", type=Path, default=Path("configs/schema"))

    audit_cli.add_parser(sub)

    plan_cmd = sub.add_parser("plan", help="reviews, reviewer-hours, headcount and cost per pool")
    plan_cmd.add_argument("--traffic", type=Path, required=True, help="a traffic profile (YAML)")
    plan_cmd.add_argument("--policies", type=Path, default=DEFAULT_POLICY_DIR)

    reviewers = sub.add_parser("reviewers", help="reviewer identities")
    reviewers_sub = reviewers.add_subparsers(dest="reviewers_command", required=True)
    reviewers_sub.add_parser("token", help="make a bearer token and the hash for reviewers.yaml")

    decisions = sub.add_parser("decisions", help="signed decisions on the decisions topic")
    decisions_sub = decisions.add_subparsers(dest="decisions_command", required=True)
    keygen = decisions_sub.add_parser(
        "keygen", help="make a review tool's signing key and its entry for the keys file"
    )
    keygen.add_argument("--key-id", required=True, help="the key id (the tool's name)")
    keygen.add_argument("--algorithm", choices=("ed25519", "hmac-sha256"), default="ed25519")

    operator_cli.add_parser(sub)
    training_export.add_parser(sub)
    bridge_command.add_parser(sub)
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(__version__)
        return 0
    if args.command == "policy":
        return _policy_command(args)
    if args.command == "plan":
        return _plan(args.traffic, args.policies)
    if args.command == "reviewers":
        from hitl_gateway.review.auth import new_token  # noqa: PLC0415

        token, digest = new_token()
        print(f"token (give to the reviewer, shown once): {token}")
        print(f"token_sha256 (put in reviewers.yaml):     {digest}")
        return 0
    try:
        if args.command == "decisions":
            return _decision_keygen(args.key_id, args.algorithm)
        if args.command == "audit" and args.audit_command == "new-key":
            return audit_cli.print_new_key(args)
        settings = load_settings()
        if args.command == "audit" and args.audit_command == "verify" and args.file is not None:
            return audit_cli.verify_file(args, settings)
    except ConfigError as exc:
        print(f"hitl-gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.runtime.log_level, settings.runtime.log_format)
    try:
        return _with_settings(settings, args)
    except ConfigError as exc:
        print(f"hitl-gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except GatewayError as exc:
        log.error("gateway_failed", error=str(exc))
        return EXIT_FAILURE


def _decision_keygen(key_id: str, algorithm: Algorithm) -> int:
    from hitl_gateway.review.signing import new_key  # noqa: PLC0415

    secret, entry = new_key(key_id, algorithm)
    kind = "private key" if algorithm == "ed25519" else "secret"
    print(f"# the tool's {kind} (keep it secret, shown once; base64):")
    print(secret)
    print("# the entry for HITL_DECISIONS__KEYS_FILE:")
    print(entry, end="")
    return 0


def _with_settings(settings: Settings, args: argparse.Namespace) -> int:
    """The commands that talk to Kafka or Redis."""
    if args.command == "settings":
        print(settings.model_dump_json(indent=2))
        return 0
    if args.command == "topics":
        print(asyncio.run(_ensure_topics(settings)))
        return 0
    if args.command == "audit":
        return asyncio.run(audit_cli.run(settings, args))
    if args.command == "holds":
        return asyncio.run(operator_cli.reassign(settings, args))
    if args.command == "training":
        return asyncio.run(training_export.run(settings, args))
    if args.command == "bridge":
        return asyncio.run(bridge_command.run(settings, args))
    if args.command == "stop-switch":
        return asyncio.run(operator_cli.stop_switch(settings, args))
    if args.command == "run":
        _run_loop(settings, _run(settings, args.max_records, args.idle_timeout))
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def _check_extras(policies: PolicySet, reviewers: Path | None, traffic: Path | None) -> list[str]:
    """``policy check --reviewers / --traffic``: pools nobody staffs, languages nobody speaks."""
    from hitl_gateway.planner import plan  # noqa: PLC0415
    from hitl_gateway.policy import tools  # noqa: PLC0415
    from hitl_gateway.review.auth import Reviewers  # noqa: PLC0415
    from hitl_gateway.traffic import load_traffic  # noqa: PLC0415

    found: list[str] = []
    if reviewers is not None:
        staff = Reviewers.load(reviewers)
        found += [str(w) for w in tools.unstaffed(policies, staff, str(reviewers))]
    if traffic is not None:
        result = plan(load_traffic(traffic), policies)
        flags = [*result.warnings, *(w for p in result.pools.values() for w in p.warnings)]
        found += [f"{traffic}: warning: {flag}" for flag in flags]
    return found


def _policy_command(args: argparse.Namespace) -> int:
    from hitl_gateway.policy import tools  # noqa: PLC0415 - keeps `version` fast
    from hitl_gateway.policy.loader import load_policy_set  # noqa: PLC0415
    from hitl_gateway.policy.problems import PolicyError  # noqa: PLC0415

    if args.policy_command == "schema":
        args.out.mkdir(parents=True, exist_ok=True)
        for name, content in tools.json_schemas().items():
            (args.out / name).write_bytes(content)
            print(f"wrote {args.out / name}")
        return 0
    try:
        if args.policy_command == "check":
            policies = load_policy_set(args.dir)
            warnings = [str(w) for w in tools.lint(policies)]
            warnings += _check_extras(policies, args.reviewers, args.traffic)
            for warning in warnings:
                print(warning)
            print(
                f"ok: {len(policies.policies)} policies, {len(policies.pools)} pools, "
                f"version {policies.version}, {len(warnings)} warning(s)"
            )
            return EXIT_CONFIG if warnings and args.strict else 0
        policies = load_policy_set(args.policies)
        if not args.input.is_file():
            print(f"hitl-gateway: no such input file: {args.input}", file=sys.stderr)
            return EXIT_CONFIG
        now_ms = int(time.time() * 1000)
        new = tools.simulate(tools.read_jsonl(args.input), policies, now_ms=now_ms)
        print(tools.render_simulation(new, policies))
        if args.diff is not None:
            old_set = load_policy_set(args.diff)
            old = tools.simulate(tools.read_jsonl(args.input), old_set, now_ms=now_ms)
            print(f"\ndiff against {args.diff} (version {old_set.version}):")
            print(tools.render_diff(old, new))
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} error(s)", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def _plan(traffic_path: Path, policies_dir: Path) -> int:
    from hitl_gateway.planner import plan, render  # noqa: PLC0415
    from hitl_gateway.policy.loader import load_policy_set  # noqa: PLC0415
    from hitl_gateway.traffic import load_traffic  # noqa: PLC0415

    try:
        result = plan(load_traffic(traffic_path), load_policy_set(policies_dir))
    except ConfigError as exc:
        print(f"hitl-gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(render(result))
    return 0 if result.feasible else 1


async def _ensure_topics(settings: Settings) -> TopicChanges:
    from hitl_gateway.admin import ensure_topics  # noqa: PLC0415 - keeps `version` fast

    return await ensure_topics(settings)


# Allocations between two young-generation collections (CPython's default is 700).
GC_YOUNG_THRESHOLD = 100_000


def _run_loop(settings: Settings, main: Coroutine[Any, Any, None]) -> None:
    if settings.runtime.event_loop == "uvloop":
        uvloop.run(main)
    else:
        asyncio.run(main)


async def _run(settings: Settings, max_records: int | None, idle_timeout_s: float | None) -> None:
    from hitl_gateway.app import Gateway  # noqa: PLC0415 - keeps `version` fast

    gateway = Gateway(settings)
    # Everything built so far (modules, policies, the HTTP app) lives as long as the process:
    # keep it out of the cyclic collector's full passes, which otherwise pause the loop for
    # tens of milliseconds at a time under load.
    gc.collect()
    gc.freeze()
    # The young generation is collected whenever tracked allocations outnumber deallocations
    # by the threshold. With CPython's default (700) that happened every few records and each
    # pass walked the records waiting in the lanes (alive, so never freed by reference
    # counting): 12 to 15% of the CPU while draining. Above the lanes' live set, a young pass
    # runs only as cyclic garbage accumulates (a few MB at most).
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    await gateway.run(max_records=max_records, idle_timeout_s=idle_timeout_s, handle_signals=True)


if __name__ == "__main__":
    sys.exit(main())
