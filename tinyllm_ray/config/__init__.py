"""One validated configuration object for the whole distillation job.

Why pydantic models rather than a dict: every stage (data, teachers, student, tune,
runtime) takes *its* section, and a typo or an out-of-range value must fail before
any Ray worker or vLLM engine is started, with one message that names the field path
(``teachers.1.sampling.top_p``) and what is allowed.

Layout: one module per group of sections (``dataset``, ``teachers``, ``student``,
``job``), ``overrides`` (OmegaConf merge of ``field.path=value``) and ``loading`` (YAML,
shipped configs, validation messages). Import from this front door.
"""

from __future__ import annotations

from tinyllm_ray.config.base import NAME_RE, SPLITS, Split, StrictModel
from tinyllm_ray.config.compare import CompareConfig
from tinyllm_ray.config.dataset import (
    BUILTIN_DATASETS,
    DATASET_NAMES,
    GENERATED_DATASETS,
    ArithmeticConfig,
    ArithmeticForm,
    ColumnMap,
    DataConfig,
    DatasetName,
    ResplitConfig,
    SyntheticConfig,
)
from tinyllm_ray.config.job import EvalConfig, JobConfig, RuntimeConfig, TuneConfig
from tinyllm_ray.config.loading import (
    dump_config,
    format_validation_error,
    list_shipped_configs,
    load_config,
    load_raw,
    public_dump,
    shipped_config_path,
    validate_config,
)
from tinyllm_ray.config.overrides import apply_overrides
from tinyllm_ray.config.student import LossConfig, StudentConfig, TinyModelConfig, TrainConfig
from tinyllm_ray.config.teachers import (
    ApiConfig,
    BootstrapConfig,
    CrossTeacherConfig,
    FilterConfig,
    PromptConfig,
    SamplingConfig,
    SelfEvalConfig,
    TeacherConfig,
)
from tinyllm_ray.errors import ConfigError

__all__ = [
    "BUILTIN_DATASETS",
    "DATASET_NAMES",
    "GENERATED_DATASETS",
    "NAME_RE",
    "SPLITS",
    "ApiConfig",
    "ArithmeticConfig",
    "ArithmeticForm",
    "BootstrapConfig",
    "ColumnMap",
    "CompareConfig",
    "ConfigError",
    "CrossTeacherConfig",
    "DataConfig",
    "DatasetName",
    "EvalConfig",
    "FilterConfig",
    "JobConfig",
    "LossConfig",
    "PromptConfig",
    "ResplitConfig",
    "RuntimeConfig",
    "SamplingConfig",
    "SelfEvalConfig",
    "Split",
    "StrictModel",
    "StudentConfig",
    "SyntheticConfig",
    "TeacherConfig",
    "TinyModelConfig",
    "TrainConfig",
    "TuneConfig",
    "apply_overrides",
    "dump_config",
    "format_validation_error",
    "list_shipped_configs",
    "load_config",
    "load_raw",
    "public_dump",
    "shipped_config_path",
    "validate_config",
]
