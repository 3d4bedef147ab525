"""What a rationale store was generated from: config hashes and a data fingerprint.

Why: resume works by skipping shard files that exist. That is only correct if the
existing shards were produced from the same examples, prompts, sampling and filters.
The manifest records exactly those, and ``RationaleStore.open_manifest`` refuses a rerun
whose setup differs (naming the differing fields) instead of silently mixing records.

Resource settings (:data:`RESOURCE_FIELDS`: replicas, CPUs, extra Ray resources, batch
size, memory, tensor-parallel degree, fault budgets) are left out of the hashes on purpose: a job may be
resumed on a bigger or smaller cluster, or with teachers pinned to other nodes.
A new teacher may be added to an existing store; changing an existing one may not.
No Ray, no vLLM.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tinyllm_ray.config import JobConfig, TeacherConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import StoreMismatchError
from tinyllm_ray.store.fs import StoreCore

#: Store format version: 2 added the provenance columns (record_key, model, model_revision,
#: template_version) and the ``failed`` kind. A store of another version is refused.
MANIFEST_VERSION = 2

#: Teacher fields that change where/how fast it runs, never what it generates.
RESOURCE_FIELDS: frozenset[str] = frozenset({
    "replicas", "num_cpus", "resources", "batch_size", "gpu_memory_utilization", "kv_cache_space_gib",
    "tensor_parallel_size", "max_restarts", "max_batch_retries",
})

#: ``api`` fields that change how fast or how patiently an API teacher is asked, or what it
#: costs, never what it generates (the key's variable name included).
API_RESOURCE_FIELDS: frozenset[str] = frozenset({
    "api_key_env", "actor_cpus", "concurrency", "requests_per_minute", "max_retries", "backoff_s",
    "max_backoff_s", "timeout_s", "prompt_cost_per_1k", "output_cost_per_1k",
})


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def teacher_generation_config(teacher: TeacherConfig) -> dict[str, Any]:
    """The part of a teacher's config that determines its outputs."""
    d = teacher.model_dump(mode="json")
    if d.get("self_eval") is None:  # unset per-teacher switch: stores written before it existed still match
        d.pop("self_eval", None)
    if d.get("bootstrap") is None:  # stores written before the field existed match teachers without it
        d.pop("bootstrap", None)
    if d.get("api") is None:  # likewise for vLLM teachers and the api section
        d.pop("api", None)
    else:
        d["api"] = {k: v for k, v in d["api"].items() if k not in API_RESOURCE_FIELDS}
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
        # cross-teacher agreement is applied when the student reads the store, never to what is stored
        "filter": cfg.filter.model_dump(mode="json", exclude={"cross_teacher"}),
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


def manifest_conflicts(have: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Human-readable differences that make a store unusable for ``wanted`` (pure)."""
    problems = []
    if have.get("version") != wanted.get("version"):
        problems.append(f"store format version {have.get('version')} != {wanted.get('version')}")
    if have.get("common_hash") != wanted.get("common_hash"):
        diffs = _diff_keys(have.get("common", {}), wanted.get("common", {}))
        problems.append("dataset/prompts/self_eval/filter/shard settings differ" + (f" ({', '.join(diffs)})" if diffs else ""))
    if have.get("data_hash") != wanted.get("data_hash"):
        problems.append(
            f"the {wanted.get('split', 'train')} examples differ (data fingerprint "
            f"{have.get('data_hash')} != {wanted.get('data_hash')})"
        )
    for name, spec in (wanted.get("teachers") or {}).items():
        old = (have.get("teachers") or {}).get(name)
        if old is not None and old.get("hash") != spec.get("hash"):
            diffs = _diff_keys(old.get("config", {}), spec.get("config", {}))
            problems.append(f"teacher {name!r} changed" + (f" ({', '.join(diffs)})" if diffs else ""))
    return problems


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".")] if a != b else []


class StoreManifest(StoreCore):
    """The manifest file (part of :class:`~tinyllm_ray.store.store.RationaleStore`)."""

    def exists(self) -> bool:
        """Whether a generation has opened this store (its manifest exists)."""
        return self.has_file(self.manifest_path)

    def read_manifest(self) -> dict[str, Any] | None:
        return self._read_json(self.manifest_path) if self.exists() else None

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        self._write_json(self.manifest_path, dict(manifest))

    def open_manifest(self, wanted: Mapping[str, Any]) -> dict[str, Any]:
        """Create the manifest, or check the existing one against ``wanted`` and merge.

        The common part (dataset, prompts, self-evaluation, filter, shard size) must be
        identical; a teacher already in the store must have the same generation config;
        a new teacher is added. Anything else raises :class:`StoreMismatchError`: mixing
        records of two configs in one store would silently corrupt training data.
        """
        have = self.read_manifest()
        if have is None:
            self.write_manifest(wanted)
            return dict(wanted)
        problems = manifest_conflicts(have, wanted)
        if problems:
            raise StoreMismatchError(
                f"rationale store {self.uri} was written with a different generation setup: "
                + "; ".join(problems)
                + ". Rerun with the original config, write to a new store (change runtime.run_name or "
                "runtime.store_uri), or delete the store to regenerate"
            )
        merged = dict(have)
        merged["teachers"] = {**have.get("teachers", {}), **wanted.get("teachers", {})}
        if merged != have:
            self.write_manifest(merged)
        return merged
