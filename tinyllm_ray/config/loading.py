"""From a YAML file (or a shipped config's name) and overrides to a validated JobConfig.

Order: read YAML with the safe loader (nothing in a config is ever evaluated), apply
command-line overrides (:mod:`tinyllm_ray.config.overrides`), then validate, so an
override is checked exactly like the file it overrides and every problem is reported as
one line per field (``teachers.1.sampling.top_p: ...``).

Shipped configs are package data read through :mod:`importlib.resources` (they work from
a wheel or a zip, not only from a source checkout). Only a *bare* name (``demo_cpu`` or
``demo_cpu.yaml``) means a shipped config; a path with a directory part
(``./mine/demo_cpu.yaml``) is a file the user meant, and a missing one is an error rather
than a silent substitution of the shipped file with the same name.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from tinyllm_ray.config.job import REDACTED, JobConfig, is_secret_name
from tinyllm_ray.config.overrides import apply_overrides
from tinyllm_ray.errors import ConfigError

if TYPE_CHECKING:  # annotations only: importlib.resources.abc is Python >= 3.11
    from importlib.resources.abc import Traversable

_SUFFIX = ".yaml"


# --------------------------------------------------------------------------- error messages


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-")))


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names allowed at ``loc`` (for 'unknown key' errors), walking the models."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args]
        nxt = None
        for c in candidates:
            if isinstance(c, type) and issubclass(c, BaseModel):
                nxt = c
                break
            for a in getattr(c, "__args__", ()):
                if isinstance(a, type) and issubclass(a, BaseModel):
                    nxt = a
        current = nxt
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return None


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    """Turn pydantic's report into lines ``<source>: <field.path>: <problem>``."""
    lines = []
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        path = _fmt_loc(loc) or "<root>"
        msg = e.get("msg", "invalid")
        if e.get("type") == "extra_forbidden":
            allowed = _allowed_keys(JobConfig, loc)
            msg = "unknown key" + (f"; allowed keys here: {', '.join(allowed)}" if allowed else "")
        elif "input" in e and e.get("type") not in ("missing",) and not isinstance(e["input"], dict | list):
            msg = f"{msg} (got {e['input']!r})"
        msg = msg.removeprefix("Value error, ")
        # Cross-section checks raise at the root with the field path in the message.
        lines.append(f"{source}: {msg}" if path == "<root>" else f"{source}: {path}: {msg}")
    return "\n".join(lines)


def _require_mapping(raw: Any, source: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")


def validate_config(raw: dict[str, Any], source: str = "config") -> JobConfig:
    """Validate a raw mapping; raise :class:`ConfigError` with one line per problem."""
    _require_mapping(raw, source)
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


# --------------------------------------------------------------------------- shipped configs


def _shipped_dir() -> Traversable:
    return resources.files("tinyllm_ray").joinpath("configs")


def list_shipped_configs() -> list[str]:
    """Names of the configs packaged in ``tinyllm_ray/configs`` (``demo_cpu``, ...)."""
    return sorted(e.name.removesuffix(_SUFFIX) for e in _shipped_dir().iterdir() if e.name.endswith(_SUFFIX))


def _is_bare_name(name: str) -> bool:
    """True for ``demo_cpu`` / ``demo_cpu.yaml``; False for anything with a directory part."""
    return bool(name) and "/" not in name and "\\" not in name and Path(name).name == name


def shipped_config_path(name: str) -> Traversable | None:
    """The packaged file a bare name (``demo_cpu`` or ``demo_cpu.yaml``) means, else None."""
    if not _is_bare_name(name):
        return None
    entry = _shipped_dir().joinpath(name.removesuffix(_SUFFIX) + _SUFFIX)
    return entry if entry.is_file() else None


# --------------------------------------------------------------------------- files


def load_raw(path: str | Path) -> Any:
    """The YAML content of a file, or of a shipped config named by a bare name.

    Safe loader only: nothing in a config is ever evaluated. A local file wins over a
    shipped config of the same name; a missing path with a directory part is an error.
    """
    name = str(path)
    p = Path(path)
    source: Path | Traversable
    if p.is_file():
        source = p
    else:
        shipped = shipped_config_path(name)
        if shipped is None:
            available = ", ".join(list_shipped_configs())
            if _is_bare_name(name):
                raise ConfigError(f"config file {name!r} not found (shipped configs: {available})")
            raise ConfigError(
                f"config file {name!r} not found (resolved to {p.expanduser().resolve()}); a path with a "
                f"directory is never replaced by a shipped config; shipped configs, by bare name: {available}"
            )
        source = shipped
    try:
        return yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not valid YAML: {' '.join(str(exc).split())}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> JobConfig:
    """YAML file (or a shipped config's name) + dotted overrides -> validated JobConfig."""
    source = str(path) if path is not None else "config"
    raw = load_raw(path) if path is not None else {}
    _require_mapping(raw, source)
    return validate_config(apply_overrides(raw, overrides or [], source), source=source)


def public_dump(cfg: JobConfig) -> dict[str, Any]:
    """``cfg`` as plain data with every secret replaced by :data:`REDACTED`.

    Why: configs are written (``best_config.yaml``, ``tinyllm-ray config``) and shared;
    a token in ``runtime.env_vars`` (``HF_TOKEN``, an API key) must never be in them.
    Loading such a file reads the secret back from the environment (``RuntimeConfig``).
    """
    raw = cfg.model_dump(mode="json")
    env = raw["runtime"]["env_vars"]
    for name in env:
        if is_secret_name(name):
            env[name] = REDACTED
    return raw


def dump_config(cfg: JobConfig, path: str | Path) -> None:
    """Write a config that ``load_config`` reads back to an equal object (secrets redacted)."""
    Path(path).write_text(yaml.safe_dump(public_dump(cfg), sort_keys=False))
