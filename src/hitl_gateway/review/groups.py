"""The OIDC groups file: what each of the issuer's groups grants (pools, the domains within
them, operator), and a token's groups as an ``OidcReviewer``.

```yaml
groups:
  clinicians-team: {pools: [clinicians], domains: ["*"]}
  translators: {pools: [general-graders], domains: [translations]}
  hitl-operators: {operator: true, pools: ["*"]}
```

Strict YAML, validated into frozen models; loaded at start (an invalid or missing file stops
it) and reloaded on change like the reviewers file (review/reviewer_file.py). Groups the
file does not name grant nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from hitl_gateway import yamlfile
from hitl_gateway.errors import ConfigError
from hitl_gateway.review.auth import ANY, Grant, OidcReviewer

GroupName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class GroupGrant(BaseModel):
    """What one group grants its members."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pools: tuple[Name, ...] = Field(min_length=1)
    domains: tuple[Name, ...] = Field(default=(ANY,), min_length=1)
    operator: bool = False


class GroupsFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    groups: dict[GroupName, GroupGrant]


class GroupMap:
    """The groups in force; a reload replaces them in one assignment."""

    def __init__(self, groups: Mapping[str, GroupGrant] | None = None) -> None:
        self._groups: dict[str, GroupGrant] = dict(groups or {})

    @classmethod
    def load(cls, path: Path) -> GroupMap:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the OIDC groups file: {exc}") from exc
        try:
            data = yamlfile.load(text)
            return cls(GroupsFile.model_validate(data).groups)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid groups file: {yamlfile.describe(exc)}") from exc
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<file>'}: {err['msg']}"
                for err in exc.errors(include_url=False)[:10]
            )
            raise ConfigError(f"{path}: invalid groups file: {problems}") from exc

    def replace_with(self, other: GroupMap) -> None:
        self._groups = other._groups

    def names(self) -> set[str]:
        return set(self._groups)

    def mapped(self, groups: Iterable[str]) -> tuple[str, ...]:
        """The ones of ``groups`` this file grants something, sorted."""
        current = self._groups
        return tuple(sorted({g for g in groups if g in current}))

    def reviewer(
        self, reviewer_id: str, groups: Iterable[str], expires_at_s: int
    ) -> OidcReviewer | None:
        """The reviewer ``groups`` make of ``reviewer_id`` under the file in force (None when
        none of them is mapped). Raises ``ValueError`` for an id that is no reviewer id."""
        current = self._groups  # one snapshot: a reload mid-way changes nothing here
        mapped = tuple(sorted({g for g in groups if g in current}))
        if not mapped:
            return None
        grants = [current[g] for g in mapped]
        return OidcReviewer(
            id=reviewer_id,
            pools=_union(g.pools for g in grants),
            domains=_union(g.domains for g in grants),
            operator=any(g.operator for g in grants),
            grants=tuple(Grant(pools=g.pools, domains=g.domains) for g in grants),
            groups=mapped,
            expires_at_s=expires_at_s,
        )


def _union(parts: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    names = {name for part in parts for name in part}
    return (ANY,) if ANY in names else tuple(sorted(names))
