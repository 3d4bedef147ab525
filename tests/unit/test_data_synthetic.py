"""The built-in demo task: deterministic, balanced, and learnable only by learning facts."""

from __future__ import annotations

from collections import Counter

from tinyllm_ray.config import DataConfig, SyntheticConfig
from tinyllm_ray.data import load_splits
from tinyllm_ray.data.synthetic import FACTS, KINDS, N_CHOICES, make_synthetic_splits


def _entity_of(question: str) -> str:
    for _, entity, _ in FACTS:
        if f" {entity} " in f" {question.rstrip('?')} ":
            return entity
    raise AssertionError(f"no entity in {question!r}")


def test_sizes_and_ids() -> None:
    splits = make_synthetic_splits(SyntheticConfig(train=40, validation=10, test=12), seed=0)
    assert {s: len(r) for s, r in splits.items()} == {"train": 40, "validation": 10, "test": 12}
    assert splits["train"][0].id == "syn-train-00000"
    for recs in splits.values():
        assert len({r.id for r in recs}) == len(recs)


def test_same_seed_same_records_other_seed_differs() -> None:
    cfg = SyntheticConfig()
    a, b = make_synthetic_splits(cfg, seed=3), make_synthetic_splits(cfg, seed=3)
    assert a == b
    c = make_synthetic_splits(cfg, seed=4)
    assert [r.to_dict() for r in a["train"]] != [r.to_dict() for r in c["train"]]


def test_every_record_is_a_four_way_question_about_a_known_fact() -> None:
    facts = {e: (k, v) for k, e, v in FACTS}
    assert len(facts) == 32 and len(KINDS) == 4
    for recs in make_synthetic_splits(SyntheticConfig(), seed=0).values():
        for r in recs:
            kind, value = facts[_entity_of(r.question)]
            assert r.answer == value
            assert len(r.choices) == N_CHOICES == len(set(r.choices))
            assert set(r.choices) <= set(kind.values)  # distractors of the same kind


def test_facts_are_balanced_and_positions_spread() -> None:
    train = make_synthetic_splits(SyntheticConfig(train=256), seed=0)["train"]
    per_entity = Counter(_entity_of(r.question) for r in train)
    assert set(per_entity.values()) == {8}  # 256 / 32 facts: each exactly 8 times
    positions = Counter(r.answer_index for r in train)
    assert set(positions) == {0, 1, 2, 3}
    assert max(positions.values()) < 0.4 * len(train)  # no position shortcut


def test_eval_splits_reuse_facts_but_never_copy_a_train_row() -> None:
    splits = make_synthetic_splits(SyntheticConfig(), seed=0)
    train_rows = {(r.question, r.choices) for r in splits["train"]}
    train_entities = {_entity_of(r.question) for r in splits["train"]}
    for split in ("validation", "test"):
        assert not train_rows & {(r.question, r.choices) for r in splits[split]}
        assert {_entity_of(r.question) for r in splits[split]} <= train_entities


def test_learnable_by_fact_lookup_not_by_position() -> None:
    """A learner that memorises entity -> answer from train gets 100% on test; always
    choosing the most common train position does not come close."""
    splits = make_synthetic_splits(SyntheticConfig(), seed=0)
    memory = {_entity_of(r.question): r.answer for r in splits["train"]}
    test = splits["test"]
    assert sum(memory[_entity_of(r.question)] == r.answer for r in test) == len(test)
    best_pos = Counter(r.answer_index for r in splits["train"]).most_common(1)[0][0]
    assert sum(r.answer_index == best_pos for r in test) / len(test) < 0.5


def test_load_splits_synthetic_uses_data_seed_and_limits() -> None:
    cfg = DataConfig(name="synthetic", seed=5, synthetic=SyntheticConfig(train=20, validation=8, test=8),
                     limit={"train": 6})
    loaded = load_splits(cfg)
    assert loaded.sizes() == {"train": 6, "validation": 8, "test": 8}
    assert loaded.splits["train"] == make_synthetic_splits(cfg.synthetic, seed=5)["train"][:6]
    assert loaded.skipped == {"train": {}, "validation": {}, "test": {}}
    assert loaded.sources["test"] == "synthetic (seed 5)"
