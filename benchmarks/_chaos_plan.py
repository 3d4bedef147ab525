"""Pure parts of ``benchmarks/chaos.py``: planning a round's faults, comparing stores,
counting steps redone, tallying rounds and writing the markdown. No Ray, no processes,
so every rule here is unit-tested (``tests/unit/test_chaos_plan.py``).
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

#: Every fault kind a round injects, in the order they strike.
KINDS = ("teacher_kill", "teacher_error", "worker_kill", "driver_kill")
KEY = ("teacher", "kind", "example_id", "sample_idx", "eval_idx")
CONTENT = ("prompt_hash", "rationale", "verdict", "critique", "output_tokens", "record_key")


@dataclass(frozen=True)
class Fault:
    """One injected fault and where it strikes.

    ``batch``: the teacher batch (teacher faults; its first attempt fails, the retry works).
    ``step``: worker/driver kills strike once the trainer has reported this optimizer step;
    a driver kill with ``step`` 0 strikes ``delay_s`` after both teacher faults struck
    (during generation, or early in training when those were the last batches).
    """

    kind: str
    batch: int | None = None
    step: int | None = None
    delay_s: float = 0.0


@dataclass(frozen=True)
class RoundPlan:
    round: int
    faults: tuple[Fault, ...] = field(default_factory=tuple)

    def of(self, kind: str) -> Fault | None:
        return next((f for f in self.faults if f.kind == kind), None)

    def inject_env(self, teacher: str) -> str:
        """``TINYLLM_FAULT_INJECT`` for the round's teacher faults (``;``-separated, ``FaultSet``)."""
        action = {"teacher_kill": "kill", "teacher_error": "raise"}
        return ";".join(f"teacher={teacher},batch={f.batch},action={action[f.kind]},times=1"
                        for f in self.faults if f.kind in action)


def plan_round(seed: int, round_no: int, num_batches: int, max_steps: int) -> RoundPlan:
    """Round ``round_no``'s faults: one of each kind at seeded random points (same seed, same plan).

    Teacher faults hit two different batches; the worker kill strikes after a step in
    ``[1, max_steps - 2]`` and the driver kill later (so the resubmitted ``run`` resumes a
    training that already survived a worker failure), or, in one round out of four, right
    after the teacher faults (usually during generation).
    """
    rng = random.Random(seed * 1000 + round_no)
    b_kill, b_err = rng.sample(range(num_batches), 2) if num_batches > 1 else (0, 0)
    s_worker = rng.randint(1, max(1, max_steps - 2))
    during_generation = rng.random() < 0.25
    s_driver = 0 if during_generation else rng.randint(min(s_worker + 1, max_steps - 1), max_steps - 1)
    return RoundPlan(round_no, (Fault("teacher_kill", batch=b_kill), Fault("teacher_error", batch=b_err),
                                Fault("worker_kill", step=s_worker),
                                Fault("driver_kill", step=s_driver, delay_s=round(rng.uniform(0.0, 2.0), 2))))


def compare_stores(reference: list[dict[str, Any]], got: list[dict[str, Any]]) -> dict[str, int]:
    """Records of ``reference`` missing from ``got``, stored twice, or stored with other content."""
    counts = Counter(tuple(r[k] for k in KEY) for r in got)
    ref = {tuple(r[k] for k in KEY): tuple(r.get(k) for k in CONTENT) for r in reference}
    have = {tuple(r[k] for k in KEY): tuple(r.get(k) for k in CONTENT) for r in got}
    return {"records": len(ref), "lost": sum(1 for k in ref if k not in have),
            "duplicated": sum(n - 1 for n in counts.values() if n > 1),
            "extra": sum(1 for k in have if k not in ref),
            "different": sum(1 for k, v in ref.items() if k in have and have[k] != v)}


def training_attempts(reports: list[dict[str, Any]]) -> list[dict[str, int]]:
    """The training attempts in a metrics log's reports: where each started and the last step it reported.

    A new attempt begins where ``attempt_start_step`` changes or the step goes back (a
    worker failure restored by Ray Train, or a resubmitted ``run`` restoring its last
    checkpoint). Reports without a step (none today) are ignored.
    """
    attempts: list[dict[str, int]] = []
    for r in reports:
        if r.get("step") is None:
            continue
        step, start = int(r["step"]), int(r.get("attempt_start_step", 0))
        if not attempts or start != attempts[-1]["start"] or step <= attempts[-1]["last"]:
            attempts.append({"start": start, "last": step})
        else:
            attempts[-1]["last"] = step
    return attempts


