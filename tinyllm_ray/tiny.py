"""Tiny random models and a local tokenizer, built deterministically with no download.

The demo, the tests and the benchmarks need real Hugging Face folders that vLLM,
``AutoModelForCausalLM``/``AutoModelForSeq2SeqLM`` and Ray Train all load, but must
never touch a hub. This module builds them from a seed:

* :func:`build_tokenizer` trains a byte-level BPE (any text encodes, there is no
  ``<unk>`` surprise) on a corpus embedded below: generic English plus the
  vocabulary of the multiple-choice prompts (``Question``, ``Answer Choices``,
  ``(a)``, ``Rationale``, ``Verdict``, ``predict:`` ...). Same seed and vocab size
  give a byte-identical ``tokenizer.json``.
* :func:`build_tiny_model` writes a random Llama, Qwen2 (causal) or T5 (seq2seq) in
  safetensors, with the tokenizer and a ``generation_config.json``, in one folder.
* :func:`tiny_model_path` builds a :class:`~tinyllm_ray.config.TinyModelConfig` once
  into a cache folder keyed by a hash of its parameters; concurrent processes race
  safely (each builds in a private temporary folder, the first atomic rename wins).

Every tiny model of one ``vocab_size`` shares the same tokenizer (tokenizer seed 0);
the model ``seed`` only changes the weights, so teachers and students built with
different seeds still agree on token ids.

Why head_dim 64: vLLM's CPU attention kernel only implements head sizes
32, 64, 80, 96, 112, 128, 160, 192, 224, 256 and 512 (``CPUAttentionBackend``);
``hidden_size 128 / 2 heads`` gives 64, the smallest common choice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # heavy imports stay inside the functions
    from transformers import PreTrainedTokenizerFast

    from tinyllm_ray.config import TinyModelConfig

Family = Literal["llama", "qwen2", "t5"]
FAMILIES: tuple[str, ...] = ("llama", "qwen2", "t5")
CAUSAL_FAMILIES: tuple[str, ...] = ("llama", "qwen2")

#: Head sizes vLLM's CPU attention backend implements (vllm 0.32 ``CPUAttentionBackend``).
VLLM_CPU_HEAD_SIZES: tuple[int, ...] = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3
MAX_POSITIONS = 2048
MIN_VOCAB = 300  # 256 byte symbols + 4 specials + a few merges

#: Bump when the corpus, the tokenizer recipe or the model recipe changes: it is part
#: of the cache key, so stale cached folders are never reused.
BUILD_VERSION = 1
MARKER = "tinyllm_tiny.json"

#: Simple role-prefixed chat template (ray.data.llm's chat stage needs one).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}System: {{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}Assistant: {{ message['content'] }}{{ eos_token }}\n"
    "{% else %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

# --------------------------------------------------------------------------- corpus

_ENGLISH = """\
The quick brown fox jumps over the lazy dog. A small model can learn a simple task when
the examples are clear and the answers are consistent. Water boils at one hundred degrees
Celsius at sea level, and it freezes at zero degrees. The sun rises in the east and sets in
the west. Plants need light, water and air to grow; animals need food, water and shelter.
People use tools to build houses, roads, bridges and machines. A teacher explains an idea,
and a student practices until the idea becomes easy. Most birds can fly, but penguins and
ostriches cannot. Fish live in water and breathe with gills. The heart pumps blood through
the body, and the lungs bring oxygen into the blood. Metals conduct heat and electricity
better than wood or plastic. When you drop a ball, gravity pulls it toward the ground.
The moon goes around the earth, and the earth goes around the sun once every year.
A day has twenty four hours, an hour has sixty minutes, and a minute has sixty seconds.
If it rains, the ground gets wet; if the ground is wet, it may have rained or someone may
have watered the garden. Children often play outside after school, while their parents
work in offices, shops, farms, hospitals and factories. Doctors treat patients, nurses
care for them, and scientists study diseases to find new medicines. A library holds many
books about history, science, art, music and mathematics. Some questions are easy, some
are hard, and some have more than one reasonable answer. Good reasoning checks each step,
compares the options, and rejects the choices that contradict the facts. Which one is
bigger, heavier, faster, older, younger, warmer or colder? Where would you find a pencil,
a spoon, a pillow, a wallet or a key? What do you call a person who writes stories?
Why does ice float on water? Because ice is less dense than liquid water. How many legs
does a spider have? A spider has eight legs, an insect has six legs, and a dog has four.
Electricity flows through a closed circuit. A magnet attracts iron and steel. Sound travels
faster in water than in air. Light travels faster than sound, so we see lightning before we
hear thunder. Evaporation turns liquid water into vapor; condensation turns vapor back into
drops. Seeds grow into plants, plants make flowers, and flowers make fruit with new seeds.
The patient had a fever, a cough and a headache, so the doctor ordered a test. The study
found that the treatment reduced the risk, but the evidence was not strong enough to be
sure. Yes, no, maybe. True or false. Agree, disagree, neither. It is possible that the
statement is true, but it is also possible that it is false. The premise supports the
hypothesis, contradicts it, or is neutral. She bought three apples and two oranges, then
gave one apple to her friend. He had twelve marbles and lost five of them. They walked
seven miles on Monday and nine miles on Tuesday. How many are left? How many in total?
What is the difference? What is the sum? Multiply, divide, add, subtract, equals, plus,
minus, times, half, double, twice, first, second, third, last, next, before, after.
"""

_PROMPT_VOCAB = """\
Question: Which of these is a mammal?
Answer Choices: (a) shark (b) whale (c) trout (d) eel (e) none of the above
Rationale: A whale breathes air and feeds its young with milk, so it is a mammal.
Answer: (b)
Q: Where do you keep milk cold? Answer Choices: (a) oven (b) refrigerator (c) drawer
A: Let's think step by step. Milk must stay cold, and a refrigerator keeps food cold.
Thus, the answer is (b).
Let's think step by step. Thus, the answer is (a). Thus, the answer is (c).
Thus, the answer is (d). Thus, the answer is (e). So the answer is yes. So the answer is no.
Verdict: correct. Verdict: wrong. Verdict: uncertain.
Is the rationale above correct, wrong, or uncertain? Evaluate the reasoning. Verdict:
predict: Question: ... Answer Choices: ... explain teacher: ... evaluate: ...
predict: explain llama: explain qwen: explain t5: explain flan: evaluate:
Context: Premise: Hypothesis: Options: Choices: Correct answer: The correct answer is
Answer: yes Answer: no Answer: maybe Answer: true Answer: false
entailment contradiction neutral. (a) (b) (c) (d) (e) (f) (A) (B) (C) (D) (E) a) b) c) d)
User: Assistant: System: You are a helpful assistant. Explain your reasoning.
"""


def _synthetic_lines(seed: int, n: int = 400) -> list[str]:
    """Seeded arithmetic and multiple-choice lines: digits, numbers and prompt scaffolding."""
    rng = random.Random(seed)
    nouns = ["apples", "books", "coins", "birds", "cars", "pens", "cups", "stones", "trees", "boxes"]
    names = ["Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivan", "Jo"]
    letters = "abcde"
    lines = [" ".join(str(i) for i in range(0, 101)), "0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 3.14 1/2 50%"]
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op, val = rng.choice([("plus", a + b), ("minus", a - b), ("times", a * b)])
        who, what = rng.choice(names), rng.choice(nouns)
        opts = rng.sample(range(-99, 999), 4) + [val]
        rng.shuffle(opts)
        choice = " ".join(f"({letters[i]}) {o}" for i, o in enumerate(opts))
        gold = letters[opts.index(val)]
        verdict = rng.choice(["correct", "wrong", "uncertain"])
        lines.append(
            f"Question: {who} has {a} {what}. What is {a} {op} {b}? Answer Choices: {choice}\n"
            f"Rationale: {a} {op} {b} equals {val}. Thus, the answer is ({gold}). Verdict: {verdict}"
        )
    return lines


def corpus(seed: int = 0) -> list[str]:
    """The embedded training text for the tokenizer (a few KB, deterministic in ``seed``)."""
    return _ENGLISH.splitlines() + _PROMPT_VOCAB.splitlines() + _synthetic_lines(seed)


# --------------------------------------------------------------------------- validation


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def validate_params(
    family: str, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, seed: int
) -> int:
    """Check a tiny model's parameters; return its head_dim. Errors say how to fix them."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {list(FAMILIES)}, got {family!r}")
    _check_int("hidden_size", hidden_size, 1)
    _check_int("num_layers", num_layers, 1)
    _check_int("num_heads", num_heads, 1)
    _check_int("vocab_size", vocab_size, MIN_VOCAB)
    _check_int("seed", seed, 0)
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}); "
            f"e.g. hidden_size={64 * num_heads} gives head_dim 64"
        )
    head_dim = hidden_size // num_heads
    if family in CAUSAL_FAMILIES and head_dim not in VLLM_CPU_HEAD_SIZES:
        raise ValueError(
            f"head_dim = hidden_size / num_heads = {hidden_size}/{num_heads} = {head_dim} is not served by "
            f"vLLM: its CPU attention kernel only implements head sizes {list(VLLM_CPU_HEAD_SIZES)} "
            f"(at least 32; 64 recommended). Use e.g. hidden_size={64 * num_heads} for {num_heads} heads, "
            f"or num_heads={max(1, hidden_size // 64)} for hidden_size {hidden_size}"
        )
    return head_dim


