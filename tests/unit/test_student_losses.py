"""The packed multi-task loss equals the separate-pass reference (within 1e-5)."""

from __future__ import annotations

import pytest
import torch

from tinyllm_ray.config import TinyModelConfig
from tinyllm_ray.student.collate import IGNORE_INDEX, CollateSpec, TaskCollator
from tinyllm_ray.student.losses import packed_task_loss, separate_pass_loss, token_cross_entropy
from tinyllm_ray.student.packed import PackedStudent

NAMES = ("answer", "rationale:t1", "rationale:t2", "self_eval")
WEIGHTS = {"answer": 1.0, "rationale:t1": 0.5, "rationale:t2": 2.0, "self_eval": 0.3}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matmuls on a shared 2-core box: one intra-op thread is ~40x faster than
    OpenMP threads spinning against other processes (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- pure tensors


def _random_batch(seed=0, rows=7, t=9, v=13, k=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, t, v, generator=g)
    labels = torch.randint(0, v, (rows, t), generator=g)
    lengths = torch.randint(1, t + 1, (rows,), generator=g)
    for r in range(rows):
        labels[r, lengths[r]:] = IGNORE_INDEX
    labels[0, :2] = IGNORE_INDEX  # a masked prompt
    row_task = torch.tensor([0, 1, 2, 0, 1, 1, 2])[:rows]
    w = torch.tensor([1.0, 0.25, 3.0])
    return logits, labels, row_task, w[row_task], k


def test_packed_equals_per_task_token_means():
    logits, labels, row_task, row_weight, k = _random_batch()
    got = packed_task_loss(logits, labels, row_task, row_weight, k)
    ce, mask = token_cross_entropy(logits, labels)
    expect = 0.0
    for task in range(k):
        rows = row_task == task
        mean = ce[rows][mask[rows]].mean()
        assert got.per_task[task].item() == pytest.approx(mean.item(), abs=1e-6)
        expect += row_weight[rows][0] * mean
    assert got.total.item() == pytest.approx(float(expect), abs=1e-6)
    assert got.task_tokens.tolist() == [float(mask[row_task == i].sum()) for i in range(k)]


def test_packed_equals_separate_pass_reference_on_tensors():
    logits, labels, row_task, row_weight, k = _random_batch(seed=3)
    packed = packed_task_loss(logits, labels, row_task, row_weight, k)
    ref = separate_pass_loss(lambda idx: (logits[idx], labels[idx]), row_task, row_weight, k)
    assert abs(packed.total.item() - ref.total.item()) < 1e-5
    assert torch.allclose(packed.per_task, ref.per_task, atol=1e-5)


def test_a_long_task_does_not_drown_a_short_one():
    # answer: 1 token with CE ~0; rationale: 50 tokens with high CE. Token-pooled mean would be
    # dominated by the rationale; per-task means weight them as configured.
    v = 5
    logits = torch.zeros(2, 50, v)
    logits[0, 0, 1] = 50.0  # the answer token is predicted perfectly
    labels = torch.full((2, 50), IGNORE_INDEX)
    labels[0, 0] = 1
    labels[1, :] = 2
    out = packed_task_loss(logits, labels, torch.tensor([0, 1]), torch.tensor([1.0, 0.0]), 2)
    assert out.total.item() < 1e-6


def test_separate_pass_refuses_mixed_weights_within_a_task():
    logits, labels, row_task, row_weight, k = _random_batch()
    row_weight = row_weight.clone()
    row_weight[3] = 9.0
    with pytest.raises(ValueError, match="different weights"):
        separate_pass_loss(lambda idx: (logits[idx], labels[idx]), row_task, row_weight, k)


# --------------------------------------------------------------------------- real tiny students


def _groups():
    w = WEIGHTS
    return [
        {"group": "0:a", "example_id": "e1", "source": "Q: what does a cat say?\nAnswer Choices:\n(a) meow\n(b) moo",
         "tasks": ["answer", "rationale:t1", "rationale:t2"], "prefixes": ["predict: ", "explain t1: ", "explain t2: "],
         "targets": ["meow", "cats say meow and cows say moo, so the answer is (a)", "(a) meow"],
         "weights": [w["answer"], w["rationale:t1"], w["rationale:t2"]]},
        {"group": "0:b", "example_id": "e2", "source": "Q: which sound does a dog make?",
         "tasks": ["answer", "rationale:t1", "self_eval"], "prefixes": ["predict: ", "explain t1: ", "evaluate: "],
         "targets": ["bark", "dogs bark", "The reasoning holds.\nVerdict: correct"],
         "weights": [w["answer"], w["rationale:t1"], w["self_eval"]]},
        {"group": "0:c", "example_id": "e3", "source": "Q: capital of Peru?\nContext: " + "Lima is a city. " * 6,
         "tasks": ["answer", "rationale:t2"], "prefixes": ["predict: ", "explain t2: "],
         "targets": ["Lima", "Lima is the capital"], "weights": [w["answer"], w["rationale:t2"]]},
    ]


@pytest.fixture(scope="module")
def students(tiny_cache):
    from tinyllm_ray.models.tiny import tiny_model_path
    from tinyllm_ray.student.model import load_student

    out = {}
    for fam in ("t5", "llama", "qwen2"):
        path = tiny_model_path(TinyModelConfig(family=fam), tiny_cache)
        out[fam] = load_student(str(path), "seq2seq" if fam == "t5" else "causal")
    return out


CASES = [("t5", "decoder"), ("t5", "encoder"), ("llama", "encoder"), ("qwen2", "encoder"), ("llama", "decoder"),
         ("qwen2", "decoder")]


@pytest.mark.parametrize(("family", "side"), CASES)
def test_packed_forward_equals_separate_passes(students, family, side):
    model, tok = students[family]
    arch = "seq2seq" if family == "t5" else "causal"
    torch.manual_seed(0)
    spec = CollateSpec(arch=arch, task_names=NAMES, max_input_length=64, max_target_length=24, prefix_side=side)
    batch = TaskCollator(tok, spec, decoder_start_token_id=getattr(model.config, "decoder_start_token_id", None))(
        _groups())
    _assert_packed_equals_separate(model, arch, batch)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_one_pass_with_an_empty_prefix_equals_separate_passes(students, family, attn):
    """An empty answer prefix: the last question token predicts each task's first token
    (why each target block repeats it); both attention kernels take the 4-D mask."""
    model, tok = students[family]
    model.set_attn_implementation(attn)
    try:
        groups = _groups()
        for g in groups:
            g["prefixes"] = ["" if t == "answer" else p for t, p in zip(g["tasks"], g["prefixes"])]
        spec = CollateSpec(arch="causal", task_names=NAMES, max_input_length=64, max_target_length=24)
        _assert_packed_equals_separate(model, "causal", TaskCollator(tok, spec)(groups))
    finally:
        model.set_attn_implementation("sdpa")


def test_one_pass_computes_each_question_once(students):
    model, tok = students["llama"]
    spec = CollateSpec(arch="causal", task_names=NAMES, max_input_length=64, max_target_length=24)
    batch = TaskCollator(tok, spec)(_groups())
    seen = []
    hook = model.base_model.register_forward_hook(lambda m, a, out: seen.append(out[0].shape[0]))
    try:
        student = PackedStudent(model, "causal", len(NAMES)).eval()
        with torch.no_grad():
            student(batch)
            assert seen == [3]  # 3 questions, 8 targets: one row each question
            seen.clear()
            student.separate_loss(batch)
            assert len(seen) == 4 and sum(seen) == 8
    finally:
        hook.remove()


def _assert_packed_equals_separate(model, arch, batch):
    """Per-task losses, token counts and every parameter gradient agree within 1e-5."""
    student = PackedStudent(model, arch, len(NAMES)).eval()

    model.zero_grad()
    packed = student.task_loss(student(batch))
    packed.total.backward()
    g_packed = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    ref = student.separate_loss(batch)
    ref.total.backward()
    g_ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    assert abs(packed.total.item() - ref.total.item()) < 1e-5
    assert torch.allclose(packed.per_task, ref.per_task, atol=1e-5)
    assert torch.equal(packed.task_tokens, ref.task_tokens)
    assert g_packed.keys() == g_ref.keys()
    for n, g in g_ref.items():
        assert torch.allclose(g_packed[n], g, atol=1e-5, rtol=0), n
    assert packed.task_tokens.sum() > 0 and len(g_ref) > 5


def test_decoder_side_runs_the_encoder_once_per_question(students):
    model, tok = students["t5"]
    spec = CollateSpec(arch="seq2seq", task_names=NAMES, max_input_length=64, max_target_length=24)
    batch = TaskCollator(tok, spec, decoder_start_token_id=0)(_groups())
    seen = []
    hook = model.get_encoder().register_forward_hook(lambda m, a, kw_out: seen.append(kw_out[0].shape[0]))
    try:
        student = PackedStudent(model, "seq2seq", len(NAMES)).eval()
        with torch.no_grad():
            student(batch)
            assert seen == [3]  # 3 questions, 8 task rows, one encoder call
            seen.clear()
            student.separate_loss(batch)
            assert len(seen) == 4 and sum(seen) == 8  # one call per task, every row re-encoded
    finally:
        hook.remove()
