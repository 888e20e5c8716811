"""Rejection sampling: best-of-N on fresh traffic prompts, kept only where the pick is good, as an SFT set.

Rebuilt every generation from fresh prompts (the paper's step 3): N samples per context, the reward model's
pick among those that pass the user-signal filters, and — unlike best-of-N at inference, which must answer
every context — a context where no sample passes, or where the pick scores below `min_score`, is dropped
rather than taught. What is kept is written in the canonical records (`label` rows are the SFT targets,
`preference` rows pair each pick with the worst sample, for DPO), beside the score distribution and the
style artifacts of accepted vs rejected replies, so a reward model that prefers an artifact is seen before
the policy learns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rm_lab.config import param
from rm_lab.policy.objectives.best_of_n import Prepared, SamplingConfig, run_sampling


@dataclass
class RejectionConfig(SamplingConfig):
    """`rm_lab rejection-sample`: an SFT set of the reward model's picks on fresh prompts."""

    min_score: float | None = param(None, doc="drop a context whose pick's value (score - risk_lambda x std) is "
                                              "below this; null: keep every context with a passing sample")


def rejection_sample(cfg: RejectionConfig, run_dir: str | Path, prepared: Prepared | None = None,
                     say: Callable[[str], None] = print) -> dict:
    """Write the SFT set (character, context, label, preference records), samples.parquet and the report."""
    return run_sampling(cfg, Path(run_dir), prepared, fallback=False, min_score=cfg.min_score, say=say)
