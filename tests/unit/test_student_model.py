"""Student resolution, saved layout, answer-only evaluation and store listing (no Ray)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tinyllm_ray.config import JobConfig, StudentConfig, TinyModelConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.errors import ConfigError
from tinyllm_ray.student.evaluate_model import evaluate_records, generate_answers
from tinyllm_ray.student.model import (
    StudentFormat,
    detect_arch,
    prefix_side_for,
    read_student_format,
    resolve_student_path,
    write_student_format,
)


@pytest.fixture(scope="module")
def t5_path(tiny_cache):
    from tinyllm_ray.models.tiny import tiny_model_path

    return str(tiny_model_path(TinyModelConfig(family="t5"), tiny_cache))


@pytest.fixture(scope="module")
def llama_path(tiny_cache):
    from tinyllm_ray.models.tiny import tiny_model_path

    return str(tiny_model_path(TinyModelConfig(family="llama"), tiny_cache))


def test_resolve_and_detect(t5_path, llama_path, tmp_path):
    assert resolve_student_path(StudentConfig(model=t5_path)) == t5_path
    assert detect_arch(t5_path) == "seq2seq" and detect_arch(llama_path) == "causal"
    assert detect_arch(llama_path, "seq2seq") == "seq2seq"  # explicit wins
    assert resolve_student_path(StudentConfig(model="google/flan-t5-small")) == "google/flan-t5-small"
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_student_path(StudentConfig(model="./no/such/folder"))
    with pytest.raises(ConfigError, match="config.json"):
        resolve_student_path(StudentConfig(model=str(tmp_path)))


def test_prefix_side():
    assert prefix_side_for(StudentConfig(), "seq2seq") == "decoder"
    assert prefix_side_for(StudentConfig(), "causal") == "decoder"
    assert prefix_side_for(StudentConfig(task_prefix_side="encoder"), "causal") == "encoder"


def test_format_round_trip(tmp_path):
    fmt = StudentFormat.from_config(JobConfig(), "seq2seq", ("answer", "rationale:a"))
    write_student_format(tmp_path, fmt)
    assert read_student_format(tmp_path) == fmt
    assert read_student_format(tmp_path / "nothing") is None


class _EchoModel(torch.nn.Module):
    """Stands in for a trained student: 'generates' a fixed answer text per call."""

    def __init__(self, tok, answers, seq2seq):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.tok, self.answers, self.seq2seq = tok, list(answers), seq2seq
        self.config = type("C", (), {"decoder_start_token_id": 0})()
        self.calls = []

    def generate(self, input_ids, attention_mask, max_new_tokens, decoder_input_ids=None, **kw):
        self.calls.append({"input_ids": input_ids, "decoder_input_ids": decoder_input_ids, **kw})
        prompt = decoder_input_ids if self.seq2seq else input_ids
        outs = []
        for i in range(prompt.shape[0]):
            text = self.answers.pop(0) if self.answers else "nothing"
            ids = self.tok(text, add_special_tokens=False)["input_ids"][:max_new_tokens]
            outs.append(prompt[i].tolist() + ids + [self.tok.eos_token_id])
        width = max(map(len, outs))
        return torch.tensor([o + [0] * (width - len(o)) for o in outs])


def _recs():
    return [MCQRecord(id=f"v{i}", question=f"Q{i}?", choices=("Paris", "Oslo", "Lima"), answer=a)
            for i, a in enumerate(["Paris", "Oslo", "Lima", "Oslo"])]


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_answer_only_generation_scores_letters_and_text(family, t5_path, llama_path):
    from transformers import AutoTokenizer

    path = t5_path if family == "t5" else llama_path
    tok = AutoTokenizer.from_pretrained(path)
    arch = "seq2seq" if family == "t5" else "causal"
    fmt = StudentFormat.from_config(JobConfig(), arch)
    model = _EchoModel(tok, ["Paris", "(b)", "lima.", "Paris"], seq2seq=arch == "seq2seq")
    res = evaluate_records(model, tok, _recs(), fmt, max_new_tokens=8, batch_size=3, keep_predictions=4)
    assert (res.correct, res.total) == (3, 4)
    assert res.accuracy == pytest.approx(0.75)
    assert [p["generated"] for p in res.predictions] == ["Paris", "(b)", "lima.", "Paris"]
    call = model.calls[0]
    if arch == "seq2seq":  # answer prefix on the decoder side, question alone in the encoder
        pre = tok("predict: ", add_special_tokens=False)["input_ids"]
        assert call["decoder_input_ids"][0].tolist() == [0, *pre]
        assert not tok.decode(call["input_ids"][0], skip_special_tokens=True).startswith("predict:")
    else:  # prompt left-padded: the question, the separator, then the answer prefix (as trained)
        prompt = tok.decode(call["input_ids"][0], skip_special_tokens=True)
        assert prompt.startswith("Q: Q0?") and prompt.endswith("Output: predict: ")


def test_causal_students_saved_before_the_one_pass_layout_still_read_prefix_first(llama_path, tmp_path):
    """A version-1 tinyllm_student.json (causal ones all say prefix_side: encoder) loads and
    is prompted as it was trained; a newer format version is refused."""
    import json

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama_path)
    old = {**dataclasses.asdict(StudentFormat.from_config(JobConfig(), "causal")), "prefix_side": "encoder",
           "format_version": 1}
    (tmp_path / "tinyllm_student.json").write_text(json.dumps(old))
    fmt = read_student_format(tmp_path)
    assert fmt.prefix_side == "encoder"
    model = _EchoModel(tok, [], seq2seq=False)
    generate_answers(model, tok, _recs()[:1], fmt, max_new_tokens=4, batch_size=2)
    prompt = tok.decode(model.calls[0]["input_ids"][0], skip_special_tokens=True)
    assert prompt.startswith("predict: Q: Q0?") and prompt.endswith("Output: ")
    (tmp_path / "tinyllm_student.json").write_text(json.dumps({**old, "format_version": 99}))
    with pytest.raises(ConfigError, match="format_version 99"):
        read_student_format(tmp_path)


def test_padding_batches_keep_ranks_in_lock_step(t5_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(t5_path)
    fmt = StudentFormat.from_config(JobConfig(), "seq2seq")
    model = _EchoModel(tok, [], seq2seq=True)
    outs, _ = generate_answers(model, tok, _recs()[:1], fmt, max_new_tokens=4, batch_size=2, num_batches=3)
    assert len(model.calls) == 3 and outs == ["nothing"]
    fmt_enc = dataclasses.replace(fmt, prefix_side="encoder")
    model = _EchoModel(tok, [], seq2seq=True)
    generate_answers(model, tok, _recs()[:1], fmt_enc, max_new_tokens=4, batch_size=2)
    assert tok.decode(model.calls[0]["input_ids"][0], skip_special_tokens=True).startswith("predict: Q: Q0?")
