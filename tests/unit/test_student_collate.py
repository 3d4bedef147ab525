"""Collation: layouts per architecture, prompt masking, counted truncation, error mode."""

from __future__ import annotations

import pytest
import torch

from tinyllm_ray.config import TinyModelConfig
from tinyllm_ray.student.collate import (
    IGNORE_INDEX,
    CollateSpec,
    PromptEncoder,
    TaskCollator,
    TruncationError,
    length_stats,
)

NAMES = ("answer", "rationale:t1", "rationale:t2")


@pytest.fixture(scope="module")
def tokenizers(tiny_cache):
    from transformers import AutoTokenizer

    from tinyllm_ray.models.tiny import tiny_model_path

    return {f: AutoTokenizer.from_pretrained(tiny_model_path(TinyModelConfig(family=f), tiny_cache))
            for f in ("t5", "llama", "qwen2")}


def groups():
    return [
        {"group": "0:a", "example_id": "e1", "source": "Q: what does a cat say?\n(a) meow\n(b) moo",
         "tasks": ["answer", "rationale:t1", "rationale:t2"],
         "prefixes": ["predict: ", "explain t1: ", "explain t2: "],
         "targets": ["meow", "cats say meow, cows say moo", "meow"], "weights": [1.0, 0.5, 2.0]},
        {"group": "0:b", "example_id": "e2", "source": "Q: dog?",
         "tasks": ["answer", "rationale:t1"], "prefixes": ["predict: ", "explain t1: "],
         "targets": ["bark", "dogs bark"], "weights": [1.0, 0.5]},
    ]


def spec(arch, **kw):
    base = {"arch": arch, "task_names": NAMES, "max_input_length": 64, "max_target_length": 32}
    base.update(kw)
    return CollateSpec(**base)


def test_special_tokens_detected_per_family(tokenizers):
    t5, llama, qwen = (PromptEncoder(tokenizers[f]) for f in ("t5", "llama", "qwen2"))
    assert t5.head == [] and t5.tail == [t5.eos_id]
    assert llama.head == [tokenizers["llama"].bos_token_id] and llama.tail == []
    assert qwen.head == [] and qwen.tail == []


