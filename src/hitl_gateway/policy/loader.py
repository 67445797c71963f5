"""Policy files -> one immutable ``PolicySet``, or every problem with its file, field and line.

Layout: ``DIR/*.yaml`` holds one policy per domain (file name = domain); the reviewer pools
are in ``DIR/../pools.yaml`` and the unknown-domain rule in ``DIR/../routing.yaml``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hitl_gateway import yamlfile
from hitl_gateway.errors import ConfigError
from hitl_gateway.models import InputRecord
from hitl_gateway.policy.pools import ANY_LANGUAGE, speaks
from hitl_gateway.policy.rules import Escalation, ReviewAction, Reviewed
from hitl_gateway.policy.schema import DomainPolicy, GoldItem, Pool, PoolFile, RoutingFile


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    path: str
    line: int | None
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field_part = f" {self.path}:" if self.path else ""
        return f"{where}: {self.severity}:{field_part} {self.message}"


class PolicyError(ConfigError):
    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    policy: DomainPolicy
    version: str  # content hash of the domain's file, its gold file and the pools file
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


def _line_of(text: str, loc: Sequence[int | str]) -> int | None:
    """1-based line of the YAML node at ``loc`` (or of its closest existing parent)."""
    try:
        node: Any = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            match = node.value[part] if part < len(node.value) else None
        else:
            match = None
        if match is None:
            break
        node = match
        line = node.start_mark.line + 1
    return line


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
            problems.append(Problem(str(path), dotted, _line_of(text, loc), err["msg"]))
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
            line = _line_of(text, ["domain"])
            msg = f"domain '{policy.domain}' must match the file name '{path.stem}'"
            problems.append(Problem(str(path), "domain", line, msg))
        if policy.domain in loaded:
            problems.append(Problem(str(path), "domain", None, f"'{policy.domain}' defined twice"))
        problems += _cross_check(path, text, policy, pools if pool_file else None, routing)
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
        problems += _check_defaults(routing_file, routing, pools)
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


def _cross_check(
    path: Path,
    text: str,
    policy: DomainPolicy,
    pools: Mapping[str, Pool] | None,
    routing: RoutingFile | None,
) -> list[Problem]:
    """A policy against the pools and routing files (when they loaded)."""
    if pools is None:
        return []
    problems = _check_pools(path, text, policy, pools)
    if routing is not None:
        problems += _check_ways_out(path, text, policy, routing, pools)
    return problems


def _check_pools(
    path: Path, text: str, policy: DomainPolicy, pools: Mapping[str, Pool]
) -> list[Problem]:
    problems = [
        Problem(str(path), "", None, f"pool '{name}' is not defined in pools.yaml")
        for name in sorted(policy.pool_names() - set(pools))
    ]
    fallback = pools.get(policy.languages.fallback or "")
    if fallback is not None and ANY_LANGUAGE not in fallback.languages:
        line = _line_of(text, ["languages", "fallback"])
        msg = f"fallback pool '{fallback.name}' must serve every language (languages: ['*'])"
        problems.append(Problem(str(path), "languages.fallback", line, msg))
    for language, pool_name in policy.languages.pools.items():
        pool = pools.get(pool_name)
        if pool is not None and not speaks(pool, language):
            line = _line_of(text, ["languages", "pools", language])
            msg = f"pool '{pool_name}' does not list language '{language}'"
            problems.append(Problem(str(path), f"languages.pools.{language}", line, msg))
    return problems


def _holds(name: str, rule: Reviewed) -> bool:
    """Whether a rule can keep an output from users until a reviewer decides."""
    return name == "mandatory_review" or getattr(rule, "action", None) is ReviewAction.HOLD


def _serves_all(pool: Pool | None, policy: DomainPolicy) -> bool:
    if pool is None:
        return True  # reported as an undefined pool already
    return ANY_LANGUAGE in pool.languages or (not pool.languages and not policy.languages.pools)


def _check_ways_out(
    path: Path, text: str, policy: DomainPolicy, routing: RoutingFile, pools: Mapping[str, Pool]
) -> list[Problem]:
    """Every hold has a way out: a fallback pool for languages no pool speaks, and an
    escalation chain (its own or routing.yaml's) for each rule that holds."""
    problems: list[Problem] = []
    holding = [(name, rule) for name, rule in policy.rules() if _holds(name, rule)]
    for name, rule in holding:
        chain = (
            rule.escalation if rule.escalation is not None else routing.review_defaults.escalation
        )
        if not chain:
            msg = (
                "holds items but has no escalation chain: declare escalation, or"
                " review_defaults.escalation in routing.yaml"
            )
            problems.append(Problem(str(path), name, _line_of(text, [name]), msg))
    # A language-first rule that holds, whose pool does not serve every language, needs
    # somewhere to send a language no pool speaks (skill-first rules keep their pool).
    open_ended = [
        name for name, rule in holding
        if name not in policy.languages.skill_first
        and not _serves_all(pools.get(rule.pool), policy)
    ]  # fmt: skip
    if (
        open_ended
        and policy.languages.fallback is None
        and routing.review_defaults.fallback_pool is None
    ):
        msg = (
            f"no fallback pool for languages no pool speaks ({', '.join(open_ended)} would hold"
            " them with nobody to review): set languages.fallback, or"
            " review_defaults.fallback_pool in routing.yaml"
        )
        problems.append(
            Problem(str(path), "languages.fallback", _line_of(text, ["languages"]), msg)
        )
    return problems


def _check_defaults(path: Path, routing: RoutingFile, pools: Mapping[str, Pool]) -> list[Problem]:
    problems: list[Problem] = []
    defaults = routing.review_defaults
    named = [("review_defaults.fallback_pool", defaults.fallback_pool)] + [
        (f"review_defaults.escalation.{n}.pool", e.pool) for n, e in enumerate(defaults.escalation)
    ]
    for field, name in named:
        if name is not None and name not in pools:
            problems.append(
                Problem(str(path), field, None, f"pool '{name}' is not defined in pools.yaml")
            )
    fallback = pools.get(defaults.fallback_pool or "")
    if fallback is not None and ANY_LANGUAGE not in fallback.languages:
        msg = f"fallback pool '{fallback.name}' must serve every language (languages: ['*'])"
        problems.append(Problem(str(path), "review_defaults.fallback_pool", None, msg))
    return problems
