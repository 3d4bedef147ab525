"""The ``data`` section: which dataset, where it comes from, how bad rows are treated.

``DatasetName`` is the one list of dataset names a config may use. The adapter registry
(:mod:`tinyllm_ray.data.adapters`) checks at import that it has an adapter for every name
here except those built in to the loader (:data:`BUILTIN_DATASETS`), so the two can
never disagree silently. Two of those are *generated* tasks that need no files
(:data:`GENERATED_DATASETS`): ``synthetic`` (fact recall, the demo) and ``arithmetic``
(multi-step word problems with gold step-by-step solutions, where reasoning matters).
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from tinyllm_ray.config.base import Split, StrictModel, each_at_least

DatasetName = Literal[
    "synthetic",
    "arithmetic",
    "tinyllm",
    "obqa",
    "arc",
    "piqa",
    "riddlesense",
    "pubmedqa",
    "bioasq",
    "commonsense_qa",
    "svamp",
    "anli",
    "generic",
]
DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)
#: Tasks the loader generates itself from a seed: no files, no network.
GENERATED_DATASETS: tuple[str, ...] = ("synthetic", "arithmetic")
#: Names the loader handles itself, without a registered adapter.
BUILTIN_DATASETS: tuple[str, ...] = (*GENERATED_DATASETS, "generic")
#: The two forms of the arithmetic task: four numeric choices, or a free-form number (SVAMP's shape).
ArithmeticForm = Literal["mcq", "free"]


class ColumnMap(StrictModel):
    """Where the canonical fields live in a generic local file (``data.name: generic``).

    Every column named here must exist in the file (the error lists the file's columns);
    ``choices: null`` makes a free-form numeric task (the answer must be a number, or a
    worked solution ending in ``#### <number>`` as GSM8K writes it).
    """

    id: str | None = Field(None, description="id column; <split>-<row index> when None")
    question: str = "question"
    choices: str | None = Field("choices", description="list column, or null for a free-form numeric task")
    answer: str = "answer"
    context: str | None = None


class SyntheticConfig(StrictModel):
    """Size of the built-in learnable demo task (no files, no network)."""

    train: int = Field(256, ge=4)
    validation: int = Field(64, ge=2)
    test: int = Field(64, ge=2)


class ArithmeticConfig(StrictModel):
    """The built-in arithmetic reasoning task (``data.name: arithmetic``): sizes, depth, form.

    Problems cycle through 1..``max_steps`` operations, so each split holds every
    difficulty equally often; ``form: free`` drops the choices (answers compared as numbers).
    """

    train: int = Field(2000, ge=4)
    validation: int = Field(200, ge=2)
    test: int = Field(200, ge=2)
    max_steps: int = Field(3, ge=1, description="most operations per problem (its difficulty)")
    form: ArithmeticForm = Field("mcq", description="mcq: four numeric choices; free: a number, no choices")


class ResplitConfig(StrictModel):
    """Pool every loaded split, shuffle with ``seed``, and cut new splits of the given sizes.

    For datasets whose papers use their own split of all the rows (Mind's Mirror: a seeded
    800/200 train/test split of SVAMP's 1,000 problems; the hub copy ships 700/300).
    """

    sizes: dict[Split, int] = Field(description="rows per new split, cut in train, validation, test order")
    seed: int = 0

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: dict[str, int]) -> dict[str, int]:
        if "train" not in v:
            raise ValueError("data.resplit.sizes needs a train size")
        return each_at_least(v, 1, "data.resplit size for split")


class DataConfig(StrictModel):
    """Which dataset, where it comes from, and how malformed rows are treated."""

    name: DatasetName = "synthetic"
    path: str | None = Field(
        None,
        description="hub dataset name (cluster), or a local directory / file (offline)",
    )
    hub_config: str | None = Field(None, description="hub subset, e.g. ARC-Challenge, pqa_labeled")
    files: dict[Split, str | list[str]] = Field(default_factory=dict)
    format: Literal["auto", "json", "jsonl", "parquet", "csv"] = "auto"
    columns: ColumnMap | None = None
    split_names: dict[Split, str] = Field(
        default_factory=dict, description="dataset's own split names, e.g. validation: valid"
    )
    validation_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    validation_size: int | None = Field(
        None, ge=1, description="rows carved from train (seeded by data.seed) when there is no validation "
        "split; replaces data.validation_fraction",
    )
    test_fraction: float | None = Field(
        None, gt=0.0, lt=0.5, description="carve this fraction of train (seeded by data.seed) into a test "
        "split; only when the dataset has none (null: no test split is carved)",
    )
    test_size: int | None = Field(None, ge=1, description="carve exactly this many train rows into test instead")
    split_overlap: Literal["error", "allow", "drop"] = Field(
        "error", description="an example (question, choices, context) in two splits: error; allow (logged); "
        "drop (removed from the earlier split: train before validation before test; counted as skipped)",
    )
    resplit: ResplitConfig | None = Field(
        None, description="re-cut all loaded rows into seeded splits of given sizes (before any carving)"
    )
    limit: dict[Split, int] = Field(default_factory=dict, description="max rows per split")
    seed: int = 0
    on_malformed: Literal["error", "skip"] = "error"
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    arithmetic: ArithmeticConfig = Field(default_factory=ArithmeticConfig)

    @field_validator("limit")
    @classmethod
    def _positive_limits(cls, v: dict[str, int]) -> dict[str, int]:
        return each_at_least(v, 1, "limit for split")

    @model_validator(mode="after")
    def _source_present(self) -> DataConfig:
        if self.columns is not None and self.name != "generic":
            raise ValueError(
                f"data.columns names the columns of a data.name: generic file, but data.name is {self.name!r}, "
                f"whose adapter reads its own layout (docs/data.md); drop data.columns, or set data.name: generic"
            )
        if self.test_fraction is not None and self.test_size is not None:
            raise ValueError("data.test_size and data.test_fraction both set; keep one")
        if self.name in GENERATED_DATASETS:
            carve = [k for k in ("resplit", "test_fraction", "test_size") if getattr(self, k) is not None]
            if carve:
                raise ValueError(f"data.{carve[0]} re-cuts loaded datasets; {self.name!r} sets its split sizes in "
                                 f"data.{self.name}")
            return self
        if self.path is None and not self.files:
            raise ValueError(f"dataset {self.name!r} needs data.path (hub name or local path) or data.files")
        if self.name == "generic" and self.columns is None:
            raise ValueError("data.name 'generic' needs data.columns (question/choices/answer column names)")
        return self
