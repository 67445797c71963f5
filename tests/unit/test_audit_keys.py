"""The audit keys file and the settings that name the active key."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import ValidationError

from hitl_gateway.audit_keys import load_keys, new_key, sealing
from hitl_gateway.cli import main
from hitl_gateway.errors import ConfigError
from hitl_gateway.settings import AuditSettings

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 48).decode()


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "audit-keys.yaml"
    path.write_text(text)
    return path


def test_the_active_key_seals_and_every_key_is_in_the_ring(tmp_path: Path) -> None:
    path = _file(tmp_path, f"k2026a: {K1}\nk2026b: {K2}\n")
    assert load_keys(path) == {"k2026a": b"1" * 32, "k2026b": b"2" * 48}
    settings = AuditSettings(keys_file=path, active_key_id="k2026b", checkpoint_every=10,
                             checkpoint_interval_s=2.5)  # fmt: skip
    s = sealing(settings)
    assert s.key is not None
    assert (s.key.key_id, s.key.secret, s.checkpoint_every, s.checkpoint_interval_ms) == (
        "k2026b", b"2" * 48, 10, 2_500,
    )  # fmt: skip
    assert "2222" not in repr(s)  # the secret is never printed


def test_without_a_keys_file_the_chain_is_unkeyed() -> None:
    assert sealing(AuditSettings()).key is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "expected a mapping"),
        (f"k1: {K1}\nk1: {K2}\n", "duplicate key 'k1'"),
        (f"'bad id': {K1}\n", "key id 'bad id'"),
        ("k1: not-base64!\n", "key k1: not base64"),
        (f"k1: {base64.b64encode(b'short').decode()}\n", "key k1: 5 bytes, at least 32"),
    ],
)
def test_a_bad_keys_file_stops_the_start_naming_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        load_keys(_file(tmp_path, text))
    assert K1 not in str(caught.value)


def test_the_active_key_must_be_in_the_file(tmp_path: Path) -> None:
    path = _file(tmp_path, f"k1: {K1}\n")
    with pytest.raises(ConfigError, match=r"'k2' is not in .*\(it has k1\)"):
        sealing(AuditSettings(keys_file=path, active_key_id="k2"))
    with pytest.raises(ConfigError, match=r"audit keys file .*missing"):
        load_keys(tmp_path / "missing")


def test_a_keys_file_and_an_active_key_id_come_together(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="set together"):
        AuditSettings(keys_file=tmp_path / "k.yaml")
    with pytest.raises(ValidationError, match="set together"):
        AuditSettings(active_key_id="k1")


def test_a_new_key_line_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "new-key", "--id", "k2027"]) == 0
    line = capsys.readouterr().out
    assert load_keys(_file(tmp_path, line))["k2027"] != load_keys(_file(tmp_path, new_key("k2027")))
    assert main(["audit", "new-key", "--id", "no spaces"]) == 2
