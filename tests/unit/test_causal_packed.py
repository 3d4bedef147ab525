"""The causal one-pass step, pinned down on real tiny Llama and Qwen2 students.

``test_student_losses`` checks the summed loss and gradient in float32; here each task's
own loss and gradient are compared in float64 (so a layout error cannot hide under float32
rounding), targets are shown not to see each other through the 4-D mask HF takes as-is,
and the prompt evaluation generates from is shown to be the one training taught (the same
token ids, and the same logits for the answer's first token).
"""

from __future__ import annotations

import copy

import pytest
import torch

from tinyllm_ray.config import JobConfig, TinyModelConfig
from tinyllm_ray.data.schema import MCQRecord
from tinyllm_ray.student.collate import IGNORE_INDEX, CollateSpec, PromptEncoder, TaskCollator
from tinyllm_ray.student.packed import PackedStudent

FAMILIES = ("llama", "qwen2")
NAMES = ("answer", "rationale:t1", "rationale:t2")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: tiny matmuls on a shared 2-core box (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def students(tiny_cache):
    from tinyllm_ray.models.tiny import tiny_model_path
    from tinyllm_ray.student.model import load_student

    return {f: load_student(str(tiny_model_path(TinyModelConfig(family=f), tiny_cache)), "causal")
            for f in FAMILIES}


def _records() -> list[MCQRecord]:
    return [
        MCQRecord(id="e0", question="What does a cat say?", choices=("meow", "moo"), answer="meow"),
        MCQRecord(id="e1", question="Capital of Peru?", choices=("Lima", "Quito", "Bogota"), answer="Lima",
                  context="Lima is a large city on the coast. " * 4),
        MCQRecord(id="e2", question="Which animal barks?", choices=("dog", "cat"), answer="dog"),
    ]


def _groups() -> list[dict]:
    """Task groups from the ONE builder: 3, 3 and 1 targets (so rows pad differently)."""
    from tests.unit.test_student_tasks import store_row
    from tinyllm_ray.student.tasks import TaskPlan, build_task_groups

    recs = _records()
    cfg = JobConfig.model_validate({"teachers": [{"name": "t1", "model": "x"}, {"name": "t2", "model": "y"}]})
    rows = [store_row(recs[0], "t1", rationale="Cats meow and cows moo, so the answer is meow."),
            store_row(recs[0], "t2", rationale="meow"),
            store_row(recs[1], "t1", rationale="Lima is the capital."),
            store_row(recs[1], "t2", rationale="The context says Lima is on the coast; Peru's capital is Lima.")]
    groups = build_task_groups(recs, rows, TaskPlan.from_config(cfg)).groups
    assert sorted(len(g["tasks"]) for g in groups) == [1, 3, 3]
    return groups


def _batch(tok, groups=None) -> dict[str, torch.Tensor]:
    spec = CollateSpec(arch="causal", task_names=NAMES, max_input_length=256, max_target_length=24)
    assert spec.one_pass  # the default layout of causal students
    return TaskCollator(tok, spec)(groups if groups is not None else _groups())


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_tasks_loss_and_gradient_equal_its_separate_pass_in_float64(students, family):
    """Task k alone (weight 1, the others 0): one-pass and separate-pass loss and every
    parameter gradient agree to float64 rounding, far inside the 1e-5 contract."""
    model = copy.deepcopy(students[family][0]).double()
    tok = students[family][1]
    batch = _batch(tok)
    student = PackedStudent(model, "causal", len(NAMES)).eval()
    present = sorted(set(batch["row_task"].tolist()))
    assert present == [0, 1, 2]
    for k in present:
        one_hot = (batch["row_task"] == k).to(torch.float64)
        b = {**batch, "row_weight": one_hot}
        model.zero_grad()
        packed = student.task_loss(student(b))
        packed.total.backward()
        g_packed = _grads(model)
        model.zero_grad()
        ref = student.separate_loss(b)
        ref.total.backward()
        g_ref = _grads(model)
        assert packed.total.dtype == torch.float64
        assert abs(packed.total.item() - ref.total.item()) < 1e-10, k
        assert torch.equal(packed.task_tokens, ref.task_tokens)
        assert g_packed.keys() == g_ref.keys() and len(g_ref) > 5
        for n, g in g_ref.items():
            assert torch.allclose(g_packed[n], g, atol=1e-10, rtol=0), (k, n)
    model.zero_grad()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_target_never_sees_another_target(students, family):
    """Change every token of one target: the logits of the other targets of that row (and of
    every other row) do not move; its own do. HF uses the 4-D block mask as given."""
    model, tok = students[family]
    batch = _batch(tok)
    student = PackedStudent(model, "causal", len(NAMES)).eval()
    row = int(batch["row_group"][0])
    seg = batch["segment_ids"][row]
    assert int(seg.max()) >= 2  # the row holds other targets that must not move
    changed = batch["input_ids"].clone()
    block = (seg == 1).nonzero().squeeze(1)[1:]  # target 1's prefix + target + </s> (not its head token)
    changed[row, block] = (changed[row, block] + 7) % model.config.vocab_size
    with torch.no_grad():
        before, _, target = student.one_pass_logits(batch)
        after, _, _ = student.one_pass_logits({**batch, "input_ids": changed})
    first = target == 0  # target 0 of the batch is target 1 of row 0
    assert first.any() and (~first).any()
    assert torch.equal(before[~first], after[~first])
    assert not torch.allclose(before[first][1:], after[first][1:])


def test_padding_and_label_shift_at_segment_boundaries(students):
    """Segment 0 holds the question ``Q`` but its last token; every target block starts with
    that token at ``Q``'s last position, so the block's first label (the prefix's first token,
    or the target's when the prefix is empty) is predicted from a position that sees the
    question only. Padding is segment -1, labels -100 and owned by no target."""
    _, tok = students["llama"]
    groups = _groups()
    spec = CollateSpec(arch="causal", task_names=NAMES, max_input_length=256, max_target_length=24)
    collator = TaskCollator(tok, spec)
    questions = collator.encode_groups(groups)["enc_rows"]
    batch = collator(groups)
    for r, q in enumerate(questions):
        seg, ids, pos = batch["segment_ids"][r], batch["input_ids"][r], batch["position_ids"][r]
        assert ids[seg == 0].tolist() == q[:-1]
        for j in range(1, int(seg.max()) + 1):
            head = int((seg == j).nonzero()[0])
            assert ids[head] == q[-1] and pos[head] == len(q) - 1
            assert batch["label_target"][r][head - 1] == -1  # the previous block's last slot predicts nothing
        pad = batch["attention_mask"][r] == 0
        assert (seg[pad] == -1).all() and (batch["labels"][r][pad] == IGNORE_INDEX).all()
        assert (batch["label_target"][r][pad] == -1).all()
    assert (batch["attention_mask"] == 0).any()  # rows of 3 and of 1 target: some really pad


@pytest.mark.parametrize("family", FAMILIES)
def test_evaluation_prompts_with_the_layout_training_taught(students, family):
    """The saved student is prompted ``question <sep> answer-prefix`` (no packing at inference):
    exactly the tokens before the answer in its training row, and its first generated token is
    scored from the same logits training fitted."""
    from tinyllm_ray.student.evaluate_model import generate_answers
    from tinyllm_ray.student.model import StudentFormat

    model, tok = students[family]
    groups = _groups()
    batch = _batch(tok, groups)
    fmt = StudentFormat.from_config(JobConfig(), "causal", NAMES)
    assert fmt.prefix_side == "decoder"
    calls: list[dict] = []
    original = model.generate

    def recording_generate(**kw):
        out = original(**kw, output_logits=True, return_dict_in_generate=True)
        calls.append({"input_ids": kw["input_ids"], "first_logits": out.logits[0]})
        return out.sequences

    model.generate = recording_generate
    try:
        by_id = {r.id: r for r in _records()}
        for g in groups:
            generate_answers(model, tok, [by_id[str(g["example_id"])]], fmt, max_new_tokens=2, batch_size=1)
    finally:
        del model.generate
    student = PackedStudent(model, "causal", len(NAMES)).eval()
    with torch.no_grad():
        logits, _, target = student.one_pass_logits(batch)
    answer_prefix = PromptEncoder(tok).plain([fmt.answer_prefix])[0]
    for r, call in enumerate(calls):
        t = next(i for i, (gr, task) in enumerate(zip(batch["row_group"].tolist(), batch["row_task"].tolist()))
                 if gr == r and task == NAMES.index("answer"))
        j = int((batch["row_group"][:t] == r).sum()) + 1
        seg, ids = batch["segment_ids"][r], batch["input_ids"][r]
        taught = torch.cat([ids[seg == 0], ids[seg == j][:1 + len(answer_prefix)]])  # Q, then P
        assert call["input_ids"][0].tolist() == taught.tolist()
        first_answer_logits = logits[target == t][0]
        assert torch.allclose(call["first_logits"][0], first_answer_logits, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_one_pass_is_finite_and_close_to_float32(students, family):
    """``train.precision: bf16``: the additive -inf block mask in bf16 leaves no NaN (padding
    rows see themselves), and the loss stays within bf16 rounding of the float32 one."""
    model32, tok = students[family]
    batch = _batch(tok)
    model = copy.deepcopy(model32).to(torch.bfloat16)
    student16 = PackedStudent(model, "causal", len(NAMES)).eval()
    loss16 = student16.task_loss(student16(batch))
    loss16.total.backward()
    student32 = PackedStudent(model32, "causal", len(NAMES)).eval()
    with torch.no_grad():
        loss32 = student32.task_loss(student32(batch))
    assert loss16.total.dtype == torch.float32  # CE upcast from bf16 logits
    assert torch.isfinite(loss16.total) and abs(loss16.total.item() - loss32.total.item()) < 0.05
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