# --------------------------------------------------------------------------- tokenizer


def _train_tokenizer_object(vocab_size: int, seed: int):  # -> tokenizers.Tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    # A few KB of text may run out of merges before vocab_size: fill the rest with
    # T5-style sentinels so len(tokenizer) == vocab_size == the model's embedding rows
    # (a random model may emit any id, and every id must decode).
    missing = vocab_size - tok.get_vocab_size(with_added_tokens=True)
    if missing > 0:
        tok.add_tokens([f"<extra_id_{i}>" for i in range(missing)])
    return tok


def build_tokenizer(
    out_dir: str | Path | None = None, *, vocab_size: int = 2000, seed: int = 0
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the embedded corpus; save it to ``out_dir`` if given.

    Special tokens: ``<pad>`` 0, ``<s>`` 1 (bos), ``</s>`` 2 (eos), ``<unk>`` 3 (never
    produced: every byte has a symbol). No special token is added on encode;
    :func:`build_tiny_model` sets the family's convention (bos for Llama, eos for T5).
    Exactly ``vocab_size`` ids; same arguments give a byte-identical ``tokenizer.json``.
    """
    from transformers import PreTrainedTokenizerFast

    _check_int("vocab_size", vocab_size, MIN_VOCAB)
    _check_int("seed", seed, 0)
    tok = _train_tokenizer_object(vocab_size, seed)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=MAX_POSITIONS,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    hf.chat_template = CHAT_TEMPLATE
    if len(hf) != vocab_size:  # pragma: no cover - guarded by the sentinel fill above
        raise RuntimeError(f"tokenizer has {len(hf)} ids, expected {vocab_size}")
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        hf.save_pretrained(str(out))
    return hf


def _set_family_post_processor(hf: PreTrainedTokenizerFast, family: str) -> None:
    """Mirror the real families: Llama prepends ``<s>``, T5 appends ``</s>``, Qwen2 adds nothing."""
    from tokenizers import processors

    bos_id, eos_id = hf.convert_tokens_to_ids(BOS), hf.convert_tokens_to_ids(EOS)
    backend = hf.backend_tokenizer
    if family == "llama":
        backend.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
        )
    elif family == "t5":
        backend.post_processor = processors.TemplateProcessing(
            single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)]
        )
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)


# --------------------------------------------------------------------------- models


def _model_config(family: str, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int):
    head_dim = hidden_size // num_heads
    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        initializer_range=0.02,
        **ids,
    )
    if family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(head_dim=head_dim, attention_bias=False, mlp_bias=False, **common)
    if family == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(use_sliding_window=False, **common)
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size,
        d_model=hidden_size,
        d_kv=head_dim,
        d_ff=2 * hidden_size,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        is_encoder_decoder=True,
        decoder_start_token_id=ids["pad_token_id"],  # T5 starts decoding from <pad>
        n_positions=MAX_POSITIONS,
        **ids,
    )


def build_tiny_model(
    family: Family,
    out_dir: str | Path,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    vocab_size: int = 2000,
    seed: int = 0,
) -> Path:
    """Write a random ``family`` model + tokenizer + generation config into ``out_dir``.

    Weights are float32 safetensors drawn under ``torch.manual_seed(seed)`` (the caller's
    global RNG state is restored afterwards): same arguments give identical weights.
    Causal families use ``intermediate_size = 2 * hidden_size``, tied embeddings and
    ``max_position_embeddings = 2048``; T5 uses ``d_ff = 2 * hidden_size``,
    ``d_kv = hidden_size / num_heads`` and ``decoder_start_token_id = pad``.
    """
    validate_params(family, hidden_size, num_layers, num_heads, vocab_size, seed)
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer(vocab_size=vocab_size, seed=0)
    _set_family_post_processor(tokenizer, family)
    tokenizer.add_bos_token = family == "llama"
    tokenizer.add_eos_token = family == "t5"

    config = _model_config(family, hidden_size, num_layers, num_heads, vocab_size)
    auto = AutoModelForSeq2SeqLM if family == "t5" else AutoModelForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = auto.from_config(config, dtype=torch.float32)
    model.eval()

    gen = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        do_sample=False,
        **({"decoder_start_token_id": config.decoder_start_token_id} if family == "t5" else {}),
    )
    model.generation_config = gen
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    gen.save_pretrained(str(out))

    params = dict(family=family, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                  vocab_size=vocab_size, seed=seed)
    marker = {"build_version": BUILD_VERSION, "params": params, "key": _params_key(params),
              "num_parameters": sum(p.numel() for p in model.parameters())}
    (out / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return out


# --------------------------------------------------------------------------- cache


def _params_key(params: dict[str, Any]) -> str:
    blob = json.dumps({"build_version": BUILD_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$TINYLLM_CACHE`` if set, else ``~/.cache/tinyllm_ray/tiny``."""
    env = os.environ.get("TINYLLM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tinyllm_ray" / "tiny"


def _is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / "config.json").is_file()


def tiny_model_path(cfg: TinyModelConfig, cache_dir: str | Path | None = None) -> Path:
    """Return the folder of the tiny model ``cfg`` describes, building it on first use.

    The folder is ``<cache>/<family>-h<hidden>-l<layers>-a<heads>-v<vocab>-s<seed>-<hash>``.
    A build goes to a private temporary folder beside it and is renamed into place
    atomically, so two processes racing on a cold cache both return a complete folder
    (the loser discards its copy).
    """
    params = dict(family=cfg.family, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                  num_heads=cfg.num_heads, vocab_size=cfg.vocab_size, seed=cfg.seed)
    validate_params(**params)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name = (f"{cfg.family}-h{cfg.hidden_size}-l{cfg.num_layers}-a{cfg.num_heads}"
            f"-v{cfg.vocab_size}-s{cfg.seed}-{_params_key(params)}")
    final = root / name
    if _is_complete(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        build_tiny_model(out_dir=tmp, **params)
        if final.exists() and not _is_complete(final):
            # Left by something other than this function (we only rename complete
            # folders); move it aside rather than trust it.
            with contextlib.suppress(OSError):
                final.rename(root / f".stale-{name}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(tmp, final)  # atomic; fails if another process renamed first
        except OSError:
            if not _is_complete(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------- helpers


def is_seq2seq(path_or_config: Any) -> bool:
    """True for encoder-decoder models (T5 ...), False for decoder-only ones.

    Accepts a :class:`TinyModelConfig`, a ``transformers`` config, a config dict, a family
    name (``"t5"``, ``"llama"``, ``"qwen2"``) or a model folder / hub name (read offline
    from the local cache when ``HF_HUB_OFFLINE=1``).
    """
    obj = path_or_config
    family = getattr(obj, "family", None)
    if isinstance(family, str) and not hasattr(obj, "model_type"):
        return family == "t5"
    if isinstance(obj, dict):
        return _seq2seq_from_fields(obj.get("model_type"), obj.get("is_encoder_decoder"))
    if hasattr(obj, "model_type"):
        return _seq2seq_from_fields(obj.model_type, getattr(obj, "is_encoder_decoder", None))
    if isinstance(obj, str) and obj in FAMILIES:
        return obj == "t5"
    if isinstance(obj, str | Path):
        p = Path(obj).expanduser()
        if p.is_dir():
            cfg_file = p / "config.json"
            if not cfg_file.is_file():
                raise FileNotFoundError(f"{p} has no config.json: not a Hugging Face model folder")
            data = json.loads(cfg_file.read_text())
            return _seq2seq_from_fields(data.get("model_type"), data.get("is_encoder_decoder"))
        from transformers import AutoConfig

        return is_seq2seq(AutoConfig.from_pretrained(str(obj)))
    raise TypeError(f"is_seq2seq: cannot tell from a {type(obj).__name__}")


def _seq2seq_from_fields(model_type: str | None, is_encoder_decoder: bool | None) -> bool:
    if is_encoder_decoder:
        return True
    if model_type:
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

        return model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
    return False


__all__ = [
    "CAUSAL_FAMILIES",
    "CHAT_TEMPLATE",
    "FAMILIES",
    "VLLM_CPU_HEAD_SIZES",
    "build_tiny_model",
    "build_tokenizer",
    "corpus",
    "default_cache_dir",
    "is_seq2seq",
    "tiny_model_path",
    "validate_params",
]