def steps_redone(attempts: list[dict[str, int]]) -> int:
    """Optimizer steps run twice: each attempt's last reported step minus where the next one resumed.

    A lower bound: a step finished but not yet reported when its process died is not seen.
    """
    return sum(max(0, a["last"] - b["start"]) for a, b in itertools.pairwise(attempts))


def tally(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over rounds: faults injected / survived per kind, records lost/duplicated, steps redone."""
    by_kind = {k: {"planned": 0, "injected": 0, "survived": 0} for k in KINDS}
    for r in rounds:
        for f in r["faults"]:
            row = by_kind[f["kind"]]
            row["planned"] += 1
            row["injected"] += int(f["injected"])
            row["survived"] += int(f["injected"] and r["survived"])
    total = {k: sum(row[k] for row in by_kind.values()) for k in ("planned", "injected", "survived")}
    sums = {k: sum(int(r[k]) for r in rounds) for k in ("lost", "duplicated", "different", "extra",
                                                       "steps_redone", "reruns")}
    return {"by_kind": by_kind, **total, **sums, "rounds": len(rounds),
            "rounds_survived": sum(1 for r in rounds if r["survived"])}


def fault_record(fault: Fault, injected: bool, **extra: Any) -> dict[str, Any]:
    return {**asdict(fault), "injected": injected, **extra}


def _acc(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def to_markdown(result: dict[str, Any]) -> str:
    """The results page: per-kind table, totals, per-round table, command and commit."""
    s = result["summary"]
    lines = ["# Chaos campaign: faults injected into `tinyllm-ray run`", "",
             (f"Command: `{result['command']}` (git {result['git_commit']}); {s['rounds']} rounds, seed "
             f"{result['seed']}; {result['setting']}."), "",
             "| fault | planned | injected | survived |", "|---|---|---|---|"]
    for kind, row in s["by_kind"].items():
        lines.append(f"| {kind} | {row['planned']} | {row['injected']} | {row['survived']} |")
    lines.append(f"| **total** | {s['planned']} | {s['injected']} | {s['survived']} |")
    lines += ["", (f"Rounds survived {s['rounds_survived']}/{s['rounds']} (the resubmitted command exited 0 and "
              f"exported a student). Records lost **{s['lost']}**, duplicated **{s['duplicated']}**, different "
              f"{s['different']}, extra {s['extra']} (vs the unfaulted reference store). Steps redone "
              f"{s['steps_redone']} in total; reruns {s['reruns']}."),
              (f"Validation accuracy: reference {_acc(result['reference'].get('val_accuracy'))}; rounds "
              f"{', '.join(_acc(r.get('val_accuracy')) for r in result['results'])}. Reported, not judged "
              "(a resumed run sees the stream in another order)."), "",
              ("| round | injected | survived | reruns | lost | dup | different | resumed from (step) | "
              "steps redone | val acc | seconds |"), "|" + "---|" * 11]
    for r in result["results"]:
        kinds = ", ".join(f["kind"] + ("" if f["injected"] else " (not reached)") for f in r["faults"])
        starts = ", ".join(str(a["start"]) for a in r["attempts"][1:]) or "-"
        lines.append(f"| {r['round']} | {kinds} | {r['survived']} | {r['reruns']} | {r['lost']} | {r['duplicated']} "
                     f"| {r['different']} | {starts} | {r['steps_redone']} | {_acc(r.get('val_accuracy'))} "
                     f"| {r['seconds']} |")
    errors = [f"round {r['round']}: {r['error']}" for r in result["results"] if r.get("error")]
    if errors:
        lines += ["", "Harness errors (rounds not measured, counted as not survived): " + "; ".join(errors)]
    if not result.get("complete", True):
        lines[1:1] = ["", "**Partial results: the campaign had not finished when this was written.**"]
    return "\n".join(lines) + "\n"
