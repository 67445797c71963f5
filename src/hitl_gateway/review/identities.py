"""Who a credential names, for the API and the workspace: a reviewers-file token or, where
OIDC is on, one of the issuer's JWTs; and who a reviewer id names, for the decision applier.

An OIDC reviewer's id is the configured claim (``sub`` by default) and their grants come
from their groups (review/groups.py); the authorization rules are the same for both kinds.
A token that proves nothing is refused 401; a valid one that grants nothing here (no mapped
group, an unusable id, an id that the reviewers file already names) 403, saying why. One id
names one identity in the audit trail: the reviewers file wins a clash.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from hitl_gateway.review.auth import REVIEWER_ID, REVIEWER_ID_MAX, OidcReviewer, Reviewer, Reviewers
from hitl_gateway.review.groups import GroupMap
from hitl_gateway.review.oidc import TokenError, Verifier, looks_like_jwt
from hitl_gateway.review.oidc_records import OidcRecords, SignedIn
from hitl_gateway.settings import OidcSettings

_ID = re.compile(REVIEWER_ID)
MAX_GROUPS = 1_000


@dataclass(frozen=True, slots=True)
class Refused:
    status: int  # 401: proves nothing; 403: proves who, grants nothing
    message: str


@dataclass(frozen=True, slots=True)
class Oidc:
    """The OIDC parts the composition root builds when ``HITL_OIDC__ISSUER`` is set."""

    settings: OidcSettings
    verifier: Verifier
    groups: GroupMap
    records: OidcRecords


class Identities:
    def __init__(self, reviewers: Reviewers, oidc: Oidc | None = None) -> None:
        self.reviewers = reviewers
        self.oidc = oidc

    async def authenticate(self, credential: str | None) -> Reviewer | Refused:
        """The reviewer a bearer credential names. ``IssuerUnavailable`` when a JWT cannot
        be checked because the issuer's keys cannot be had."""
        if not credential:
            return Refused(401, "a valid bearer token is required")
        if self.oidc is not None and looks_like_jwt(credential):
            try:
                claims = await self.oidc.verifier.verify(credential)
            except TokenError as exc:
                return Refused(401, f"the token was refused: {exc.message}")
            return self.of_claims(claims)
        found = self.reviewers.authenticate(credential)
        return found if found is not None else Refused(401, "a valid bearer token is required")

    def of_claims(self, claims: dict[str, Any]) -> OidcReviewer | Refused:
        """The reviewer verified claims name, under the files in force."""
        assert self.oidc is not None
        settings = self.oidc.settings
        claim = settings.id_claim
        reviewer_id = claims.get(claim)
        if not isinstance(reviewer_id, str) or not usable_id(reviewer_id):
            return Refused(403, f"the token's {claim} is not a usable reviewer id (letters,"
                           f" digits and _.@- only, at most {REVIEWER_ID_MAX})")  # fmt: skip
        if claim == "email" and claims.get("email_verified") is False:
            return Refused(403, f"{reviewer_id} is not a verified email address")
        groups = groups_of(claims, settings.groups_claim)
        found = self.current(reviewer_id, groups, int(claims["exp"]))
        if isinstance(found, OidcReviewer):
            return found
        if found == "clash":
            return Refused(403, f"{reviewer_id} is a reviewer of the reviewers file: sign in"
                           " with its token, or remove it from that file")  # fmt: skip
        return Refused(403, f"{reviewer_id} is signed in, but none of its {len(groups)}"
                       f" groups ({settings.groups_claim}) is granted anything here")  # fmt: skip

    def current(
        self, reviewer_id: str, groups: tuple[str, ...], expires_at_s: int
    ) -> OidcReviewer | str:
        """What ``groups`` grant ``reviewer_id`` under the files in force now: the reviewer,
        or why not (``clash``: the reviewers file names the id; ``ungranted``)."""
        assert self.oidc is not None
        if self.reviewers.get(reviewer_id) is not None:
            return "clash"
        found = self.oidc.groups.reviewer(reviewer_id, groups, expires_at_s)
        return found if found is not None else "ungranted"

    def session_reviewer(
        self, reviewer_id: str, groups: tuple[str, ...], expires_at_s: int
    ) -> OidcReviewer | None:
        """A workspace session's reviewer, while its token's time lasts and its groups
        still grant something."""
        if self.oidc is None or time.time() >= expires_at_s:
            return None
        found = self.current(reviewer_id, groups, expires_at_s)
        return found if isinstance(found, OidcReviewer) else None

    async def remember(self, who: Reviewer) -> None:
        """Before ``who``'s decision or command is published: what their token granted, for
        the decision applier (a reviewers-file reviewer needs nothing)."""
        if isinstance(who, OidcReviewer) and self.oidc is not None:
            await self.oidc.records.remember(who.id, SignedIn(who.groups, who.expires_at_s))

    async def find(self, reviewer_id: str, at_ms: int) -> Reviewer | None:
        """Who ``reviewer_id`` is for a decision recorded at ``at_ms``: the reviewers file's,
        or an OIDC reviewer as their last published decision's token granted, under the
        groups file in force now, if that token had not expired at ``at_ms``."""
        found = self.reviewers.get(reviewer_id)
        if found is not None or self.oidc is None or not usable_id(reviewer_id):
            return found
        record = await self.oidc.records.recall(reviewer_id)
        if record is None:
            return None
        if at_ms > (record.expires_at_s + self.oidc.settings.leeway_s) * 1000:
            return None
        who = self.current(reviewer_id, record.groups, record.expires_at_s)
        return who if isinstance(who, OidcReviewer) else None


def usable_id(reviewer_id: str) -> bool:
    return 0 < len(reviewer_id) <= REVIEWER_ID_MAX and _ID.match(reviewer_id) is not None


def groups_of(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    """The groups a claim lists: ``name`` as given, or a dotted path into nested objects
    (``realm_access.roles``); a single string is one group. Strings only, bounded."""
    value: Any = claims.get(name)
    if value is None and "." in name:
        value = claims
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return ()
    return tuple(g for g in value[:MAX_GROUPS] if isinstance(g, str) and 0 < len(g) <= 256)
