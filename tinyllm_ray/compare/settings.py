"""Which settings ``tinyllm-ray compare`` runs, and each one as a job config (pure).

Why pure: the list of settings for a config and mode, and the job config each trial
trains, decide what the comparison table means; keeping them free of Ray, vLLM and torch
lets every rule (leave-one-out only with >= 3 teachers, the encoder-prefix setting only for
seq2seq students, label-only without teachers, equal step budgets) be unit-tested in
milliseconds, and every transformed config goes through ``validate_config`` again, so a
setting can never produce a config that ``tinyllm-ray train`` would refuse.

ONE store serves every setting (:func:`store_config`): the config's teachers for
TinyLLM / Distilling Step-by-Step (teacher forcing, as configured) plus, when a Mind's
Mirror setting is selected, one CoT entry that samples several CoTs
(``prompt_style: cot``, ``sampling.n = compare.mirror_cots``, temperature > 0) and is the
only teacher that self-evaluates (``TeacherConfig.self_eval``). A config that already has
such an entry (``compare.mirror_teacher`` naming a CoT teacher with n > 1) is used as is;
otherwise ``<name>_cot`` is derived from the mirror teacher, so the same model appears
twice under two names. Trials read the store; they never generate.

The settings (names are stable: they key the JSON and the claims):

- ``label_only``: no teachers, the answer task alone (the "full fine-tune" row);
- ``dss_<t>``: Distilling Step-by-Step with teacher t alone: ``L_label + alpha_t
  L_rationale`` (the DSS paper's own form, ``L_label + lambda L_rationale``, with the
  configured ``loss.alpha`` of t). Additive like TinyLLM on purpose: the TinyLLM-vs-single-
  teacher claim then differs in the number of teachers only, and with two teachers
  ``dss_<a>`` is exactly "TinyLLM without b", so each teacher's contribution is measured
  without running leave-one-out;
- ``tinyllm``: TinyLLM with all teachers (additive, ``loss.alpha`` as configured);
- ``loo_<t>``: TinyLLM without teacher t (``--full``; only with >= 3 teachers, since with
  two it equals ``dss`` of the other one);
- ``mm_1cot`` / ``mm_cots`` / ``mm_cots_selfeval``: Mind's Mirror's three steps (convex
  loss): the first CoT only (``student.max_cots_per_teacher: 1``); every CoT; every CoT
  plus self-evaluation, trained in two stages (``loss.schedule: two_stage``);
- ``tinyllm_prefix_<side>``: ``tinyllm`` with the other task-prefix side (``--full``,
  seq2seq students only): does the one-pass decoder-side layout cost accuracy?

Step budgets: every setting trains the same number of optimizer steps
(``compare.max_steps[kind]``, else ``train.max_steps``); the two-stage setting splits it
between its stages (ceil(N/2) each), so no setting gets more updates than another.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyllm_ray.config import JobConfig, TeacherConfig, validate_config
from tinyllm_ray.errors import ConfigError

__all__ = [
    "LABEL_ONLY",
    "MM_1COT",
    "MM_COTS",
    "MM_SELFEVAL",
    "MODES",
    "TINYLLM",
    "Setting",
    "base_teachers",
    "describe_settings",
    "mirror_entry",
    "settings_for",
    "step_budget",
    "store_config",
    "student_kind",
]

MODES: tuple[str, ...] = ("quick", "default", "full")
LABEL_ONLY = "label_only"
TINYLLM = "tinyllm"
MM_1COT = "mm_1cot"
MM_COTS = "mm_cots"
MM_SELFEVAL = "mm_cots_selfeval"
MIRROR_SETTINGS: tuple[str, ...] = (MM_1COT, MM_COTS, MM_SELFEVAL)


@dataclass(frozen=True)
class Setting:
    """One row of the comparison: what differs from the base config, and why it exists."""

    name: str
    group: str  # label_only | dss | tinyllm | leave_one_out | minds_mirror | prefix
    description: str
    teachers: tuple[str, ...] = ()
    loss_form: str = "additive"
    self_eval: bool = False
    schedule: str = "joint"
    max_cots: int | None = None
    prefix_side: str | None = None  # None: the config's
    left_out: str | None = None  # leave-one-out: the teacher removed

    def apply(self, store_cfg: JobConfig, steps: int) -> JobConfig:
        """The trial's job config: ``store_cfg`` (see :func:`store_config`) narrowed to this
        setting, trained for ``steps`` optimizer steps in all (split across two stages)."""
        raw = store_cfg.model_dump(mode="json")
        raw["teachers"] = [dict(t, self_eval=None) for t in raw["teachers"] if t["name"] in self.teachers]
        raw["self_eval"]["enabled"] = self.self_eval
        loss = raw["loss"]
        loss["form"] = self.loss_form
        loss["alpha"] = {k: v for k, v in loss["alpha"].items() if k in self.teachers}
        loss["schedule"] = self.schedule
        raw["student"]["max_cots_per_teacher"] = self.max_cots
        if self.prefix_side is not None:
            raw["student"]["task_prefix_side"] = self.prefix_side
        raw["train"]["max_steps"] = math.ceil(steps / 2) if self.schedule == "two_stage" else steps
        raw["train"]["stage_epochs"] = None  # per-stage epochs belong to one schedule; the step budget rules here
        raw["compare"]["mirror_teacher"] = None  # the mirror teacher may not be in this setting
        if len(raw["teachers"]) < 2:  # one teacher has no one to agree with: its setting trains unfiltered
            raw["filter"]["cross_teacher"]["mode"] = "off"
        return validate_config(raw, source=f"compare setting {self.name}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "group": self.group, "description": self.description,
                "teachers": list(self.teachers), "loss_form": self.loss_form, "self_eval": self.self_eval,
                "schedule": self.schedule, "max_cots": self.max_cots, "prefix_side": self.prefix_side,
                "left_out": self.left_out}


@dataclass(frozen=True)
class _Mirror:
    entry: TeacherConfig
    derived: bool
    extra: dict[str, Any] = field(default_factory=dict)


def _is_multi_cot(t: TeacherConfig) -> bool:
    return t.prompt_style == "cot" and t.sampling.n > 1


def _mirror(cfg: JobConfig) -> _Mirror | None:
    if not cfg.teachers:
        return None
    name = cfg.compare.mirror_teacher
    src = cfg.teacher(name) if name else next((t for t in cfg.teachers if _is_multi_cot(t)), cfg.teachers[0])
    if _is_multi_cot(src):
        return _Mirror(src, derived=False)
    taken = {t.name for t in cfg.teachers}
    new = f"{src.name}_cot"
    while new in taken:
        new += "_"
    sampling = src.sampling.model_copy(update={"n": cfg.compare.mirror_cots,
                                               "temperature": cfg.compare.mirror_temperature,
                                               "seed": 0 if src.sampling.seed is None else src.sampling.seed})
    entry = TeacherConfig.model_validate({**src.model_dump(mode="json"), "name": new, "prompt_style": "cot",
                                          "sampling": sampling.model_dump(mode="json")})
    return _Mirror(entry, derived=True)


def mirror_entry(cfg: JobConfig) -> TeacherConfig | None:
    """The teacher entry Mind's Mirror settings distil (several sampled CoTs), or None."""
    m = _mirror(cfg)
    return m.entry if m else None


