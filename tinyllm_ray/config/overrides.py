"""Command-line overrides (``teachers.0.replicas=2``) merged into a loaded config by OmegaConf.

Why OmegaConf and not our own walker: path syntax, list indices, creating missing
sections and type checks on the way are OmegaConf's job (as in torchtune); this module
keeps only the two rules that are ours:

* **Nothing is evaluated.** Values are read with YAML's safe loader, and the merged tree is
  turned back into plain data with ``OmegaConf.to_container(cfg, resolve=False)``, so an
  interpolation such as ``${oc.env:HOME}`` stays that literal string; pydantic then
  validates it like any other string.
* **A value that only looks like block YAML stays a string.** ``student.answer_prefix=explain:``
  is a prefix ending in a colon, far more likely on a command line than a nested mapping;
  flow collections (``[0.1, 1, 3]``, ``{}``) are still collections. Likewise a date
  (``run_name=2024-01-01``) stays the text typed: no config field holds a date.

Why ``OmegaConf.update(..., merge=False)`` per override rather than
``OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))`` (torchtune's recipe):
``from_dotlist`` builds a fresh tree in which ``teachers.0`` is a *mapping* key, which
cannot merge into the ``teachers`` list ("Cannot merge incompatible container types"),
and a merge cannot empty a mapping (``loss.alpha={}`` must clear the weights). ``update``
is the primitive ``from_dotlist`` itself applies per item; with ``merge=False`` an
override replaces the value it names, as ``key=value`` reads.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from tinyllm_ray.errors import ConfigError, InternalError

if TYPE_CHECKING:  # omegaconf is imported on use: workers import the config, never merge it
    from omegaconf import DictConfig

__all__ = ["apply_overrides", "parse_override_value", "split_override"]


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (the CLI prints user errors as one line)."""
    msg = getattr(exc, "msg", None) or str(exc)
    first = str(msg).strip().splitlines()[0] if str(msg).strip() else type(exc).__name__
    key = getattr(exc, "full_key", None)
    return f"{key}: {first}" if key else first


def parse_override_value(text: str) -> Any:
    """A YAML scalar or flow collection (``2``, ``true``, ``[a, b]``, ``{}``); see module doc."""
    if text == "":
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override value {text!r} is not valid YAML: {' '.join(str(exc).split())}") from None
    if isinstance(value, dict | list) and text.lstrip()[:1] not in ("[", "{"):
        return text
    if isinstance(value, datetime.date):  # YAML reads 2024-01-01 as a date; configs hold text
        return text
    return value


def split_override(item: str) -> tuple[str, Any]:
    """``"a.b.0.c=value"`` -> (``"a.b.0.c"``, parsed value); a malformed item is a ConfigError."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like field.path=value")
    key, _, value = item.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {item!r} has an empty field path")
    return ".".join(parts), parse_override_value(value)


def to_omegaconf(raw: Mapping[str, Any], source: str = "config") -> DictConfig:
    """The raw mapping as an OmegaConf tree (a copy: ``raw`` is never modified).

    OmegaConf rejects what it cannot hold (a YAML date, a string with an unbalanced
    ``${``); that is reported as a ConfigError naming the key.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import GrammarParseError, OmegaConfBaseException

    try:
        return OmegaConf.create(dict(raw))
    except OmegaConfBaseException as exc:
        hint = (
            " (a '${' in a value must be balanced, as in '${name}'; it is kept as text, never evaluated)"
            if isinstance(exc, GrammarParseError)
            else ""
        )
        raise ConfigError(f"{source}: {_one_line(exc)}{hint}") from None


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str], source: str = "config") -> dict[str, Any]:
    """``raw`` with each ``field.path=value`` applied in order, as plain unresolved data."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg = to_omegaconf(raw, source)
    for item in overrides:
        key, value = split_override(item)
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except (OmegaConfBaseException, TypeError, ValueError, KeyError, IndexError) as exc:
            raise ConfigError(f"override {item!r}: {_one_line(exc)}") from None
    out = OmegaConf.to_container(cfg, resolve=False)
    if not isinstance(out, dict):  # a DictConfig always converts to a dict
        raise InternalError(f"OmegaConf turned a mapping into a {type(out).__name__}")
    return out
