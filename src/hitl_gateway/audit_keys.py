"""The audit trail's HMAC keys: a YAML file of ``key_id: base64 secret`` entries.

The gateway seals new events with the active key (``HITL_AUDIT__ACTIVE_KEY_ID``); the
verifier accepts any key in the file by the ``key_id`` an event names, so a retired key stays
in the file as long as events sealed with it are kept (docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from pathlib import Path

from hitl_gateway import yamlfile
from hitl_gateway.audit import Sealing, SealingKey
from hitl_gateway.errors import ConfigError
from hitl_gateway.settings import AuditSettings

KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_KEY_BYTES = 32  # HMAC-SHA256's output size: a shorter key is weaker than the MAC
NEW_KEY_BYTES = 32

KeyRing = dict[str, bytes]


def load_keys(path: Path) -> KeyRing:
    """The keys in ``path``, by id; a missing or malformed file is a ``ConfigError`` naming
    the problem (never a secret)."""
    data = yamlfile.load_file(path, "audit keys file")
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"audit keys file {path}: expected a mapping of key_id: base64 secret")
    keys: KeyRing = {}
    for key_id, encoded in data.items():
        if not isinstance(key_id, str) or not KEY_ID.match(key_id):
            raise ConfigError(
                f"audit keys file {path}: key id {key_id!r} must be 1 to 64 of A-Z a-z 0-9 _ . -"
            )
        try:
            secret = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"audit keys file {path}: key {key_id}: not base64") from exc
        if len(secret) < MIN_KEY_BYTES:
            raise ConfigError(
                f"audit keys file {path}: key {key_id}: {len(secret)} bytes, at least"
                f" {MIN_KEY_BYTES} are needed"
            )
        keys[key_id] = secret
    return keys


def sealing(settings: AuditSettings) -> Sealing:
    """How the gateway seals its chains: with the active key from the keys file, or plain
    SHA-256 links when no keys file is set."""
    every, interval_ms = settings.checkpoint_every, int(settings.checkpoint_interval_s * 1000)
    if settings.keys_file is None:
        return Sealing(None, every, interval_ms)
    keys = load_keys(settings.keys_file)
    active = settings.active_key_id
    if active not in keys:
        raise ConfigError(
            f"HITL_AUDIT__ACTIVE_KEY_ID: {active!r} is not in {settings.keys_file}"
            f" (it has {', '.join(sorted(keys))})"
        )
    assert active is not None  # settings require it with a keys file
    return Sealing(SealingKey(active, keys[active]), every, interval_ms)


def new_key(key_id: str) -> str:
    """A new key as a line for the keys file."""
    if not KEY_ID.match(key_id):
        raise ConfigError(f"key id {key_id!r} must be 1 to 64 of A-Z a-z 0-9 _ . -")
    return f"{key_id}: {base64.b64encode(secrets.token_bytes(NEW_KEY_BYTES)).decode()}"