def base_teachers(cfg: JobConfig) -> list[TeacherConfig]:
    """The teachers of TinyLLM / DSS / leave-one-out: the config's, minus a configured
    multi-CoT Mind's Mirror entry (unless it is the only teacher)."""
    m = _mirror(cfg)
    if m is None:
        return []
    if m.derived:
        return list(cfg.teachers)
    rest = [t for t in cfg.teachers if t.name != m.entry.name]
    return rest or list(cfg.teachers)


def student_kind(cfg: JobConfig) -> str | None:
    """``seq2seq`` / ``causal`` when the config says it without loading anything, else None
    (the runner then asks ``student.model.detect_arch``)."""
    s = cfg.student
    if s.arch != "auto":
        return s.arch
    if s.model == "tiny":
        return "seq2seq" if s.tiny.family == "t5" else "causal"
    conf = Path(s.model).expanduser() / "config.json"
    if conf.is_file():
        try:
            return "seq2seq" if json.loads(conf.read_text()).get("is_encoder_decoder") else "causal"
        except (OSError, ValueError):
            return None
    return None


def step_budget(cfg: JobConfig, kind: str, mode: str) -> int:
    """Optimizer steps every setting trains: ``--quick``'s small budget, else
    ``compare.max_steps[kind]``, else ``train.max_steps``; epochs are refused because the
    settings' datasets differ in size (an epoch of label-only is fewer steps)."""
    if mode == "quick":
        return cfg.compare.quick_max_steps
    steps = cfg.compare.max_steps.get(kind) or cfg.train.max_steps  # type: ignore[call-overload]
    if not steps:
        raise ConfigError(
            f"compare needs the same step budget for every setting: set compare.max_steps.{kind}=N "
            "(or train.max_steps=N); epochs would give each setting a different number of steps")
    return int(steps)


