"""The fault matrix: three brokers, three gateway instances in one group, a steady producer
over the realistic domain mix with a reviewer deciding held items, real faults (processes
killed and paused, brokers killed, Redis killed and wiped, network faults through Toxiproxy),
and a read_committed verifier accounting for every id.

    python loadtest/chaos.py [--scenarios S1,S3,...|all] [--reps N] [--rate R] [--short]

Writes ``--out``/chaos-<time>.json (every repetition and finding), appends a line per
scenario to ``--out``/chaos-history.jsonl and prints the table (docs/reliability.md).
Exit 1 when any scenario lost, duplicated or wrongly released anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_check import Findings, check, wait_drained
from chaos_faults import SIMPLE, Fault, Rig, closed
from chaos_load import SERVICE, Feed, Reviewer, Watcher
from chaos_rig import (
    AUDIT_KEY,
    Cluster,
    GatewayProcess,
    Ports,
    RedisServer,
    Toxiproxy,
    gateway_settings,
    write_decision_keys,
    write_reviewers,
)
from chaos_storm import Storm
from hitl_gateway.admin import ensure_topics

# The issue's repetitions; S7's are per kind of network fault.
FULL_REPS = {"S1": 20, "S2": 5, "S3": 10, "S4": 10, "S4r": 2, "S5": 5, "S6": 2, "S8": 3,
             "S9": 1, "S10": 1, "S11": 1,
             **{k: 10 for k in SIMPLE if k.startswith("S7-")}}  # fmt: skip


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _timing(fault: Fault, feed: Feed, watcher: Watcher, held: set[str]) -> dict[str, Any]:
    """Time to resume: the latest, over input partitions, of the first delivery of a
    pass-through record produced after ``resume_from``; and the pass-through latency of
    records produced from the fault's start until then."""
    firsts: dict[int, float] = {}
    partitions = {s.partition for s in feed.sent.values()}
    for key, sent in feed.sent.items():
        if sent.valid and key not in held and sent.at >= fault.resume_from and key in watcher.seen:
            seen = watcher.seen[key]
            firsts[sent.partition] = min(firsts.get(sent.partition, seen), seen)
    resume = None
    if partitions and set(firsts) >= partitions:
        resume = max(firsts.values()) - fault.resume_from
    until = fault.resume_from + (resume or 0)
    latencies = [
        watcher.seen[k] - s.at
        for k, s in feed.sent.items()
        if s.valid and k not in held and fault.began <= s.at <= until and k in watcher.seen
    ]
    return {"resume_s": resume, "latency_p50_s": _pct(latencies, 0.5),
            "latency_p99_s": _pct(latencies, 0.99), "latency_max_s": max(latencies, default=None),
            "records_in_fault": len(latencies)}  # fmt: skip


