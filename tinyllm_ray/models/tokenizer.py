"""A local byte-level BPE tokenizer, trained deterministically on the embedded corpus.

Why train one: the demo, the tests and the benchmarks need a real ``tokenizer.json`` that
vLLM, ``AutoTokenizer`` and Ray Train all load, without a hub. Byte-level BPE encodes any
text (no ``<unk>`` surprise); same seed and vocabulary size give a byte-identical file.
Families differ only in the special tokens added on encode, as the real ones do: Llama
prepends ``<s>``, T5 appends ``</s>``, Qwen2 adds nothing
(:func:`set_family_post_processor`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyllm_ray.models.corpus import corpus

if TYPE_CHECKING:  # heavy imports stay inside the functions
    from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3
MAX_POSITIONS = 2048
MIN_VOCAB = 300  # 256 byte symbols + 4 specials + a few merges

#: Simple role-prefixed chat template (ray.data.llm's chat stage needs one). Llama
#: folders get ``{{ bos_token }}`` in front, as real Llama templates do, because chat
#: prompts are tokenized without adding special tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}System: {{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}Assistant: {{ message['content'] }}{{ eos_token }}\n"
    "{% else %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def chat_template(family: str | None = None) -> str:
    """The chat template a tiny ``family`` folder ships (bos-prefixed for Llama)."""
    return ("{{ bos_token }}" + CHAT_TEMPLATE) if family == "llama" else CHAT_TEMPLATE


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")



#: Qwen2's pre-tokenizer split (digits one by one). Every family uses the same pipeline
#: because ``AutoTokenizer`` rebuilds a ``qwen2`` folder's tokenizer as ``Qwen2Tokenizer``
#: (NFC + this regex + byte-level) from vocab and merges, ignoring ``tokenizer.json``'s
#: pipeline: training with exactly that pipeline keeps the loaded tokenizer identical.
PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def _train_tokenizer_object(vocab_size: int, seed: int):  # -> tokenizers.Tokenizer
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
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

    check_int("vocab_size", vocab_size, MIN_VOCAB)
    check_int("seed", seed, 0)
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
        save_tokenizer(hf, Path(out_dir))
    return hf


def save_tokenizer(hf: PreTrainedTokenizerFast, out: Path) -> None:
    """save_pretrained, naming the class every transformers version knows.

    transformers 5 writes ``TokenizersBackend``, which 4.x cannot resolve; both load
    ``PreTrainedTokenizerFast`` as the plain fast tokenizer from ``tokenizer.json``.
    """
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def set_family_post_processor(hf: PreTrainedTokenizerFast, family: str) -> None:
    """Mirror the real families: Llama prepends ``<s>``, T5 appends ``</s>``, Qwen2 adds nothing.

    The ``add_bos_token``/``add_eos_token`` flags are set first (transformers 5 rebuilds
    the post-processor from them), then the template is set explicitly, so the saved
    ``tokenizer.json`` carries it for every transformers version.
    """
    from tokenizers import processors

    bos_id, eos_id = hf.convert_tokens_to_ids(BOS), hf.convert_tokens_to_ids(EOS)
    hf.add_bos_token = family == "llama"
    hf.add_eos_token = family == "t5"
    if family == "llama":
        pp = processors.TemplateProcessing(
            single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)]
        )
    elif family == "t5":
        pp = processors.TemplateProcessing(
            single=f"$A:0 {EOS}:0", pair=f"$A:0 {EOS}:0 $B:1 {EOS}:1", special_tokens=[(EOS, eos_id)]
        )
    else:
        pp = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
    hf.backend_tokenizer.post_processor = pp
