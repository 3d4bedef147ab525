"""Cross-teacher agreement: do the teachers' parsed answers of an example agree? (pure)

Why here: the answers are store rows (``parsed_answer`` of each ``rationale`` row), and
two readers need the same rule: the student-data builder (``filter.cross_teacher``: drop
or down-weight a CoT few teachers agree with, ``student/tasks/build.py``) and the reports
(statistics per teacher pair, after ``generate`` and in a run's report). Teachers generate
independently, so agreement can only be computed where every teacher's rows of an
example are together: a whole store, or one slice of it (shard *k* of every teacher
holds the same examples).

Rules (answers compared after :func:`tinyllm_ray.evaluate.normalize_answer`; a CoT
without a parsed answer agrees with nobody):

* per CoT (:func:`agreeing_teachers`): the number of teachers with at least one CoT of
  that example whose answer equals this CoT's answer, its own teacher included;
* per teacher pair (:func:`agreement_stats`): over the examples both teachers answered,
  the share where their answers agree. A teacher's answer to an example is its most
  frequent parsed answer over its CoTs (ties: the earliest CoT), so several CoTs per
  teacher (``sampling.n``) count once;
* per teacher: over the examples it answered that have a majority answer (more
  teachers gave it than any other answer), the share where it gave the majority answer.
  With two teachers a majority exists only when they agree, so the pair rate is the figure.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

from tinyllm_ray.evaluate import normalize_answer

if TYPE_CHECKING:
    from tinyllm_ray.store.store import RationaleStore

__all__ = [
    "AGREEMENT_COLUMNS",
    "ExampleAnswers",
    "add_agreement",
    "agreeing_teachers",
    "agreement_stats",
    "answer_key",
    "answers_by_example",
    "format_agreement",
    "store_agreement",
]

#: Store columns the agreement needs (a small read even for a large store).
AGREEMENT_COLUMNS: tuple[str, ...] = ("teacher", "example_id", "sample_idx", "parsed_answer")

#: example id -> teacher -> [(sample_idx, normalised answer)] of its parsed CoTs
ExampleAnswers = dict[str, dict[str, list[tuple[int, str]]]]


def answer_key(parsed: Any) -> str | None:
    """The comparable form of a stored ``parsed_answer``; None when there is none."""
    if parsed is None or (isinstance(parsed, float) and math.isnan(parsed)):  # pandas hands nulls as NaN
        return None
    text = str(parsed).strip()
    return normalize_answer(text) if text else None


def answers_by_example(rows: Iterable[Mapping[str, Any]], teachers: Sequence[str],
                       max_cots: int | None = None) -> ExampleAnswers:
    """The parsed answers of ``teachers``' rationale rows, by example and teacher.

    Rows of other teachers, other kinds (a row without ``kind`` is a rationale row) and
    CoTs past ``max_cots`` (``sample_idx >= max_cots``, as the student leaves them out)
    are ignored.
    """
    wanted = set(teachers)
    out: ExampleAnswers = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("kind", "rationale") != "rationale" or r.get("teacher") not in wanted:
            continue
        sample = int(r.get("sample_idx") or 0)
        if max_cots is not None and sample >= max_cots:
            continue
        key = answer_key(r.get("parsed_answer"))
        if key is not None:
            out[str(r["example_id"])][str(r["teacher"])].append((sample, key))
    return out


def agreeing_teachers(answers: Mapping[str, Sequence[tuple[int, str]]], parsed: Any) -> int:
    """Teachers (of one example's ``answers``) with a CoT whose answer equals ``parsed``; 0 if unparsed."""
    key = answer_key(parsed)
    if key is None:
        return 0
    return sum(1 for cots in answers.values() if any(a == key for _, a in cots))


def _main_answer(cots: Sequence[tuple[int, str]]) -> str:
    counts = Counter(a for _, a in cots)
    best = max(counts.values())
    return min((s, a) for s, a in cots if counts[a] == best)[1]


def agreement_stats(answers: ExampleAnswers, teachers: Sequence[str]) -> dict[str, Any]:
    """Agreement per teacher pair and per teacher (see the module docstring); JSON-ready.

    ``{"teachers": [...], "examples": n answered by any teacher, "unanimous": n answered by
    every teacher with one answer, "pairs": {"a~b": {"both_answered", "agree", "rate"}},
    "majority": {t: {"answered", "with_majority", "agrees", "rate"}}}``; a rate is None
    when its denominator is 0.
    """
    names = list(teachers)
    pairs = {f"{a}~{b}": Counter() for a, b in combinations(names, 2)}
    majority = {t: Counter() for t in names}
    unanimous = 0
    for per_teacher in answers.values():
        main = {t: _main_answer(c) for t, c in per_teacher.items() if t in majority and c}
        for a, b in combinations(names, 2):
            if a in main and b in main:
                pairs[f"{a}~{b}"]["both_answered"] += 1
                pairs[f"{a}~{b}"]["agree"] += int(main[a] == main[b])
        votes = Counter(main.values()).most_common()
        top = votes[0][0] if votes and (len(votes) == 1 or votes[0][1] > votes[1][1]) else None
        unanimous += int(len(main) == len(names) and len(votes) == 1)
        for t, a in main.items():
            majority[t]["answered"] += 1
            if top is not None:
                majority[t]["with_majority"] += 1
                majority[t]["agrees"] += int(a == top)
    return {
        "teachers": names,
        "examples": sum(1 for per in answers.values() if any(t in majority and c for t, c in per.items())),
        "unanimous": unanimous,
        "pairs": {k: {"both_answered": c["both_answered"], "agree": c["agree"],
                      "rate": _rate(c["agree"], c["both_answered"])} for k, c in pairs.items()},
        "majority": {t: {"answered": c["answered"], "with_majority": c["with_majority"], "agrees": c["agrees"],
                         "rate": _rate(c["agrees"], c["with_majority"])} for t, c in majority.items()},
    }


def _rate(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.0f}%"


def format_agreement(stats: Mapping[str, Any] | None) -> list[str]:
    """Lines for a summary: one per teacher pair, one for the majority shares (nothing for < 2 teachers)."""
    if not stats or len(stats.get("teachers") or []) < 2:
        return []
    head = (f"cross-teacher agreement (parsed answers; {stats['examples']} examples answered, "
            f"{stats['unanimous']} by every teacher alike):")
    lines = [head]
    for pair, p in stats["pairs"].items():
        lines.append(f"  {pair.replace('~', ' ~ ')}: {_pct(p['rate'])} ({p['agree']}/{p['both_answered']} examples "
                     "both answered)")
    if len(stats["teachers"]) > 2:
        lines.append("  with the majority answer: " + ", ".join(
            f"{t} {_pct(m['rate'])} ({m['agrees']}/{m['with_majority']})"
            for t, m in stats["majority"].items()))
    return lines


def store_agreement(store: RationaleStore, teachers: Sequence[str], max_cots: int | None = None) -> dict[str, Any] | None:
    """:func:`agreement_stats` of a store's committed rationale rows; None with fewer than two teachers.

    Reads only :data:`AGREEMENT_COLUMNS`, one slice at a time: shard *k* of every teacher
    holds the same examples, so the counts of the slices add up to the store's, and memory
    holds one slice's answers, not one entry per example of the whole store.
    """
    if len(teachers) < 2:
        return None
    files = {t: store.shard_files(t, "rationale") for t in teachers}
    out: dict[str, Any] | None = None
    for k in sorted({s for f in files.values() for s in f}):
        rows = (r for t in teachers if k in files[t]
                for r in store.read_shard(t, "rationale", k, AGREEMENT_COLUMNS).to_pylist())
        part = agreement_stats(answers_by_example(rows, teachers, max_cots), teachers)
        out = part if out is None else add_agreement(out, part)
    return out if out is not None else agreement_stats({}, teachers)


def add_agreement(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`agreement_stats` of two disjoint sets of examples, from the two results (counts add, rates again)."""
    pairs = {k: {n: a["pairs"][k][n] + b["pairs"][k][n] for n in ("both_answered", "agree")} for k in a["pairs"]}
    majority = {t: {n: a["majority"][t][n] + b["majority"][t][n] for n in ("answered", "with_majority", "agrees")}
                for t in a["majority"]}
    return {
        "teachers": list(a["teachers"]),
        "examples": a["examples"] + b["examples"],
        "unanimous": a["unanimous"] + b["unanimous"],
        "pairs": {k: {**c, "rate": _rate(c["agree"], c["both_answered"])} for k, c in pairs.items()},
        "majority": {t: {**c, "rate": _rate(c["agrees"], c["with_majority"])} for t, c in majority.items()},
    }