class Matrix:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args, self.root = args, root
        self.ports = Ports()
        self.cluster = Cluster(self.ports)
        self.redis = RedisServer(self.ports.redis, root)
        self.toxi = Toxiproxy(self.ports, root)
        self.tokens: dict[str, str] = {}
        self.grants = write_reviewers(root / "reviewers.yaml", self.tokens)
        self.signer = write_decision_keys(root / "decision-keys.yaml")
        self.rng = random.Random(args.seed)

    def up(self) -> None:
        self.cluster.run("up")
        self.redis.start()
        self.toxi.start()

    def down(self) -> None:
        with contextlib.suppress(Exception):
            self.toxi.stop()
        self.redis.stop()
        if not self.args.keep_cluster:
            self.cluster.run("down", "--purge")

    async def scenario(self, names: list[str], reps: int) -> dict[str, Any]:
        """One load (fresh topics, group and gateways) with ``reps`` rounds of the faults
        ``names`` in turn; the verifier's findings cover the whole load."""
        name = "+".join(names)
        settings = gateway_settings(self.ports, self.root, self.args.session_timeout_ms)
        direct = settings.model_copy(update={"kafka": settings.kafka.model_copy(
            update={"bootstrap_servers": self.ports.direct_bootstrap})})  # fmt: skip
        await ensure_topics(direct)
        t, bootstrap = settings.topics, self.ports.direct_bootstrap
        gateways: list[GatewayProcess] = []

        def spawn() -> GatewayProcess:
            g = GatewayProcess(settings, self.root / name, len(gateways),
                               self.ports.http_base + len(gateways))  # fmt: skip
            gateways.append(g)
            return g

        (self.root / name).mkdir(exist_ok=True)
        run_id = f"{names[0]}-{int(time.time())}"
        feed = Feed(bootstrap, t.outputs, run_id, self.args.rate,
                    malformed_every=20 if "S11" in names else 0,
                    service=SERVICE if "S10" in names else None)  # fmt: skip
        watcher = Watcher(bootstrap, t.delivered, t.partitions)
        reviewer = Reviewer(bootstrap, t.review_tasks, t.review_decisions, t.partitions,
                            self.grants, self.signer, malicious="S10" in names,
                            collect="S9" in names)  # fmt: skip
        items = self.args.storm_items
        storm = Storm(bootstrap, t.review_decisions, [], self.tokens, self.signer,
                      conflicts=items // 14, unknown=items // 28)  # fmt: skip
        rig = Rig(self.ports, self.cluster, self.redis, self.toxi, settings, gateways, spawn,
                  self.rng, self.args.short)  # fmt: skip
        for _ in range(3):
            spawn().start()
        tasks = [asyncio.create_task(x.run()) for x in (watcher, reviewer, feed)]
        faults: list[Fault] = []
        began = time.time()
        try:
            await self._warm(watcher)
            simple = [n for n in names if n in SIMPLE]
            for rep in range(reps if simple else 0):
                for kind in simple:
                    faults.append(await SIMPLE[kind](rig))
                    faults[-1].detail["scenario"] = kind
                    print(f"  {kind} rep {rep + 1}/{reps}: {faults[-1].detail}", flush=True)
                    await asyncio.sleep(self.args.settle_s)
            if "S9" in names:
                await self._storm(storm, reviewer, [g.http_port for g in gateways])
            elif not simple:  # S10: the load alone, with the malicious reviewer
                await asyncio.sleep(self.args.settle_s * 3)
            feed.stop.set()
            await tasks[2]
            drained = await self._drain(settings, reviewer)
        finally:
            for x in (feed, reviewer, watcher):
                x.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            codes = [await asyncio.to_thread(g.stop, 60) for g in gateways]
        findings = await check(settings, bootstrap, f"redis://127.0.0.1:{self.ports.redis}/0",
                               feed=feed, reviewer=reviewer, audit_key=AUDIT_KEY)  # fmt: skip
        held = _held_ids(findings, feed, reviewer)
        for fault in faults:
            if fault.detail.get("scenario") == "S5":
                fault.detail.update(closed(fault.detail, findings.closed_at_ms))
        reps_out = [{**asdict(f), **_timing(f, feed, watcher, held)} for f in faults]
        return {"scenario": name, "reps": len(faults), "rate_per_s": self.args.rate,
                "seconds": round(time.time() - began, 1), "drained": drained,
                "gateway_exit_codes": codes, "decisions_sent": reviewer.decisions,
                "malicious_sent": reviewer.malicious_sent, "forged_sent": reviewer.forged_sent,
                "unsigned_sent": reviewer.unsigned_sent, "findings": findings.summary(),
                "storm": {"items": len(storm.stormed), "sent": storm.sent,
                          "unknown": storm.unknown if "S9" in names else 0,
                          "api_status": storm.api_status,
                          "unapplied": len(storm.stormed & findings.pending_ids)},
                "repetitions": reps_out, "notes": rig.notes}  # fmt: skip

    async def _warm(self, watcher: Watcher) -> None:
        deadline = time.monotonic() + 120
        while len(watcher.seen) < self.args.rate * 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateways delivered nothing within 120 s")
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)

    async def _storm(self, storm: Storm, reviewer: Reviewer, ports: list[int]) -> None:
        """Hold items until there are enough for the storm (or ten minutes passed), then send
        it (``--rate`` sets how fast they come)."""
        deadline = time.monotonic() + 600
        while len(reviewer.collected) < self.args.storm_items and time.monotonic() < deadline:
            await asyncio.sleep(1)
        storm.api_ports = ports
        plan = storm.plan(reviewer, self.args.storm_items)
        print(f"  S9: {len(plan)} decisions for {len(storm.stormed)} items", flush=True)
        await storm.run(plan)

    async def _drain(self, settings: Any, reviewer: Reviewer) -> bool:
        bootstrap = self.ports.direct_bootstrap
        ok = await wait_drained(settings, bootstrap, 240)
        while time.monotonic() - reviewer.last_task_at < 4:  # the last tasks decided
            await asyncio.sleep(0.5)
        return ok and await wait_drained(settings, bootstrap, 240)


