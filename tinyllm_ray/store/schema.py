"""The rationale store's record schema: one row per kept teacher output (docs/internals.md).

The only definition of the store's kinds and columns; writers (teachers) and readers
(student, reports, tests) import them from here.
"""

from __future__ import annotations

import pyarrow as pa

#: Record kinds a student reads, each its own partition (``kind=<kind>``) of a teacher's records.
KINDS: tuple[str, ...] = ("rationale", "self_eval")
#: Partition of generations that failed (one row each, with the reason): kept for retries,
#: never read by the student (it is not in :data:`KINDS`).
FAILED_KIND = "failed"
#: Every partition a teacher's records may have.
STORED_KINDS: tuple[str, ...] = (*KINDS, FAILED_KIND)
#: Parquet footer key holding a shard's statistics (JSON of ``TeacherStats``).
STATS_METADATA_KEY = b"tinyllm_ray.shard_stats"

#: Arrow schema of every ``rationale``/``self_eval`` shard file (column order = RECORD_COLUMNS).
RECORD_SCHEMA = pa.schema([
    ("kind", pa.string()),
    ("teacher", pa.string()),
    ("example_id", pa.string()),
    ("split", pa.string()),
    ("sample_idx", pa.int32()),
    ("eval_idx", pa.int32()),
    ("prompt_hash", pa.string()),
    ("question", pa.string()),
    ("context", pa.string()),
    ("choices", pa.list_(pa.string())),
    ("answer", pa.string()),
    ("rationale", pa.string()),
    ("parsed_answer", pa.string()),
    ("answer_match", pa.bool_()),
    ("verdict", pa.string()),
    ("critique", pa.string()),
    ("prompt_tokens", pa.int32()),
    ("output_tokens", pa.int32()),
    ("finish_reason", pa.string()),
    # provenance (store/keys.py): what produced the row, content-addressed
    ("record_key", pa.string()),
    ("model", pa.string()),
    ("model_revision", pa.string()),
    ("template_version", pa.string()),
])
RECORD_COLUMNS: tuple[str, ...] = tuple(RECORD_SCHEMA.names)

#: Schema of ``kind=failed`` files: the record columns plus why the generation failed.
#: ``kind`` is ``failed``; ``eval_idx`` -1 means the CoT itself failed, >= 0 that self-evaluation.
FAILED_SCHEMA = RECORD_SCHEMA.append(pa.field("error", pa.string()))
FAILED_COLUMNS: tuple[str, ...] = tuple(FAILED_SCHEMA.names)


def schema_for(kind: str) -> pa.Schema:
    """The Arrow schema of a kind's shard files."""
    if kind not in STORED_KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {STORED_KINDS}")
    return FAILED_SCHEMA if kind == FAILED_KIND else RECORD_SCHEMA
