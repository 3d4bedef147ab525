"""The registry: one :class:`DatasetAdapter` per ``data.name``, plus the generic column map.

Dataset names are defined once, as ``tinyllm_ray.config.DatasetName`` (what a YAML may
say); this registry maps each of them to its adapter and checks, at import, that it
covers exactly those names (``synthetic`` and ``generic`` are built by the loader).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tinyllm_ray.config.dataset import BUILTIN_DATASETS, DATASET_NAMES
from tinyllm_ray.data.adapters.fields import AdapterFn, Canonical
from tinyllm_ray.data.adapters.files import adapt_tinyllm, make_generic_adapter
from tinyllm_ray.data.adapters.fixed_answers import adapt_anli, adapt_bioasq, adapt_pubmedqa, adapt_svamp
from tinyllm_ray.data.adapters.lettered import (
    adapt_arc,
    adapt_commonsense_qa,
    adapt_obqa,
    adapt_piqa,
    adapt_riddlesense,
)
from tinyllm_ray.errors import InternalError

if TYPE_CHECKING:
    from tinyllm_ray.config import ColumnMap


@dataclass(frozen=True)
class DatasetAdapter:
    """A named adapter plus what the loader needs to know about its schema.

    ``required`` lists column groups (any one name of a group must be present) so a file
    in the wrong layout fails once, up front, with its column names — not on every row.
    """

    name: str
    fn: AdapterFn
    required: tuple[tuple[str, ...], ...]
    free_form: bool = False
    hub: str | None = None  # usual hub name (for error messages and docs; data.path decides)
    hub_config: str | None = None
    default_split_names: dict[str, str] = field(default_factory=dict)

    def __call__(self, row: Mapping[str, Any], fallback_id: str) -> Canonical:
        return self.fn(row, fallback_id)

    def missing_columns(self, columns: Sequence[str]) -> list[str]:
        """Required groups not present in ``columns``, as ``'a|b'`` strings."""
        have = set(columns)
        return ["|".join(g) for g in self.required if not have.intersection(g)]


TINYLLM = DatasetAdapter("tinyllm", adapt_tinyllm, (("question",), ("choices",), ("answer",)))

ADAPTERS: dict[str, DatasetAdapter] = {
    a.name: a
    for a in (
        DatasetAdapter("obqa", adapt_obqa, (("question_stem", "question"), ("choices",), ("answerKey",)),
                       hub="allenai/openbookqa", hub_config="main"),
        DatasetAdapter("arc", adapt_arc, (("question",), ("choices",), ("answerKey",)),
                       hub="allenai/ai2_arc", hub_config="ARC-Challenge"),
        DatasetAdapter("piqa", adapt_piqa, (("goal",), ("sol1",), ("sol2",)), hub="ybisk/piqa"),
        DatasetAdapter("riddlesense", adapt_riddlesense, (("question",), ("choices",), ("answerKey",)),
                       hub="INK-USC/riddle_sense"),
        DatasetAdapter("pubmedqa", adapt_pubmedqa, (("question",), ("final_decision", "answer")),
                       hub="qiaojin/PubMedQA", hub_config="pqa_labeled"),
        DatasetAdapter("bioasq", adapt_bioasq, (("body", "question"), ("exact_answer", "answer"))),
        DatasetAdapter("commonsense_qa", adapt_commonsense_qa, (("question",), ("choices",), ("answerKey",)),
                       hub="tau/commonsense_qa"),
        DatasetAdapter("svamp", adapt_svamp, (("Question", "question"), ("Answer", "answer")),
                       free_form=True, hub="ChilleD/SVAMP"),
        DatasetAdapter("anli", adapt_anli, (("premise", "context"), ("hypothesis",), ("label",)),
                       hub="facebook/anli",
                       default_split_names={"train": "train_r1", "validation": "dev_r1", "test": "test_r1"}),
        TINYLLM,
    )
}


def _check_names_match_config() -> None:
    """The registry and ``config.DatasetName`` must name the same datasets.

    Why at import: a name only in the config would pass validation and fail at load time
    on a cluster; a name only here could never be selected. Either is a bug in this
    package, so it fails every import (and the unit suite) at once.
    """
    registered = set(ADAPTERS) | set(BUILTIN_DATASETS)
    if registered != set(DATASET_NAMES):
        raise InternalError(
            f"dataset adapters {sorted(registered - set(DATASET_NAMES))} are not in config.DatasetName and "
            f"config.DatasetName {sorted(set(DATASET_NAMES) - registered)} have no adapter"
        )


_check_names_match_config()


def get_adapter(name: str, columns: ColumnMap | None = None) -> DatasetAdapter:
    """The adapter for ``data.name``; ``generic`` is built from ``data.columns``."""
    if name == "generic":
        if columns is None:
            raise ValueError("data.name 'generic' needs data.columns (question/choices/answer column names)")
        # Every column the map names must exist (id and context too): a made-up name is an
        # error listing the file's columns, never a silent fallback to row numbers or no context.
        required = tuple(
            (c,) for c in (columns.id, columns.question, columns.choices, columns.answer, columns.context)
            if c is not None
        )
        return DatasetAdapter("generic", make_generic_adapter(columns), required,
                              free_form=columns.choices is None)
    if name not in ADAPTERS:
        raise ValueError(f"no adapter for dataset {name!r}; known: {sorted(DATASET_NAMES)}")
    return ADAPTERS[name]