def settings_for(cfg: JobConfig, mode: str = "default", kind: str | None = "seq2seq") -> list[Setting]:
    """The settings of ``mode`` for ``cfg`` (or exactly ``compare.settings`` when set).

    quick: label-only, TinyLLM, Mind's Mirror with self-evaluation (every code path, few
    trials); default: the main settings, i.e. + each single teacher (DSS), with Mind's Mirror
    as its authors' full method (several CoTs + self-evaluation, two stages); full: + Mind's
    Mirror's ablation steps (one CoT; several CoTs), leave-one-out (>=
    ``compare.min_teachers_leave_one_out`` teachers) and, for seq2seq students, the other
    task-prefix side. ``kind`` None (unknown) skips the prefix setting.

    Why the ablations are ``--full`` only: the README's first command must finish in 20
    minutes on two cores with its teachers bootstrapped first, and each setting is a trial;
    the main settings answer TinyLLM's headline claims and put Mind's Mirror beside them,
    ``--full`` answers Mind's Mirror's own (do several CoTs beat one, does self-evaluation add).
    """
    if mode not in MODES:
        raise ConfigError(f"compare mode {mode!r} is not one of {list(MODES)}")
    base = [t.name for t in base_teachers(cfg)]
    mirror = mirror_entry(cfg)
    conv = f"a={cfg.loss.convex_alpha:g}"
    every: list[Setting] = [Setting(LABEL_ONLY, "label_only", "answer task only, no teacher (fine-tuning)")]
    for t in base:
        every.append(Setting(f"dss_{t}", "dss", f"Distilling Step-by-Step, teacher {t} only (L_A + alpha L_{t})",
                             teachers=(t,)))
    if base:
        every.append(Setting(TINYLLM, "tinyllm", f"TinyLLM, all {len(base)} teacher(s) (additive, loss.alpha)",
                             teachers=tuple(base)))
    if len(base) >= cfg.compare.min_teachers_leave_one_out:
        for t in base:
            every.append(Setting(f"loo_{t}", "leave_one_out", f"TinyLLM without teacher {t}",
                                 teachers=tuple(x for x in base if x != t), left_out=t))
    if mirror is not None:
        m = (mirror.name,)
        every += [
            Setting(MM_1COT, "minds_mirror", f"Mind's Mirror step 1: one CoT of {mirror.name} (convex, {conv})",
                    teachers=m, loss_form="convex", max_cots=1),
            Setting(MM_COTS, "minds_mirror", f"Mind's Mirror step 2: {mirror.sampling.n} CoTs of {mirror.name}",
                    teachers=m, loss_form="convex"),
            Setting(MM_SELFEVAL, "minds_mirror",
                    f"Mind's Mirror step 3: {mirror.sampling.n} CoTs + self-evaluation, two stages",
                    teachers=m, loss_form="convex", self_eval=True, schedule="two_stage"),
        ]
    if base and kind == "seq2seq":
        other = "encoder" if cfg.student.task_prefix_side == "decoder" else "decoder"
        every.append(Setting(f"{TINYLLM}_prefix_{other}", "prefix",
                             f"TinyLLM with the task prefix on the {other} side (the papers' layout: encoder)",
                             teachers=tuple(base), prefix_side=other))
    by_name = {s.name: s for s in every}
    if cfg.compare.settings is not None:
        unknown = [n for n in cfg.compare.settings if n not in by_name]
        if unknown:
            raise ConfigError(f"compare.settings names unknown setting(s) {unknown}; this config has "
                              f"{list(by_name)}")
        return [by_name[n] for n in cfg.compare.settings]
    if mode == "full":
        return every
    keep = {"label_only", "dss", "tinyllm", "minds_mirror"}
    chosen = [s for s in every if s.group in keep]
    if mode == "quick":
        return [s for s in chosen if s.name in (LABEL_ONLY, TINYLLM, MM_SELFEVAL)]
    return [s for s in chosen if s.name not in (MM_1COT, MM_COTS)]


