"""The policy language's building blocks: durations, names, fractions, record paths.

Every policy model is frozen and forbids unknown keys, so a typo in a compliance file fails
loudly with its path. Durations are written ``90s``, ``30m``, ``4h``, ``2d`` or ``1w``.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def _parse_duration(value: object) -> object:
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"'{value}' is not a duration like 90s, 30m, 4h, 2d or 1w")
        return float(match.group(1)) * _UNIT_S[match.group(2)]
    return value


Duration = Annotated[
    float,
    BeforeValidator(_parse_duration),
    Field(gt=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "description": "seconds"},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(s|m|h|d|w)\s*$"},
            ]
        }
    ),
]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_RECORD_PATHS = ("language", "model", "judge.grade", "domain")


def check_record_path(key: str) -> None:
    if key in _RECORD_PATHS or re.fullmatch(r"metadata\.[A-Za-z0-9_.-]+", key):
        return
    raise ValueError(f"cannot stratify by '{key}': use {', '.join(_RECORD_PATHS)} or metadata.KEY")
