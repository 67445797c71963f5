"""Reviewers: who they are, how they authenticate, where they may decide.

Bearer tokens are stored as SHA-256 hashes in a YAML file (the tokens are random and
high-entropy, so a plain hash is enough; the file never holds a usable secret). OIDC/JWT
is the documented next step (docs/review.md).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hitl_gateway import yamlfile
from hitl_gateway.errors import ConfigError

ANY = "*"


class Reviewer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    pools: tuple[str, ...] = Field(min_length=1)
    domains: tuple[str, ...] = (ANY,)
    # Operators may read any reviewer's decision results (and, later, move work between
    # pools); reviewing is still limited to ``pools`` and ``domains``.
    operator: bool = False

    def may_review(self, pool: str, domain: str) -> bool:
        return (ANY in self.pools or pool in self.pools) and (
            ANY in self.domains or domain in self.domains
        )


class ReviewerFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reviewers: tuple[Reviewer, ...] = ()


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

    def get(self, reviewer_id: str) -> Reviewer | None:
        return self._by_id.get(reviewer_id)

    def authenticate(self, token: str) -> Reviewer | None:
        digest = hash_token(token)
        for reviewer in self._by_id.values():
            if hmac.compare_digest(reviewer.token_sha256, digest):
                return reviewer
        return None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh bearer token and the hash to put in the reviewers file."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)
