"""What every config section shares: strictness, split names and the name rule.

Why a strict base: a typo (``train.zero_stag``) or a stale key must fail before any Ray
worker or vLLM engine starts, and a value set after loading (``cfg.train.lr = ...``) must
be checked like one read from YAML.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")

#: Teacher and run names become folder names and metric labels: letters first, no spaces.
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class StrictModel(BaseModel):
    """Base for every section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
