"""Tiny random models and a local tokenizer, built deterministically with no download.

The demo, the tests and the benchmarks need real Hugging Face folders that vLLM,
``AutoModelForCausalLM``/``AutoModelForSeq2SeqLM`` and Ray Train all load, but must
never touch a hub. This module builds them from a seed:

* :func:`~tinyllm_ray.models.tokenizer.build_tokenizer` (its own module) trains a
  byte-level BPE on the corpus embedded in :mod:`tinyllm_ray.models.corpus`; same seed
  and vocab size give a byte-identical ``tokenizer.json``.
* :func:`build_tiny_model` writes a random Llama, Qwen2 (causal) or T5 (seq2seq) in
  safetensors, with the tokenizer and a ``generation_config.json``, in one folder.
* :func:`tiny_model_path` builds a :class:`~tinyllm_ray.config.TinyModelConfig` once
  into a cache folder keyed by a hash of its parameters; concurrent processes race
  safely (each builds in a private temporary folder, the first atomic rename wins).

Every tiny model of one ``vocab_size`` shares the same vocabulary (tokenizer seed 0);
the model ``seed`` only changes the weights, so teachers and students built with
different seeds agree on token ids. Families differ only in the special tokens added
on encode, as the real ones do: Llama prepends ``<s>``, T5 appends ``</s>``, Qwen2
adds nothing.

Why head_dim 64: vLLM's CPU attention kernel only implements head sizes
32, 64, 80, 96, 112, 128, 160, 192, 224, 256 and 512 (``CPUAttentionBackend``);
``hidden_size 128 / 2 heads`` gives 64, the smallest common choice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tinyllm_ray.models.cache import cache_dir_for
from tinyllm_ray.models.corpus import corpus
from tinyllm_ray.models.tokenizer import (
    CHAT_TEMPLATE,
    MAX_POSITIONS,
    MIN_VOCAB,
    build_tokenizer,
    chat_template,
    check_int,
    save_tokenizer,
    set_family_post_processor,
)

if TYPE_CHECKING:  # heavy imports stay inside the functions
    from tinyllm_ray.config import TinyModelConfig

Family = Literal["llama", "qwen2", "t5"]
FAMILIES: tuple[str, ...] = ("llama", "qwen2", "t5")
CAUSAL_FAMILIES: tuple[str, ...] = ("llama", "qwen2")

#: Head sizes vLLM's CPU attention backend implements (vllm 0.32 ``CPUAttentionBackend``).
VLLM_CPU_HEAD_SIZES: tuple[int, ...] = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

#: Bump when the corpus, the tokenizer recipe or the model recipe changes: it is part
#: of the cache key, so stale cached folders are never reused.
BUILD_VERSION = 1
MARKER = "tinyllm_tiny.json"

# Seeded init goes through torch's global RNG (``nn.init`` takes no generator), so two
# threads building at once would interleave draws: serialise them.
_INIT_LOCK = threading.Lock()


# --------------------------------------------------------------------------- validation


def validate_params(
    family: str, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, seed: int
) -> int:
    """Check a tiny model's parameters; return its head_dim. Errors say how to fix them."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {list(FAMILIES)}, got {family!r}")
    check_int("hidden_size", hidden_size, 1)
    check_int("num_layers", num_layers, 1)
    check_int("num_heads", num_heads, 1)
    check_int("vocab_size", vocab_size, MIN_VOCAB)
    check_int("seed", seed, 0)
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}); "
            f"e.g. hidden_size={64 * num_heads} gives head_dim 64"
        )
    head_dim = hidden_size // num_heads
    if family in CAUSAL_FAMILIES and head_dim not in VLLM_CPU_HEAD_SIZES:
        ok_heads = [
            n
            for n in range(1, hidden_size + 1)
            if hidden_size % n == 0 and hidden_size // n in VLLM_CPU_HEAD_SIZES
        ]
        alt = f"num_heads in {ok_heads} for hidden_size {hidden_size}, or " if ok_heads else ""
        raise ValueError(
            f"head_dim = hidden_size / num_heads = {hidden_size}/{num_heads} = {head_dim} cannot be served by "
            f"vLLM: its CPU attention kernel only implements head sizes {list(VLLM_CPU_HEAD_SIZES)} "
            f"(at least 32; 64 recommended, e.g. hidden_size 128 with 2 heads). "
            f"Use {alt}hidden_size={64 * num_heads} for {num_heads} heads"
        )
    return head_dim


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
    set_family_post_processor(tokenizer, family)
    tokenizer.chat_template = chat_template(family)

    config = _model_config(family, hidden_size, num_layers, num_heads, vocab_size)
    auto = AutoModelForSeq2SeqLM if family == "t5" else AutoModelForCausalLM
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
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
    with _quiet_progress():
        model.save_pretrained(str(out), safe_serialization=True)
    save_tokenizer(tokenizer, out)
    gen.save_pretrained(str(out))

    params = _params(family, hidden_size, num_layers, num_heads, vocab_size, seed)
    marker = {
        "build_version": BUILD_VERSION,
        "params": params,
        "key": _params_key(params),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    for f in out.iterdir():  # safetensors are written 0600; a shared cache needs 0644
        if f.is_file():
            f.chmod(0o644)
    return out


@contextlib.contextmanager
def _quiet_progress():
    """No "Writing model shards" bar for a 2 MB file; the caller's setting is restored."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------- cache


def _params(
    family: str, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, seed: int
) -> dict[str, Any]:
    return {
        "family": family,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "vocab_size": vocab_size,
        "seed": seed,
    }


def _params_key(params: dict[str, Any]) -> str:
    blob = json.dumps({"build_version": BUILD_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$TINYLLM_CACHE`` if set, else ``~/.cache/tinyllm_ray/tiny``."""
    return cache_dir_for("tiny")


def _is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / "config.json").is_file()


def tiny_model_path(cfg: TinyModelConfig, cache_dir: str | Path | None = None) -> Path:
    """Return the folder of the tiny model ``cfg`` describes, building it on first use.

    The folder is ``<cache>/<family>-h<hidden>-l<layers>-a<heads>-v<vocab>-s<seed>-<hash>``.
    A build goes to a private temporary folder beside it and is renamed into place
    atomically, so two processes racing on a cold cache both return a complete folder
    (the loser discards its copy).
    """
    params = _params(cfg.family, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.vocab_size, cfg.seed)
    validate_params(**params)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name = (
        f"{cfg.family}-h{cfg.hidden_size}-l{cfg.num_layers}-a{cfg.num_heads}"
        f"-v{cfg.vocab_size}-s{cfg.seed}-{_params_key(params)}"
    )
    final = root / name
    if _is_complete(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        build_tiny_model(out_dir=tmp, **params)
        if final.exists() and not _is_complete(final):
            # Left by something other than this function (we only rename complete
            # folders): move it aside and delete it rather than trust it.
            stale = root / f".stale-{name}-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(OSError):
                final.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
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
        if "model_type" not in obj and isinstance(obj.get("family"), str):
            return obj["family"] == "t5"  # a TinyModelConfig dump
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
    "chat_template",
    "corpus",
    "default_cache_dir",
    "is_seq2seq",
    "tiny_model_path",
    "validate_params",
]
