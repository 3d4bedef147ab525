"""tinyllm_ray.models.tiny: local tokenizer + tiny random HF models, deterministic and offline."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may reach a hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest

from tinyllm_ray.config import TinyModelConfig
from tinyllm_ray.models import tiny

MC_TEXT = (
    "Question: Which is a mammal?\nAnswer Choices: (a) shark (b) whale (c) trout\n"
    "Rationale: Let's think step by step. A whale breathes air. Thus, the answer is (b).\n"
    "Verdict: correct / wrong / uncertain. predict: explain llama: evaluate: 0123456789"
)
ODD_TEXT = "héllo  café\u0301 日本語 🙂 \t\r\n <extra_id_0> \x00 ~`|"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """One default-size folder per family, built once for the module."""
    root = tmp_path_factory.mktemp("tiny_folders")
    return {f: tiny.build_tiny_model(f, root / f) for f in tiny.FAMILIES}


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_same_seed_is_byte_identical(tmp_path):
    tiny.build_tokenizer(tmp_path / "a", seed=0)
    tiny.build_tokenizer(tmp_path / "b", seed=0)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_tokenizer_properties():
    tok = tiny.build_tokenizer(vocab_size=2000)
    assert len(tok) == 2000
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    vocab = tok.get_vocab()
    # the prompt scaffolding is learned as whole tokens, not spelled out byte by byte
    for piece in (
        "Question",
        "ĠAnswer",
        "ĠChoices",
        "Rationale",
        "ĠVerdict",
        "Ġcorrect",
        "Ġwrong",
        "predict",
    ):
        assert piece in vocab, piece
    assert not [t for t in vocab if t.startswith("<extra_id_")], "2000 ids should all be real merges"
    for text in (MC_TEXT, ODD_TEXT):
        ids = tok(text).input_ids
        assert tok.unk_token_id not in ids
        # the base tokenizer adds no special tokens; build_tiny_model sets the family's
        assert tok.decode(ids) == text.replace("e\u0301", "é")  # NFC-normalised
    assert (
        tok.apply_chat_template(
            [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
        )
        == "User: hi\nAssistant:"
    )


def test_tokenizer_large_vocab_is_filled_with_sentinels():
    tok = tiny.build_tokenizer(vocab_size=4000)
    assert len(tok) == 4000  # the corpus runs out of merges; sentinels fill the rest
    assert tok.convert_ids_to_tokens(3999).startswith("<extra_id_")
    assert tok.decode([3999]).startswith("<extra_id_")  # every id a random model can emit decodes


def test_tokenizer_seed_changes_the_synthetic_corpus():
    assert tiny.corpus(0) == tiny.corpus(0)
    assert tiny.corpus(0) != tiny.corpus(1)


# --------------------------------------------------------------------------- models


def _state(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_weights_deterministic_per_seed(tmp_path, folders, family):
    import torch

    again = tiny.build_tiny_model(family, tmp_path / "again", seed=0)
    other = tiny.build_tiny_model(family, tmp_path / "other", seed=1)
    a, b, c = _state(folders[family]), _state(again), _state(other)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].std() > 0)
    # seeds change weights only: every tiny model of one vocab size shares the tokenizer
    assert sha(folders[family] / "tokenizer.json") == sha(other / "tokenizer.json")


def test_build_does_not_disturb_global_rng(tmp_path):
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny.build_tiny_model("qwen2", tmp_path / "m", seed=7)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_folder_contents_and_config(folders, family):
    path = folders[family]
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        tiny.MARKER,
    ):
        assert (path / name).is_file(), name
    assert not list(path.glob("*.bin")), "weights must be safetensors"
    cfg = json.loads((path / "config.json").read_text())
    gen = json.loads((path / "generation_config.json").read_text())
    assert cfg["vocab_size"] == 2000 and cfg["tie_word_embeddings"] is True
    assert (cfg["pad_token_id"], cfg["bos_token_id"], cfg["eos_token_id"]) == (0, 1, 2)
    assert gen["eos_token_id"] == 2 and gen["pad_token_id"] == 0
    assert (
        json.loads((path / "tokenizer_config.json").read_text())["tokenizer_class"]
        == "PreTrainedTokenizerFast"
    )
    if family == "t5":
        assert cfg["model_type"] == "t5" and cfg["is_encoder_decoder"] is True
        assert (cfg["d_model"], cfg["d_kv"], cfg["num_heads"], cfg["num_layers"]) == (128, 64, 2, 2)
        assert cfg["decoder_start_token_id"] == cfg["pad_token_id"] == gen["decoder_start_token_id"] == 0
    else:
        assert cfg["model_type"] == family
        assert cfg["hidden_size"] == 128 and cfg["num_attention_heads"] == 2 and cfg["num_hidden_layers"] == 2
        assert cfg["hidden_size"] // cfg["num_attention_heads"] == 64  # vLLM CPU head size
        assert cfg["intermediate_size"] == 256 and cfg["max_position_embeddings"] == 2048
    marker = json.loads((path / tiny.MARKER).read_text())
    assert marker["params"]["family"] == family and marker["num_parameters"] > 0


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_auto_classes_load_forward_and_generate(folders, family):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    path = folders[family]
    tok = AutoTokenizer.from_pretrained(path)
    base = tiny.build_tokenizer()
    assert len(tok) == 2000 and tok.pad_token_id == 0 and tok.eos_token_id == 2
    core = base(MC_TEXT).input_ids
    want = {"llama": [1, *core], "qwen2": core, "t5": [*core, 2]}[family]
    assert tok(MC_TEXT).input_ids == want  # the loaded tokenizer is the one we trained
    assert tok.decode(tok(ODD_TEXT).input_ids, skip_special_tokens=True) == ODD_TEXT.replace("e\u0301", "é")
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == ("<s>" if family == "llama" else "") + "User: hi\nAssistant:"

    auto = AutoModelForSeq2SeqLM if family == "t5" else AutoModelForCausalLM
    model = auto.from_pretrained(path).eval()
    assert model.dtype == torch.float32 and tiny.is_seq2seq(model.config) == (family == "t5")
    enc = tok(["Question: Which is a mammal?", "Thus, the answer is"], return_tensors="pt", padding=True)
    with torch.no_grad():
        if family == "t5":
            labels = tok(["(b)", "(a)"], return_tensors="pt", padding=True).input_ids
            out = model(**enc, labels=labels)
            assert out.logits.shape == (2, labels.shape[1], 2000)
        else:
            out = model(**enc, labels=enc.input_ids)
            assert out.logits.shape == (*enc.input_ids.shape, 2000)
        assert torch.isfinite(out.loss)
        one = tok("Question: Which is a mammal?", return_tensors="pt")
        gen1 = model.generate(**one, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        gen2 = model.generate(**one, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    new = gen1.shape[1] - (1 if family == "t5" else one.input_ids.shape[1])  # T5 output starts at <pad>
    assert new == 5 and torch.equal(gen1, gen2)
    if family == "t5":
        assert gen1[0, 0].item() == 0
    assert isinstance(tok.decode(gen1[0], skip_special_tokens=True), str)


def test_non_default_sizes_build(tmp_path):
    from transformers import AutoConfig

    p = tiny.build_tiny_model(
        "llama", tmp_path / "m", hidden_size=256, num_layers=1, num_heads=4, vocab_size=500
    )
    cfg = AutoConfig.from_pretrained(p)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.vocab_size) == (
        256,
        1,
        4,
        500,
    )
    assert cfg.head_dim == 64


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("family", "kwargs", "match"),
    [
        ("gpt2", {}, "family must be one of"),
        ("llama", {"hidden_size": 128, "num_heads": 3}, "divisible by num_heads"),
        ("llama", {"hidden_size": 128, "num_heads": 8}, r"head_dim .* = 16 .*vLLM.*CPU attention"),
        ("qwen2", {"hidden_size": 96, "num_heads": 4}, "at least 32"),
        ("llama", {"vocab_size": 100}, "vocab_size must be >= 300"),
        ("t5", {"num_layers": 0}, "num_layers must be >= 1"),
        ("t5", {"seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_args_raise_clear_errors(tmp_path, family, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny.build_tiny_model(family, tmp_path / "m", **kwargs)
    assert not (tmp_path / "m").exists(), "validation must happen before anything is written"


def test_bad_arg_types_and_tokenizer_args():
    with pytest.raises(TypeError, match="hidden_size must be an int"):
        tiny.validate_params("llama", 128.0, 2, 2, 2000, 0)
    with pytest.raises(ValueError, match="vocab_size must be >= 300"):
        tiny.build_tokenizer(vocab_size=10)


def test_t5_head_dim_is_not_limited_by_vllm(tmp_path):
    """vLLM does not serve T5 students, so only divisibility is required there."""
    assert tiny.validate_params("t5", 128, 2, 8, 2000, 0) == 16


def test_tiny_model_path_validates_config(tmp_path):
    cfg = TinyModelConfig(family="llama", hidden_size=128, num_heads=8)
    with pytest.raises(ValueError, match="vLLM"):
        tiny.tiny_model_path(cfg, tmp_path)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- cache


def _count_builds(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    real = tiny.build_tiny_model

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny, "build_tiny_model", counting)
    return calls


def test_cache_builds_once_and_reuses(tmp_path, monkeypatch):
    calls = _count_builds(monkeypatch)
    cfg = TinyModelConfig(family="qwen2", seed=5)
    first = tiny.tiny_model_path(cfg, tmp_path)
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    second = tiny.tiny_model_path(TinyModelConfig(family="qwen2", seed=5), tmp_path)
    assert first == second and len(calls) == 1
    assert (second / "model.safetensors").stat().st_mtime_ns == mtime
    assert first.parent == tmp_path and first.name.startswith("qwen2-h128-l2-a2-v2000-s5-")
    assert [p.name for p in tmp_path.iterdir()] == [first.name], "no temporary folders left behind"
    other = tiny.tiny_model_path(TinyModelConfig(family="qwen2", seed=6), tmp_path)
    assert other != first and len(calls) == 2


def test_cache_default_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYLLM_CACHE", str(tmp_path / "envcache"))
    assert tiny.default_cache_dir() == tmp_path / "envcache"
    p = tiny.tiny_model_path(TinyModelConfig(family="t5", num_layers=1))
    assert p.parent == tmp_path / "envcache" and tiny.is_seq2seq(p)
    monkeypatch.delenv("TINYLLM_CACHE")
    assert tiny.default_cache_dir() == Path.home() / ".cache" / "tinyllm_ray" / "tiny"


def test_cache_replaces_an_incomplete_folder(tmp_path, monkeypatch):
    calls = _count_builds(monkeypatch)
    cfg = TinyModelConfig(family="llama", num_layers=1)
    path = tiny.tiny_model_path(cfg, tmp_path)
    (path / tiny.MARKER).unlink()  # e.g. a folder copied by hand, half-written
    again = tiny.tiny_model_path(cfg, tmp_path)
    assert again == path and (again / tiny.MARKER).is_file() and len(calls) == 2
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_cache_race_between_threads(tmp_path):
    cfg = TinyModelConfig(family="llama", num_layers=1, seed=9)
    barrier = threading.Barrier(3)
    results: list[Path] = []
    errors: list[Exception] = []

    def worker():
        barrier.wait()
        try:
            results.append(tiny.tiny_model_path(cfg, tmp_path))
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 3 and len(set(results)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]
    reference = tiny.build_tiny_model("llama", tmp_path.parent / "ref_race", num_layers=1, seed=9)
    assert sha(results[0] / "model.safetensors") == sha(reference / "model.safetensors")


# --------------------------------------------------------------------------- is_seq2seq


def test_is_seq2seq_accepts_every_form(folders):
    from transformers import AutoConfig

    assert tiny.is_seq2seq(folders["t5"]) and tiny.is_seq2seq(str(folders["t5"]))
    assert not tiny.is_seq2seq(folders["llama"]) and not tiny.is_seq2seq(folders["qwen2"])
    assert tiny.is_seq2seq(TinyModelConfig(family="t5"))
    assert not tiny.is_seq2seq(TinyModelConfig(family="qwen2"))
    assert tiny.is_seq2seq(TinyModelConfig(family="t5").model_dump())
    assert tiny.is_seq2seq("t5") and not tiny.is_seq2seq("llama")
    assert tiny.is_seq2seq(AutoConfig.from_pretrained(folders["t5"]))
    assert tiny.is_seq2seq({"model_type": "bart"}) and not tiny.is_seq2seq({"model_type": "gpt2"})
    with pytest.raises(TypeError):
        tiny.is_seq2seq(3.5)


def test_is_seq2seq_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        tiny.is_seq2seq(tmp_path)
