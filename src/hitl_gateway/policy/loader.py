"""Policy files -> one immutable ``PolicySet``, or every problem with its file, field and line.

Layout: ``DIR/*.yaml`` holds one policy per domain (file name = domain); the reviewer pools
are in ``DIR/../pools.yaml`` and the unknown-domain rule in ``DIR/../routing.yaml``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hitl_gateway import yamlfile
from hitl_gateway.models import InputRecord
from hitl_gateway.policy.checks import check_defaults, cross_check
from hitl_gateway.policy.problems import PolicyError, Problem, line_of
from hitl_gateway.policy.rules import Escalation
from hitl_gateway.policy.schema import DomainPolicy, GoldItem, Pool, PoolFile, RoutingFile


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    policy: DomainPolicy
    version: str  # content hash of the domain's file, its gold file, the pools and routing files
    source: str
    gold: tuple[GoldItem, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicySet:
    version: str  # content hash of every file in the set
    pools: Mapping[str, Pool]
    policies: Mapping[str, LoadedPolicy]
    routing: RoutingFile

    def escalation(
        self, domain: str, rule: str | None, *, blocking: bool
    ) -> tuple[Escalation, ...]:
        """A hold's escalation chain: its rule's own, else (for holds that block delivery)
        routing.yaml's ``review_defaults.escalation``."""
        loaded = self.policies.get(domain)
        spec = loaded.policy.rule(rule) if loaded is not None else None
        if spec is not None and spec.escalation is not None:
            return spec.escalation
        return self.routing.review_defaults.escalation if blocking else ()

    def fallback_pool(self, domain: str) -> str | None:
        """Where a ``domain`` item goes when no pool speaks its language."""
        loaded = self.policies.get(domain)
        own = loaded.policy.languages.fallback if loaded is not None else None
        return own or self.routing.review_defaults.fallback_pool

    def policy_for(self, domain: str) -> LoadedPolicy | None:
        found = self.policies.get(domain)
        if found is None and self.routing.unknown_domains.policy is not None:
            return self.policies.get(self.routing.unknown_domains.policy)
        return found


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:12]


def _parse(path: Path, model: type[BaseModel], problems: list[Problem]) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        data = yamlfile.load(text)
    except yamlfile.DuplicateKeyError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        problems.append(Problem(str(path), "", line, str(exc.problem)))
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problems.append(Problem(str(path), "", mark.line + 1 if mark else None, f"not YAML: {exc}"))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(str(path), "", 1, "expected a mapping at the top level"))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = [p for p in err["loc"] if not isinstance(p, str) or not p.startswith("function")]
            dotted = ".".join(str(p) for p in loc)
            problems.append(Problem(str(path), dotted, line_of(text, loc), err["msg"]))
        return None


def load_policy_set(
    policies_dir: Path, pools_file: Path | None = None, routing_file: Path | None = None
) -> PolicySet:
    """Load and cross-check every file; raise ``PolicyError`` listing all problems."""
    policies_dir = Path(policies_dir)
    pools_file = pools_file or policies_dir.parent / "pools.yaml"
    routing_file = routing_file or policies_dir.parent / "routing.yaml"
    problems: list[Problem] = []
    if not policies_dir.is_dir():
        raise PolicyError([Problem(str(policies_dir), "", None, "no such policy directory")])
    if not pools_file.is_file():
        raise PolicyError([Problem(str(pools_file), "", None, "no pools file")])

    pool_file: PoolFile | None = _parse(pools_file, PoolFile, problems)
    routing: RoutingFile | None = (
        _parse(routing_file, RoutingFile, problems) if routing_file.is_file() else RoutingFile()
    )
    pools_bytes = pools_file.read_bytes()
    pools = {p.name: p for p in pool_file.pools} if pool_file else {}

    files = sorted(policies_dir.glob("*.yaml")) + sorted(policies_dir.glob("*.yml"))
    if not files:
        problems.append(Problem(str(policies_dir), "", None, "no policy files (*.yaml)"))
    loaded: dict[str, LoadedPolicy] = {}
    routing_bytes = routing_file.read_bytes() if routing_file.is_file() else b""
    everything = [pools_bytes, routing_bytes]
    for path in files:
        raw = path.read_bytes()
        everything += [path.name.encode(), raw]
        policy: DomainPolicy | None = _parse(path, DomainPolicy, problems)
        if policy is None:
            continue
        text = raw.decode("utf-8")
        if policy.domain != path.stem:
            line = line_of(text, ["domain"])
            msg = f"domain '{policy.domain}' must match the file name '{path.stem}'"
            problems.append(Problem(str(path), "domain", line, msg))
        if policy.domain in loaded:
            problems.append(Problem(str(path), "domain", None, f"'{policy.domain}' defined twice"))
        problems += cross_check(path, text, policy, pools if pool_file else None, routing)
        gold: tuple[GoldItem, ...] = ()
        gold_bytes = b""
        if policy.calibration.gold is not None:
            gold_path = policies_dir / policy.calibration.gold.file
            gold, gold_bytes = _load_gold(gold_path, policy.domain, problems)
            everything += [gold_bytes]
        # routing.yaml's review defaults are part of every policy's behaviour.
        version = _digest(raw, pools_bytes, routing_bytes, gold_bytes)
        loaded[policy.domain] = LoadedPolicy(policy, version, str(path), gold)

    fallback_policy = routing.unknown_domains.policy if routing is not None else None
    if fallback_policy is not None and fallback_policy not in loaded:
        msg = f"names policy '{fallback_policy}', which does not exist"
        problems.append(Problem(str(routing_file), "unknown_domains.policy", None, msg))
    if routing is not None and pool_file is not None:
        problems += check_defaults(routing_file, routing, pools)
    if problems or routing is None:
        raise PolicyError(problems)
    return PolicySet(
        version=_digest(*everything),
        pools=MappingProxyType(pools),
        policies=MappingProxyType(loaded),
        routing=routing,
    )


def _load_gold(
    path: Path, domain: str, problems: list[Problem]
) -> tuple[tuple[GoldItem, ...], bytes]:
    """A gold file: one JSON object per line, each a record of ``domain`` and its answer."""
    if not path.is_file():
        problems.append(Problem(str(path), "", None, "no such gold file"))
        return (), b""
    raw = path.read_bytes()
    items: list[GoldItem] = []
    seen: set[str] = set()
    for number, line in enumerate(raw.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = GoldItem.model_validate_json(line)
        except ValidationError as exc:
            problems.append(_first_problem(path, number, exc))
            continue
        try:
            InputRecord.model_validate({**item.record, "id": item.id})
        except ValidationError as exc:
            problems.append(_first_problem(path, number, exc, "record"))
            continue
        if item.record.get("domain") != domain:
            msg = f"record.domain must be '{domain}', got {item.record.get('domain')!r}"
            problems.append(Problem(str(path), "record.domain", number, msg))
        if item.id in seen:
            problems.append(Problem(str(path), "id", number, f"gold id '{item.id}' repeated"))
        seen.add(item.id)
        items.append(item)
    if not items and not any(p.file == str(path) for p in problems):
        problems.append(Problem(str(path), "", None, "the gold file has no items"))
    return tuple(items), raw


def _first_problem(path: Path, line: int, exc: ValidationError, *parent: str) -> Problem:
    err = exc.errors(include_url=False)[0]
    dotted = ".".join(str(p) for p in (*parent, *err["loc"]))
    return Problem(str(path), dotted, line, err["msg"])
