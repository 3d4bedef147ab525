"""Reading a self-evaluation back: the verdict word and the critique before it.

Why its own module: verdicts are a closed, configured word set (``SelfEvalConfig.verdicts``)
with their own synonyms and "last one wins" rule, unrelated to answer parsing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tinyllm_ray.prompts.templates import DEFAULT_VERDICTS


@dataclass(frozen=True)
class ParsedVerdict:
    """A self-evaluation: the verdict (one of the configured words) and the critique."""

    verdict: str
    critique: str


# Common paraphrases, used only when their canonical verdict is in the configured set.
_VERDICT_SYNONYMS: dict[str, str] = {
    "incorrect": "wrong",
    "false": "wrong",
    "invalid": "wrong",
    "right": "correct",
    "true": "correct",
    "valid": "correct",
    "unsure": "uncertain",
    "unclear": "uncertain",
    "unknown": "uncertain",
}
_VERDICT_LINE_RE = re.compile(r"""(?im)^[ \t*#>-]*verdict[ \t*]*[:=-][ \t*"']*([a-z]+)""")
_VERDICT_INLINE_RE = re.compile(r"""(?i)\bverdict[ \t*]*(?:is)?[ \t*]*[:=-]?[ \t*"']*([a-z]+)""")


def _canonical_verdict(word: str, verdicts: Sequence[str]) -> str | None:
    allowed = {v.lower(): v for v in verdicts}
    w = word.lower()
    if w in allowed:
        return allowed[w]
    syn = _VERDICT_SYNONYMS.get(w)
    return allowed.get(syn) if syn else None


def parse_verdict(text: str, verdicts: Sequence[str] = DEFAULT_VERDICTS) -> ParsedVerdict | None:
    """The LAST "Verdict: <word>" in ``text`` (a line first, then anywhere), or None.

    The critique is the text before that verdict (stripped), so a model that writes
    "Verdict: wrong" first and then keeps going does not smuggle the run-on into the
    critique. Whole words only: "incorrect" never reads as "correct" (it maps to "wrong"
    through a small synonym table, used only when "wrong" is a configured verdict).
    """
    if not text:
        return None
    for rx in (_VERDICT_LINE_RE, _VERDICT_INLINE_RE):
        for m in reversed(list(rx.finditer(text))):
            v = _canonical_verdict(m.group(1), verdicts)
            if v is not None:
                head = text[: m.start()]
                if rx is _VERDICT_INLINE_RE:  # "... My verdict is wrong.": drop "My"
                    cut = max(head.rfind(c) for c in ".!?\n")
                    head = head[: cut + 1]
                critique = head.strip()
                critique = re.sub(r"(?i)^critique\s*:\s*", "", critique)
                return ParsedVerdict(verdict=v, critique=critique)
    return None
