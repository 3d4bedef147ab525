"""Adapters: one pure function per public dataset schema, raw row -> canonical dict.

Why pure functions over rows (not over files or ``datasets.Dataset`` objects): the same
row arrives from the hub, from a local JSON Lines/Parquet/CSV copy, or from a test, and
the translation must be identical in each case; a function of one ``Mapping`` is trivial
to test with a literal row copied from the dataset card.

Every adapter has the signature ``(row, fallback_id) -> {"id", "question", "choices",
"answer", "context"}`` where ``choices`` is a list of texts (``[]`` for free-form tasks)
and ``answer`` the *text* of the right choice. ``fallback_id`` is used when the schema has
no id column (PIQA, RiddleSense); the loader passes ``"<split>-<n>"`` so ids stay unique
across splits. An adapter raises :class:`~tinyllm_ray.data.schema.RowError` when a row
cannot be translated (label -1, unknown answerKey); record-level checks (empty question,
answer not among choices) happen when the loader builds the :class:`MCQRecord`.

Modules, by schema family (each documents its schemas' fields):

* :mod:`~tinyllm_ray.data.adapters.lettered`: labelled options + answer key (OBQA, ARC,
  RiddleSense, CommonsenseQA, PIQA);
* :mod:`~tinyllm_ray.data.adapters.fixed_answers`: fixed answer words or a number
  (PubMedQA, BioASQ, ANLI, SVAMP);
* :mod:`~tinyllm_ray.data.adapters.files`: TinyLLM's files and ``generic`` column maps;
* :mod:`~tinyllm_ray.data.adapters.fields`: the shared field readers;
* :mod:`~tinyllm_ray.data.adapters.registry`: name -> adapter.
"""

from __future__ import annotations

from tinyllm_ray.data.adapters.fields import (
    AdapterFn,
    Canonical,
    is_missing,
    normalise_number,
    numeric_answer,
)
from tinyllm_ray.data.adapters.files import adapt_tinyllm, make_generic_adapter
from tinyllm_ray.data.adapters.fixed_answers import (
    NLI_LABELS,
    YES_NO,
    YES_NO_MAYBE,
    adapt_anli,
    adapt_bioasq,
    adapt_pubmedqa,
    adapt_svamp,
)
from tinyllm_ray.data.adapters.lettered import (
    adapt_arc,
    adapt_commonsense_qa,
    adapt_obqa,
    adapt_piqa,
    adapt_riddlesense,
)
from tinyllm_ray.data.adapters.registry import ADAPTERS, TINYLLM, DatasetAdapter, get_adapter

__all__ = [
    "ADAPTERS",
    "NLI_LABELS",
    "TINYLLM",
    "YES_NO",
    "YES_NO_MAYBE",
    "AdapterFn",
    "Canonical",
    "DatasetAdapter",
    "adapt_anli",
    "adapt_arc",
    "adapt_bioasq",
    "adapt_commonsense_qa",
    "adapt_obqa",
    "adapt_piqa",
    "adapt_pubmedqa",
    "adapt_riddlesense",
    "adapt_svamp",
    "adapt_tinyllm",
    "get_adapter",
    "is_missing",
    "make_generic_adapter",
    "normalise_number",
    "numeric_answer",
]
