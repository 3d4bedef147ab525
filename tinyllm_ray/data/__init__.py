"""Dataset layer: every source becomes validated :class:`MCQRecord` lists per split.

Front door: ``load_splits(cfg.data) -> LoadedData``. Importing this package does not
import ``datasets`` (only reading a file does), so workers can use the schema cheaply.
"""

from __future__ import annotations

from tinyllm_ray.data.adapters import ADAPTERS, DatasetAdapter, get_adapter, normalise_number
from tinyllm_ray.data.arithmetic import ArithmeticProblem, difficulty_of, make_arithmetic_splits
from tinyllm_ray.data.loader import (
    DataLoadError,
    LoadedData,
    arithmetic_problems,
    can_stream,
    iter_split,
    load_splits,
    split_size,
    streams,
)
from tinyllm_ray.data.schema import (
    REASONS,
    MalformedRowError,
    MCQRecord,
    RowError,
    choice_letters,
    records_from_dicts,
    records_to_dicts,
)
from tinyllm_ray.data.splits import split_overlap
from tinyllm_ray.data.synthetic import make_synthetic_splits

__all__ = [
    "ADAPTERS",
    "REASONS",
    "ArithmeticProblem",
    "DataLoadError",
    "DatasetAdapter",
    "LoadedData",
    "MCQRecord",
    "MalformedRowError",
    "RowError",
    "arithmetic_problems",
    "can_stream",
    "choice_letters",
    "difficulty_of",
    "get_adapter",
    "iter_split",
    "load_splits",
    "make_arithmetic_splits",
    "make_synthetic_splits",
    "normalise_number",
    "records_from_dicts",
    "records_to_dicts",
    "split_overlap",
    "split_size",
    "streams",
]
