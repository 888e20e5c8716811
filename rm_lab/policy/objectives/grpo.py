"""GRPO: group-relative advantages and the clipped policy-gradient loss, as pure functions.

The paper's online RL is single-turn GRPO on near-policy prompts: sample a group of replies per
prompt, score them, and push each reply by how much better it is than its group. No value model;
the group mean is the baseline. The formulas, choices and metric names are TRL's (`GRPOTrainer`,
trl 1.16); `tests/test_policy_grpo.py` runs TRL's own code on the same inputs and asserts equality.

* Advantages (`group_advantages`): reward minus its group's mean, divided by the group's std
  (`scale_rewards="group"`, GRPO), the whole batch's std (`"batch"`, more robust to tiny groups) or
  not at all (`"none"`, Dr. GRPO: the std division biases towards too-easy and too-hard prompts).
  A group whose replies all got the same reward has advantage 0 everywhere: it teaches nothing, is
  counted (`frac_reward_zero_std`) and may be skipped before the forward pass (`keep`).
* Loss (`grpo_loss`): per token, -min(r·A, clip(r, 1-ε_low, 1+ε_high)·A) with r = π/π_old, plus
  β·KL(π‖π_ref) by the k3 estimator exp(q) - q - 1, q = log π_ref - log π (unbiased, always >= 0),
  by default weighted by r so that its gradient is the unbiased reverse-KL gradient off-policy.
  Aggregated per `loss_type`: `grpo` averages tokens within each reply, then replies (long replies
  count less per token); `bnpo` averages over the batch's tokens; `dr_grpo` sums tokens and divides
  by replies × the token cap (a constant: no length bias); `dapo` averages over all tokens of the
  whole generation batch (token-level, invariant to how that batch is split into micro-batches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from rm_lab.config import ConfigError, check_fields, param

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALES = ("group", "batch", "none")
STD_EPS = 1e-4  # TRL's: added to the std before dividing


@dataclass(frozen=True)
class GRPOConfig:
    """The GRPO objective (sampling settings live in `GenerationConfig`, optimiser ones in the trainer)."""

    num_generations: int = param(8, doc="group size: replies sampled per prompt (>= 2: the group is the baseline)",
                                 ge=2)
    epsilon: float = param(0.2, doc="clip range below 1 of the importance ratio pi/pi_old", gt=0, lt=1)
    epsilon_high: float | None = param(None, doc="clip range above 1 (DAPO's clip-higher: 0.28); empty = epsilon",
                                       gt=0)
    beta: float = param(0.0, doc="weight of the k3 KL penalty to the reference (0: no reference forward needed)",
                        ge=0)
    scale_rewards: Literal["group", "batch", "none"] = param(
        "group", doc="divide advantages by the group's std, the batch's, or not at all (Dr. GRPO)", choices=SCALES)
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = param(
        "dapo", doc="aggregation: grpo (per reply), bnpo (batch tokens), dr_grpo (/ replies x token cap), "
                    "dapo (all tokens of the generation batch)", choices=LOSS_TYPES)
    max_completion_length: int | None = param(
        None, doc="dr_grpo's constant normaliser (the token cap); empty = the width of the completion mask", ge=1)
    kl_bias_correction: bool = param(True, doc="weight the per-token KL by the ratio pi/pi_old (DeepSeek-V3.2): "
                                               "an unbiased reverse-KL gradient off-policy (TRL's default)")
    skip_zero_std_groups: bool = param(True, doc="drop groups whose rewards are all equal before the forward pass")

    def __post_init__(self):
        check_fields(self)

    @property
    def epsilon_low(self) -> float:
        return self.epsilon

    @property
    def clip_high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


@dataclass(frozen=True)
class GroupAdvantages:
    """Advantages of one generation batch and what the logs need about its groups."""

    advantages: torch.Tensor  # (B,)
    zero_std: torch.Tensor  # (B,) bool: the row's group had no reward variance
    keep: torch.Tensor  # (B,) bool: rows of groups that carry signal; dropping the others saves their
    # forward passes and changes only the token normalisers (bnpo, dapo) and the KL those rows add
    n_groups: int
    n_zero_std_groups: int
    metrics: dict[str, float]


def group_advantages(rewards: torch.Tensor | np.ndarray, group_size: int, scale: str = "group") -> GroupAdvantages:
    """Group-relative advantages of `rewards` laid out as consecutive groups of `group_size` (TRL's
    layout: row i*G + j is sample j of prompt i).

    `frac_reward_zero_std` is TRL's metric (with `scale="batch"` it looks at the batch's std, as
    TRL does); `zero_std_groups` always counts groups with equal rewards, whatever the scaling.
    """
    if group_size < 2:
        raise ConfigError(f"group_advantages: group size must be >= 2 (a group of one has no baseline), "
                          f"got {group_size}")
    if scale not in SCALES:
        raise ConfigError(f"group_advantages: scale must be one of {list(SCALES)}, got {scale!r}")
    r = torch.as_tensor(rewards, dtype=torch.float32).flatten()
    if r.numel() == 0 or r.numel() % group_size:
        raise ValueError(f"group_advantages: {r.numel()} rewards are not whole groups of {group_size}")
    if not torch.isfinite(r).all():
        bad = int((~torch.isfinite(r)).nonzero()[0])
        raise ValueError(f"group_advantages: reward {bad} is {r[bad].item()}; rewards must be finite")
    grouped = r.view(-1, group_size)  # stds below are unbiased (Bessel), as TRL's nanstd
    mean = grouped.mean(dim=1).repeat_interleave(group_size)
    group_std = grouped.std(dim=1).repeat_interleave(group_size)
    std = r.std().expand_as(r) if scale == "batch" else group_std
    adv = r - mean
    if scale != "none":
        adv = adv / (std + STD_EPS)
    zero = torch.isclose(group_std, torch.zeros_like(group_std))
    trl_zero = torch.isclose(std, torch.zeros_like(std))
    n_groups = r.numel() // group_size
    n_zero = int(zero.view(-1, group_size)[:, 0].sum())
    metrics = {
        "reward": r.mean().item(),
        "reward_std": r.std().item() if r.numel() > 1 else 0.0,
        "frac_reward_zero_std": trl_zero.float().mean().item(),
        "zero_std_groups": float(n_zero),
        "groups": float(n_groups),
    }
    return GroupAdvantages(adv, zero, ~zero, n_groups, n_zero, metrics)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token KL(π‖π_ref) by Schulman's k3 estimator: exp(q) - q - 1 with q = log π_ref - log π.
    Unbiased for samples from π, never negative, and exactly 0 where the two agree."""
    q = ref_logps - logps
    return torch.exp(q) - q - 1


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return ((x * mask).sum() / mask.sum().clamp(min=1.0)).item()


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor | None, ref_logps: torch.Tensor | None,
              advantages: torch.Tensor, completion_mask: torch.Tensor, cfg: GRPOConfig,
              num_items_in_batch: float | torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss of one micro-batch and TRL's metrics.

    `logps`, `old_logps` (the sampling policy's, None = one update per generation: `logps` detached),
    `ref_logps` (None when `cfg.beta == 0`) are per completion token, (B, T); `completion_mask` (B, T)
    is 1 on the reply's tokens up to and including its EOS. `num_items_in_batch` (dapo) is the
    completion-token count of the whole generation batch (default: this micro-batch's). A trainer
    that accumulates gradients over k micro-batches divides the grpo/bnpo/dr_grpo loss by k itself.
    """
    if logps.dim() != 2 or completion_mask.shape != logps.shape:
        raise ValueError(f"grpo_loss: logps and completion_mask must both be (batch, tokens), got "
                         f"{tuple(logps.shape)} and {tuple(completion_mask.shape)}")
    if advantages.shape != (logps.size(0),):
        raise ValueError(f"grpo_loss: one advantage per reply ({logps.size(0)}), got shape {tuple(advantages.shape)}")
    if cfg.beta != 0.0 and ref_logps is None:
        raise ValueError("grpo_loss: beta > 0 needs the reference log-probs (ref_logps)")
    mask = completion_mask.to(logps.dtype)
    old = logps.detach() if old_logps is None else old_logps
    adv = advantages.unsqueeze(1)

    ratio = torch.exp(logps - old)
    clipped = torch.clamp(ratio, 1 - cfg.epsilon_low, 1 + cfg.clip_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = k3_kl(logps, ref_logps) if ref_logps is not None else None
    if kl is not None and cfg.kl_bias_correction:
        kl = kl * ratio  # differentiable: changes the KL gradient even on-policy, where the ratio is 1
    if cfg.beta != 0.0:
        per_token = per_token + cfg.beta * kl

    if cfg.loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif cfg.loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    elif cfg.loss_type == "dr_grpo":
        cap = cfg.max_completion_length or mask.size(1)
        loss = (per_token * mask).sum() / (per_token.size(0) * cap)
    elif cfg.loss_type == "dapo":
        n = mask.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=mask.dtype)
        loss = (per_token * mask).sum() / n.clamp(min=1.0)
    else:  # pragma: no cover - GRPOConfig checks the choice
        raise ConfigError(f"GRPOConfig.loss_type: expected one of {list(LOSS_TYPES)}, got {cfg.loss_type!r}")

    with torch.no_grad():
        low = ((ratio < 1 - cfg.epsilon_low) & (adv < 0)).to(mask.dtype)
        high = ((ratio > 1 + cfg.clip_high) & (adv > 0)).to(mask.dtype)
        region = torch.maximum(low, high)
        has = mask.sum(-1) > 0
        per_reply = lambda x: ((x * mask).sum(-1) / mask.sum(-1).clamp(min=1.0))[has]  # noqa: E731
        metrics = {
            "policy_loss": loss.detach().item(),
            "clip_ratio/low_mean": _masked_mean(low, mask),
            "clip_ratio/high_mean": _masked_mean(high, mask),
            "clip_ratio/region_mean": _masked_mean(region, mask),
            "clip_ratio/low_min": per_reply(low).min().item() if has.any() else 0.0,
            "clip_ratio/high_max": per_reply(high).max().item() if has.any() else 0.0,
            "completions/mean_length": mask.sum(-1).mean().item(),
        }
        if kl is not None:
            metrics["kl"] = _masked_mean(kl, mask)
    return loss, metrics
