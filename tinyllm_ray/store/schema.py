"""The rationale store's record schema: one row per kept teacher output (docs/internals.md).

The only definition of the store's columns; writers (teachers) and readers (student,
reports, tests) import it from here.
"""

from __future__ import annotations

import pyarrow as pa

#: Record kinds, each its own partition (``kind=<kind>``) of a teacher's records.
KINDS: tuple[str, ...] = ("rationale", "self_eval")
#: Parquet footer key holding a shard's statistics (JSON of ``TeacherStats``).
STATS_METADATA_KEY = b"tinyllm_ray.shard_stats"

#: Arrow schema of every shard file (column order = RECORD_COLUMNS).
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