def _held_ids(findings: Findings, feed: Feed, reviewer: Reviewer) -> set[str]:
    return set(reviewer.voted) | set(reviewer.withhold)


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per kind of fault in the load (the findings are the load's)."""
    kinds = list(dict.fromkeys(r["detail"]["scenario"] for r in result["repetitions"]))
    return [row(result, kind) for kind in kinds] or [row(result, result["scenario"])]


def row(result: dict[str, Any], kind: str) -> dict[str, Any]:
    f = result["findings"]
    reps = [r for r in result["repetitions"] if r["detail"]["scenario"] == kind]
    resumes = [r["resume_s"] for r in reps if r["resume_s"] is not None]
    p99s = [r["latency_p99_s"] for r in reps if r["latency_p99_s"] is not None]
    return {
        "scenario": kind, "reps": len(reps), "produced": f["produced"],
        "lost": f["lost"], "duplicated": f["duplicated"], "held": f["held"],
        "held_lost": f["held_lost"], "unauthorized_applied": f["unauthorized_applied"],
        "malformed_unaccounted": f["malformed_unaccounted"],
        "audit_verified": f["audit_verified"], "aborted_records": f["aborted_records"],
        "index_drift": f["index_missing"] + f["index_extra"],
        "resume_p50_s": _pct(resumes, 0.5), "resume_p99_s": _pct(resumes, 0.99),
        "not_resumed": sum(r["resume_s"] is None for r in reps),
        "fault_latency_p99_s": _pct(p99s, 0.99),
    }  # fmt: skip


def refusals_expected(result: dict[str, Any]) -> bool:
    """S10: every malicious decision refused (and audited), and nothing else refused for its
    signature; S9: every decision for an unknown item refused."""
    refused = result["findings"]["refusals"]
    wrong = sum(refused.get(k, 0) for k in ("not_allowed", "self_approval", "stale_content"))
    storm = result["storm"]
    return (
        wrong >= result["malicious_sent"]
        and refused.get("bad_signature", 0) == result.get("forged_sent", 0)
        and refused.get("unsigned", 0) == result.get("unsigned_sent", 0)
        and refused.get("unknown_item", 0) >= storm.get("unknown", 0)
    )


def passed(result: dict[str, Any]) -> bool:
    f = result["findings"]
    return (result["drained"] and f["lost"] == 0 and f["duplicated"] == 0
            and f["held_lost"] == 0 and f["unauthorized_applied"] == 0
            and f["malformed_unaccounted"] == 0 and f["audit_verified"]
            and f["index_missing"] + f["index_extra"] == 0
            and result["storm"]["unapplied"] == 0 and refusals_expected(result)
            and not [r for r in result["repetitions"] if r["detail"].get("index_vanished_open")]
            and all(code in (0, None) for code in result["gateway_exit_codes"]))  # fmt: skip


def table(results: list[dict[str, Any]]) -> str:
    cols = ["scenario", "reps", "produced", "lost", "duplicated", "held", "held_lost",
            "unauthorized_applied", "audit_verified", "aborted_records", "index_drift",
            "resume_p50_s", "resume_p99_s", "not_resumed", "fault_latency_p99_s"]  # fmt: skip

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.1f}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(x[c]) for c in cols) + " |" for r in results for x in rows(r)]
    return "\n".join(lines)


def _names(raw: str) -> list[str]:
    every = [*SIMPLE, "S9", "S10"]
    if raw == "all":
        return sorted(every, key=lambda n: (int(n[1:].split("-")[0].rstrip("r")), n))
    out: list[str] = []
    for name in raw.split(","):
        matched = [n for n in every if n == name or n.startswith(f"{name}-")]
        if not matched:
            raise SystemExit(f"unknown scenario {name!r}; known: {', '.join(every)}")
        out += matched
    return out


async def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="chaos-"))
    matrix = Matrix(args, root)
    results: list[dict[str, Any]] = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    try:
        await asyncio.to_thread(matrix.up)
        names = _names(args.scenarios)
        for load in [names] if args.one_load else [[n] for n in names]:
            reps = args.reps or FULL_REPS.get(load[0], 1)
            print(f"{'+'.join(load)}: {reps} repetition(s)", flush=True)
            result = await matrix.scenario(load, reps)
            result["passed"] = passed(result)
            results.append(result)
            (out / f"chaos-{stamp}.json").write_text(json.dumps(results, indent=1))
            with (out / "chaos-history.jsonl").open("a") as history:
                for x in rows(result):
                    history.write(json.dumps({"at": stamp, **x, "passed": result["passed"]}) + "\n")
            print("\n".join(table([result]).splitlines()[2:]), flush=True)
    finally:
        await asyncio.to_thread(matrix.down)
    print(table(results))
    print(f"logs: {root}; results: {out / f'chaos-{stamp}.json'}")
    return 0 if results and all(r["passed"] for r in results) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="all", help="comma-separated, or all")
    parser.add_argument("--reps", type=int, default=0, help="per scenario (0: the issue's)")
    parser.add_argument("--rate", type=float, default=300, help="records a second")
    parser.add_argument("--settle-s", type=float, default=6, help="load alone between faults")
    parser.add_argument("--session-timeout-ms", type=int, default=6_000)
    parser.add_argument("--short", action="store_true", help="shorter outages (CI)")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument(
        "--storm-items",
        type=int,
        default=14_000,
        help="S9: held items decided in the storm (about 2.36 decisions each)",
    )
    parser.add_argument(
        "--one-load",
        action="store_true",
        help="every scenario's faults in turn during one load (CI)",
    )
    parser.add_argument("--keep-cluster", action="store_true", help="leave the cluster up")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
