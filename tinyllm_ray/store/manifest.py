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
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tinyllm_ray.config import JobConfig, TeacherConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import StoreMismatchError
from tinyllm_ray.store.fs import StoreCore
from tinyllm_ray.store.layout import StoreLayout

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class ManifestChanges:
    """What differs between a stored manifest and the wanted one (:func:`manifest_changes`).

    ``common``: differences that concern every teacher's shards (format version, dataset,
    prompts, self-evaluation, filter, shard size, examples); ``teachers``: a changed
    existing teacher -> what changed.
    """

    common: list[str] = field(default_factory=list)
    teachers: dict[str, str] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        return [*self.common, *self.teachers.values()]


def manifest_changes(have: Mapping[str, Any], wanted: Mapping[str, Any]) -> ManifestChanges:
    """The one place that decides what differs between two manifests (pure)."""
    out = ManifestChanges()
    if have.get("version") != wanted.get("version"):
        out.common.append(f"store format version {have.get('version')} != {wanted.get('version')}")
    if have.get("common_hash") != wanted.get("common_hash"):
        diffs = _diff_keys(have.get("common", {}), wanted.get("common", {}))
        out.common.append("dataset/prompts/self_eval/filter/shard settings differ"
                          + (f" ({', '.join(diffs)})" if diffs else ""))
    if have.get("data_hash") != wanted.get("data_hash"):
        out.common.append(
            f"the {wanted.get('split', 'train')} examples differ (data fingerprint "
            f"{have.get('data_hash')} != {wanted.get('data_hash')})"
        )
    for name, spec in (wanted.get("teachers") or {}).items():
        old = (have.get("teachers") or {}).get(name)
        if old is not None and old.get("hash") != spec.get("hash"):
            diffs = _diff_keys(old.get("config", {}), spec.get("config", {}))
            out.teachers[name] = f"teacher {name!r} changed" + (f" ({', '.join(diffs)})" if diffs else "")
    return out


def manifest_conflicts(have: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Human-readable differences that make a store unusable for ``wanted`` as it is (pure)."""
    return manifest_changes(have, wanted).problems


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

    def open_manifest(self, wanted: Mapping[str, Any], *, supersede: bool = False) -> dict[str, Any]:
        """Create the manifest, or check the existing one against ``wanted`` and merge.

        The common part (dataset, prompts, self-evaluation, filter, shard size) must be
        identical; a teacher already in the store must have the same generation config;
        a new teacher is added. Anything else raises :class:`StoreMismatchError` (mixing
        records of two configs in one store would silently corrupt training data), unless
        ``supersede`` (the record cache is on: regenerating is cheap): then the shards that
        no longer match — a changed teacher's, or every teacher's when the common part
        changed — are moved to ``<store>/superseded/<UTC time>/`` (one log line per teacher)
        and the manifest becomes ``wanted``'s; the caller regenerates them.
        """
        have = self.read_manifest()
        if have is None:
            self.write_manifest(wanted)
            return dict(wanted)
        changes = manifest_changes(have, wanted)
        if changes.problems and not supersede:
            raise StoreMismatchError(
                f"rationale store {self.uri} was written with a different generation setup: "
                + "; ".join(changes.problems)
                + ". Rerun with the original config, turn the record cache on (runtime.record_cache: true: "
                "only what changed is regenerated, the old shards are moved aside), write to a new store "
                "(change runtime.run_name or runtime.store_uri), or delete the store to regenerate"
            )
        if changes.problems:
            have = self._supersede(have, wanted, changes)
        merged = dict(have)
        merged["teachers"] = {**have.get("teachers", {}), **wanted.get("teachers", {})}
        if merged != have:
            self.write_manifest(merged)
        return merged

    def _supersede(self, have: Mapping[str, Any], wanted: Mapping[str, Any],
                   changes: ManifestChanges) -> dict[str, Any]:
        """Move the shards ``changes`` invalidate aside (never deleted); return what stays of ``have``.

        Shards move before the manifest is rewritten: a run killed in between sees the old
        manifest, finds nothing more to move and finishes the job.
        """
        stamp = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"  # unique per run
        dest = self.layout.join("superseded", stamp)
        folders = (StoreLayout.teacher_of(i.base_name) for i in self._list(self.layout.records_dir))
        stored = {t for t in folders if t} | set(have.get("teachers") or {})
        reason = "; ".join(changes.common)
        moving = {t: reason for t in sorted(stored)} if changes.common else dict(changes.teachers)
        for teacher, why in moving.items():
            src = self.layout.join("records", f"teacher={teacher}")
            moved = self._move_tree(src, f"{dest}/records/teacher={teacher}")
            if self.has_file(self.stats_path(teacher)):
                self._move_tree(self.stats_path(teacher), f"{dest}/stats/{teacher}.json")
            log.warning("teacher %s: %s: its %d stored file(s) were moved to %s and are generated again "
                        "(from the record cache where possible)", teacher, why, moved, dest)
        if changes.common:
            self._write_json(f"{dest}/manifest.json", dict(have))
            return {**wanted, "teachers": {}}
        return {**have, "teachers": {k: v for k, v in (have.get("teachers") or {}).items() if k not in moving}}

    def _move_tree(self, src: str, dst: str) -> int:
        """Move a file or folder; return how many files moved (0 if ``src`` does not exist)."""
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(src)
        if info.type == pafs.FileType.NotFound:
            return 0
        files = ([src] if info.type == pafs.FileType.File else
                 [i.path for i in self.fs.get_file_info(pafs.FileSelector(src, recursive=True)) if i.is_file])
        self.fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
        if not self.object_store:
            self.fs.move(src, dst)  # one rename
            return len(files)
        for f in files:  # object stores cannot rename a prefix: copy, then delete
            target = dst if f == src else f"{dst}/{f[len(src):].lstrip('/')}"
            self.fs.copy_file(f, target)
            self.fs.delete_file(f)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(src)
        return len(files)