def test_seq2seq_decoder_side_encodes_each_question_once(tokenizers):
    tok = tokenizers["t5"]
    c = TaskCollator(tok, spec("seq2seq", prefix_side="decoder"), decoder_start_token_id=0)
    b = c(groups())
    assert b["input_ids"].shape[0] == 2  # two questions
    assert b["decoder_input_ids"].shape[0] == 5  # five task rows
    assert b["row_group"].tolist() == [0, 0, 0, 1, 1]
    assert b["row_task"].tolist() == [0, 1, 2, 0, 1]
    assert b["row_weight"].tolist() == [1.0, 0.5, 2.0, 1.0, 0.5]
    # row 0: decoder "predict: meow </s>", the prefix is not a target
    pre = tok("predict: ", add_special_tokens=False)["input_ids"]
    tgt = tok("meow", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    labels = b["labels"][0].tolist()
    assert labels[: len(pre)] == [IGNORE_INDEX] * len(pre)
    assert labels[len(pre): len(pre) + len(tgt)] == tgt
    assert b["decoder_input_ids"][0, 0].item() == 0  # decoder start
    assert b["decoder_input_ids"][0, 1: 1 + len(pre)].tolist() == pre


def test_seq2seq_encoder_side_is_the_papers_layout(tokenizers):
    tok = tokenizers["t5"]
    b = TaskCollator(tok, spec("seq2seq", prefix_side="encoder"), decoder_start_token_id=0)(groups())
    assert b["input_ids"].shape[0] == 5  # one encoder row per task row
    first = tok.decode(b["input_ids"][1], skip_special_tokens=True)
    assert first.startswith("explain t1: Q: what does a cat say?")
    assert (b["labels"][:, 0] != IGNORE_INDEX).all()  # targets start at once


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_causal_prompt_is_masked_out_of_the_loss(tokenizers, family):
    tok = tokenizers[family]
    b = TaskCollator(tok, spec("causal", prefix_side="encoder"))(groups())
    assert "row_group" not in b
    for r in range(5):
        ids, labels, mask = b["input_ids"][r], b["labels"][r], b["attention_mask"][r]
        n = int(mask.sum())
        target_pos = (labels != IGNORE_INDEX).nonzero().squeeze(1)
        # the target is a contiguous suffix of the real tokens, ending in </s>
        assert target_pos.tolist() == list(range(target_pos[0].item(), n))
        assert labels[n - 1].item() == tok.eos_token_id
        assert torch.equal(labels[target_pos], ids[target_pos])
        prompt = tok.decode(ids[: target_pos[0]], skip_special_tokens=True)
        assert prompt.endswith(("Output: ", "Output:"))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_causal_one_pass_row_holds_the_question_once_then_every_target(tokenizers, family):
    tok = tokenizers[family]
    b = TaskCollator(tok, spec("causal"))(groups())
    assert b["input_ids"].shape[0] == 2 and b["row_group"].tolist() == [0, 0, 0, 1, 1]
    for r, g in enumerate(groups()):
        ids, seg, pos = b["input_ids"][r], b["segment_ids"][r], b["position_ids"][r]
        labels, target = b["labels"][r], b["label_target"][r]
        question = ids[seg == 0]
        q = len(question) + 1  # the last question token heads every target block
        assert tok.decode(question, skip_special_tokens=True).startswith(g["source"].split("\n")[0])
        assert pos[seg == 0].tolist() == list(range(q - 1))
        first = next(t for t, gr in enumerate(b["row_group"].tolist()) if gr == r)
        for j, (prefix, text) in enumerate(zip(g["prefixes"], g["targets"]), start=1):
            block = seg == j
            assert pos[block].tolist() == list(range(q - 1, q - 1 + int(block.sum())))
            # the block reads <last question token> prefix target </s>, as after the question alone
            assert tok.decode(ids[block][1:], skip_special_tokens=True) == prefix + text
            # labels are aligned: the label at i is the token at i + 1, only for the target
            lab = labels[block]
            kept = lab != IGNORE_INDEX
            assert tok.decode(lab[kept], skip_special_tokens=True) == text
            assert lab[kept][-1].item() == tok.eos_token_id and lab[-1].item() == IGNORE_INDEX
            assert torch.equal(lab[:-1][kept[:-1]], ids[block][1:][kept[:-1]])
            assert set(target[block][kept].tolist()) == {first + j - 1}
        assert (target[seg == 0] == -1).all() and (seg[b["attention_mask"][r] == 0] == -1).all()


def test_block_attention_mask():
    from tinyllm_ray.student.packed import block_attention_mask

    seg = torch.tensor([[0, 0, 1, 1, 2, 2, -1]])
    m = block_attention_mask(seg, torch.float32)[0, 0]
    sees = (m == 0).int().tolist()
    assert sees[1] == [1, 1, 0, 0, 0, 0, 0]  # the question: causal
    assert sees[3] == [1, 1, 1, 1, 0, 0, 0]  # target 1: the question and itself
    assert sees[5] == [1, 1, 0, 0, 1, 1, 0]  # target 2: never target 1
    assert sees[6] == [0, 0, 0, 0, 0, 0, 1]  # padding: itself only, so no row is all -inf
    assert set(m.unique().tolist()) == {0.0, float("-inf")}


def test_truncation_is_counted(tokenizers):
    tok = tokenizers["t5"]
    long = groups()
    long[0]["source"] = "Q: " + "word " * 200
    long[0]["targets"][1] = "reason " * 100
    c = TaskCollator(tok, spec("seq2seq", max_input_length=32, max_target_length=8), decoder_start_token_id=0)
    b = c(long)
    assert b["input_ids"].shape[1] == 32
    assert b["num_truncated_inputs"].item() == 1
    assert b["num_truncated_targets"].item() == 1
    row = b["labels"][1]
    content = row[row != IGNORE_INDEX]
    assert len(content) == 8 and tok.eos_token_id not in content.tolist()  # cut targets do not stop
    st = length_stats(long, c)
    assert st["truncated_inputs"] == 1 and st["truncated_targets"] == 1 and st["rows"] == 5


def test_truncation_error_mode_names_the_fix(tokenizers):
    long = groups()
    long[1]["targets"][1] = "reason " * 100
    c = TaskCollator(tokenizers["llama"], spec("causal", max_target_length=24, truncation="error"))
    with pytest.raises(TruncationError, match=r"rationale:t1.*e2.*max_target_length=24"):
        c(long)


def test_prefix_that_does_not_fit_is_a_config_error(tokenizers):
    c = TaskCollator(tokenizers["llama"], spec("causal", max_input_length=16, prefix_side="encoder"))
    g = groups()
    g[0]["prefixes"][0] = "a very long task prefix " * 5
    with pytest.raises(ValueError, match="max_input_length"):
        c(g)


def test_unknown_task_is_refused(tokenizers):
    g = groups()
    g[0]["tasks"][0] = "rationale:nobody"
    with pytest.raises(KeyError, match="nobody"):
        TaskCollator(tokenizers["t5"], spec("seq2seq"))(g)


def test_numpy_batches_from_ray_data_collate_the_same(tokenizers):
    import numpy as np

    g = groups()
    batch = {k: np.array([x[k] for x in g], dtype=object) for k in g[0]}
    c = TaskCollator(tokenizers["t5"], spec("seq2seq"), decoder_start_token_id=0)
    a, b = c(g), c(batch)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("side", ["decoder", "encoder"])
def test_empty_causal_separator_is_plain_prompt_then_completion(tokenizers, side):
    """``student.causal_separator: ""`` (bootstrapped teachers): the row is exactly what a
    served teacher sees, its prompt, followed by the completion and ``</s>``."""
    tok = tokenizers["llama"]
    prompt, completion = "Q: 2 + 3?\nRationale: Let's think step by step.", " 2 + 3 = 5. Thus, the answer is 5."
    s = spec("causal", task_names=("answer",), prefix_side=side, causal_separator="", max_input_length=128,
             max_target_length=64)
    assert CollateSpec.from_dict(s.to_dict()) == s
    group = {"group": "0:a", "example_id": "e", "source": prompt, "tasks": ["answer"], "prefixes": [""],
             "targets": [completion], "weights": [1.0]}
    lay = TaskCollator(tok, s).encode_groups([group])
    served = list(tok(prompt)["input_ids"])  # what vLLM tokenizes: <s> + prompt
    target = list(tok(completion, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
    if side == "encoder":
        assert lay["dec_rows"][0] == served + target
    else:
        assert lay["enc_rows"][0] == served and lay["dec_rows"][0] == target
    default = spec("causal", task_names=("answer",))
    assert default.causal_separator == "\nOutput: " and CollateSpec.from_dict({**default.to_dict()}) == default


def test_student_format_carries_the_separator(tmp_path):
    from tinyllm_ray.config import JobConfig
    from tinyllm_ray.student.model import StudentFormat, read_student_format, write_student_format

    cfg = JobConfig.model_validate({"student": {"causal_separator": ""}})
    fmt = StudentFormat.from_config(cfg, "causal", ("answer",))
    write_student_format(tmp_path, fmt)
    assert read_student_format(tmp_path).causal_separator == ""
    old = tmp_path / "old"
    old.mkdir()
    (old / "tinyllm_student.json").write_text('{"arch": "causal", "prefix_side": "decoder", "answer_prefix": "p", '
                                              '"rationale_prefix": "r", "max_input_length": 8, "max_target_length": 8}')
    assert read_student_format(old).causal_separator == "\nOutput: "  # saved before it was configurable
