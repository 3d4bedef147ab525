"""``tinyllm-ray {run,generate,train,tune,compare,eval,demo,config,data}`` — a thin front door.

Every subcommand takes ``--config`` (a YAML path or a shipped config's name; default
``demo_cpu``) followed by dotted overrides (``train.max_steps=20 loss.alpha.llama=2``).
The commands only parse, validate and hand the config to a job (``tinyllm_ray.jobs``):
nothing here knows how a stage works. A :class:`~tinyllm_ray.errors.UserError` (bad
config, commands out of order, a split or teacher that does not exist) is printed as
``tinyllm-ray <command>: <message>`` and exits 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

import yaml

from tinyllm_ray.config import JobConfig, list_shipped_configs, load_config, public_dump
from tinyllm_ray.errors import UserError

log = logging.getLogger("tinyllm_ray")

DEFAULT_CONFIG = "demo_cpu"
#: ``tinyllm-ray demo``: ``compare`` on this shipped config (the README's first command).
DEMO_CONFIG = "demo"
DEFAULT_SHOW = 2  # examples `tinyllm-ray data` shows
#: Commands that run a job (Ray) under the console: live status, summary, the rest in the run's log file.
JOB_COMMANDS = ("run", "demo", "generate", "train", "tune", "compare", "eval")
VERBOSE_HELP = "debug logging; Ray, vLLM, DeepSpeed and worker output on the terminal instead of <run>/logs/console.log"


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        default=DEFAULT_CONFIG,
        help=f"YAML file or shipped config name ({', '.join(list_shipped_configs())}); default {DEFAULT_CONFIG}",
    )
    p.add_argument("overrides", nargs="*", metavar="field.path=value", help="dotted overrides")


def _cmd_config(cfg: JobConfig, args: argparse.Namespace) -> int:
    """Print the validated, fully-defaulted config (what every stage will see)."""
    print(yaml.safe_dump(public_dump(cfg), sort_keys=False), end="")
    return 0


def _cmd_data(cfg: JobConfig, args: argparse.Namespace) -> int:
    """Print what the dataset is and what teachers and student see of it (no Ray, no model)."""
    from tinyllm_ray.jobs.data_view import data_view, render_data_view

    report = data_view(cfg, show=args.show, split=args.split)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_data_view(report), end="")
    return 0


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _compare_mode(args: argparse.Namespace) -> str:
    return "quick" if args.quick else "full" if args.full else "default"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _cmd_compare(cfg: JobConfig, args: argparse.Namespace) -> int:
    """``--list``: the settings, store teachers and step budget, without Ray; else the job."""
    if args.list:
        from tinyllm_ray.compare.settings import describe_settings

        print(describe_settings(cfg, _compare_mode(args)), end="")
        return 0
    return _job("compare")(cfg, args)


def _job(name: str) -> Callable[[JobConfig, argparse.Namespace], int]:
    """A subcommand that runs ``tinyllm_ray.jobs.<name>(cfg)`` under the console, then prints its result.

    The console (``jobs/console.py``) keeps Ray's, the workers' and third-party output in
    ``<run>/logs/console.log`` and shows a live status; afterwards come a short summary
    (``--json``: the whole report as JSON instead) and where to look, last. The jobs module
    is imported only when the command runs (it pulls in Ray).
    """

    def cmd(cfg: JobConfig, args: argparse.Namespace) -> int:
        from tinyllm_ray import jobs
        from tinyllm_ray.jobs.console import JobConsole
        from tinyllm_ray.jobs.progress import job_summary
        from tinyllm_ray.paths import RunPaths

        fn = getattr(jobs, name)
        paths = RunPaths.of(cfg)
        with JobConsole(args.command, paths.console_log, paths.run, verbose=args.verbose) as console:
            if name == "evaluate":
                report = fn(cfg, model=args.model, split=args.split, teacher=args.teacher, show=args.show)
            elif name == "compare":
                report = fn(cfg, mode=_compare_mode(args), seeds=args.seeds)
            else:
                report = fn(cfg)
        if args.json:
            print(json.dumps(report, indent=2, default=str), flush=True)
        else:
            for line in job_summary("eval" if name == "evaluate" else name, report):
                print(line)
        if report.get("predictions"):  # eval --show N: the predictions as a person reads them
            from tinyllm_ray.evaluate import format_predictions

            print(format_predictions(report["predictions"]), file=sys.stderr, flush=True)
        for what, where in (report.get("paths") or {}).items():  # the job's last lines: where to look
            print(f"{what}: {where}")
        if console.log_written:
            print(f"log: {paths.console_log}")
        sys.stdout.flush()
        return 0

    return cmd


COMMANDS: dict[str, tuple[str, Callable[[JobConfig, argparse.Namespace], int]]] = {
    "run": ("generate -> train -> evaluate as one Ray job", _job("run")),
    "demo": ("the README's first command: `compare` on the shipped demo config (teachers bootstrapped here)",
             _cmd_compare),
    "generate": ("teacher rationales into the rationale store (resumable)", _job("generate")),
    "train": ("train the student on the rationale store (Ray Train + DeepSpeed)", _job("train")),
    "tune": ("Ray Tune sweep of the loss weights over the stored rationales", _job("tune")),
    "compare": ("the papers' settings as Tune trials over one store: test accuracy mean ± sd table",
                _cmd_compare),
    "eval": ("answer-only accuracy of a student folder or a teacher", _job("evaluate")),
    "config": ("print the validated config with every default filled in", _cmd_config),
    "data": ("split sizes, skipped rows, split overlap and examples as teachers and student see them",
             _cmd_data),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyllm-ray", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_config_args(p)
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        if name in JOB_COMMANDS:
            p.add_argument("--json", action="store_true", help="print the job's whole report as JSON (stdout)")
        if name == "eval":
            p.add_argument("--model", default=None, help="student folder (HF format); default: the trained student")
            p.add_argument("--teacher", default=None, help="evaluate this teacher (served by vLLM) instead")
            p.add_argument("--split", default=None, choices=["train", "validation", "test"])
            p.add_argument("--show", type=_non_negative, default=0, metavar="N",
                           help="print the first N predictions beside their gold answers")
        if name in ("compare", "demo"):
            mode = p.add_mutually_exclusive_group()
            mode.add_argument("--quick", action="store_true", help="few settings, 1 seed, few steps (CI check)")
            mode.add_argument("--full", action="store_true",
                              help="every setting (leave-one-out, prefix side), at least 3 seeds")
            p.add_argument("--seeds", type=_positive, default=None, metavar="N",
                           help="seeds per setting (default compare.seeds)")
            p.add_argument("--list", action="store_true", help="print the settings this would run (no Ray) and exit")
        if name == "data":
            p.add_argument("--show", type=_non_negative, default=DEFAULT_SHOW, metavar="N",
                           help=f"examples to show (default {DEFAULT_SHOW})")
            p.add_argument("--split", default=None, choices=["train", "validation", "test"],
                           help="split the examples come from (default: train)")
            p.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _uses_console(args: argparse.Namespace) -> bool:
    """Whether the command runs a job under the console (which then owns logging)."""
    return args.command in JOB_COMMANDS and not getattr(args, "list", False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run", *(argv or [])])
    if args.verbose or not _uses_console(args):
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config_name = DEMO_CONFIG if args.command == "demo" and args.config == DEFAULT_CONFIG else args.config
    _, fn = COMMANDS[args.command]
    try:
        return fn(load_config(config_name, args.overrides), args)
    except UserError as exc:  # the user can fix it: one line (per config field), no traceback
        log.debug("user error", exc_info=True)
        print(f"tinyllm-ray {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # vLLM spawns processes: keep the entry point guarded
    sys.exit(main())
