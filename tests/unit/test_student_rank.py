"""``eval.mode: rank|both``: multiple-choice scoring by the student's likelihood of each choice (no Ray)."""

from __future__ import annotations

import pytest
import torch

from tinyllm_ray.config import JobConfig, TinyModelConfig, load_config
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import DataError, UsageError
from tinyllm_ray.student import rank as rank_mod
from tinyllm_ray.student.collate import PromptEncoder, encode_prompt, encode_target
from tinyllm_ray.student.evaluate_model import evaluate_student, rank_records
from tinyllm_ray.student.model import StudentFormat, load_student
from tinyllm_ray.student.rank import choice_logprobs
from tinyllm_ray.student.tasks import format_source


@pytest.fixture(scope="module", params=["t5", "llama"])
def student(request, tiny_cache):
    from tinyllm_ray.models.tiny import tiny_model_path

    path = str(tiny_model_path(TinyModelConfig(family=request.param), tiny_cache))
    arch = "seq2seq" if request.param == "t5" else "causal"
    model, tok = load_student(path, arch)
    return path, arch, model, tok


def _recs() -> list[MCQRecord]:
    return [MCQRecord(id="a", question="Capital of France?", choices=("Paris", "Paris, Texas", "Lima"), answer="Paris"),
            MCQRecord(id="b", question="2 + 2?", choices=("4", "5"), answer="5", context="Arithmetic.")]


def test_scores_are_the_models_log_likelihood_of_choice_then_eos_in_the_trained_layout(student) -> None:
    _, arch, model, tok = student
    fmt = StudentFormat.from_config(JobConfig(), arch)
    recs = _recs()
    batched, truncated = choice_logprobs(model, tok, recs, fmt, batch_size=4)
    single, _ = choice_logprobs(model, tok, recs, fmt, batch_size=1)
    assert truncated == 0 and [len(s) for s in batched] == [3, 2]
    flat = [x for s in batched for x in s]
    assert flat == pytest.approx([x for s in single for x in s], abs=1e-4)  # padding never touches a scored token
    # Independently: HF's own loss over the answer target (prefix on the decoder side, as trained).
    penc = PromptEncoder(tok)
    pre = penc.plain([fmt.answer_prefix])[0]
    src = penc.plain([format_source(recs[0].question, recs[0].choices, recs[0].context)])[0]
    sep = penc.plain([fmt.causal_separator])[0] if arch == "causal" else []
    prompt, _ = encode_prompt(penc, [], src, fmt.max_input_length, causal=arch == "causal", sep_ids=sep)
    target, _ = encode_target(penc, penc.plain(["Paris, Texas"])[0], fmt.max_target_length)
    with torch.no_grad():
        if arch == "causal":
            ids = torch.tensor([prompt + pre + target])
            labels = torch.tensor([[-100] * (len(prompt) + len(pre)) + target])
            loss = model(input_ids=ids, labels=labels).loss
        else:
            labels = torch.tensor([[-100] * len(pre) + target])
            dec = torch.tensor([[model.config.decoder_start_token_id] + pre + target[:-1]])
            loss = model(input_ids=torch.tensor([prompt]), decoder_input_ids=dec, labels=labels).loss
    assert batched[0][1] == pytest.approx(-float(loss) * len(target), abs=1e-3)


def test_rank_records_picks_the_most_likely_choice_and_scores_it_by_the_shared_rules(monkeypatch) -> None:
    monkeypatch.setattr(rank_mod, "choice_logprobs", lambda *a, **k: ([[-3.0, -1.0, -2.0], [-1.0, -1.0]], 1))
    fmt = StudentFormat.from_config(JobConfig(), "seq2seq")
    res = rank_records(None, None, _recs(), fmt, batch_size=8, keep_predictions=2)
    assert (res.correct, res.total, res.mode, res.truncated_inputs) == (0, 2, "rank", 1)
    assert [p["prediction"] for p in res.predictions] == ["Paris, Texas", "4"]  # a tie goes to the first choice
    assert res.predictions[0]["scores"] == [-3.0, -1.0, -2.0]
    assert res.to_dict()["mode"] == "rank"


def test_eval_mode_both_reports_ranking_apart_and_refuses_free_form_and_teachers(tiny_cache) -> None:
    from tinyllm_ray.models.tiny import tiny_model_path

    path = str(tiny_model_path(TinyModelConfig(family="t5"), tiny_cache))  # the demo's student family
    cfg = load_config("demo_cpu", ["eval.mode=both", "eval.limit=4", "eval.max_new_tokens=4"])
    res = evaluate_student(cfg, path, split="validation").to_dict()
    assert res["total"] == 4 and "mode" not in res  # the main numbers are free generation's
    assert set(res["rank"]) == {"accuracy", "correct", "total", "truncated_inputs", "seconds", "mode"}
    assert res["rank"]["total"] == 4 and res["rank"]["mode"] == "rank"
    free = load_config("demo_cpu", ["eval.mode=rank", "data.name=arithmetic", "data.arithmetic.form=free"])
    with pytest.raises(DataError, match="4 of 4 records are free-form .*set eval.mode=generate"):
        evaluate_student(free.model_copy(update={"eval": free.eval.model_copy(update={"limit": 4})}), path)
    from tinyllm_ray.jobs.checks import check_eval
    from tinyllm_ray.paths import RunPaths

    with pytest.raises(UsageError, match="teachers are scored by generation"):
        check_eval(cfg, RunPaths.of(cfg), model=None, split=None, teacher="llama")
