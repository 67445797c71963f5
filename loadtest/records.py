"""Realistic model-output records for demos and load tests: a domain mix, confidence and
language distributions, sized payloads, and a configurable share of malformed records."""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

# (domain, weight, typical confidence centre): mandatory-review domains are a small share of
# traffic; general traffic dominates (the guide's "high-volume general AI" row).
DOMAINS: tuple[tuple[str, float, float], ...] = (
    ("clinical-summaries", 0.03, 0.85),
    ("legal-drafts", 0.02, 0.80),
    ("financial-advice", 0.03, 0.82),
    ("support-chat", 0.30, 0.90),
    ("ticket-classifier", 0.20, 0.88),
    ("translations", 0.07, 0.86),
    ("general-assistant", 0.25, 0.90),
    ("engineering-answers", 0.04, 0.88),
    ("product-search", 0.03, 0.87),
    ("startup-copilot", 0.03, 0.89),
)
LANGUAGES: tuple[tuple[str, float], ...] = (
    ("en", 0.6),
    ("de", 0.1),
    ("fr", 0.1),
    ("es", 0.1),
    ("ja", 0.05),
    ("pt-BR", 0.05),
)
# Domains serving several languages; the others are English-only products.
MULTILINGUAL = frozenset({"translations", "support-chat"})
JUDGE_GRADES = ("A", "B", "C", "D")
MODELS = (
    "summarizer-v7",
    "drafter-v3",
    "advisor-v2",
    "chat-v12",
    "classifier-v5",
    "mt-v4",
    "assistant-v9",
    "eng-qa-v2",
    "search-v2",
    "copilot-v1",
)
RED_TEAM_SHARE = 0.01

# One malformed record per kind, each exercising a dead-letter reason.
MALFORMED: tuple[bytes | None, ...] = (
    None,  # tombstone / null value
    b"\xff\xfe\x00garbage",  # not UTF-8
    b'{"id": "x", "domain": ',  # truncated JSON
    b"[1, 2, 3]",  # not an object
    b'{"domain": "support-chat"}',  # missing id
    b'{"id": 42, "domain": "support-chat"}',  # wrong type
    b'{"id": "x", "domain": "support-chat", "confidence": 1.7}',  # out of range
    b'{"id": "x", "domain": "support-chat", "language": "not a tag!"}',  # invalid field
)


@dataclass(frozen=True, slots=True)
class GeneratedRecord:
    key: bytes | None
    value: bytes | None
    valid: bool


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([w[0] for w in weighted], weights=[w[1] for w in weighted])[0]


def make_record(
    rng: random.Random,
    run_id: str,
    seq: int,
    payload_bytes: int = 1_024,
    domains: tuple[str, ...] | None = None,
) -> GeneratedRecord:
    """One valid model output of about ``payload_bytes`` bytes, keyed by its id; from the
    whole domain mix, or only from ``domains`` (with their relative weights)."""
    weights = [d[1] if domains is None or d[0] in domains else 0.0 for d in DOMAINS]
    index = rng.choices(range(len(DOMAINS)), weights=weights)[0]
    domain, _, centre = DOMAINS[index]
    confidence = min(1.0, max(0.0, rng.gauss(centre, 0.12)))
    item_id = f"{run_id}-{seq:08d}"
    record = {
        "id": item_id,
        "domain": domain,
        "confidence": round(confidence, 4),
        "language": _pick(rng, LANGUAGES) if domain in MULTILINGUAL else "en",
        "model": MODELS[index],
        "judge": {
            "score": round(min(1.0, max(0.0, rng.gauss(confidence, 0.1))), 3),
            "grade": rng.choice(JUDGE_GRADES),
            "model": "judge-v2",
        },
        "metadata": {
            "tenant": f"tenant-{rng.randrange(20)}",
            "channel": rng.choice(["web", "api"]),
        },
        "created_at": "2026-11-24T12:00:00Z",
        "output": {"text": ""},
    }
    skeleton = len(orjson.dumps(record))
    record["output"] = {"text": "x" * max(0, payload_bytes - skeleton)}
    return GeneratedRecord(key=item_id.encode(), value=orjson.dumps(record), valid=True)


def make_stream(
    count: int,
    *,
    run_id: str,
    seed: int = 7,
    payload_bytes: int = 1_024,
    invalid_share: float = 0.0,
    domains: tuple[str, ...] | None = None,
) -> list[GeneratedRecord]:
    """``count`` records, a deterministic function of its arguments."""
    rng = random.Random(seed)
    out: list[GeneratedRecord] = []
    for seq in range(count):
        if invalid_share and rng.random() < invalid_share:
            value = MALFORMED[rng.randrange(len(MALFORMED))]
            out.append(
                GeneratedRecord(key=f"{run_id}-bad-{seq}".encode(), value=value, valid=False)
            )
        else:
            out.append(make_record(rng, run_id, seq, payload_bytes, domains))
    return out


def main() -> None:
    """Write a JSON-lines traffic file, e.g. for ``hitl-gateway policy simulate --input``."""
    import argparse  # noqa: PLC0415 - only for the command line
    import sys  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--payload-bytes", type=int, default=512)
    parser.add_argument("--invalid-share", type=float, default=0.0)
    args = parser.parse_args()
    out = sys.stdout.buffer
    for rec in make_stream(
        args.count,
        run_id="sim",
        seed=args.seed,
        payload_bytes=args.payload_bytes,
        invalid_share=args.invalid_share,
    ):
        if rec.value is not None:
            out.write(rec.value.replace(b"\n", b" ") + b"\n")


if __name__ == "__main__":
    main()
