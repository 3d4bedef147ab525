"""Answer-only accuracy of a teacher LLM, served by vLLM in the pipeline's Ray actors.

Why: a results table that only holds students cannot say how much of the teachers'
accuracy a student recovers. ``tinyllm-ray eval --teacher NAME --split test`` puts a
teacher row next to the student rows, scored by exactly the same code
(:func:`tinyllm_ray.evaluate.score_generations`: prediction, exact match, kept
predictions) and returned as the same :class:`~tinyllm_ray.evaluate.EvalResult`.

The prompt (:func:`answer_only_prompt`) is a short few-shot *answer* template, not a CoT
prompt: the teacher prompts' block layout (``prompts.py``), the configured in-context
examples (``prompts.icl_k`` / ``icl_strategy`` / ``seed``, drawn from the TRAIN split
only, as for generation), each example showing its gold answer, then the question with
``Answer:`` and nothing after it::

    Answer the last question. Reply with the correct choice as "(x) <answer text>".

    Q: <train example>
    Answer Choices:
    (a) ...
    Answer: (c) ...

    Q: <the evaluated question>
    Answer Choices:
    (a) ...
    Answer:                              <- the teacher continues from here

The evaluated question's gold answer is never sent (the ``answer`` column of the rows
the actors receive is empty; gold stays on the driver). No rationale is asked for: the
student is evaluated answer-only too (TinyLLM inference), and a CoT would cost ~10x the
tokens. Decoding is greedy, ``eval.max_new_tokens`` tokens, the teacher's stop sequences.
The generation is read by :func:`read_answer`: its first non-empty line (the answer the
template asks for), else the whole text (``parse_answer``'s "the answer is (b)" rules).

Serving is generation's own (``serving.py``): the same model resolution and precheck,
placement plan and ``check_fits``, engine spec (self-evaluation off) and
``TeacherEngine`` actor pool (``teacher.batch_size`` prompts per call, never more
actors than batches), error description and cleanup. Nothing is written to the store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tinyllm_ray.config import JobConfig, PromptConfig, SamplingConfig, SelfEvalConfig, TeacherConfig
from tinyllm_ray.errors import ConfigError, GenerationError
from tinyllm_ray.evaluate import EvalResult, extract_prediction, score_generations, select_eval_records

# The teacher prompts' own block renderers: the answer-only prompt must keep their layout.
from tinyllm_ray.prompts import example_block, question_block
from tinyllm_ray.teachers.prompt_rows import build_prompt, icl_examples, prompt_row

if TYPE_CHECKING:
    from tinyllm_ray.data.schema import MCQRecord

log = logging.getLogger(__name__)

__all__ = [
    "answer_only_prompt",
    "answer_rows",
    "cot_rows",
    "eval_teacher_config",
    "evaluate_teacher",
    "read_answer",
    "read_cot_answer",
]

MCQ_INSTRUCTION = 'Answer the last question. Reply with the correct choice as "(x) <answer text>".'
FREE_FORM_INSTRUCTION = "Answer the last question. Reply with the answer only."


# ----------------------------------------------------------------------------- pure: prompts


def answer_only_prompt(record: MCQRecord, examples: Sequence[MCQRecord]) -> str:
    """The few-shot answer-only prompt for ``record`` (see the module docstring).

    ``examples`` show their gold answers (they come from the train split); ``record``'s
    answer is withheld: the prompt ends with ``"Answer:"``.
    """
    header = MCQ_INSTRUCTION if record.choices else FREE_FORM_INSTRUCTION
    blocks = [header, *(example_block(e) for e in examples), f"{question_block(record)}\nAnswer:"]
    return "\n\n".join(blocks)


def answer_rows(
    records: Sequence[MCQRecord], pool: Sequence[MCQRecord], prompts: PromptConfig, split: str
) -> list[dict[str, Any]]:
    """One ``TeacherEngine`` input row per record (``prompt_rows.PROMPT_COLUMNS``).

    In-context examples: ``prompts.icl_k`` from ``pool`` (the train split), chosen by
    ``(prompts.seed, record.id)`` exactly as for generation, never the record itself.
    ``answer`` is left empty on purpose: the gold answer does not leave the driver.
    """
    return [prompt_row(rec, answer_only_prompt(rec, icl_examples(rec, pool, prompts)), split, 0, with_answer=False)
            for rec in records]


def cot_rows(
    teacher: TeacherConfig, records: Sequence[MCQRecord], pool: Sequence[MCQRecord], prompts: PromptConfig,
    split: str,
) -> list[dict[str, Any]]:
    """``eval.teacher_prompt: cot``: the generation pipeline's own plain-CoT prompt (``build_prompt``
    with ``prompt_style: cot``), gold answer withheld, in-context examples from ``pool``.

    Why: a teacher's CoT accuracy is what its rationales are worth to a student (answer-only
    accuracy says little for a multi-step task such as ``data.name: arithmetic``).
    """
    as_cot = teacher.model_copy(update={"prompt_style": "cot"})
    return [prompt_row(rec, build_prompt(as_cot, rec, pool, prompts), split, 0, with_answer=False) for rec in records]


# ----------------------------------------------------------------------------- pure: scoring


def read_cot_answer(generated: str | None, choices: Sequence[str]) -> str | None:
    """The answer a CoT states ("Thus, the answer is (b) 42."), read from the cleaned text as a whole."""
    from tinyllm_ray.prompts import clean_rationale

    return extract_prediction(clean_rationale(generated or ""), choices)


def read_answer(generated: str | None, choices: Sequence[str]) -> str | None:
    """The choice (or number) a teacher's answer-only generation names, or None.

    First non-empty line first (``"(b) purple"``, ``"purple"``, ``"B"``), because the
    template asks for the answer on the ``Answer:`` line and whatever follows is a
    run-on; if that line names nothing, the whole text (``"... the answer is (b)"``).
    """
    text = (generated or "").strip()
    if not text:
        return None
    first = next(line.strip() for line in text.splitlines() if line.strip())
    pred = extract_prediction(first, choices)
    if pred is None and first != text:
        pred = extract_prediction(text, choices)
    return pred


# ----------------------------------------------------------------------------- pure: engine settings


def eval_teacher_config(teacher: TeacherConfig, max_new_tokens: int) -> TeacherConfig:
    """The teacher as evaluated: greedy, one output, ``max_new_tokens``, its own stops.

    Everything else (model, dtype, resources, engine kwargs, replicas, batch size) is the
    teacher's, so the engine is planned and started exactly as for generation.
    """
    s = teacher.sampling
    greedy = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=max_new_tokens, stop=list(s.stop), n=1,
                            seed=s.seed)
    return teacher.model_copy(update={"sampling": greedy})


# ----------------------------------------------------------------------------- Ray + vLLM


def evaluate_teacher(
    cfg: JobConfig,
    teacher: str,
    split: str | None = None,
    *,
    limit: int | None = None,
    keep_predictions: int | None = 20,
) -> EvalResult:
    """Answer-only accuracy of teacher ``teacher`` on ``split`` (default ``cfg.eval.split``).

    Rows: the first ``limit`` (or ``cfg.eval.limit``) records of the split, as for the
    student. Starts (or joins) Ray as ``cfg.runtime`` says. Raises ``ConfigError`` for an
    unknown teacher (before anything starts) and ``GenerationError`` naming the teacher
    when its engine cannot be placed or fails.
    """
    from tinyllm_ray.data.loader import load_splits
    from tinyllm_ray.teachers.serving import plan_serving

    names = [t.name for t in cfg.teachers]
    if teacher not in names:
        raise ConfigError(f"no teacher named {teacher!r} to evaluate; teachers are {names}")
    t0 = time.perf_counter()
    split = split or cfg.eval.split
    cot = cfg.eval.teacher_prompt == "cot"
    own = cfg.teacher(teacher)
    tcfg = eval_teacher_config(own, own.sampling.max_tokens if cot else cfg.eval.max_new_tokens)

    data = load_splits(cfg.data)
    records = select_eval_records(data, split, limit or cfg.eval.limit)
    pool = data.splits.get("train") or []
    if cfg.prompts.icl_strategy == "random" and cfg.prompts.icl_k and not pool:
        log.warning("no train split: teacher %s is evaluated zero-shot (in-context examples come from train only)",
                    teacher)

    serving = plan_serving(cfg, [tcfg], self_eval=SelfEvalConfig(enabled=False))
    log.info("evaluating teacher %s on %d %s questions, %s prompt (%s)", teacher, len(records), split,
             cfg.eval.teacher_prompt, "; ".join(serving.notes))
    rows = cot_rows(tcfg, records, pool, cfg.prompts, split) if cot else answer_rows(records, pool, cfg.prompts, split)
    texts: dict[str, str] = {}
    tokens = truncated = 0
    with serving.pool(teacher) as engines:
        for batch in engines.run(rows, max(1, min(tcfg.batch_size, len(rows)))):
            for r in batch:
                # a batch given up after its engine died (teachers/faults.py) is no answer
                if r["kind"] == "rationale" and int(r["sample_idx"]) == 0 and not r.get("error"):
                    texts[r["example_id"]] = r["text"] or ""
                    tokens += int(r["output_tokens"])
                    truncated += r["finish_reason"] == "length"
    missing = [r.id for r in records if r.id not in texts]
    if missing:
        raise GenerationError(f"teacher {teacher!r}: no output for {len(missing)} questions, e.g. {missing[:3]}")
    log.info("teacher %s: %d answers, %d tokens, %d cut at max_new_tokens", teacher, len(texts), tokens, truncated)
    return score_generations(records, [texts[r.id] for r in records], read=read_cot_answer if cot else read_answer,
                             split=split,
                             model=f"{tcfg.model} (teacher {teacher})", seconds=time.perf_counter() - t0,
                             keep_predictions=keep_predictions)
