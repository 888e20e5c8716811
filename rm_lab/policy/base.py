"""The policy interface: generation settings, sampled completions, engines, policies and reward functions.

Everything that samples from or scores a policy codes against these few types, so an objective
(best-of-N, rejection sampling, SFT, DPO, GRPO) or `evaluate` never knows which engine runs:

* `GenerationConfig` — how to sample (n, temperature, top-p, max new tokens, seed, stop at EOS);
* `Completion` — one sampled reply: text, token ids, the log-prob of each sampled token, and whether
  it ended by EOS (`finished`) or was cut by the token cap;
* `Engine` — `generate(conversations, cfg) -> list[list[Completion]]` (n per conversation); it stays
  up across calls, so its start is paid once per job (`close()` when done);
* `Policy` — `respond(contexts, characters, seed) -> list[str]`, the signature of the world's scripted
  policies, so the A/B simulator and the world judge an LLM exactly as they judge a preset;
* `LLMPolicy` — an engine plus a config as a `Policy` (prompts built by `rm_lab.policy.prompts`);
* `RewardFn` — a plain callable `(contexts, replies, characters) -> scores`, as TRL's reward functions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd

from rm_lab.config import check_fields, param

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}
Conversation = list  # list[Message]: the character card as the system turn, then the history


@dataclass(frozen=True)
class GenerationConfig:
    """How replies are sampled. Same config + same engine + same inputs -> the same replies."""

    n: int = param(1, doc="replies sampled per context (best-of-N draws N)", ge=1)
    temperature: float = param(0.8, doc="sampling temperature; 0 = greedy decoding", ge=0, le=5)
    top_p: float = param(1.0, doc="nucleus sampling: keep the smallest token set with this much mass", gt=0, le=1)
    max_new_tokens: int = param(64, doc="token cap per reply; a reply cut by it has finished=False", ge=1, le=8192)
    seed: int = param(0, doc="sampling seed (generation is reproducible per engine for a fixed seed)", ge=0)
    stop_at_eos: bool = param(True, doc="end a reply at the tokenizer's EOS (SmolLM2: <|im_end|>)")

    def __post_init__(self):
        check_fields(self)  # the Python API path gets the same errors as a YAML config

    def with_(self, **changes) -> "GenerationConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Completion:
    """One sampled reply.

    `token_ids` are the generated tokens, including the terminating EOS when `finished` (so a
    training mask that runs up to and including the first EOS covers exactly these), never padding.
    `logprobs[i]` is log softmax(logits / T)[token_ids[i]] under the sampling model (T = the
    temperature, 1 for greedy; top-p is not applied, so every value is finite). An engine that cannot
    report log-probs leaves `logprobs` empty. `text` is the decoded reply without special tokens.
    `prompt_token_ids` are the chat-templated prompt's tokens when the engine knows them.
    """

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finished: bool
    prompt_token_ids: tuple[int, ...] = ()

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


@runtime_checkable
class Engine(Protocol):
    """Samples completions for chat conversations. Kept up across calls; `close()` releases it."""

    name: str

    def generate(self, conversations: Sequence[Conversation], cfg: GenerationConfig) -> list[list[Completion]]:
        """`cfg.n` completions for each conversation, in input order."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class Policy(Protocol):
    """Contexts in, one reply per context row out (the scripted policies' signature)."""

    name: str

    def respond(self, contexts: pd.DataFrame, characters: pd.DataFrame, seed: int = 0) -> list[str]:
        ...


class RewardFn(Protocol):
    """Scores aligned with the rows of `contexts` and `replies` (higher is better)."""

    def __call__(self, contexts: pd.DataFrame, replies: Sequence[str], characters: pd.DataFrame) -> np.ndarray:
        ...


ENGINES = ("hf", "vllm", "vllm-server")


@dataclass(frozen=True)
class EngineConfig:
    """Which engine serves the policy and where its weights are (`rm_lab.policy.engines.load_engine`)."""

    engine: Literal["hf", "vllm", "vllm-server"] = param("hf", doc="generation engine", choices=ENGINES)
    model: str | None = param(None, doc="a Hugging Face causal-LM folder or .gguf file; empty = packaged SmolLM2")
    url: str | None = param(None, doc="vllm-server: base URL of an OpenAI-compatible server (http://host:port)")
    served_model: str | None = param(None, doc="vllm-server: the model name the server serves (default: its first)")
    dtype: Literal["float32", "bfloat16", "float16"] = param("float32", doc="weights dtype (float32 is fastest on CPU)")
    batch_rows: int = param(128, doc="hf: most sequences per generate call (prompts x n)", ge=1)
    device: str = param("cpu", doc="hf: torch device (cpu, cuda, cuda:1)")
    threads: int = param(0, doc="hf: torch CPU threads (0 = leave as is; 1 is far faster on a CPU other jobs share)",
                         ge=0)
    timeout_s: float = param(600.0, doc="vllm-server: seconds to wait for one request", gt=0)
    compile: bool = param(True, doc="vllm: torch.compile the model (faster rollouts; minutes of warm-up on a busy CPU)")

    def __post_init__(self):
        check_fields(self)


@dataclass
class LLMPolicy:
    """An engine and a generation config as a `Policy`.

    Prompts are the tokenizer's chat template over `prompts.conversation(context, character)`: the
    character card as the system prompt, then the context's history. `respond` returns the first of
    `cfg.n` samples (n is forced to 1); `sample` returns all n `Completion`s per context.
    """

    engine: Engine
    cfg: GenerationConfig = field(default_factory=GenerationConfig)
    name: str = "llm"

    def conversations(self, contexts: pd.DataFrame, characters: pd.DataFrame) -> list[Conversation]:
        from rm_lab.policy.prompts import conversations

        return conversations(contexts, characters)

    def sample(self, contexts: pd.DataFrame, characters: pd.DataFrame, seed: int | None = None,
               n: int | None = None) -> list[list[Completion]]:
        cfg = self.cfg.with_(**{k: v for k, v in (("seed", seed), ("n", n)) if v is not None})
        return self.engine.generate(self.conversations(contexts, characters), cfg)

    def respond(self, contexts: pd.DataFrame, characters: pd.DataFrame, seed: int = 0) -> list[str]:
        return [group[0].text for group in self.sample(contexts, characters, seed=seed, n=1)]


def repeat_rows(contexts: pd.DataFrame, n: int) -> pd.DataFrame:
    """Each context row `n` times in a row (row i*n + j is sample j of context i), as the flattened
    `generate` output: pair with `[c.text for g in groups for c in g]` to call a `RewardFn`."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return contexts.loc[contexts.index.repeat(n)].reset_index(drop=True)


def flatten(groups: Sequence[Sequence[Completion]]) -> list[Completion]:
    return [c for g in groups for c in g]
