"""Fuzzing configs with hypothesis: the shipped YAMLs, mutated, through the public loader and the CLI.

The promise under test (issue 11): a broken config — wrong types, unknown keys (also
nested), NaN/infinite/negative weights and learning rates, no teachers, two teachers of
one name, missing paths, malformed dotted overrides — ends in a :class:`ConfigError`
(a :class:`UserError`: the CLI prints it and exits 2) whose lines name the field; never a
``KeyError``/``TypeError``/``AttributeError``/``ValueError`` from inside the library.
Pure (no Ray): the CLI cases are commands that fail before Ray starts. Bounded and
derandomized so CI is reproducible; the new fuzz files together cost a few seconds.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from tinyllm_ray import cli
from tinyllm_ray.config import list_shipped_configs, load_config, validate_config
from tinyllm_ray.config.loading import load_raw
from tinyllm_ray.errors import ConfigError, UserError

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SHIPPED: dict[str, dict[str, Any]] = {name: load_raw(name) for name in list_shipped_configs()}
#: Lines a config error may have: one per field, and a fuzzed config breaks a handful at most.
MAX_LINES = 12

JUNK: list[Any] = [
    math.nan, math.inf, -math.inf, -1, -1e-9, 0, 10**30, "", "abc", "${oc.env:HOME}", "${", True, None, [], {},
    [1, "a"], {"x": 1}, {"nested": {"deep": [math.nan]}}, "1e400", "-0.0", "\x00", "é" * 300,
]


def leaf_paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in a YAML tree (mappings by key, lists by index), containers included."""
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += leaf_paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += leaf_paths(v, (*prefix, i))
    return out


def _parent(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        tree = tree[part]
    return tree


@st.composite
def mutated_configs(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """A shipped config with 1-3 mutations, and what was done (for the failure report)."""
    name = draw(st.sampled_from(sorted(SHIPPED)))
    raw = copy.deepcopy(SHIPPED[name])
    done = [name]
    for _ in range(draw(st.integers(1, 3))):
        paths = leaf_paths(raw)
        op = draw(st.sampled_from(["replace", "delete", "unknown_key", "no_teachers", "dup_teacher",
                                   "weight", "missing_path"]))
        if op in ("replace", "delete", "unknown_key") and paths:
            path = draw(st.sampled_from(paths))
            parent = _parent(raw, path)
            if op == "replace":
                parent[path[-1]] = draw(st.one_of(st.sampled_from(JUNK), st.text(max_size=12),
                                                  st.floats(allow_nan=True, allow_infinity=True)))
            elif op == "delete":
                del parent[path[-1]]
            else:
                target = parent[path[-1]]
                key = draw(st.sampled_from(["zero_stag", "unknown", "lr_", "Teachers", "alpha2"]))
                if isinstance(target, dict):
                    target[key] = 1
                else:
                    raw[key] = {"x": 1}
            done.append(f"{op} {'.'.join(map(str, path))}")
        elif op == "no_teachers":
            raw["teachers"] = []
            done.append(op)
        elif op == "dup_teacher" and isinstance(raw.get("teachers"), list) and raw["teachers"]:
            raw["teachers"].append(copy.deepcopy(raw["teachers"][0]))
            done.append(op)
        elif op == "weight":
            field = draw(st.sampled_from(["loss.default_alpha", "loss.convex_alpha", "loss.self_eval_weight",
                                          "train.lr", "train.weight_decay", "train.warmup_steps"]))
            section, key = field.split(".")
            value = draw(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -1e-12]))
            if isinstance(raw.get(section), dict):
                raw[section][key] = value
            done.append(f"{field}={value}")
        elif op == "missing_path":
            where = draw(st.sampled_from(["data.path", "student.model", "runtime.storage_path",
                                          "data.files.train"]))
            section, key, *rest = where.split(".")
            if raw.get(section) is None:
                raw[section] = {}
            if isinstance(raw[section], dict):
                value: Any = "/nonexistent/dir/x.jsonl"
                raw[section][key] = {rest[0]: value} if rest else value
            done.append(where)
    return raw, done


def check_config_error(exc: ConfigError, source: str) -> None:
    """A config error as the CLI will print it: short, every line names the source (and a field)."""
    assert isinstance(exc, UserError)
    lines = str(exc).splitlines()
    assert 1 <= len(lines) <= MAX_LINES, str(exc)
    for line in lines:
        assert line.strip() and "Traceback" not in line, str(exc)
        assert line.startswith((source, "override ")), str(exc)


@pytest.fixture(scope="module")
def cfg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzzcfg")


