"""The data the gateway routes: the input record contract, routes, dead-letter reasons, and
a held item's metadata."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# BCP 47 shape (language[-script][-region][-variant...]); validity of subtags is not checked.
LanguageTag = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$", max_length=64)
]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Route(StrEnum):
    """Where a record goes. ``deliver_and_review`` is delivered now and copied to review."""

    PASS = "pass"  # noqa: S105 - a route name, not a password
    HOLD = "hold"
    DELIVER_AND_REVIEW = "deliver_and_review"
    DEADLETTER = "deadletter"


class DeadLetterReason(StrEnum):
    """Machine-readable reasons a record could not be routed. Bounded: safe as a metric label."""

    NULL_VALUE = "null_value"
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    TOO_DEEP = "too_deep"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    INVALID_FIELD = "invalid_field"
    UNKNOWN_DOMAIN = "unknown_domain"
    DUPLICATE_ID = "duplicate_id"  # another record holds this id with other content
    BAD_HEADER = "bad_header"  # a header name is not UTF-8 (poison.py)
    UNREADABLE = "unreadable"  # the client could not parse the rest of a batch (poison.py)


class Judge(BaseModel):
    """The automated grader's verdict carried on the record (LLM as judge)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    score: Annotated[float, Field(allow_inf_nan=False)] | None = None
    grade: Annotated[str, StringConstraints(max_length=64)] | None = None
    model: Annotated[str, StringConstraints(max_length=256)] | None = None


class InputRecord(BaseModel):
    """The fields of a model output that routing needs.

    The payload itself (``output``) and any unknown fields are not modelled: the gateway
    forwards the producer's original bytes untouched, so nothing is lost or re-encoded.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    id: Annotated[str, StringConstraints(min_length=1, max_length=4_096)]
    domain: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    confidence: Probability | None = None
    language: LanguageTag | None = None
    model: Annotated[str, StringConstraints(max_length=256)] | None = None
    judge: Judge | None = None
    metadata: dict[str, str] | None = None
    created_at: datetime | None = Field(default=None, strict=False)


@dataclass(frozen=True, slots=True)
class Invalid:
    """A record that cannot be routed: why (a bounded reason) and a message naming the field."""

    reason: DeadLetterReason
    message: str


@dataclass(slots=True)
class HoldMeta:
    """A held item's metadata: the ``hitl.hold`` header of its record on the holds topic, and
    what the hold index stores. Written by routing, updated by votes (the applier) and SLA
    steps (the sweeper), read by the review API, tasks and calibration.

    Wire format: a JSON object with these keys (orjson writes the dataclass as is). Holds
    written by earlier versions lack the keys added since (``stratum``, ``blind``,
    ``judge``, ``language``, ``fallback``, ``sla_warned``, ``uncertainty``) or the three
    that were written only once set (``sla_breached``, ``review_pool``, ``gold``): ``of``
    gives them their defaults, which mean what their absence meant; keys this version does
    not know are ignored.
    """

    item_id: str
    domain: str
    pool: str  # the pool deciding now (the adjudicator pool during adjudication)
    reviewers: int
    content_hash: str
    held_at_ms: int
    state: str = "pending"
    blocking: bool = True  # false: delivered when routed, reviewed for labels only
    adjudicator_pool: str | None = None
    rubric: str | None = None
    sla_deadline_ms: int | None = None
    policy_version: str | None = None
    rule: str | None = None
    reasons: list[dict[str, str]] = field(default_factory=list)
    source: dict[str, Any] | None = None  # the input record: topic, partition, offset
    producer: str | None = None  # the service that produced the output (metadata.service)
    stage: str = "review"  # review | adjudication
    votes: list[dict[str, Any]] = field(default_factory=list)
    escalations: int = 0
    next_check_ms: int | None = None
    blind: bool = False  # the judge's verdict is withheld from reviewers
    judge: dict[str, Any] | None = None
    stratum: str | None = None
    sla_breached: bool = False
    review_pool: str | None = None  # the pool that reviewed, once adjudication moved it
    gold: dict[str, Any] | None = None  # a known-answer item: id, verdict, grade
    language: str | None = None  # the record's (absent in holds of earlier versions)
    fallback: bool = False  # no pool spoke the language: the re-router may move it
    sla_warned: bool = False  # the SLA warning (a share of the SLA) was sent
    uncertainty: float | None = None  # active learning: 1 most worth labelling, 0 least

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> HoldMeta:
        try:
            return cls(**data)
        except TypeError:  # a key this version does not know (or a required one missing)
            return cls(**{k: v for k, v in data.items() if k in _HOLD_FIELDS})

    @classmethod
    def from_json(cls, raw: bytes) -> HoldMeta:
        return cls.of(orjson.loads(raw))


_HOLD_FIELDS = frozenset(f.name for f in fields(HoldMeta))
