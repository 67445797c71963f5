"""OIDC reviewers: the groups file (strict, validated, reloaded), a token's groups as grants
(the union of groups, but each pool only with the domains a group grants with it), the id
claim, a clash with the reviewers file, what the decision applier finds for a reviewer id,
and the settings' checks."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from hitl_gateway.errors import ConfigError
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.review.auth import OidcReviewer, Reviewer, Reviewers
from hitl_gateway.review.groups import GroupMap
from hitl_gateway.review.identities import Identities, Oidc, Refused, groups_of
from hitl_gateway.review.oidc_records import SignedIn
from hitl_gateway.review.reviewer_file import groups_watcher
from hitl_gateway.settings import OidcSettings, load_settings

GROUPS = """\
groups:
  clinicians-team: {pools: [clinicians]}
  translators: {pools: [general-graders], domains: [translations]}
  hitl-operators: {operator: true, pools: ["*"], domains: [legal-drafts]}
"""
# Taken when the module is collected: a day ahead, so the whole suite runs well inside it.
EXP = int(time.time()) + 86_400


class FakeRecords:
    def __init__(self) -> None:
        self.kept: dict[str, SignedIn] = {}

    async def remember(self, reviewer_id: str, signed_in: SignedIn) -> None:
        self.kept[reviewer_id] = signed_in

    async def recall(self, reviewer_id: str) -> SignedIn | None:
        return self.kept.get(reviewer_id)


def _groups(tmp_path: Path, text: str = GROUPS) -> Path:
    path = tmp_path / "groups.yaml"
    path.write_text(text)
    return path


def _identities(tmp_path: Path, **overrides: Any) -> tuple[Identities, FakeRecords]:
    path = _groups(tmp_path)
    settings = OidcSettings(issuer="https://idp.example", audience="hitl", groups_file=path,
                            **overrides)  # fmt: skip
    records = FakeRecords()
    file = Reviewers((Reviewer(id="ana", token_sha256="0" * 64, pools=("clinicians",)),))
    oidc = Oidc(settings, None, GroupMap.load(path), records)  # type: ignore[arg-type]
    return Identities(file, oidc), records


def test_the_union_of_groups_does_not_cross_pools_with_other_groups_domains(
    tmp_path: Path,
) -> None:
    groups = GroupMap.load(_groups(tmp_path))
    who = groups.reviewer("dr-x", ["clinicians-team", "translators", "unmapped"], EXP)
    assert who is not None
    assert who.pools == ("clinicians", "general-graders")
    assert who.groups == ("clinicians-team", "translators")
    assert who.may_review("clinicians", "clinical-summaries")
    assert who.may_review("general-graders", "translations")
    # clinicians-team grants every domain, but of its own pool only.
    assert not who.may_review("general-graders", "support-chat")
    assert who.domains_in("general-graders") == ("translations",)
    assert who.domains_in("clinicians") is None
    assert not who.operator
    assert groups.reviewer("dr-x", ["unmapped", "other"], EXP) is None

    operator = groups.reviewer("op", ["hitl-operators"], EXP)
    assert operator is not None
    assert operator.operator
    assert operator.may_review("any-pool", "legal-drafts")
    assert not operator.may_review("any-pool", "clinical-summaries")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("groups:\n  a: {pools: [p]}\n  a: {pools: [q]}\n", "duplicate key 'a'"),
        ("groups:\n  a: {pool: [p]}\n", "a.pool: Extra inputs are not permitted"),
        ("groups:\n  a: {operator: true}\n", "a.pools: Field required"),
        ("groups:\n  a: {pools: []}\n", "a.pools"),
        ("group: {}\n", "groups: Field required"),
        ("groups: [a, b]\n", "groups"),
    ],
)
def test_an_invalid_groups_file_is_refused_naming_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = _groups(tmp_path, text)
    with pytest.raises(ConfigError, match="invalid groups file") as caught:
        GroupMap.load(path)
    assert problem in str(caught.value)
    assert str(path) in str(caught.value)


def test_the_example_groups_file_loads_and_names_defined_pools() -> None:
    configs = Path(__file__).resolve().parents[2] / "configs"
    groups = GroupMap.load(configs / "oidc-groups.example.yaml")
    pools = set(re.findall(r"^  - name: (\S+)", (configs / "pools.yaml").read_text(), re.M))
    named: set[str] = set()
    for group in groups.names():
        who = groups.reviewer("x", [group], EXP)
        assert who is not None
        named |= set(who.pools)
    assert named - {"*"} <= pools
    assert "native-de" in named


def test_a_missing_groups_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the OIDC groups file"):
        GroupMap.load(tmp_path / "nope.yaml")


def test_the_groups_file_reloads_and_an_invalid_one_is_refused(tmp_path: Path) -> None:
    path = _groups(tmp_path)
    groups = GroupMap.load(path)
    metrics = GatewayMetrics(CollectorRegistry())
    watcher = groups_watcher(path, groups, metrics, 1)
    assert watcher.check() is None
    path.write_text("groups:\n  clinicians-team: {pools: [clinicians]}\n")
    assert watcher.check() is True
    assert groups.reviewer("dr-x", ["translators"], EXP) is None  # revoked by the file
    path.write_text("groups: {translators: {pool: [x]}}\n")
    assert watcher.check() is False
    assert groups.reviewer("dr-x", ["clinicians-team"], EXP) is not None  # the old stay
    registry = metrics.registry
    assert registry.get_sample_value("hitl_oidc_groups_reloads_total", {"outcome": "success"}) == 1
    assert registry.get_sample_value("hitl_oidc_groups_reloads_total", {"outcome": "failure"}) == 1


def test_claims_make_a_reviewer_or_say_why_not(tmp_path: Path) -> None:
    identities, _ = _identities(tmp_path)
    found = identities.of_claims({"sub": "dr-x", "groups": ["clinicians-team"], "exp": EXP})
    assert isinstance(found, OidcReviewer)
    assert (found.id, found.expires_at_s) == ("dr-x", EXP)

    none = identities.of_claims({"sub": "dr-x", "groups": ["nobody"], "exp": EXP})
    assert isinstance(none, Refused)
    assert none.status == 403
    assert "none of its 1 groups" in none.message
    assert isinstance(identities.of_claims({"sub": "dr-x", "exp": EXP}), Refused)

    bad = identities.of_claims({"sub": "x y/z", "groups": ["clinicians-team"], "exp": EXP})
    assert isinstance(bad, Refused)
    assert "not a usable reviewer id" in bad.message

    clash = identities.of_claims({"sub": "ana", "groups": ["clinicians-team"], "exp": EXP})
    assert isinstance(clash, Refused)
    assert "reviewers file" in clash.message


def test_the_email_claim_must_not_be_unverified(tmp_path: Path) -> None:
    identities, _ = _identities(tmp_path, id_claim="email")
    claims = {"sub": "1", "email": "x@example.org", "groups": ["clinicians-team"], "exp": EXP}
    assert isinstance(identities.of_claims(claims), OidcReviewer)
    refused = identities.of_claims({**claims, "email_verified": False})
    assert isinstance(refused, Refused)
    assert "not a verified email" in refused.message


def test_the_groups_claim_may_be_a_path_or_a_single_string() -> None:
    claims = {"realm_access": {"roles": ["a", "b", 3]}, "team": "solo"}
    assert groups_of(claims, "realm_access.roles") == ("a", "b")
    assert groups_of(claims, "team") == ("solo",)
    assert groups_of(claims, "groups") == ()


async def test_the_applier_finds_an_oidc_reviewer_as_their_token_granted(tmp_path: Path) -> None:
    identities, records = _identities(tmp_path, leeway_s=0)
    found = identities.of_claims({"sub": "dr-x", "groups": ["translators"], "exp": EXP})
    assert isinstance(found, OidcReviewer)
    assert await identities.find("dr-x", EXP * 1000) is None  # never published anything
    await identities.remember(found)
    assert records.kept["dr-x"] == SignedIn(("translators",), EXP)
    applied = await identities.find("dr-x", (EXP - 1) * 1000)
    assert applied is not None
    assert applied.may_review("general-graders", "translations")
    assert await identities.find("dr-x", (EXP + 1) * 1000) is None  # recorded past expiry
    file_reviewer = await identities.find("ana", 0)
    assert file_reviewer is not None
    assert file_reviewer.token_sha256 == "0" * 64
    await identities.remember(file_reviewer)  # nothing to record for the file's reviewers
    assert "ana" not in records.kept
    # The groups file in force when the decision is applied decides.
    assert identities.oidc is not None
    identities.oidc.groups.replace_with(GroupMap())
    assert await identities.find("dr-x", (EXP - 1) * 1000) is None


def test_a_session_ends_at_the_token_expiry(tmp_path: Path) -> None:
    identities, _ = _identities(tmp_path)
    assert identities.session_reviewer("dr-x", ("clinicians-team",), EXP) is not None
    assert identities.session_reviewer("dr-x", ("clinicians-team",), int(time.time()) - 1) is None


def test_oidc_settings_are_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base: dict[str, Any] = {"issuer": "https://idp.example", "audience": "hitl",
                            "groups_file": tmp_path / "g.yaml"}  # fmt: skip
    OidcSettings(**base)
    OidcSettings(**{**base, "issuer": "http://127.0.0.1:8080/realms/x"})  # loopback http
    for wrong, message in [
        ({"issuer": "http://idp.example"}, "https"),
        ({"audience": None}, "audience is required"),
        ({"groups_file": None}, "groups_file is required"),
        ({"client_id": "c"}, "both client_id and redirect_url"),
        ({"client_secret": "s"}, "client_secret is set without client_id"),
        ({"client_id": "c", "redirect_url": "https://gw.example/cb"}, "/workspace/oidc/callback"),
        ({"scopes": "profile"}, "openid"),
        ({"algorithms": ["HS256"]}, "algorithms"),
        ({"algorithms": []}, "algorithms"),
    ]:
        with pytest.raises(ValidationError, match=message):
            OidcSettings(**{**base, **wrong})
    with pytest.raises(ValidationError, match="without issuer"):
        OidcSettings(audience="hitl")
    assert not OidcSettings().enabled

    monkeypatch.setenv("HITL_OIDC__ISSUER", "https://idp.example")
    monkeypatch.setenv("HITL_OIDC__AUDIENCE", "hitl")
    monkeypatch.setenv("HITL_OIDC__GROUPS_FILE", str(tmp_path / "g.yaml"))
    monkeypatch.setenv("HITL_OIDC__ALGORITHMS", '["ES256"]')
    monkeypatch.setenv("HITL_OIDC__CLIENT_SECRET", "hush-456")
    monkeypatch.setenv("HITL_OIDC__CLIENT_ID", "workspace")
    monkeypatch.setenv("HITL_OIDC__REDIRECT_URL", "https://gw.example/workspace/oidc/callback")
    s = load_settings()
    assert s.oidc.algorithms == ("ES256",)
    assert s.oidc.code_flow
    assert s.oidc.id_token_audience == "workspace"
    assert "hush-456" not in s.model_dump_json()
