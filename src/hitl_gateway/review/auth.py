"""Reviewers: who they are, how they authenticate, where they may decide.

Bearer tokens are stored as SHA-256 hashes in a YAML file (the tokens are random and
high-entropy, so a plain hash is enough; the file never holds a usable secret). Reviewers
signed in by an OpenID Connect issuer are ``OidcReviewer``s, their grants from their groups
(review/groups.py, review/identities.py).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hitl_gateway import yamlfile
from hitl_gateway.errors import ConfigError

ANY = "*"
REVIEWER_ID = r"^[A-Za-z0-9_.@-]+$"
REVIEWER_ID_MAX = 128
_SHA256 = r"^[0-9a-f]{64}$"


class Reviewer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=REVIEWER_ID_MAX, pattern=REVIEWER_ID)
    # The hash of the reviewer's bearer token (the reviewers file requires it); None for a
    # reviewer signed in by the OIDC issuer.
    token_sha256: str | None = Field(default=None, pattern=_SHA256)
    pools: tuple[str, ...] = Field(min_length=1)
    domains: tuple[str, ...] = (ANY,)
    # Operators may read any reviewer's decision results and move work between pools;
    # reviewing is still limited to ``pools`` and ``domains``.
    operator: bool = False

    def may_review(self, pool: str, domain: str) -> bool:
        return (ANY in self.pools or pool in self.pools) and (
            ANY in self.domains or domain in self.domains
        )

    def domains_in(self, pool: str) -> tuple[str, ...] | None:
        """The domains of ``pool`` this reviewer may see (None: any). The caller has checked
        that the pool is granted."""
        return None if ANY in self.domains else self.domains


class Grant(BaseModel):
    """Pools, and the domains within them, granted together (one OIDC group's grant)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pools: tuple[str, ...] = Field(min_length=1)
    domains: tuple[str, ...] = Field(default=(ANY,), min_length=1)

    def covers(self, pool: str) -> bool:
        return ANY in self.pools or pool in self.pools

    def allows(self, pool: str, domain: str) -> bool:
        return self.covers(pool) and (ANY in self.domains or domain in self.domains)


class OidcReviewer(Reviewer):
    """A reviewer signed in by the OIDC issuer. ``pools``, ``domains`` and ``operator`` are
    the union of their groups' grants, but a pool is reviewed only within the domains a
    group grants *with* it: the union of pools crossed with the union of domains would grant
    pairs that no group grants."""

    grants: tuple[Grant, ...] = Field(min_length=1)
    groups: tuple[str, ...] = Field(min_length=1)  # the groups that granted them
    expires_at_s: int  # the token's exp: no session or decision outlives it

    def may_review(self, pool: str, domain: str) -> bool:
        return any(grant.allows(pool, domain) for grant in self.grants)

    def domains_in(self, pool: str) -> tuple[str, ...] | None:
        covering = [grant for grant in self.grants if grant.covers(pool)]
        if any(ANY in grant.domains for grant in covering):
            return None
        return tuple(sorted({domain for grant in covering for domain in grant.domains}))


class FileReviewer(Reviewer):
    """A reviewer in the reviewers file: a token hash is required."""

    token_sha256: str = Field(pattern=_SHA256)


class ReviewerFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reviewers: tuple[FileReviewer, ...] = ()


class ReviewerLookup(Protocol):
    """Who a reviewer id names, as a decision recorded at ``at_ms`` is applied."""

    async def find(self, reviewer_id: str, at_ms: int) -> Reviewer | None: ...


class Reviewers:
    def __init__(self, reviewers: tuple[Reviewer, ...] = ()) -> None:
        self._by_id = {r.id: r for r in reviewers}
        if len(self._by_id) != len(reviewers):
            raise ConfigError("reviewer ids must be unique")

    @classmethod
    def load(cls, path: Path) -> Reviewers:
        if not path.is_file():
            return cls()
        try:
            data = yamlfile.load(path.read_text(encoding="utf-8")) or {}
            return cls(ReviewerFile.model_validate(data).reviewers)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid reviewers file: {yamlfile.describe(exc)}") from exc
        except ValidationError as exc:
            raise ConfigError(f"{path}: invalid reviewers file: {exc}") from exc

    def replace_with(self, other: Reviewers) -> None:
        """Take ``other``'s reviewers in one assignment (a reload: every holder of this
        object sees the new set at once)."""
        self._by_id = other._by_id

    def __iter__(self) -> Iterator[Reviewer]:
        return iter(self._by_id.values())

    def names(self) -> set[str]:
        return set(self._by_id)

    def get(self, reviewer_id: str) -> Reviewer | None:
        return self._by_id.get(reviewer_id)

    async def find(self, reviewer_id: str, at_ms: int) -> Reviewer | None:
        return self._by_id.get(reviewer_id)

    def authenticate(self, token: str) -> Reviewer | None:
        digest = hash_token(token)
        for reviewer in self._by_id.values():
            known = reviewer.token_sha256
            if known is not None and hmac.compare_digest(known, digest):
                return reviewer
        return None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh bearer token and the hash to put in the reviewers file."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)
