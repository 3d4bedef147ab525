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
from tinyllm_ray.store.fs import is_uri, resolve_filesystem
from tinyllm_ray.store.keys import KeyContext, key_context_for, model_revision
from tinyllm_ray.store.layout import DEFAULT_SHARD_SIZE, resolve_shard_size
from tinyllm_ray.store.manifest import build_manifest
from tinyllm_ray.store.markers import GENERATION_FAILED
from tinyllm_ray.store.schema import (
    FAILED_KIND,
    FAILED_SCHEMA,
    KINDS,
    RECORD_COLUMNS,
    RECORD_SCHEMA,
    STORED_KINDS,
)
from tinyllm_ray.store.stats import DROP_REASONS, TeacherStats
from tinyllm_ray.store.store import RationaleStore

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "DROP_REASONS",
    "FAILED_KIND",
    "FAILED_SCHEMA",
    "GENERATION_FAILED",
    "KINDS",
    "RECORD_COLUMNS",
    "RECORD_SCHEMA",
    "STORED_KINDS",
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
