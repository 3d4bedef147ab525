"""Content-addressed record keys: which model, prompt and sampling produced a stored row.

Why: a shard index says *where* a row sits, not *what* produced it. A record key is a
hash of everything that determines a teacher output — teacher name, model id, model
revision (a content hash of the model's files), prompt-template version, sampling
parameters (incl. the seed) and the exact prompt (its hash), plus which output of that
prompt it is (kind, sample, evaluation). Two rows with the same key are the same
generation; a row whose key changes was produced by something else. That lets later
runs retry, deduplicate or reuse rows across stores without trusting shard numbers.

Cost of :func:`model_revision`: it reads every byte of a local model folder once per
process (sha256 at roughly 0.5-1 GB/s per core): milliseconds for the tiny test models,
tens of seconds for a 7B checkpoint. Call it once per teacher on the driver (that is
what :func:`key_context_for` does) and hand the :class:`KeyContext` to the workers; the
result is cached in-process by (path, total size, newest mtime), so a rerun in the same
process or a second teacher on the same model pays nothing. A hub name cannot be hashed
without downloading it and gives ``hub:<name>`` (unpinned: the hub may change it).

Pure: no Ray, no vLLM.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from tinyllm_ray.config import ApiConfig, JobConfig, TeacherConfig

log = logging.getLogger(__name__)

#: Hex digits of a record key (128 bits of sha256: collisions are not a concern).
KEY_HEX_CHARS = 32
_CHUNK = 1 << 20
_revision_cache: dict[tuple[str, int, float], str] = {}


def canonical_json(obj: Any) -> str:
    """One spelling of a JSON value (sorted keys, no spaces): equal values hash equally."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _model_files(root: str) -> list[str]:
    """Every regular file of a model folder (weights, config, tokenizer), sorted, hidden ones skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in filenames if not f.startswith(".")]
    return sorted(out)


def model_revision(path: str) -> str:
    """Content hash of a local model (``sha256:<32 hex>``), or ``hub:<name>`` for a hub name.

    A local folder is hashed over its files' relative names, sizes and full contents;
    a path that does not exist on this machine (e.g. only on cluster workers) gives
    ``path:<absolute path>`` (unpinned, logged). See the module docstring for the cost.
    """
    local = os.path.expanduser(path.removeprefix("file://"))
    if not os.path.exists(local):
        if path.startswith(("/", "./", "../", "~", "file://")):
            log.warning("model %s is not on this machine: its revision is unpinned (path:...)", path)
            return f"path:{os.path.abspath(local)}"
        return f"hub:{path}"
    local = os.path.abspath(local)
    files = _model_files(local) if os.path.isdir(local) else [local]
    stats = [os.stat(f) for f in files]
    cache_key = (local, sum(s.st_size for s in stats), max((s.st_mtime for s in stats), default=0.0))
    cached = _revision_cache.get(cache_key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    base = local if os.path.isdir(local) else os.path.dirname(local)
    for f, st in zip(files, stats):
        h.update(f"{os.path.relpath(f, base)}\0{st.st_size}\0".encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    rev = f"sha256:{h.hexdigest()[:KEY_HEX_CHARS]}"
    _revision_cache[cache_key] = rev
    return rev


def api_revision(api: ApiConfig, model: str) -> str:
    """An API model's revision: ``api:<base_url>/<model>`` (unpinned: the provider may change it)."""
    return f"api:{api.base_url.rstrip('/')}/{model}"


@dataclass(frozen=True)
class KeyContext:
    """Everything but the prompt that determines one teacher's outputs (one per teacher and run).

    ``sampling`` is the CoT sampling as canonical JSON; ``self_eval_sampling`` the
    self-evaluation sampling (``None`` when self-evaluation is off). A rationale's key
    uses only the former, a self-evaluation's key both (it judges that CoT).
    """

    teacher: str
    model: str
    model_revision: str
    template_version: str
    sampling: str
    self_eval_sampling: str | None = None

    def record_key(self, prompt_hash: str, kind: str, sample_idx: int, eval_idx: int) -> str:
        """The key of one output: sha256 hex (32 chars) of this context and the output's identity."""
        parts: list[Any] = [self.teacher, self.model, self.model_revision, self.template_version,
                            self.sampling, kind, prompt_hash, int(sample_idx), int(eval_idx)]
        if kind == "self_eval":
            parts.append(self.self_eval_sampling)
        return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:KEY_HEX_CHARS]

    def context_id(self) -> str:
        """A stable short id (16 hex) of this context without any prompt: the record cache's folder.

        Every output whose key this context computes lives under the same id, so a cache
        lookup reads only the rows that could match (``store/record_cache.py``).
        """
        parts = [self.teacher, self.model, self.model_revision, self.template_version, self.sampling,
                 self.self_eval_sampling]
        return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:16]

    def columns(self) -> dict[str, str]:
        """The per-row provenance columns this context fills (besides ``record_key``)."""
        return {"model": self.model, "model_revision": self.model_revision,
                "template_version": self.template_version}


def key_context_for(teacher: TeacherConfig, model_path: str, cfg: JobConfig, template_version: str) -> KeyContext:
    """The :class:`KeyContext` of ``teacher`` in a run of ``cfg`` (call on the driver: hashes the model).

    ``model_path`` is the resolved model (a local folder, or the hub name itself);
    ``teacher.model`` (as configured, e.g. ``tiny:qwen2``) is the model id. An API teacher's
    revision is ``api:<base_url>/<model>`` (unpinned: the provider may change the model).
    """
    se = cfg.self_eval
    se_sampling = None
    if (se.enabled if teacher.self_eval is None else teacher.self_eval):
        se_sampling = canonical_json({"evals_per_cot": se.evals_per_cot, "max_tokens": se.max_tokens,
                                      "temperature": se.temperature, "verdicts": list(se.verdicts),
                                      "seed": teacher.sampling.seed})
    return KeyContext(
        teacher=teacher.name,
        model=teacher.model,
        model_revision=(api_revision(teacher.api, teacher.model) if teacher.api is not None
                        else model_revision(model_path)),
        template_version=str(template_version),
        sampling=canonical_json(teacher.sampling.model_dump(mode="json")),
        self_eval_sampling=se_sampling,
    )


__all__ = ["KEY_HEX_CHARS", "KeyContext", "api_revision", "canonical_json", "key_context_for", "model_revision"]
