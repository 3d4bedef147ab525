"""What every config section shares: strictness, split names and the name rule.

Why a strict base: a typo (``train.zero_stag``) or a stale key must fail before any Ray
worker or vLLM engine starts, and a value set after loading (``cfg.train.lr = ...``) must
be checked like one read from YAML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")

#: Teacher and run names become folder names and metric labels: letters first, no spaces.
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


_M = TypeVar("_M", bound=Mapping[str, float])


def each_at_least(values: _M, minimum: float, what: str) -> _M:
    """Check every value of a per-name mapping (``limit`` per split, ``alpha`` per teacher).

    Why a helper: ``Field(ge=...)`` cannot reach inside a dict; the message names the key
    (``alpha for teacher 'llama' must be >= 0, got -1``) so the user knows which entry.
    """
    for key, value in values.items():
        if value < minimum:
            raise ValueError(f"{what} {key!r} must be >= {minimum}, got {value}")
    return values


class StrictModel(BaseModel):
    """Base for every section: unknown keys are errors, assignments are re-validated.

    ``allow_inf_nan=False``: a NaN passes every ``ge``/``le`` bound check (all comparisons
    with NaN are false), so a NaN loss weight or learning rate would otherwise be accepted
    silently (found by tests/unit/test_fuzz_inputs.py).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(),
                              allow_inf_nan=False)
