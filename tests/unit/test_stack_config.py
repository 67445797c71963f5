"""Pure parts of the local stack script."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "deploy" / "local" / "stack.py"
_spec = importlib.util.spec_from_file_location("stack", _PATH)
assert _spec is not None
assert _spec.loader is not None
stack = importlib.util.module_from_spec(_spec)
sys.modules["stack"] = stack
_spec.loader.exec_module(stack)


def test_cluster_ids_are_22_characters_and_never_look_like_options() -> None:
    ids = [stack.new_cluster_id() for _ in range(5_000)]
    assert all(len(i) == 22 for i in ids)
    assert not any(i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
