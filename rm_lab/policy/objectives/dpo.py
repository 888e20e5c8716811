"""DPO: the preference loss on (chosen, rejected) replies against a frozen reference, as pure functions.

The paper uses DPO only as a small local patch (safety, style) after rejection-sampling SFT; pairs
are the reward model's best vs worst of N samples, or logged preferences. The loss reads four
sequence log-probs per pair (completion tokens summed), so any trainer that can compute those —
full weights or LoRA, with the reference as a frozen copy or the adapter switched off — can use it.

The loss types and their formulas are TRL's (`DPOTrainer`, trl 1.16), and so are the logged metric
names (`rewards/chosen`, `rewards/margins`, ...); `tests/test_policy_dpo.py` runs TRL's own loss code
on the same inputs and asserts equality:

* `sigmoid` — the DPO paper: -log σ(β·Δ), Δ = (log π/π_ref)(chosen) - (log π/π_ref)(rejected);
* `hinge` — SLiC: relu(1 - β·Δ);
* `ipo` — IPO: (Δ̄ - 1/(2β))², Δ̄ the same difference with each side averaged over its tokens
  (needs the completion lengths);
* `robust` — Robust DPO: the sigmoid loss corrected for a `label_smoothing` share of flipped labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from rm_lab.config import ConfigError, check_fields, param

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")


@dataclass(frozen=True)
class DPOConfig:
    """The DPO objective (the trainer's optimiser settings live with the trainer)."""

    beta: float = param(0.1, doc="strength of the pull to the reference (IPO: its regulariser tau)", gt=0)
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust"] = param(
        "sigmoid", doc="sigmoid (DPO), hinge (SLiC), ipo (IPO, length-averaged), robust (Robust DPO)",
        choices=LOSS_TYPES)
    label_smoothing: float = param(0.0, doc="robust: the assumed share of flipped preference labels", ge=0, lt=0.5)

    def __post_init__(self):
        check_fields(self)
        if self.label_smoothing > 0 and self.loss_type != "robust":
            raise ConfigError(f"DPOConfig.label_smoothing: only loss_type='robust' uses it (as in TRL); got "
                              f"label_smoothing={self.label_smoothing:g} with loss_type={self.loss_type!r}")


def _check_pairs(*tensors: torch.Tensor) -> None:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"dpo_loss: the four log-prob tensors must be 1-D and of one length (one value per pair), "
                         f"got shapes {[tuple(t.shape) for t in tensors]}")
    if tensors[0].numel() == 0:
        raise ValueError("dpo_loss: no preference pairs in the batch")


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, cfg: DPOConfig,
             chosen_lengths: torch.Tensor | None = None, rejected_lengths: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """The mean DPO loss over pairs and TRL's metrics.

    Log-probs are per pair, summed over the completion tokens. `chosen_lengths`/`rejected_lengths`
    (completion tokens per reply) are needed by `ipo` only. The implicit rewards β·log(π/π_ref) give
    `rewards/chosen`, `rewards/rejected`, their margin and the share of pairs ranked right.
    """
    _check_pairs(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    delta = chosen_logratios - rejected_logratios
    beta = cfg.beta
    if cfg.loss_type == "sigmoid":
        per_pair = -F.logsigmoid(beta * delta)
    elif cfg.loss_type == "hinge":
        per_pair = torch.relu(1 - beta * delta)
    elif cfg.loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("dpo_loss: loss_type='ipo' averages each side over its tokens and needs "
                             "chosen_lengths and rejected_lengths")
        avg = chosen_logratios / chosen_lengths.clamp(min=1.0) - rejected_logratios / rejected_lengths.clamp(min=1.0)
        per_pair = (avg - 1 / (2 * beta)) ** 2
    elif cfg.loss_type == "robust":
        eps = cfg.label_smoothing
        clean = -(1 - eps) * F.logsigmoid(beta * delta)
        flipped = -eps * F.logsigmoid(-beta * delta)
        per_pair = (clean - flipped) / (1 - 2 * eps)
    else:  # pragma: no cover - DPOConfig checks the choice
        raise ConfigError(f"DPOConfig.loss_type: expected one of {list(LOSS_TYPES)}, got {cfg.loss_type!r}")
    loss = per_pair.mean()

    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    metrics = {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "logps/chosen": policy_chosen_logps.detach().mean().item(),
        "logps/rejected": policy_rejected_logps.detach().mean().item(),
    }
    return loss, metrics


def best_vs_worst(scores: np.ndarray, group_size: int, min_margin: float = 0.0) -> list[tuple[int, int]]:
    """DPO pairs from best-of-N: per group of `group_size` consecutive samples, (best, worst) row indices.

    A group whose best and worst differ by no more than `min_margin` yields no pair: a tie teaches
    DPO nothing and a near-tie is mostly reward-model noise.
    """
    scores = np.asarray(scores, dtype=float)
    if group_size < 2:
        raise ConfigError(f"best_vs_worst: group_size must be >= 2 (a pair needs two samples), got {group_size}")
    if scores.ndim != 1 or len(scores) % group_size:
        raise ValueError(f"best_vs_worst: {scores.shape} scores are not whole groups of {group_size}")
    if not np.isfinite(scores).all():
        raise ValueError("best_vs_worst: scores must be finite")
    pairs = []
    for g, s in enumerate(scores.reshape(-1, group_size)):
        hi, lo = int(np.argmax(s)), int(np.argmin(s))
        if s[hi] - s[lo] > min_margin:
            pairs.append((g * group_size + hi, g * group_size + lo))
    return pairs