@SETTINGS
@given(mutated_configs())
def test_mutated_shipped_configs_load_or_fail_with_one_config_error(cfg_dir, case):
    raw, done = case
    note(f"mutations: {done}")
    path = cfg_dir / "mutated.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    try:
        load_config(path)
    except ConfigError as exc:
        check_config_error(exc, str(path))
        event("config error")
    else:
        event("loaded")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.sampled_from(sorted(SHIPPED)),
       st.sampled_from(["zero_stag", "Lr", "teachers_", "bogus"]),
       st.sampled_from(["", "train", "teachers.0", "teachers.0.sampling", "loss", "data.synthetic", "runtime"]))
def test_an_unknown_key_is_named_with_the_keys_allowed_there(name, key, where):
    raw = copy.deepcopy(SHIPPED[name])
    node: Any = raw
    for part in filter(None, where.split(".")):
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[key] = 1
    with pytest.raises(ConfigError) as info:
        validate_config(raw, source=name)
    msg = str(info.value)
    path = ".".join([*filter(None, where.split(".")), key])
    assert f"{path}: unknown key" in msg, msg
    if where:  # a section: the message lists what is allowed there
        assert "allowed keys here:" in msg, msg


OVERRIDE_PATHS = [
    "train.lr", "train.max_steps", "loss.alpha.llama", "loss.alpha", "teachers.0.replicas", "teachers.5.name",
    "teachers.0.sampling.top_p", "data.path", "data.files.train", "runtime.run_name", "student.model", "nope",
    "train.nope.deeper", "teachers.x", "teachers.-1", "a.b", "train", "teachers", "eval.split", "",
    "..", "data..name", " train.lr ", "teachers.0",
]
OVERRIDE_VALUES = st.one_of(
    st.sampled_from(["", "nan", ".nan", ".inf", "-.inf", "-1", "0", "1e400", "[", "{", "{a: 1", "[1, 2]", "{}",
                     "${", "${oc.env:HOME}", "!!python/object/apply:os.system [ls]", "a: b", "true", "null",
                     "2024-01-01", "'quoted", "\x00", "---", "key: [1, {x: 2}]", "1_000", "0x10"]),
    st.text(max_size=15),
)


@SETTINGS
@given(st.sampled_from(sorted(SHIPPED)),
       st.lists(st.tuples(st.sampled_from(OVERRIDE_PATHS), OVERRIDE_VALUES, st.booleans()), min_size=1, max_size=3))
def test_bad_dotted_overrides_end_in_a_config_error(name, items):
    overrides = [f"{k}={v}" if with_eq else k + v for k, v, with_eq in items]
    try:
        load_config(name, overrides)
    except ConfigError as exc:
        check_config_error(exc, name)
        event("config error")
    else:
        event("loaded")


# --------------------------------------------------------------------------- the real CLI, in process


@pytest.fixture()
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("these commands must fail before Ray starts")

    monkeypatch.setattr(ray, "init", refuse)


CLI_CASES = [
    ["config", "train.lr=nan"],
    ["config", "loss.alpha.llama=-1"],
    ["config", "teachers=[]", "self_eval.enabled=true"],
    ["config", "teachers.1.name=llama"],
    ["config", "train.zero_stag=2"],
    ["config", "teachers.0.sampling.bogus.deep=1"],
    ["config", "a.b="],
    ["config", "train.max_steps=many"],
    ["config", "teachers.7.name=x"],
    ["config", "train.lr"],
    ["config", "--config", "./missing/dir/demo_cpu.yaml"],
    ["config", "--config", "no_such_shipped_config"],
    ["data", "data.name=tinyllm", "data.path=/nonexistent/data/dir"],
    ["data", "data.name=tinyllm", "data.files.train=/nonexistent/train.jsonl"],
    ["data", "data.name=generic", "data.columns.question=q"],
]


@pytest.mark.parametrize("argv", CLI_CASES, ids=[" ".join(a) for a in CLI_CASES])
def test_cli_refuses_a_broken_config_with_exit_2_and_no_traceback(argv, no_ray, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    assert err.startswith(f"tinyllm-ray {argv[0]}: "), err
    assert len(err.strip().splitlines()) <= MAX_LINES, err


@pytest.mark.parametrize("text", ["[1, 2]", "just a string", "train: {lr: [}", "\t- bad: indent\n  x", "!!binary AAAA",
                                  "data: !!python/object/apply:os.system [ls]", "\xef\xbb\xbfdata: {}"])
def test_cli_refuses_a_config_file_that_is_not_a_mapping_or_not_yaml(text, no_ray, capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = cli.main(["config", "--config", str(path)])
    err = capsys.readouterr().err
    if code == 0:  # e.g. a BOM before an empty data section: a valid config
        return
    assert code == 2 and "Traceback" not in err and err.startswith("tinyllm-ray config: "), err
