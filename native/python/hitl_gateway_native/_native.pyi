from typing import Any

class Policies:
    def __init__(self, spec_json: bytes) -> None: ...
    @property
    def version(self) -> str: ...

def route(
    policies: Policies,
    value: bytes | None,
    max_bytes: int,
    max_id_length: int,
    timestamp_ms: int,
    budgets: Any,
) -> tuple[Any, ...]: ...
def unit_hash(version: str, seed: str, rule: str, item_id: str) -> float: ...
def format_g4(x: float) -> str: ...
