"""Per-teacher generation statistics: what was asked, produced, kept and dropped, and why.

Why statistics are first-class: the original TinyLLM code lost one teacher's rationales
for a whole dataset without anyone noticing. Here every teacher output is either kept or
counted under exactly one drop reason, ``outputs == kept + sum(dropped)`` is checked
whenever stats are combined, and a few dropped texts are kept as examples so a zero
"kept" column can be diagnosed from the stats file alone. A generation that failed
produced no output: it is counted under ``failed`` (not in ``outputs``) and stored as a
row of the ``failed`` kind, so a later run can retry it. A shard's statistics also list its
failed CoTs (``failed_cots``: example id and sample index): written in the same atomic file
as the shard's commit, they are what a rerun retries, so a run killed while rewriting a
retried shard cannot lose or double-count a CoT. Totals do not carry the list.

Shard statistics are stored inside each committed shard file (see ``store.py``), so the
totals in ``stats/<teacher>.json`` are always recomputed from what is actually in the
store, also after a resumed run. Pure: no Ray, no vLLM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tinyllm_ray.errors import InternalError
from tinyllm_ray.store.schema import KINDS

DROP_REASONS: tuple[str, ...] = ("empty", "unparsable", "answer_mismatch", "verdict_wrong")
MAX_DROP_EXAMPLES = 3
#: Share of a teacher's rationale outputs above which a health figure becomes a warning.
HEALTH_WARN_SHARE = 0.5
_EXAMPLE_CHARS = 200


class StatsError(InternalError, ValueError):
    """Statistics that do not add up (a bug, never a data problem)."""


def _zero_drops() -> dict[str, int]:
    return {r: 0 for r in DROP_REASONS}


@dataclass
class KindStats:
    """Counts for one record kind (``rationale`` or ``self_eval``) of one teacher."""

    prompts: int = 0
    outputs: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=_zero_drops)
    prompt_tokens: int = 0
    output_tokens: int = 0
    truncated: int = 0  # finish_reason == "length"
    failed: int = 0  # generations (one per example and sample[, eval]) that produced no output
    degenerate: int = 0  # outputs with no reasoning in them (``prompts.is_degenerate``), kept or not
    answer_parsed: int = 0  # rationale outputs whose final answer could be read
    answer_matches: int = 0  # ... and equals the gold answer (teacher forcing: agreement with gold)
    # API teachers only (0 for vLLM teachers): requests sent (each counted once, however many
    # samples it returned), retries among them, their cost (api.*_cost_per_1k), and why
    # generations failed (``failed`` by the text before the first ':' of their error)
    requests: int = 0
    retries: int = 0
    cost: float = 0.0
    failed_reasons: dict[str, int] = field(default_factory=dict)

    def merge(self, other: KindStats) -> None:
        self.prompts += other.prompts
        self.outputs += other.outputs
        self.kept += other.kept
        for r, n in other.dropped.items():
            self.dropped[r] = self.dropped.get(r, 0) + n
        self.prompt_tokens += other.prompt_tokens
        self.output_tokens += other.output_tokens
        self.truncated += other.truncated
        self.failed += other.failed
        self.degenerate += other.degenerate
        self.answer_parsed += other.answer_parsed
        self.answer_matches += other.answer_matches
        self.requests += other.requests
        self.retries += other.retries
        self.cost += other.cost
        for r, n in other.failed_reasons.items():
            self.failed_reasons[r] = self.failed_reasons.get(r, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts, "outputs": self.outputs, "kept": self.kept,
            "dropped": dict(self.dropped), "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens, "truncated": self.truncated, "failed": self.failed,
            "degenerate": self.degenerate, "answer_parsed": self.answer_parsed,
            "answer_matches": self.answer_matches, "requests": self.requests, "retries": self.retries,
            "cost": round(self.cost, 9), "failed_reasons": dict(self.failed_reasons),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KindStats:
        return cls(
            prompts=int(d.get("prompts", 0)), outputs=int(d.get("outputs", 0)), kept=int(d.get("kept", 0)),
            dropped={**_zero_drops(), **{k: int(v) for k, v in d.get("dropped", {}).items()}},
            prompt_tokens=int(d.get("prompt_tokens", 0)), output_tokens=int(d.get("output_tokens", 0)),
            truncated=int(d.get("truncated", 0)), failed=int(d.get("failed", 0)),
            degenerate=int(d.get("degenerate", 0)), answer_parsed=int(d.get("answer_parsed", 0)),
            answer_matches=int(d.get("answer_matches", 0)), requests=int(d.get("requests", 0)),
            retries=int(d.get("retries", 0)), cost=float(d.get("cost", 0.0)),
            failed_reasons={k: int(v) for k, v in (d.get("failed_reasons") or {}).items()},
        )


@dataclass
class TeacherStats:
    """Statistics of one teacher over some shards (one shard, one run, or the whole store).

    ``generation_seconds`` is engine-busy time summed over replicas (each batch's
    ``LLM.generate`` wall time), so ``tokens_per_s`` is the throughput of one engine;
    the pipeline's wall-clock rate is in the run report.
    """

    teacher: str
    kinds: dict[str, KindStats] = field(default_factory=lambda: {k: KindStats() for k in KINDS})
    generation_seconds: float = 0.0
    shards: int = 0
    drop_examples: dict[str, list[str]] = field(default_factory=dict)
    failed_cots: list[tuple[str, int]] = field(default_factory=list)  # one shard's only (see module doc)

    # -- totals over kinds (the contract in docs/internals.md)
    @property
    def prompts(self) -> int:
        return sum(k.prompts for k in self.kinds.values())

    @property
    def outputs(self) -> int:
        return sum(k.outputs for k in self.kinds.values())

    @property
    def kept(self) -> int:
        return sum(k.kept for k in self.kinds.values())

    @property
    def dropped(self) -> dict[str, int]:
        out = _zero_drops()
        for k in self.kinds.values():
            for r, n in k.dropped.items():
                out[r] = out.get(r, 0) + n
        return out

    @property
    def failed(self) -> int:
        """Generations that failed (each is a row of the ``failed`` kind in the store)."""
        return sum(k.failed for k in self.kinds.values())

    @property
    def output_tokens(self) -> int:
        return sum(k.output_tokens for k in self.kinds.values())

    @property
    def prompt_tokens(self) -> int:
        return sum(k.prompt_tokens for k in self.kinds.values())

    @property
    def api(self) -> dict[str, Any] | None:
        """Requests, retries, cost and failure reasons of an API teacher; ``None`` for a vLLM teacher."""
        requests = sum(k.requests for k in self.kinds.values())
        if requests == 0:
            return None
        reasons: dict[str, int] = {}
        for k in self.kinds.values():
            for r, n in k.failed_reasons.items():
                reasons[r] = reasons.get(r, 0) + n
        return {"requests": requests, "retries": sum(k.retries for k in self.kinds.values()),
                "cost": round(sum(k.cost for k in self.kinds.values()), 6), "failed_reasons": reasons,
                "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens}

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.generation_seconds if self.generation_seconds > 0 else 0.0

    def health(self) -> dict[str, float | None]:
        """Shares of this teacher's rationale outputs that signal a broken teacher.

        ``cut_at_max_tokens``: stopped by ``max_tokens`` (finish reason ``length``);
        ``degenerate``: empty or one repeated character/token; ``gold_agreement``: parsed
        final answer equal to the gold answer, over all rationale outputs (an unparsable
        output disagrees). ``None`` when the teacher produced no rationale output.
        """
        k = self.kinds.get("rationale") or KindStats()
        if k.outputs == 0:
            return {"cut_at_max_tokens": None, "degenerate": None, "gold_agreement": None}
        return {"cut_at_max_tokens": k.truncated / k.outputs, "degenerate": k.degenerate / k.outputs,
                "gold_agreement": k.answer_matches / k.outputs}

    def health_warnings(self) -> list[str]:
        """One line per alarming health figure (most outputs degenerate or cut at max_tokens)."""
        h = self.health()
        out = []
        if (h["degenerate"] or 0) > HEALTH_WARN_SHARE:
            out.append(f"teacher {self.teacher!r}: {h['degenerate']:.0%} of its rationales are empty or one "
                       "repeated character/token; it is not reasoning (check the model, its prompt and sampling)")
        if (h["cut_at_max_tokens"] or 0) > HEALTH_WARN_SHARE:
            out.append(f"teacher {self.teacher!r}: {h['cut_at_max_tokens']:.0%} of its rationales hit "
                       "max_tokens; raise teachers.<i>.sampling.max_tokens or check the stop sequences")
        return out

    def kind(self, name: str) -> KindStats:
        return self.kinds.setdefault(name, KindStats())

    def note_drop(self, reason: str, text: str) -> None:
        """Keep the first few dropped texts per reason, shortened, for diagnosis."""
        ex = self.drop_examples.setdefault(reason, [])
        if len(ex) < MAX_DROP_EXAMPLES:
            ex.append(text[:_EXAMPLE_CHARS])

    def check(self) -> None:
        """Raise :class:`StatsError` unless every output is kept or dropped exactly once."""
        for name, k in self.kinds.items():
            if k.outputs != k.kept + sum(k.dropped.values()):
                raise StatsError(
                    f"teacher {self.teacher!r} {name}: outputs {k.outputs} != kept {k.kept} + dropped "
                    f"{sum(k.dropped.values())} {k.dropped}"
                )
            unknown = set(k.dropped) - set(DROP_REASONS)
            if unknown:
                raise StatsError(f"teacher {self.teacher!r}: unknown drop reasons {sorted(unknown)}")

    def merge(self, other: TeacherStats) -> TeacherStats:
        """Add ``other`` into self (same teacher) and return self."""
        if other.teacher != self.teacher:
            raise StatsError(f"cannot merge stats of {other.teacher!r} into {self.teacher!r}")
        for name, k in other.kinds.items():
            self.kind(name).merge(k)
        self.generation_seconds += other.generation_seconds
        self.shards += other.shards
        for reason, texts in other.drop_examples.items():
            for t in texts:
                self.note_drop(reason, t)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The ``stats/<teacher>.json`` document (contract keys first, details after)."""
        return {
            "teacher": self.teacher,
            "prompts": self.prompts,
            "outputs": self.outputs,
            "kept": self.kept,
            "dropped": self.dropped,
            "failed": self.failed,
            "output_tokens": self.output_tokens,
            "generation_seconds": round(self.generation_seconds, 6),
            "tokens_per_s": round(self.tokens_per_s, 3),
            "prompt_tokens": self.prompt_tokens,
            "shards": self.shards,
            "health": {k: (None if v is None else round(v, 4)) for k, v in self.health().items()},
            **({"api": self.api} if self.api is not None else {}),
            "by_kind": {name: k.to_dict() for name, k in self.kinds.items()},
            "drop_examples": {r: list(t) for r, t in self.drop_examples.items()},
            **({"failed_cots": [[e, s] for e, s in self.failed_cots]} if self.failed_cots else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TeacherStats:
        by_kind = d.get("by_kind") or {}
        kinds = {k: KindStats() for k in KINDS}
        kinds.update({name: KindStats.from_dict(v) for name, v in by_kind.items()})
        return cls(
            teacher=str(d["teacher"]),
            kinds=kinds,
            generation_seconds=float(d.get("generation_seconds", 0.0)),
            shards=int(d.get("shards", 0)),
            drop_examples={r: list(t) for r, t in (d.get("drop_examples") or {}).items()},
            failed_cots=[(str(e), int(s)) for e, s in d.get("failed_cots") or ()],
        )


def total(teacher: str, parts: Iterable[TeacherStats]) -> TeacherStats:
    """Sum of shard statistics, checked."""
    out = TeacherStats(teacher=teacher)
    for p in parts:
        out.merge(p)
    out.check()
    return out


def format_table(stats: Iterable[TeacherStats]) -> str:
    """A fixed-width table for the end of ``tinyllm-ray generate``."""
    header = ("teacher", "prompts", "outputs", "kept") + DROP_REASONS + (
        "failed", "out_tokens", "tok/s", "cut%", "degen%", "gold%")
    rows = [header]
    for s in stats:
        d = s.dropped
        h = s.health()
        rows.append((s.teacher, str(s.prompts), str(s.outputs), str(s.kept), *(str(d[r]) for r in DROP_REASONS),
                     str(s.failed), str(s.output_tokens), f"{s.tokens_per_s:.0f}",
                     *(_pct(h[k]) for k in ("cut_at_max_tokens", "degenerate", "gold_agreement"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}"
