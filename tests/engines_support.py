"""Shared by the engine tests: SmolLM2's folder, a tiny random Llama with its tokenizer, a tiny world."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def smollm2_folder() -> Path:
    """The converted SmolLM2 (repo's git-ignored .cache unless $RM_LAB_CACHE), as tests/test_models.py."""
    from rm_lab import models as M

    cache = M.policy_cache_dir() if os.environ.get(M.CACHE_ENV) else REPO / ".cache" / "rm_lab" / M.POLICY_CACHE_NAME
    return M.policy_folder(cache_dir=cache)


def tiny_llama(eos_bias: float = 8.0, seed: int = 0):
    """(tokenizer, model): SmolLM2's tokenizer and chat template over a 2-layer random Llama whose
    output layer has a bias towards EOS, so within a few tokens some replies end and some are cut."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rm_lab.models import _prepare_policy_tokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_folder()), local_files_only=True)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg)
    if eos_bias:
        head = torch.nn.Linear(32, cfg.vocab_size, bias=True)
        with torch.no_grad():
            head.weight.copy_(model.lm_head.weight * 10)  # sharper than uniform: samples depend on context
            head.bias.zero_()
            head.bias[tok.eos_token_id] = eos_bias
        model.lm_head = head
    model.eval()
    _prepare_policy_tokenizer(tok, model)
    return tok, model


def tiny_world(n_contexts: int = 2, seed: int = 1):
    from rm_lab.world.characters import make_characters
    from rm_lab.world.contexts import make_contexts

    chars = make_characters(2, seed=0)
    return make_contexts(chars, n_contexts, seed=seed), chars
