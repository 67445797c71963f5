"""The fault matrix's short version (``loadtest/chaos.py``; the full one is ``make chaos``):
three brokers, three gateway processes, real faults during one steady load. Two rounds of:
a gateway SIGKILLed, a gateway paused past its session timeout (a zombie), a broker killed
and restarted, Redis killed and restarted, the brokers and then Redis cut off by Toxiproxy.
The reviewer process signs its decisions. A read_committed verifier accounts for every id
afterwards.

The harness starts its own cluster, Redis and Toxiproxy on its own ports and stops them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1_800)]

CHAOS = Path(__file__).resolve().parents[2] / "loadtest" / "chaos.py"
KINDS = ("S1", "S3", "S4", "S5", "S7-kafka-partition", "S7-redis-timeout")
ROUNDS = 2


def test_short_fault_matrix_loses_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(CHAOS), "--scenarios", ",".join(KINDS), "--one-load",
         "--reps", str(ROUNDS), "--rate", "80", "--short", "--settle-s", "4",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1_700, check=False,
    )  # fmt: skip
    report = done.stdout[-4_000:] + done.stderr[-4_000:]
    [results] = [json.loads(p.read_text()) for p in tmp_path.glob("chaos-*.json")]
    [load] = results
    f = load["findings"]
    assert load["drained"], report
    assert f["produced"] > 2_000, report
    assert f["held"] > 100, "the load held nothing: the reviewer side was not exercised"
    assert (f["lost"], f["duplicated"], f["held_lost"]) == (0, 0, 0), f
    assert f["unauthorized_applied"] == 0, f
    # The reviewer process signs its decisions as a review tool would: none is refused for
    # its signature, through every fault (a decision batch replayed after a crash included).
    assert not {k: n for k, n in f["refusals"].items() if k in ("bad_signature", "unsigned")}, f
    assert f["audit_verified"], f["audit_problems_examples"]
    assert (f["index_missing"], f["index_extra"]) == (0, 0), f
    kinds = [r["detail"]["scenario"] for r in load["repetitions"]]
    assert sorted(kinds) == sorted(KINDS * ROUNDS)
    for rep in load["repetitions"]:
        # Every input partition delivered again after every fault.
        assert rep["resume_s"] is not None, rep
        assert rep["records_in_fault"] > 0, rep
    # Redis killed with appendfsync always: no hold the index had is gone after the restart
    # unless its close was written by then (a decision applied once Redis was back).
    s5 = [r["detail"] for r in load["repetitions"] if r["detail"]["scenario"] == "S5"]
    assert [d["index_vanished_open"] for d in s5] == [[]] * ROUNDS, s5
    assert all(d["index_before"] > 0 for d in s5), s5
    assert load["passed"], report
    assert done.returncode == 0, report
    history = (tmp_path / "chaos-history.jsonl").read_text().splitlines()
    assert {json.loads(line)["scenario"] for line in history} == set(KINDS)
