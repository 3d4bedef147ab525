"""Examples -> shards -> one prompt row per (teacher, example): the pipeline's input.

Why shards are fixed slices of the split (not whatever Ray Data happens to batch): a
shard is the unit of persistence and resume. Shard ``k`` of a teacher always holds
examples ``[k*S, (k+1)*S)`` of the generation split, so a rerun can tell from file
names alone which work is finished, whatever the batch size, replica count or order in
which Ray Data delivered results the first time.

Pure: no Ray, no vLLM.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from tinyllm_ray.config import PromptConfig, TeacherConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.prompts import (  # noqa: F401 (TEMPLATE_VERSION re-exported for the pipeline)
    TEMPLATE_VERSION,
    cot_prompt,
    prompt_hash,
    sample_icl_examples,
    teacher_forcing_prompt,
)
from tinyllm_ray.store.layout import num_shards  # noqa: F401 (the store owns the shard layout)

#: Columns of a prompt row (the input of :class:`~tinyllm_ray.teachers.engine.TeacherEngine`).
PROMPT_COLUMNS: tuple[str, ...] = (
    "example_id", "split", "shard", "prompt", "prompt_hash", "question", "choices", "answer", "context",
)


def aligned_batch_size(shard_size: int, batch_size: int) -> int:
    """The largest batch size <= ``batch_size`` that divides ``shard_size``.

    Why: Ray Data fills a batch from consecutive rows; if batches straddled shards, a
    resumed run (fewer shards pending) would batch the same prompts differently, and
    batch composition can change an engine's floating-point results. Batches that tile
    every shard are the same in every run.
    """
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size}, {batch_size}")
    for b in range(min(batch_size, shard_size), 0, -1):
        if shard_size % b == 0:
            return b
    return 1  # pragma: no cover - 1 always divides


def shard_slice(records: Sequence[MCQRecord], shard: int, shard_size: int) -> Sequence[MCQRecord]:
    """The examples of shard ``shard``."""
    return records[shard * shard_size:(shard + 1) * shard_size]


def examples_by_id(records: Sequence[MCQRecord], shard: int, shard_size: int) -> dict[str, MCQRecord]:
    """The examples of shard ``shard`` by id: what parsing a shard's outputs needs (never the whole split's)."""
    return {r.id: r for r in shard_slice(records, shard, shard_size)}


def icl_examples(record: MCQRecord, pool: Sequence[MCQRecord], prompts: PromptConfig) -> list[MCQRecord]:
    """The in-context examples shown with ``record``: ``prompts.icl_k`` of ``pool`` (none for ``icl_strategy: none``).

    Depend only on ``(prompts.seed, record.id)``, never include ``record`` itself; shared
    by generation and teacher evaluation so both show a question the same examples.
    """
    k = prompts.icl_k if prompts.icl_strategy == "random" else 0
    return sample_icl_examples(pool, k, prompts.seed, exclude_id=record.id)


def build_prompt(teacher: TeacherConfig, record: MCQRecord, pool: Sequence[MCQRecord], prompts: PromptConfig) -> str:
    """The exact text sent to ``teacher`` for ``record``.

    In-context examples come from ``pool`` (the TRAIN split, never evaluation data) and
    depend only on ``(prompts.seed, record.id)``, so every teacher sees the same
    examples for a question and a resumed run rebuilds byte-identical prompts.
    """
    examples = icl_examples(record, pool, prompts)
    if teacher.prompt_style == "teacher_forcing":
        return teacher_forcing_prompt(record, examples, prompts.cot_trigger)
    return cot_prompt(record, examples, prompts.cot_trigger)


def prompt_rows(
    teacher: TeacherConfig,
    records: Sequence[MCQRecord],
    shard: int,
    shard_size: int,
    pool: Sequence[MCQRecord],
    prompts: PromptConfig,
    split: str = "train",
) -> list[dict[str, Any]]:
    """One row per example of shard ``shard``: the prompt plus the example itself.

    The example travels with the prompt because the actor builds the self-evaluation
    prompts from it (question and options) without another round trip.
    """
    return [prompt_row(rec, build_prompt(teacher, rec, pool, prompts), split, shard)
            for rec in shard_slice(records, shard, shard_size)]


def prompt_row(record: MCQRecord, prompt: str, split: str, shard: int, *, with_answer: bool = True) -> dict[str, Any]:
    """One engine input row (:data:`PROMPT_COLUMNS`): ``prompt`` plus the example it asks about.

    The one builder of this row for generation and teacher evaluation. The example
    travels with the prompt because the actor builds self-evaluation prompts from it;
    ``with_answer=False`` withholds the gold answer (evaluation: it stays on the driver).
    """
    return {
        "example_id": record.id,
        "split": split,
        "shard": shard,
        "prompt": prompt,
        "prompt_hash": prompt_hash(prompt),
        "question": record.question,
        "choices": list(record.choices),
        "answer": record.answer if with_answer else "",
        "context": record.context,
    }


def request_seed(base: int | None, teacher: str, example_id: str, kind: str, sample_idx: int = 0) -> int | None:
    """A per-request sampling seed that depends only on what is being generated.

    Why per request: with one engine-wide seed, a question's samples would depend on
    which other prompts shared its batch, so replicas, batch sizes and resumed runs
    would all change the output. ``None`` (unseeded) stays ``None``.
    """
    if base is None:
        return None
    digest = hashlib.sha256(f"{base}\x00{teacher}\x00{example_id}\x00{kind}\x00{sample_idx}".encode()).digest()
    # vLLM adds the sample index to the seed for n > 1: leave headroom below 2**31.
    return int.from_bytes(digest[:4], "big") % (2**31 - 1024)
