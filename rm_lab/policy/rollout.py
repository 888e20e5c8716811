"""Rollouts for online RL: groups of replies sampled from the policy being trained, ready for its loss.

GRPO samples every step from the *current* policy, so the sampler must read the very weights the
optimizer updates: the `hf` engine is pointed at the live module (never a reloaded copy), switched to
eval mode for sampling and back to train mode after. The replies come back as one `PackedBatch`
(left-padded prompts, right-padded completions, the mask up to and including each reply's EOS), the
layout `sequence_logprobs` reads, so the training forward scores exactly the tokens that were sampled.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch

from rm_lab.policy.base import Completion, GenerationConfig


def step_seed(seed: int, *parts) -> int:
    """A sampling seed from the run's seed and the step's identity (epoch, prompt rows): the same step
    samples the same replies after a resume, whatever ran before it in this process."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:7], "big")


@dataclass
class Rollout:
    """G replies for each of P prompts, laid out as TRL's groups: row i*G + j is sample j of prompt i."""

    contexts: pd.DataFrame  # one row per reply (a prompt's row repeated G times)
    completions: list[Completion]
    group_size: int
    seconds: float

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.completions]

    def lengths(self) -> torch.Tensor:
        return torch.tensor([len(c.token_ids) for c in self.completions], dtype=torch.float32)

    def finished(self) -> torch.Tensor:
        return torch.tensor([c.finished for c in self.completions])

    def packed(self, pad_id: int, eos_ids: Sequence[int], rows: Sequence[int] | None = None):
        from rm_lab.policy.logprobs import pack_completions

        chosen = self.completions if rows is None else [self.completions[i] for i in rows]
        return pack_completions(chosen, pad_id, eos_ids)


class LiveSampler:
    """Samples groups from the policy module being trained (the `hf` engine on its live weights)."""

    def __init__(self, tokenizer, model, batch_rows: int = 128):
        from rm_lab.policy.engines.hf import HFEngine

        self.engine = HFEngine(tokenizer, model, batch_rows=batch_rows)

    def sample(self, contexts: pd.DataFrame, characters: pd.DataFrame, gen: GenerationConfig) -> Rollout:
        from rm_lab.policy.prompts import conversations

        t0 = time.perf_counter()
        model = self.engine.model
        was_training = model.training
        model.eval()
        try:
            groups = self.engine.generate(conversations(contexts, characters), gen)
        finally:
            model.train(was_training)
        rows = contexts.loc[contexts.index.repeat(gen.n)].reset_index(drop=True)
        return Rollout(rows, [c for g in groups for c in g], gen.n, time.perf_counter() - t0)
