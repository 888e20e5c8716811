"""Shared fixtures of the policy tests: a tiny random Llama with SmolLM2's real tokenizer and chat template
(so SFT steps take milliseconds), and a tiny trained reward model."""
from __future__ import annotations

from pathlib import Path


def smollm2_folder() -> Path:
    """The packaged SmolLM2 as a safetensors folder (converted once from its GGUF)."""
    from rm_lab.models import _cache_is_valid, _source_info, convert_gguf, policy_cache_dir, policy_gguf_path

    folder = policy_cache_dir()
    if not _cache_is_valid(folder, _source_info(policy_gguf_path())):
        convert_gguf(policy_gguf_path(), folder)
    return folder


def make_tiny_llama(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").exists():
        return folder
    tok = AutoTokenizer.from_pretrained(str(smollm2_folder()), local_files_only=True)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    return folder


def make_tiny_rm(folder: Path, backbone: Path, heads=("preference", "continue", "thumb_up"), n_ensemble: int = 1,
                 seed: int = 3) -> Path:
    """A train-rm run folder with a tiny reward model trained on a tiny world (seconds)."""
    from rm_helpers import tiny_world

    from rm_lab.reward.train import TrainRMConfig, train_reward_model

    if (folder / "rm_config.json").exists():
        return folder
    cfg = TrainRMConfig(backbone=str(backbone), cache_dir=str(folder.parent / "embed_cache"), epochs=2, hidden=16,
                        batch_size=8, max_length=64, pairwise=True, heads=list(heads), n_ensemble=n_ensemble,
                        seed=seed)
    train_reward_model(cfg, folder, records=tiny_world(seed=seed, n=40), say=lambda m: None)
    return folder
