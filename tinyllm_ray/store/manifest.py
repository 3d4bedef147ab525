"""What a rationale store was generated from: config hashes and a data fingerprint.

Why: resume works by skipping shard files that exist. That is only correct if the
existing shards were produced from the same examples, prompts, sampling and filters.
The manifest records exactly those, and ``RationaleStore.open_manifest`` refuses a rerun
whose setup differs (naming the differing fields) instead of silently mixing records.

Resource settings (replicas, CPUs, batch size, memory, tensor-parallel degree) are left
out of the hashes on purpose: a job may be resumed on a bigger or smaller cluster.
A new teacher may be added to an existing store; changing an existing one may not.
Pure: no Ray, no vLLM.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from tinyllm_ray.config import JobConfig, TeacherConfig
from tinyllm_ray.data.schema import MCQRecord

MANIFEST_VERSION = 1

#: Teacher fields that change where/how fast it runs, never what it generates.
RESOURCE_FIELDS: frozenset[str] = frozenset(
    {"replicas", "num_cpus", "batch_size", "gpu_memory_utilization", "kv_cache_space_gib", "tensor_parallel_size"}
)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def teacher_generation_config(teacher: TeacherConfig) -> dict[str, Any]:
    """The part of a teacher's config that determines its outputs."""
    d = teacher.model_dump(mode="json")
    return {k: v for k, v in d.items() if k not in RESOURCE_FIELDS}


def data_fingerprint(records: Sequence[MCQRecord]) -> str:
    """Hash of the ordered examples: shard k means the same questions in every run."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.to_dict(), sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def build_manifest(cfg: JobConfig, split: str, records: Sequence[MCQRecord], shard_size: int) -> dict[str, Any]:
    """The manifest a run with ``cfg`` would write (compared with the stored one on rerun)."""
    common = {
        "data": cfg.data.model_dump(mode="json"),
        "prompts": cfg.prompts.model_dump(mode="json"),
        "self_eval": cfg.self_eval.model_dump(mode="json"),
        "filter": cfg.filter.model_dump(mode="json"),
        "split": split,
        "shard_size": shard_size,
    }
    teachers = {}
    for t in cfg.teachers:
        gen = teacher_generation_config(t)
        teachers[t.name] = {"hash": _hash(gen), "config": gen}
    return {
        "version": MANIFEST_VERSION,
        "split": split,
        "num_examples": len(records),
        "shard_size": shard_size,
        "data_hash": data_fingerprint(records),
        "common_hash": _hash(common),
        "common": common,
        "teachers": teachers,
    }
