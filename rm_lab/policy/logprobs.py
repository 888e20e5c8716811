"""Per-token log-probs of completions by a training-style forward — what SFT, DPO and GRPO share.

The layout is the one sampling produced: prompts padded on the left, completions on the right, so
one forward gives every completion token's log-prob. Two details make these match the engine's
log-probs (the check every RL step depends on):

* positions come from the attention mask, ``(mask.cumsum(-1) - 1).clamp(min=0)``, so a left-padded
  prompt starts at position 0 as it did in `generate`;
* the completion mask runs up to and including the first EOS, not "not pad": SmolLM2's pad token
  *is* its EOS, so a "not pad" mask would drop the EOS the model must learn to emit.

Gradients flow; wrap a call in ``torch.no_grad()`` for reference log-probs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import torch

from rm_lab.policy.base import Completion


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # (B, P + C): left-padded prompt, then right-padded completion
    attention_mask: torch.Tensor  # (B, P + C): prompt tokens, then the completion mask
    completion_mask: torch.Tensor  # (B, C): 1 up to and including the first EOS (and within length)
    prompt_width: int  # P

    @property
    def completion_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width:]

    def to(self, device) -> "PackedBatch":
        return PackedBatch(self.input_ids.to(device), self.attention_mask.to(device),
                           self.completion_mask.to(device), self.prompt_width)


def completion_mask(completion_ids: torch.Tensor, eos_ids: Sequence[int] | int,
                    lengths: torch.Tensor | None = None) -> torch.Tensor:
    """1 for tokens up to and including the first EOS of each row (all tokens when a row has none),
    and only within `lengths` when given (right padding that is not an EOS). Long tensor (B, C)."""
    eos = torch.tensor([eos_ids] if isinstance(eos_ids, int) else list(eos_ids), device=completion_ids.device)
    is_eos = torch.isin(completion_ids, eos).long()
    before_first = (is_eos.cumsum(-1) - is_eos) == 0  # no EOS strictly before this position
    mask = before_first
    if lengths is not None:
        pos = torch.arange(completion_ids.shape[1], device=completion_ids.device)
        mask = mask & (pos[None, :] < lengths.to(completion_ids.device)[:, None])
    return mask.long()


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: the first real token is at 0, as in `generate`."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def pack(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int,
         eos_ids: Sequence[int] | int) -> PackedBatch:
    """Token-id lists -> one left/right-padded batch with its masks."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    if not prompts:
        raise ValueError("nothing to pack: no prompts")
    P = max(len(p) for p in prompts)
    C = max(1, max(len(c) for c in completions))
    B = len(prompts)
    ids = torch.full((B, P + C), int(pad_id), dtype=torch.long)
    prompt_mask = torch.zeros((B, P), dtype=torch.long)
    lengths = torch.zeros(B, dtype=torch.long)
    for r, (p, c) in enumerate(zip(prompts, completions)):
        if p:
            ids[r, P - len(p):P] = torch.as_tensor(list(p), dtype=torch.long)
            prompt_mask[r, P - len(p):] = 1
        if c:
            ids[r, P:P + len(c)] = torch.as_tensor(list(c), dtype=torch.long)
        lengths[r] = len(c)
    cmask = completion_mask(ids[:, P:], eos_ids, lengths)
    return PackedBatch(ids, torch.cat([prompt_mask, cmask], dim=1), cmask, P)


def pack_completions(completions: Sequence[Completion], pad_id: int, eos_ids: Sequence[int] | int) -> PackedBatch:
    """`pack` over engine `Completion`s (each must carry its `prompt_token_ids`)."""
    if any(not c.prompt_token_ids for c in completions):
        raise ValueError("a completion has no prompt_token_ids; its engine did not report the prompt tokens")
    return pack([c.prompt_token_ids for c in completions], [c.token_ids for c in completions], pad_id, eos_ids)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T) at `targets`, in float32: (B, T, V), (B, T) -> (B, T)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _accepts(model, name: str) -> bool:
    """Whether the model's forward takes `name` (a peft wrapper passes keywords on to its base model)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return name in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def sequence_logprobs(model, batch: PackedBatch, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the completions, (B, C), zero outside the mask; and the mask (B, C).

    `temperature` must be the sampling temperature for the values to match the engine's (use 1.0
    for greedy decoding); only the last C + 1 positions' logits are computed when the model allows.
    """
    device = next(model.parameters()).device
    b = batch.to(device)
    C = b.input_ids.shape[1] - b.prompt_width
    kwargs = dict(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=position_ids(b.attention_mask))
    if _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = C + 1
    logits = model(**kwargs).logits
    logits = logits[:, -(C + 1):-1, :]  # the logits at position t predict token t + 1
    lp = token_logprobs(logits, b.completion_ids, 1.0 if temperature <= 0 else temperature)
    mask = b.completion_mask
    return lp * mask, mask
