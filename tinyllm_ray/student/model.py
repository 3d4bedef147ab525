"""Find, load and describe the student model (no Ray, no DeepSpeed).

Why: the trainer workers, the evaluation CLI and the tests must agree on three things —
where the weights are (``student.model: tiny`` is built locally, anything else is a local
folder or a hub name), whether it is seq2seq or causal, and how its inputs were laid out
in training (task-prefix side, prefixes, max length). The last one is written next to the
saved student as ``tinyllm_student.json`` so ``eval --model PATH`` evaluates a student
exactly the way it was trained, whatever config is passed later.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyllm_ray.config.student import DEFAULT_CAUSAL_SEPARATOR as CAUSAL_SEPARATOR
from tinyllm_ray.errors import ConfigError

if TYPE_CHECKING:
    from tinyllm_ray.config import JobConfig, StudentConfig

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT_FILE",
    "StudentFormat",
    "detect_arch",
    "load_student",
    "prefix_side_for",
    "read_student_format",
    "resolve_student_path",
    "write_student_format",
]

FORMAT_FILE = "tinyllm_student.json"
#: 2: causal students may have ``prefix_side: decoder`` (question, then the task prefix);
#: version-1 causal students are all ``encoder`` (prefix, then question) and load unchanged.
FORMAT_VERSION = 2
#: Default: the task prefix follows the question so a question is computed once for all its
#: tasks (seq2seq: one encoder pass; causal: one row with a block mask). Same loss as the
#: separate-pass reference of that layout and cheaper (benchmarks/student_throughput.py).
#: ``student.task_prefix_side: encoder`` restores the prefix-first layout (the papers').
DEFAULT_PREFIX_SIDE = "decoder"


def resolve_student_path(student: StudentConfig, cache_dir: str | Path | None = None) -> str:
    """``'tiny'`` -> built (cached) tiny model folder; a local folder -> itself; else a hub name."""
    if student.model == "tiny":
        from tinyllm_ray.models.tiny import tiny_model_path

        return str(tiny_model_path(student.tiny, cache_dir))
    p = Path(student.model).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ConfigError(
                f"student.model {student.model!r} is a folder without config.json; point it at a Hugging Face "
                "model folder (config.json + weights + tokenizer)"
            )
        return str(p.resolve())
    if student.model.startswith((".", "/", "~")):
        raise ConfigError(f"student.model {student.model!r} does not exist; give a Hugging Face model folder, "
                          "a hub name, or tiny")
    return student.model  # hub name: resolved by transformers (needs network or HF cache)


def detect_arch(path: str, arch: str = "auto", trust_remote_code: bool = False) -> str:
    """``seq2seq`` or ``causal``: the configured one, else from the model's config."""
    if arch in ("seq2seq", "causal"):
        return arch
    from tinyllm_ray.models.tiny import is_seq2seq

    try:
        return "seq2seq" if is_seq2seq(path) else "causal"
    except TypeError:  # pragma: no cover
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        return "seq2seq" if getattr(cfg, "is_encoder_decoder", False) else "causal"


def prefix_side_for(student: StudentConfig, arch: str) -> str:
    """Task-prefix side: ``student.task_prefix_side`` when the config has it, else the default.

    For causal students "decoder" means ``question <sep> prefix target`` (the one-pass
    layout) and "encoder" ``prefix question <sep> target`` (one row per task).
    """
    del arch  # both architectures take the configured side
    side = student.task_prefix_side or DEFAULT_PREFIX_SIDE
    if side not in ("encoder", "decoder"):
        raise ValueError(f"student.task_prefix_side must be 'encoder' or 'decoder', got {side!r}")
    return side


def load_student(
    path: str, arch: str, *, dtype: str = "fp32", trust_remote_code: bool = False
) -> tuple[Any, Any]:
    """(model, tokenizer) from a folder or hub name; the tokenizer always has a pad token.

    Why set pad = eos when missing: Llama-style tokenizers ship without a pad token, and
    batching needs one (padded positions are masked, so its id does not matter).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    auto = AutoModelForSeq2SeqLM if arch == "seq2seq" else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


@dataclass(frozen=True)
class StudentFormat:
    """How a saved student reads its inputs (``tinyllm_student.json`` beside the weights)."""

    arch: str
    prefix_side: str
    answer_prefix: str
    rationale_prefix: str
    max_input_length: int
    max_target_length: int
    task_names: tuple[str, ...] = ()
    format_version: int = FORMAT_VERSION
    self_eval_verdict_prefix: str = ""  # "" in files written before self-evaluation became two tasks
    self_eval_critique_prefix: str = ""
    causal_separator: str = CAUSAL_SEPARATOR  # files written before it was configurable used the default

    @classmethod
    def from_config(cls, cfg: JobConfig, arch: str, task_names: tuple[str, ...] = ()) -> StudentFormat:
        s = cfg.student
        return cls(arch=arch, prefix_side=prefix_side_for(s, arch), answer_prefix=s.answer_prefix,
                   rationale_prefix=s.rationale_prefix, self_eval_verdict_prefix=s.self_eval_verdict_prefix,
                   self_eval_critique_prefix=s.self_eval_critique_prefix,
                   max_input_length=s.max_input_length, max_target_length=s.max_target_length,
                   task_names=tuple(task_names), causal_separator=s.causal_separator)


def write_student_format(folder: str | Path, fmt: StudentFormat) -> None:
    d = asdict(fmt)
    d["task_names"] = list(fmt.task_names)
    (Path(folder) / FORMAT_FILE).write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


def read_student_format(folder: str | Path) -> StudentFormat | None:
    """The saved format of a student folder, or None for a plain HF folder."""
    p = Path(folder) / FORMAT_FILE
    if not p.is_file():
        return None
    d = json.loads(p.read_text())
    if int(d.get("format_version", 1)) > FORMAT_VERSION:
        raise ConfigError(f"{p} has format_version {d['format_version']}, newer than this tinyllm-ray reads "
                          f"({FORMAT_VERSION}); evaluate it with the version that trained it")
    d["task_names"] = tuple(d.get("task_names", ()))
    known = set(StudentFormat.__dataclass_fields__)
    return StudentFormat(**{k: v for k, v in d.items() if k in known})
