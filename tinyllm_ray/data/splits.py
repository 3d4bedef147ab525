"""Cutting and checking splits: carving validation/test from train, re-splitting, overlap.

Why one module: where a row ends up decides what a score means. A carved test split that
shares a question with train, or the same file given as train and test, inflates every
number downstream without any error; so carving keeps rows with the same question
together, and every loaded dataset is checked for examples repeated across splits
(``data.split_overlap``: error, allow, or drop them from the earlier split).

Pure: no files, no ``datasets``; :func:`tinyllm_ray.data.loader.load_splits` calls these.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from tinyllm_ray.config import SPLITS
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import DataLoadError, SplitOverlapError

log = logging.getLogger(__name__)

#: Example id pairs listed per overlapping pair of splits.
OVERLAP_EXAMPLES = 3
#: ``LoadedData.skipped`` reason of rows removed by ``data.split_overlap: drop``.
REASON_SPLIT_OVERLAP = "split_overlap"
_PUNCT_RE = re.compile(r"[^\w\s]")

ExampleKey = tuple[str, tuple[str, ...], str]


def normalise_question(text: str) -> str:
    """Case, punctuation and spacing removed: ``"What is 2+2?"`` and ``"what is 2 + 2"`` match.

    Why this loose: a leak between splits rarely survives as a byte-identical string
    (re-exports change spacing and quotes), and a false match costs one look at two ids.
    """
    return " ".join(_PUNCT_RE.sub(" ", text.casefold()).split())


def example_key(record: MCQRecord) -> ExampleKey:
    """What makes two rows the same example: question, the *set* of choices, and context.

    Why not the question alone: real benchmarks reuse a stem with other options (ARC-Challenge
    has 6 train/test question pairs, none with the same choices): those are different items.
    """
    choices = tuple(sorted(normalise_question(c) for c in record.choices))
    return normalise_question(record.question), choices, normalise_question(record.context or "")


def _question_key(record: MCQRecord) -> tuple[str, str]:
    return normalise_question(record.question), normalise_question(record.context or "")


def split_overlap(splits: Mapping[str, Sequence[MCQRecord]]) -> list[dict[str, Any]]:
    """For each pair of splits: shared examples (:func:`example_key`) and shared questions, with ids.

    ``examples`` lists up to :data:`OVERLAP_EXAMPLES` id pairs of shared examples, or of
    shared questions when no example is shared.
    """
    ex = {s: _index(rs, example_key) for s, rs in splits.items()}
    qs = {s: _index(rs, _question_key) for s, rs in splits.items()}
    out = []
    for a, b in itertools.combinations([s for s in SPLITS if s in splits], 2):
        shared_ex = [k for k in ex[b] if k in ex[a]]  # in b's row order: deterministic
        shared_q = [k for k in qs[b] if k in qs[a]]
        idx, keys = (ex, shared_ex) if shared_ex else (qs, shared_q)
        out.append({
            "splits": [a, b],
            "shared_examples": len(shared_ex),
            "shared_questions": len(shared_q),
            "examples": [[idx[a][k][0], idx[b][k][0]] for k in keys[:OVERLAP_EXAMPLES]],
        })
    return out


def _index(records: Sequence[MCQRecord], key: Any) -> dict[Any, list[str]]:
    index: dict[Any, list[str]] = {}
    for r in records:
        index.setdefault(key(r), []).append(r.id)
    return index


def apply_overlap_policy(
    splits: dict[str, list[MCQRecord]], policy: str, sources: Mapping[str, str],
) -> tuple[dict[str, list[MCQRecord]], dict[str, int], list[dict[str, Any]]]:
    """Enforce ``data.split_overlap`` on the splits every stage will see.

    Returns (splits, rows dropped per split, the overlap report of the returned splits).
    ``report`` only reports
    (``tinyllm-ray data`` shows what the stages would refuse); ``error`` raises
    :class:`SplitOverlapError` naming the pairs, counts, example ids and both settings;
    ``allow`` logs a warning; ``drop`` removes a shared example from the earlier split
    (train before validation before test: the evaluation split keeps its rows, so its
    score stays comparable with published ones) and counts it as ``split_overlap``.
    """
    report = split_overlap(splits)
    shared = [o for o in report if o["shared_examples"]]
    if not shared or policy == "report":
        return splits, {}, report
    said = "; ".join(
        f"{a} ~ {b}: {o['shared_examples']} (e.g. {', '.join(f'{x} = {y}' for x, y in o['examples'])})"
        + (f", both read from {sources[a]}" if sources.get(a) and sources.get(a) == sources.get(b) else "")
        for o in shared for a, b in [o["splits"]]
    )
    if policy == "error":
        raise SplitOverlapError(
            f"examples (same question, choices and context) repeat across splits: {said}. A score on a split "
            "counts answers the student trained on; set data.split_overlap: drop to remove them from the earlier "
            "split (train first), or data.split_overlap: allow to keep them"
        )
    if policy == "allow":
        log.warning("data.split_overlap: allow: examples repeat across splits: %s", said)
        return splits, {}, report
    dropped: dict[str, int] = {}
    out = dict(splits)
    for split in [s for s in SPLITS if s in splits]:
        later = {example_key(r) for s in overlap_compared_splits(split, list(splits), policy) for r in splits[s]}
        kept = [r for r in splits[split] if example_key(r) not in later]
        if len(kept) < len(splits[split]):
            dropped[split] = len(splits[split]) - len(kept)
        out[split] = kept
    log.warning("data.split_overlap: drop: removed %s rows shared with a later split (%s)", dropped, said)
    return out, dropped, split_overlap(out)  # what the stages see: no shared example left


def overlap_compared_splits(split: str, present: Sequence[str], policy: str) -> list[str]:
    """The splits a row of ``split`` is checked against under ``policy``: under ``drop`` only
    the later ones (train before validation before test: the later split keeps the example),
    else every other split. The rule :func:`apply_overlap_policy` applies to whole splits."""
    if policy == "drop":
        return [s for s in SPLITS[SPLITS.index(split) + 1:] if s in present]
    return [s for s in SPLITS if s in present and s != split]


class StreamedOverlap:
    """``data.split_overlap`` applied to one split read record by record, against the other
    splits held whole: the streamed twin of :func:`apply_overlap_policy` (same comparison,
    same fate of a shared example), so a streamed split equals the loaded one.

    :meth:`verdict` says what to do with a record: ``"keep"``, ``"drop"`` (shared with a
    later split under ``drop``) or ``"error"`` (shared under ``error``: the caller raises
    ``load_splits``' own :class:`SplitOverlapError`, which names every pair).
    """

    def __init__(self, split: str, others: Mapping[str, Sequence[MCQRecord]], policy: str) -> None:
        self.split, self.policy = split, policy
        compared = overlap_compared_splits(split, list(others), policy) if policy != "report" else []
        self._keys = {example_key(r) for s in compared for r in others[s]}  # the other splits: small, held
        self.dropped = self.shared = 0

    def verdict(self, record: MCQRecord) -> str:
        if not self._keys or example_key(record) not in self._keys:
            return "keep"
        if self.policy == "error":
            return "error"
        if self.policy == "drop":
            self.dropped += 1
            return "drop"
        self.shared += 1
        return "keep"

    def warn(self) -> None:
        """The warnings :func:`apply_overlap_policy` gives for the same split (after the last record)."""
        if self.shared:
            log.warning("data.split_overlap: allow: %d %s rows repeat an example of another split",
                        self.shared, self.split)
        if self.dropped:
            log.warning("data.split_overlap: drop: removed %d %s rows shared with a later split",
                        self.dropped, self.split)


# --------------------------------------------------------------------------- carving


def carve(
    train: Sequence[MCQRecord], sizes: Mapping[str, int], seed: int
) -> tuple[list[MCQRecord], dict[str, list[MCQRecord]]]:
    """Cut ``sizes`` rows per split out of ``train`` (in ``sizes`` order); every part keeps row order.

    One seeded shuffle of positions; each split takes positions from the front of what is
    left, with every other row of the same question (:func:`normalise_question` and
    context) beside it, so carving never puts one question in two splits (a split may
    get a few rows more than asked). With no repeated question, validation alone is
    exactly the first ``size`` shuffled positions (as before test carving existed), and
    adding a test carve leaves that validation split unchanged.
    """
    n = len(train)
    want = sum(sizes.values())
    if want >= n:
        asked = ", ".join(f"{s} {k}" for s, k in sizes.items())
        raise DataLoadError(f"carving {asked} rows out of {n} train row(s) leaves none to train on; lower "
                            "data.validation_size/validation_fraction or data.test_size/test_fraction, "
                            "or provide those splits in data.files")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    members: dict[tuple[str, str], list[int]] = {}
    keys = [_question_key(r) for r in train]
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    taken: set[int] = set()
    parts: dict[str, list[MCQRecord]] = {}
    pos = 0
    for split, size in sizes.items():
        chosen: list[int] = []
        while len(chosen) < size and pos < n:
            i = order[pos]
            pos += 1
            if i not in taken:
                chosen.extend(members[keys[i]])
                taken.update(members[keys[i]])
        parts[split] = [train[i] for i in sorted(chosen)]
    kept = [r for i, r in enumerate(train) if i not in taken]
    if not kept:
        raise DataLoadError(f"every one of the {n} train rows shares a question with a carved row; "
                            "provide validation/test files in data.files")
    return kept, parts


def carve_size(n: int, fraction: float, size: int | None) -> int:
    """Rows to carve: ``size``, or ``round(n * fraction)`` kept within 1..n-1."""
    return size if size is not None else min(n - 1, max(1, round(n * fraction)))


def resplit(
    splits: Mapping[str, list[MCQRecord]], sources: Mapping[str, str], sizes: Mapping[str, int], seed: int
) -> tuple[dict[str, list[MCQRecord]], dict[str, str]]:
    """Pool every split (train, validation, test order), shuffle with ``seed``, cut ``sizes``.

    Why: some papers split all of a dataset's rows their own way (Mind's Mirror: a seeded
    800/200 train/test split of SVAMP's 1,000 problems, where the hub copy ships 700/300).
    New splits are cut in train, validation, test order from one seeded shuffle of the
    pooled positions and keep the pooled order inside each split; rows beyond the sizes
    are left out (logged). Asking for more rows than the pool holds is an error.
    """
    pool = [r for split in SPLITS for r in splits.get(split, [])]
    dupes = sorted(i for i, c in Counter(r.id for r in pool).items() if c > 1)
    if dupes:
        raise DataLoadError(f"data.resplit pools every split, but ids repeat across splits: {dupes[:5]}")
    want = sum(sizes.values())
    if want > len(pool):
        raise DataLoadError(
            f"data.resplit asks for {want} rows {dict(sizes)} but the dataset has {len(pool)} "
            f"({', '.join(f'{s} {len(r)}' for s, r in splits.items())}); lower data.resplit.sizes"
        )
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    out: dict[str, list[MCQRecord]] = {}
    start = 0
    for split in SPLITS:
        if split in sizes:
            chosen = sorted(order[start:start + sizes[split]])
            out[split] = [pool[i] for i in chosen]
            start += sizes[split]
    pooled = " + ".join(f"{s} ({sources.get(s, '?')})" for s in SPLITS if s in splits)
    new_sources = {s: f"{len(r)} rows of the pooled {pooled}, seed {seed}" for s, r in out.items()}
    log.info("data.resplit: pooled %d rows, cut %s with seed %d%s", len(pool), {s: len(r) for s, r in out.items()},
             seed, f"; {len(pool) - want} left out" if want < len(pool) else "")
    return out, new_sources