def store_config(cfg: JobConfig, settings: list[Setting]) -> JobConfig:
    """The config whose generation fills the ONE store every setting reads.

    Teachers: the base ones exactly as configured (so a store ``generate`` already wrote
    with this config is reused: its manifest entries still match) and, if a Mind's Mirror
    setting is selected, the mirror entry, switched to self-evaluate (``self_eval: true``)
    when ``mm_cots_selfeval`` is selected and ``self_eval.enabled`` does not already make it.
    With ``self_eval.enabled`` on globally the base teachers self-evaluate too, as
    configured; the settings that do not train on self-evaluations leave those rows out
    (counted), so only generation time is spent on them.
    """
    wanted = {t for s in settings for t in s.teachers}
    mirror = mirror_entry(cfg)
    needs_se = any(s.self_eval for s in settings)
    teachers = []
    for t in cfg.teachers:
        if t.name not in wanted:
            continue
        if mirror is not None and t.name == mirror.name:
            continue
        teachers.append(t.model_dump(mode="json"))
    if mirror is not None and mirror.name in wanted:
        own = cfg.self_eval.enabled if mirror.self_eval is None else mirror.self_eval
        if needs_se and not own:
            mirror = mirror.model_copy(update={"self_eval": True})
        teachers.append(mirror.model_dump(mode="json"))
    raw = cfg.model_dump(mode="json")
    raw["teachers"] = teachers
    names = {t["name"] for t in teachers}
    raw["loss"]["alpha"] = {k: v for k, v in raw["loss"]["alpha"].items() if k in names}
    if raw["compare"]["mirror_teacher"] not in names:
        raw["compare"]["mirror_teacher"] = None
    if not teachers:
        raw["self_eval"]["enabled"] = False
    return validate_config(raw, source="compare store")


def describe_settings(cfg: JobConfig, mode: str) -> str:
    """What ``compare`` would run for ``cfg`` and ``mode`` (``tinyllm-ray compare --list``; no Ray)."""
    kind = student_kind(cfg)
    settings = settings_for(cfg, mode, kind)
    store = store_config(cfg, settings)
    lines = [f"mode {mode}: {len(settings)} setting(s), {kind or 'unknown (prefix setting skipped)'} student"]
    lines += [f"  {s.name:<28} {s.description}" for s in settings]
    lines.append("store teachers: " + (", ".join(
        f"{t.name} ({t.prompt_style}, n={t.sampling.n}{', self-evaluates' if store.self_evaluates(t.name) else ''})"
        for t in store.teachers) or "none"))
    try:
        lines.append(f"steps per setting: {step_budget(cfg, kind or 'seq2seq', mode)}")
    except ConfigError as exc:
        lines.append(f"steps per setting: not set ({exc})")
    return "\n".join(lines) + "\n"
