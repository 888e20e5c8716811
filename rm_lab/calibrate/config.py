"""The `calibrate` stage's settings: which past experiments, which offline predictor, which map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rm_lab.calibrate.experiments import PREDICTORS
from rm_lab.calibrate.guardrails import GuardrailConfig
from rm_lab.config import MAX_SEED, check_fields, param


def _presets() -> list[str]:
    from rm_lab.world.policies import PRESETS

    return sorted(PRESETS)


@dataclass
class CalibrateConfig:
    """Fit the offline-prediction -> A/B-lift map on past experiments, with prediction intervals."""

    source: Literal["world", "upworthy"] = param("world", doc="world: simulated A/B tests of scripted policies; "
                                                 "upworthy: the Upworthy headline tests (pipelines/upworthy.py)")
    model: str | None = param(None, doc="a train-rm run folder whose reward model makes the offline predictions; "
                              "null: train one in this run's folder on logs of the same world")
    train: dict = param({"epochs": 10, "pairwise_epochs": 5, "world": {"n_contexts": 2000,
                                                                        "n_preference_contexts": 2000}},
                        doc="train-rm keys of the reward model trained when model is null",
                        schema="rm_lab.reward.train:TrainRMConfig")
    spurious_emoji: bool = param(False, doc="the world with the emoji-lover confound (its logs train the reward model "
                                 "when model is null; its users take part in the tests)")
    world_seed: int = param(0, doc="seed of the world: its characters, and the logs of an on-the-fly reward model",
                            ge=0, le=MAX_SEED)
    world_version: int = param(1, doc="the world whose users take part in the simulated tests (and whose logs train "
                                      "an on-the-fly reward model); 2: relevance, coherence, templating",
                               choices=(1, 2))
    n_characters: int = param(24, doc="characters of the world", ge=1, le=100_000)
    n_tests: int = param(40, doc="simulated past A/B tests", ge=3, le=100_000)
    controls: list[str] = param(["baseline"], doc="scripted policies that are the control of the tests, in turn",
                                choices=_presets, min_len=1)
    treatments: list[str] = param(["engaging", "emoji_heavy", "preachy", "terse", "verbose", "improved"],
                                  doc="presets a treatment moves toward from its control", choices=_presets, min_len=1)
    strength: list[float] = param([0.1, 1.0], doc="[low, high] of the uniform share of the way from the control's "
                                  "style knobs to the preset's", min_len=2)
    jitter: float = param(0.25, doc="log-normal sd of a random change of each style knob of a treatment", ge=0, le=5)
    offline_contexts: int = param(600, doc="contexts (internal and user) both policies answer for the reward model",
                                  ge=2, le=1_000_000)
    internal_share: float = param(0.5, doc="share of the offline contexts from internal traffic", gt=0, lt=1)
    quality_contexts: int = param(2000, doc="fresh user contexts measuring each policy's true reply quality",
                                  ge=1, le=1_000_000)
    eligible_users: int = param(100_000, doc="users eligible for each test", ge=10, le=1_000_000_000)
    arm_share: float = param(0.1, doc="share of eligible users per arm", gt=0, le=0.5)
    days: int = param(7, doc="length of each test in days", ge=1, le=3650)
    metric: Literal["breadth", "depth"] = param("breadth", doc="the A/B metric whose lift is predicted")
    predictor: str = param("win_point_user", doc="the offline prediction the map reads", choices=PREDICTORS)
    lift_output: str = param("p_continue", doc="reward-model output whose relative change is pred_lift", min_len=1)
    method: Literal["linear", "isotonic"] = param("linear", doc="shape of the map")
    confidence: float = param(0.9, doc="coverage of the prediction intervals", gt=0, lt=1)
    folds: int = param(0, doc="folds of the out-of-fold scores and of the evaluation; 0: leave one out",
                       ge=0, le=100_000)
    over_optimised: str | None = param("emoji_heavy", doc="a preset the guardrail checks against the first control "
                                       "(an over-optimised candidate); null: none", choices=_presets)
    guardrail: GuardrailConfig = param(default_factory=GuardrailConfig, doc="guardrail thresholds")
    upworthy: dict = param({}, doc="settings of source=upworthy (pipelines/upworthy.py), each checked against "
                           "rm_lab.calibrate.upworthy.UpworthyConfig when the config is read",
                           schema="rm_lab.calibrate.upworthy:UpworthyConfig")
    cache_dir: str | None = param(None, doc="embedding cache of the reward model; null: the shared one")
    seed: int = param(0, doc="seed of the test design, the policies' replies and the arms' users", ge=0, le=MAX_SEED)

    def __post_init__(self):
        check_fields(self)
        lo, hi = self.strength[0], self.strength[1]
        if len(self.strength) != 2 or not 0 <= lo <= hi:
            raise ValueError(f"strength {self.strength}: expected [low, high] with 0 <= low <= high")
        if self.eligible_users * self.arm_share < 2:
            raise ValueError(f"eligible_users x arm_share = {self.eligible_users * self.arm_share:g} users per arm; "
                             "each arm needs at least 2")
