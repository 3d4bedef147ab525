"""The rationale store: the only code that knows its layout, schema, manifest, statistics,
markers and shard readiness, for a local path or any pyarrow/fsspec URI.

Teachers write through it, the student and the reports read through it::

    from tinyllm_ray.store import RationaleStore
    store = RationaleStore(uri)
    store.shard_files("llama")            # committed shards {index: path}
    store.read_table("rationale")         # every committed record

Importing this package imports neither Ray nor vLLM.
"""

from tinyllm_ray.errors import StoreMismatchError
from tinyllm_ray.store.keys import KeyContext, key_context_for, model_revision
from tinyllm_ray.store.manifest import build_manifest
from tinyllm_ray.store.schema import KINDS, RECORD_COLUMNS, RECORD_SCHEMA
from tinyllm_ray.store.stats import DROP_REASONS, TeacherStats
from tinyllm_ray.store.store import (
    DEFAULT_SHARD_SIZE,
    GENERATION_FAILED,
    RationaleStore,
    is_uri,
    resolve_filesystem,
    resolve_shard_size,
)

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "DROP_REASONS",
    "GENERATION_FAILED",
    "KINDS",
    "RECORD_COLUMNS",
    "RECORD_SCHEMA",
    "KeyContext",
    "RationaleStore",
    "StoreMismatchError",
    "TeacherStats",
    "build_manifest",
    "is_uri",
    "key_context_for",
    "model_revision",
    "resolve_filesystem",
    "resolve_shard_size",
]
