"""A built-in, deterministic, *learnable* multiple-choice task for the CPU demo and tests.

Why not a real dataset: the demo must run with no files and no network, and its student
(a 2-layer model trained for a few hundred steps on CPU) must visibly improve, or the demo
proves nothing. Real benchmarks are far beyond such a model; this task is not.

The task: 32 facts (entity -> property) in four kinds — animal sounds, capitals, fruit
colours, what objects are made of — asked with three phrasings each. Each question has 4
choices: the right property and 3 distractors of the *same kind*, so the answer cannot be
guessed from the kind of word alone; it must be recalled from the entity.

Validation and test ask about the same facts (the knowledge to learn) with freshly drawn
distractors and orders, and never repeat a train (question, choices) pair exactly, so a
student scores well only by learning the facts, not by memorising rows or letter positions.
Every split cycles through all facts in a seeded order, so each fact is equally frequent.
"""

from __future__ import annotations

import random
from collections.abc import Container, Iterator
from dataclasses import dataclass

from tinyllm_ray.config import SyntheticConfig
from tinyllm_ray.data.schema import MCQRecord

N_CHOICES = 4
_MAX_RESAMPLES = 64


@dataclass(frozen=True)
class FactKind:
    """One property type: its question phrasings and its (entity, value) facts."""

    name: str
    templates: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]

    @property
    def values(self) -> tuple[str, ...]:
        """Distinct property values, in table order (distractors are drawn from these)."""
        return tuple(dict.fromkeys(v for _, v in self.facts))


KINDS: tuple[FactKind, ...] = (
    FactKind(
        "sound",
        ("Which sound does a {e} make?", "What noise does a {e} make?", "A {e} usually makes which sound?"),
        (("dog", "bark"), ("cat", "meow"), ("cow", "moo"), ("duck", "quack"),
         ("sheep", "baa"), ("lion", "roar"), ("snake", "hiss"), ("owl", "hoot")),
    ),
    FactKind(
        "capital",
        ("What is the capital of {e}?", "Which city is the capital of {e}?",
         "The capital city of {e} is which one?"),
        (("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo"),
         ("Canada", "Ottawa"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo")),
    ),
    FactKind(
        "colour",
        ("What colour is a ripe {e}?", "Which colour does a ripe {e} have?", "A ripe {e} is usually what colour?"),
        (("banana", "yellow"), ("lime", "green"), ("strawberry", "red"), ("blueberry", "blue"),
         ("plum", "purple"), ("tangerine", "orange"), ("coconut", "brown"), ("lemon", "yellow")),
    ),
    FactKind(
        "material",
        ("What is a {e} usually made of?", "Which material is a {e} typically made from?",
         "A {e} is mostly made of what?"),
        (("window", "glass"), ("tyre", "rubber"), ("candle", "wax"), ("sweater", "wool"),
         ("brick", "clay"), ("coin", "metal"), ("notebook", "paper"), ("table", "wood")),
    ),
)

# (kind, entity, value) for every fact, in a fixed order.
FACTS: tuple[tuple[FactKind, str, str], ...] = tuple((k, e, v) for k in KINDS for e, v in k.facts)


def _question(kind: FactKind, entity: str, value: str, rng: random.Random) -> tuple[str, tuple[str, ...]]:
    """One phrasing and one shuffled choice set for a fact."""
    template = rng.choice(kind.templates)
    distractors = rng.sample([v for v in kind.values if v != value], N_CHOICES - 1)
    choices = [value, *distractors]
    rng.shuffle(choices)
    return template.format(e=entity), tuple(choices)


def _iter_split(
    split: str, size: int, seed: int, avoid: Container[tuple[str, tuple[str, ...]]]
) -> Iterator[MCQRecord]:
    """``size`` questions cycling through all facts (reshuffled each pass), seeded per split, one at a time."""
    rng = random.Random(f"tinyllm-synthetic:{seed}:{split}")
    order: list[int] = []
    for i in range(size):
        if not order:
            order = list(range(len(FACTS)))
            rng.shuffle(order)
        kind, entity, value = FACTS[order.pop()]
        question, choices = _question(kind, entity, value, rng)
        for _ in range(_MAX_RESAMPLES):
            if (question, choices) not in avoid:
                break
            question, choices = _question(kind, entity, value, rng)
        yield MCQRecord(id=f"syn-{split}-{i:05d}", question=question, choices=choices, answer=value)


def make_synthetic_splits(cfg: SyntheticConfig, seed: int = 0) -> dict[str, list[MCQRecord]]:
    """Train/validation/test of the demo task, sizes from ``cfg``; same seed -> same records."""
    train = list(_iter_split("train", cfg.train, seed, avoid=set()))
    seen = {(r.question, r.choices) for r in train}
    return {
        "train": train,
        "validation": list(_iter_split("validation", cfg.validation, seed, avoid=seen)),
        "test": list(_iter_split("test", cfg.test, seed, avoid=seen)),
    }


def iter_synthetic_split(cfg: SyntheticConfig, split: str, seed: int = 0) -> Iterator[MCQRecord]:
    """``make_synthetic_splits(cfg, seed)[split]`` one record at a time, in order, without the list.

    Validation and test avoid train's (question, choices) pairs: train is drawn first into
    that set, which is bounded by the task (at most 32 facts x 3 phrasings x 4! orders x
    C(7, 3) distractor sets, ~80k pairs), not by the split size.
    """
    if split == "train":
        return _iter_split("train", cfg.train, seed, avoid=set())
    seen = {(r.question, r.choices) for r in _iter_split("train", cfg.train, seed, avoid=set())}
    return _iter_split(split, getattr(cfg, split), seed, avoid=seen)
