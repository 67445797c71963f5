"""Decode and decide, microseconds per record on the load tests' 1 KB mix: the Python path
(``codec.decode`` then ``engine.decide``) against the native one (``hitl_gateway_native``).

    .venv/bin/python native/bench.py [--records 2000] [--passes 7]

Variants, in alternating passes over the same records (each figure is the best pass, the
least disturbed by other work on the machine; elapsed time, and the thread's CPU time, which
leaves out the time other processes had the core):

- ``python``: ``codec.decode`` then ``engine.decide``, as routing calls them;
- ``python decode``, ``python decide``: the two halves alone;
- ``native``: ``hitl_gateway_native.decode_and_decide``, the drop-in (the gateway's
  ``Invalid`` or ``Decision`` objects built from the extension's tuple);
- ``native tuple``: the extension's ``route`` alone (its plain tuple).

Every record's verdict is checked equal on both paths before anything is timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "loadtest"))

from hitl_gateway_native import (  # noqa: E402
    compile_policies,
    decode_and_decide,
    python_decode_and_decide,
    route,
)

from hitl_gateway.codec import decode  # noqa: E402
from hitl_gateway.models import Invalid  # noqa: E402
from hitl_gateway.policy.budget import MemoryLedger  # noqa: E402
from hitl_gateway.policy.engine import decide  # noqa: E402
from hitl_gateway.policy.loader import load_policy_set  # noqa: E402
from records import make_stream  # noqa: E402

MAX_BYTES = 1_000_000
MAX_ID = 512
T0 = 1_764_000_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2_000)
    parser.add_argument("--passes", type=int, default=7)
    args = parser.parse_args()

    policies = load_policy_set(ROOT / "configs" / "policies")
    native = compile_policies(policies)
    compiled = native.compiled
    ledger = MemoryLedger()
    stream = make_stream(args.records, run_id="bench", seed=7, payload_bytes=1_024)
    inputs = [(r.value, T0 + n * 1_000) for n, r in enumerate(stream)]
    sizes = [len(v or b"") for v, _ in inputs]

    declined = 0
    for value, ts in inputs:
        kwargs: dict[str, Any] = {"timestamp_ms": ts, "budgets": ledger}
        want = python_decode_and_decide(value, policies, max_bytes=MAX_BYTES, max_id_length=MAX_ID,
                                        **kwargs)  # fmt: skip
        got = decode_and_decide(value, policies, max_bytes=MAX_BYTES, max_id_length=MAX_ID,
                                **kwargs)  # fmt: skip
        if got != want:
            raise SystemExit(f"verdicts differ on {value!r}: {got} != {want}")
        declined += route(compiled, value, MAX_BYTES, MAX_ID, ts, ledger)[0] == 2
    records = [decode(v, max_bytes=MAX_BYTES, max_id_length=MAX_ID) for v, _ in inputs]
    valid = [(r, ts) for r, (_, ts) in zip(records, inputs, strict=True)
             if not isinstance(r, Invalid)]  # fmt: skip

    def python_path() -> None:
        for value, ts in inputs:
            verdict = decode(value, max_bytes=MAX_BYTES, max_id_length=MAX_ID)
            if not isinstance(verdict, Invalid):
                decide(verdict, policies, timestamp_ms=ts, budgets=ledger)

    def python_decode() -> None:
        for value, _ in inputs:
            decode(value, max_bytes=MAX_BYTES, max_id_length=MAX_ID)

    def python_decide() -> None:
        for record, ts in valid:
            decide(record, policies, timestamp_ms=ts, budgets=ledger)

    def native_path() -> None:
        for value, ts in inputs:
            decode_and_decide(value, policies, max_bytes=MAX_BYTES, max_id_length=MAX_ID,
                              timestamp_ms=ts, budgets=ledger)  # fmt: skip

    def native_tuple() -> None:
        for value, ts in inputs:
            route(compiled, value, MAX_BYTES, MAX_ID, ts, ledger)

    variants: dict[str, Callable[[], None]] = {
        "python": python_path,
        "python decode": python_decode,
        "python decide": python_decide,
        "native": native_path,
        "native tuple": native_tuple,
    }
    load_before = os.getloadavg()
    best = dict.fromkeys(variants, float("inf"))
    best_cpu = dict.fromkeys(variants, float("inf"))
    for _ in range(args.passes):
        for name, run in variants.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            run()
            best[name] = min(best[name], (time.perf_counter() - start) / len(inputs))
            best_cpu[name] = min(best_cpu[name], (time.thread_time() - start_cpu) / len(inputs))
    load_after = os.getloadavg()

    print(
        f"{len(inputs)} records of the 1 KB mix (mean {sum(sizes) / len(sizes):.0f} bytes, "
        f"{len(valid)} routed, {declined} declined by the native path), "
        f"best of {args.passes} alternating passes"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}; "
          f"after: {' '.join(f'{x:.2f}' for x in load_after)}")  # fmt: skip
    print("  µs per record: elapsed (the thread's CPU time)")
    for name, seconds in best.items():
        print(f"  {name:<14} {seconds * 1e6:7.2f} ({best_cpu[name] * 1e6:.2f})")
    print(f"  python / native: {best['python'] / best['native']:.1f}x "
          f"(tuple only: {best['python'] / best['native tuple']:.1f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
