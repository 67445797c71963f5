"""Signed decisions: what a review tool attaches to a decision it publishes to the decisions
topic, and how the gateway checks it (pure: no I/O but reading the keys file).

A signed decision carries four headers: the signer's key id (``hitl.sig.key``), an expiry
(``hitl.sig.expires``, epoch milliseconds), a nonce (``hitl.sig.nonce``) and the signature
(``hitl.sig``, base64). The signature covers a version tag, those three values, the origin
(``hitl.sig.origin``: set when the gateway re-signs a decision it checked and forwards to
another partition, naming the tool that signed it first) and the record's value bytes, so a
changed verdict, item, reviewer, edit, expiry or nonce fails it.

Keys: Ed25519 (the tool holds the private key, the gateway the public one) or HMAC-SHA256
(both hold the secret; the gateway's own key, with which the review API signs what it
publishes, is one). The keys file (``HITL_DECISIONS__KEYS_FILE``) names every key the gateway
trusts::

    gateway:                      # key id
      algorithm: hmac-sha256
      secret: <base64, 32 bytes or more>
    label-studio-bridge:
      algorithm: ed25519
      public_key: <base64, the raw 32-byte public key>

``hitl-gateway decisions keygen`` makes both kinds (docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hitl_gateway import headers, yamlfile
from hitl_gateway.errors import ConfigError

VERSION = b"hitl-decision-v1"
KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
NONCE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")  # URL-safe base64 or hex, 96 bits or more
MIN_SECRET_BYTES = 32
SIGNATURE_HEADERS = frozenset(
    {headers.SIG_KEY, headers.SIG, headers.SIG_EXPIRES, headers.SIG_NONCE, headers.SIG_ORIGIN}
)

Algorithm = Literal["ed25519", "hmac-sha256"]
Headers = Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class TrustedKey:
    key_id: str
    algorithm: Algorithm
    material: bytes  # the Ed25519 public key (raw) or the HMAC secret

    def verifies(self, message: bytes, signature: bytes) -> bool:
        if self.algorithm == "hmac-sha256":
            expected = hmac.new(self.material, message, hashlib.sha256).digest()
            return hmac.compare_digest(expected, signature)
        try:
            Ed25519PublicKey.from_public_bytes(self.material).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Signer:
    """What a tool (or the gateway itself) signs with."""

    key_id: str
    algorithm: Algorithm
    secret: bytes  # the Ed25519 private key (raw 32 bytes) or the HMAC secret

    def sign(self, message: bytes) -> bytes:
        if self.algorithm == "hmac-sha256":
            return hmac.new(self.secret, message, hashlib.sha256).digest()
        return Ed25519PrivateKey.from_private_bytes(self.secret).sign(message)

    def headers(
        self, value: bytes, *, expires_ms: int, nonce: str | None = None, origin: str = ""
    ) -> list[tuple[str, bytes]]:
        """The headers that sign ``value`` until ``expires_ms`` (a fresh nonce unless given)."""
        nonce = nonce or secrets.token_urlsafe(18)
        signature = self.sign(message(self.key_id, expires_ms, nonce, origin, value))
        out = [
            (headers.SIG_KEY, self.key_id.encode()),
            (headers.SIG_EXPIRES, str(expires_ms).encode()),
            (headers.SIG_NONCE, nonce.encode()),
            (headers.SIG, base64.b64encode(signature)),
        ]
        if origin:
            out.append((headers.SIG_ORIGIN, origin.encode()))
        return out


def message(key_id: str, expires_ms: int, nonce: str, origin: str, value: bytes) -> bytes:
    """The bytes a signature covers."""
    fields = (VERSION, key_id.encode(), str(expires_ms).encode(), nonce.encode(), origin.encode())
    return b"\0".join(fields) + b"\0" + value


@dataclass(frozen=True, slots=True)
class Signed:
    """A decision whose signature verified (not yet checked for expiry or replay)."""

    key_id: str
    expires_ms: int
    nonce: str
    origin: str  # the tool that signed it first, when the gateway re-signed it ("" if not)

    @property
    def signer(self) -> str:
        """Who vouches for the decision: the tool, also through a gateway re-signing."""
        return self.origin or self.key_id


class SignatureError(ValueError):
    """A decision whose signature headers are present but wrong: the message names how."""


def verify(value: bytes | None, record_headers: Headers | None, keys: KeyRing) -> Signed | None:
    """The verified signature of a decision record; None for an unsigned one (no signature
    headers at all). Raises ``SignatureError`` naming what is wrong otherwise."""
    found: dict[str, bytes] = {}
    for name, raw in record_headers or ():
        if name in SIGNATURE_HEADERS:
            if name in found:
                raise SignatureError(f"header {name} appears twice")
            found[name] = raw or b""
    if not found:
        return None
    missing = [n for n in (headers.SIG_KEY, headers.SIG_EXPIRES, headers.SIG_NONCE, headers.SIG)
               if n not in found]  # fmt: skip
    if missing:
        raise SignatureError(f"signature header(s) missing: {', '.join(missing)}")
    key_id = _text(found, headers.SIG_KEY)
    key = keys.get(key_id)
    if key is None:
        raise SignatureError(f"key id {key_id!r} is not a trusted decision signer")
    expires_text = _text(found, headers.SIG_EXPIRES)
    if not expires_text.isdigit() or len(expires_text) > 15:
        raise SignatureError(f"{headers.SIG_EXPIRES} {expires_text!r} is not epoch milliseconds")
    nonce = _text(found, headers.SIG_NONCE)
    if not NONCE.match(nonce):
        raise SignatureError(f"{headers.SIG_NONCE} must be 16 to 128 of A-Z a-z 0-9 _ -")
    origin = _text(found, headers.SIG_ORIGIN) if headers.SIG_ORIGIN in found else ""
    if origin and not KEY_ID.match(origin):
        raise SignatureError(f"{headers.SIG_ORIGIN} {origin!r} is not a key id")
    try:
        signature = base64.b64decode(found[headers.SIG], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{headers.SIG} is not base64") from exc
    expires_ms = int(expires_text)
    if not key.verifies(message(key_id, expires_ms, nonce, origin, value or b""), signature):
        raise SignatureError(
            f"the signature does not match the decision (key {key_id}): altered or wrong key"
        )
    return Signed(key_id, expires_ms, nonce, origin)


def _text(found: dict[str, bytes], name: str) -> str:
    try:
        return found[name].decode()
    except UnicodeDecodeError as exc:
        raise SignatureError(f"header {name} is not UTF-8") from exc


def unsigned(record_headers: Iterable[tuple[str, bytes | None]] | None) -> list[tuple[str, bytes]]:
    """The headers without any signature header (before re-signing)."""
    return [(k, v or b"") for k, v in record_headers or () if k not in SIGNATURE_HEADERS]


# -- keys ------------------------------------------------------------------------------------

KeyRing = dict[str, TrustedKey]


def load_keys(path: Path) -> KeyRing:
    """The trusted keys in ``path`` by id; a malformed file is a ``ConfigError`` naming the
    problem (never a secret)."""
    where = f"decision keys file {path}"
    data = yamlfile.load_file(path, "decision keys file")
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where}: expected a mapping of key id: {{algorithm, ...}}")
    keys: KeyRing = {}
    for key_id, entry in data.items():
        if not isinstance(key_id, str) or not KEY_ID.match(key_id):
            raise ConfigError(f"{where}: key id {key_id!r} must be 1 to 64 of A-Z a-z 0-9 _ . -")
        keys[key_id] = _trusted(where, key_id, entry)
    return keys


def _trusted(where: str, key_id: str, entry: object) -> TrustedKey:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: key {key_id}: expected algorithm and its key")
    algorithm = entry.get("algorithm")
    if algorithm == "hmac-sha256":
        field, size = "secret", None
    elif algorithm == "ed25519":
        field, size = "public_key", 32
    else:
        raise ConfigError(
            f"{where}: key {key_id}: algorithm {algorithm!r} is not ed25519 or hmac-sha256"
        )
    unknown = sorted(set(entry) - {"algorithm", field})
    if unknown:
        raise ConfigError(f"{where}: key {key_id}: unknown field(s) {', '.join(map(str, unknown))}")
    material = _base64(where, key_id, field, entry.get(field))
    if size is not None and len(material) != size:
        raise ConfigError(f"{where}: key {key_id}: public_key must be {size} bytes")
    if size is None and len(material) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{where}: key {key_id}: secret has {len(material)} bytes, at least"
            f" {MIN_SECRET_BYTES} are needed"
        )
    return TrustedKey(key_id, algorithm, material)


def _base64(where: str, key_id: str, field: str, raw: object) -> bytes:
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"{where}: key {key_id}: {field} is missing")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{where}: key {key_id}: {field} is not base64") from exc


def gateway_signer(keys: KeyRing, key_id: str) -> Signer:
    """The gateway's own signer: an HMAC key in the keys file (its secret is there)."""
    key = keys.get(key_id)
    if key is None:
        raise ConfigError(f"HITL_DECISIONS__GATEWAY_KEY_ID: {key_id!r} is not in the keys file")
    if key.algorithm != "hmac-sha256":
        raise ConfigError(
            f"HITL_DECISIONS__GATEWAY_KEY_ID: {key_id!r} must be an hmac-sha256 key (the"
            " gateway signs with it, and an ed25519 entry holds only a public key)"
        )
    return Signer(key_id, "hmac-sha256", key.material)


def new_key(key_id: str, algorithm: Algorithm) -> tuple[str, str]:
    """A new key: (what the tool keeps, the entry for the gateway's keys file)."""
    if not KEY_ID.match(key_id):
        raise ConfigError(f"key id {key_id!r} must be 1 to 64 of A-Z a-z 0-9 _ . -")
    if algorithm == "hmac-sha256":
        secret = base64.b64encode(secrets.token_bytes(32)).decode()
        entry = f"{key_id}:\n  algorithm: hmac-sha256\n  secret: {secret}\n"
        return secret, entry
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes_raw()
    public = private.public_key().public_bytes_raw()
    entry = f"{key_id}:\n  algorithm: ed25519\n  public_key: {base64.b64encode(public).decode()}\n"
    return base64.b64encode(raw).decode(), entry


def tool_signer(key_id: str, algorithm: Algorithm, secret_b64: str) -> Signer:
    """A tool's signer from what ``new_key`` gave it to keep."""
    try:
        secret = base64.b64decode(secret_b64.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"signing key {key_id}: not base64") from exc
    if algorithm == "ed25519" and len(secret) != 32:
        raise ConfigError(f"signing key {key_id}: an ed25519 private key is 32 bytes")
    return Signer(key_id, algorithm, secret)
