"""Signed decisions, the pure part: signing, verifying, and the keys file (review/signing.py)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from hitl_gateway import headers
from hitl_gateway.errors import ConfigError
from hitl_gateway.review.signatures import DecisionSignatures
from hitl_gateway.review.signing import (
    SignatureError,
    Signed,
    Signer,
    TrustedKey,
    gateway_signer,
    load_keys,
    new_key,
    tool_signer,
    unsigned,
    verify,
)
from hitl_gateway.settings import DecisionSettings

VALUE = b'{"decision_id":"d1","item_id":"c1","reviewer":"ana","verdict":"approve"}'
EXPIRES = 1_900_000_000_000


def _keys(tmp_path: Path) -> tuple[dict[str, TrustedKey], Signer, Signer]:
    tool_secret, tool_entry = new_key("tool", "ed25519")
    _, gw_entry = new_key("gateway", "hmac-sha256")
    path = tmp_path / "keys.yaml"
    path.write_text(tool_entry + gw_entry)
    keys = load_keys(path)
    return keys, tool_signer("tool", "ed25519", tool_secret), gateway_signer(keys, "gateway")


def test_both_kinds_sign_and_verify(tmp_path: Path) -> None:
    keys, tool, gateway = _keys(tmp_path)
    signed = verify(VALUE, tool.headers(VALUE, expires_ms=EXPIRES, nonce="n" * 24), keys)
    assert signed is not None
    assert (signed.key_id, signed.expires_ms, signed.nonce, signed.signer) == (
        "tool", EXPIRES, "n" * 24, "tool"
    )  # fmt: skip
    forwarded = verify(VALUE, gateway.headers(VALUE, expires_ms=EXPIRES, origin="tool"), keys)
    assert forwarded is not None
    assert (forwarded.key_id, forwarded.origin, forwarded.signer) == ("gateway", "tool", "tool")
    assert verify(VALUE, [("other", b"x")], keys) is None  # unsigned


def _replace(hdrs: list[tuple[str, bytes]], name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(k, value if k == name else v) for k, v in hdrs]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: (VALUE.replace(b"approve", b"reject"), h), "does not match"),
        (lambda h: (VALUE, _replace(h, headers.SIG_EXPIRES, str(EXPIRES + 1).encode())),
         "does not match"),
        (lambda h: (VALUE, _replace(h, headers.SIG_NONCE, b"m" * 24)), "does not match"),
        (lambda h: (VALUE, [*h, (headers.SIG_ORIGIN, b"other-tool")]), "does not match"),
        (lambda h: (VALUE, _replace(h, headers.SIG_KEY, b"stranger")), "not a trusted"),
        (lambda h: (VALUE, [x for x in h if x[0] != headers.SIG_NONCE]), "missing"),
        (lambda h: (VALUE, [*h, h[0]]), "appears twice"),
        (lambda h: (VALUE, _replace(h, headers.SIG, b"***")), "not base64"),
        (lambda h: (VALUE, _replace(h, headers.SIG_EXPIRES, b"soon")), "epoch milliseconds"),
        (lambda h: (VALUE, _replace(h, headers.SIG_NONCE, b"short")), "16 to 128"),
        (lambda h: (VALUE, _replace(h, headers.SIG_KEY, b"\xff")), "not UTF-8"),
    ],
)  # fmt: skip
def test_what_is_altered_or_wrong_is_refused_by_name(
    tmp_path: Path, change: object, message: str
) -> None:
    keys, tool, _ = _keys(tmp_path)
    hdrs = tool.headers(VALUE, expires_ms=EXPIRES, nonce="n" * 24)
    value, changed = change(hdrs)  # type: ignore[operator]
    with pytest.raises(SignatureError, match=message):
        verify(value, changed, keys)


def test_a_signature_by_another_key_of_the_same_id_fails(tmp_path: Path) -> None:
    keys, _, _ = _keys(tmp_path)
    impostor_secret, _ = new_key("tool", "ed25519")
    impostor = tool_signer("tool", "ed25519", impostor_secret)
    with pytest.raises(SignatureError, match="does not match"):
        verify(VALUE, impostor.headers(VALUE, expires_ms=EXPIRES), keys)


def test_unsigned_strips_every_signature_header(tmp_path: Path) -> None:
    _, tool, _ = _keys(tmp_path)
    hdrs = [("hitl.command", b"x"), *tool.headers(VALUE, expires_ms=EXPIRES, origin="a")]
    assert unsigned(hdrs) == [("hitl.command", b"x")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "expected a mapping"),
        ("bad id!: {algorithm: ed25519, public_key: AAAA}", "must be 1 to 64"),
        ("k: {algorithm: rsa, public_key: AAAA}", "not ed25519 or hmac-sha256"),
        ("k: {algorithm: ed25519}", "public_key is missing"),
        ("k: {algorithm: ed25519, public_key: '%%%'}", "not base64"),
        ("k: {algorithm: ed25519, public_key: AAAA}", "must be 32 bytes"),
        (f"k: {{algorithm: hmac-sha256, secret: {base64.b64encode(b'x' * 16).decode()}}}",
         "16 bytes, at least 32"),
        (f"k: {{algorithm: hmac-sha256, secret: {base64.b64encode(b'x' * 32).decode()}, x: 1}}",
         "unknown field"),
        ("k: [1", "decision keys file"),
    ],
)  # fmt: skip
def test_a_malformed_keys_file_is_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_keys(path)


def test_a_missing_keys_file_and_an_unusable_gateway_key_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="decision keys file"):
        load_keys(tmp_path / "absent.yaml")
    keys, _, _ = _keys(tmp_path)
    with pytest.raises(ConfigError, match="must be an hmac-sha256 key"):
        gateway_signer(keys, "tool")
    with pytest.raises(ConfigError, match="is not in the keys file"):
        gateway_signer(keys, "nobody")


def test_keygen_entries_are_a_valid_keys_file(tmp_path: Path) -> None:
    _, entry = new_key("bridge", "ed25519")
    parsed = yaml.safe_load(entry)
    assert parsed["bridge"]["algorithm"] == "ed25519"
    with pytest.raises(ConfigError, match="key id"):
        new_key("no spaces", "ed25519")
    with pytest.raises(ConfigError, match="32 bytes"):
        tool_signer("t", "ed25519", base64.b64encode(b"x" * 16).decode())


class _Record:
    def __init__(self, value: bytes, hdrs: list[tuple[str, bytes]], timestamp: int, kind: int):
        self.value, self.headers, self.timestamp, self.timestamp_type = value, hdrs, timestamp, kind
        self.topic, self.partition, self.offset = "hitl.review.decisions", 0, 7


class _Nonces:
    def __init__(self) -> None:
        self.first: dict[str, str] = {}

    async def first_use(self, signed: Signed, where: str, ttl_ms: int) -> str:
        assert ttl_ms > 0
        return self.first.setdefault(signed.nonce, where)


async def test_expiry_and_validity_are_judged_by_the_broker_timestamp(tmp_path: Path) -> None:
    keys, tool, gateway = _keys(tmp_path)
    settings = DecisionSettings(keys_file=tmp_path / "keys.yaml", gateway_key_id="gateway",
                                max_validity_s=600)  # fmt: skip
    check = DecisionSignatures(settings, keys, gateway, _Nonces())  # type: ignore[arg-type]
    at = 1_800_000_000_000

    async def problem(expires_ms: int, kind: int = 1) -> str | None:
        hdrs = tool.headers(VALUE, expires_ms=expires_ms)
        return (await check.check(_Record(VALUE, hdrs, at, kind), at)).problem

    assert await problem(at + 60_000) is None
    assert await problem(at) is None  # valid up to and including its expiry
    assert "expired 0.0 s before" in (await problem(at - 1) or "")
    assert "longer than the 600 s allowed" in (await problem(at + 600_001) or "")
    assert "CreateTime" in (await problem(at + 60_000, kind=0) or "")
    again = tool.headers(VALUE, expires_ms=at + 60_000, nonce="r" * 20)
    first = await check.check(_Record(VALUE, again, at, 1), at)
    assert first.signer is not None
    copy = _Record(VALUE, again, at, 1)
    copy.offset = 8
    assert "replayed" in ((await check.check(copy, at)).problem or "")
