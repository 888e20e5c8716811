"""`rm_lab flywheel`'s settings: the world, each stage's keys, the RL step, the A/B test and the ship rule.

Each stage keeps its own config dataclass; the flywheel holds plain mappings of their keys (validated
against those dataclasses by `rm_lab.config`), so `rl_train.beta=0.05` or `reward.n_ensemble=3` reads as
in the stage's own YAML. Paths and per-generation fields (policy, data, model, seeds) are filled in by
the flywheel's steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rm_lab.config import MAX_SEED, ConfigError, check_fields, param
from rm_lab.policy.coupled import CoupledConfig

METRICS = ("breadth", "depth")


@dataclass
class ABSettings:
    """The simulated A/B test each candidate gets before it ships."""

    eligible_users: int = param(2_000_000, doc="eligible users of the test", ge=10, le=1_000_000_000)
    arm_share: float = param(0.1, doc="share of eligible users per arm (the paper: usually 10%)", gt=0, le=0.5)
    days: int = param(7, doc="days the test runs", ge=1, le=3650)
    seed: int = param(0, doc="seed of the users (generation g uses seed + g)", ge=0, le=MAX_SEED)

    def __post_init__(self):
        check_fields(self)
        if self.eligible_users * self.arm_share < 2:
            raise ValueError(f"eligible_users x arm_share = {self.eligible_users * self.arm_share:g}; each arm needs "
                             "at least 2 users")


@dataclass
class ShipRule:
    """When a candidate replaces the current policy (see rm_lab.flywheel.ship)."""

    metric: Literal["breadth", "depth", "either"] = param(
        "either", doc="the A/B metric whose measured lift must be positive (either: breadth or depth)")
    blocking: list[str] = param(["ceiling", "gap", "style_drift", "uncertainty"],
                                doc="guardrail alarms on the candidate's evaluation that block shipping (the "
                                    "coupled trainer's alarms stop training before the candidate)",
                                choices=("ceiling", "floor", "gap", "style_drift", "uncertainty"))
    evidence: Literal["point", "interval"] = param(
        "interval", doc="a win-rate alarm (ceiling, floor, gap) blocks only when its whole 95% interval lies past the "
                        "threshold (interval), or on its point estimate (point: noisy on few contexts)")
    require_predicted: bool = param(True, doc="also require the calibration's predicted lift interval to reach above "
                                              "0 (a candidate predicted to lose for sure is not shipped)")

    def __post_init__(self):
        check_fields(self)


@dataclass
class FlywheelConfig:
    """G generations: traffic -> curate -> reward model -> rejection sampling + SFT -> RL -> evaluate ->
    predicted lift -> simulated A/B test -> ship or not (configs/flywheel.yaml)."""

    generations: int = param(2, doc="generations of the loop", ge=1, le=1000)
    policy: str | None = param(None, doc="the starting policy (a causal-LM folder); null: the packaged SmolLM2")
    world_seed: int = param(0, doc="seed of the world's characters; every prompt set is a fresh draw from it",
                            ge=0, le=MAX_SEED)
    world_version: int = param(2, doc="the world that judges (2: relevance, coherence, templating)", choices=(1, 2))
    spurious_emoji: bool = param(False, doc="plant the emoji-lover confound in the logs (the reward-hacking test)")
    plant_emoji: list[int] = param([], doc="generations whose SFT set is poisoned: `plant_emoji_count` emoji written "
                                          "into every target reply (or a seeded share: `plant_emoji_share`), a "
                                          "planted reward hack that the guardrails must catch before it ships "
                                          "(the reward-hacking test)")
    plant_emoji_count: int = param(3, doc="emoji in each planted SFT target (after its first sentence)", ge=1, le=50)
    plant_emoji_share: float = param(1.0, doc="the share of a planted generation's SFT targets that get the emoji "
                                              "(a seeded draw; below 1 RL sees groups that differ in emoji)",
                                     gt=0, le=1)
    traffic: dict = param({"n_contexts": 600, "n_preference_contexts": 600},
                          doc="generation 1's logged traffic (WorldConfig keys; seed, version and confound come from "
                              "above)", schema="rm_lab.world.simulate:WorldConfig")
    traffic_contexts: int = param(32, doc="generations >= 2: fresh contexts the current policy answers, logged in "
                                          "the world as that generation's new traffic", ge=1, le=10_000_000)
    curate: dict = param({"diversity": False}, doc="curate keys (input is each generation's traffic)",
                         schema="rm_lab.curate.pipeline:CurateConfig")
    reward: dict = param({"epochs": 10, "pairwise": True, "n_ensemble": 2},
                         doc="train-rm keys of each generation's reward model (data: every generation's curated "
                             "traffic and new logs so far)", schema="rm_lab.reward.train:TrainRMConfig")
    rejection: dict = param({"n_contexts": 16, "n": 4}, doc="rejection-sample keys (model, policy and fresh "
                                                            "contexts are the generation's)",
                            schema="rm_lab.policy.objectives.rejection:RejectionConfig")
    sft: dict = param({"epochs": 1, "lr": 5e-4}, doc="train-policy keys of the SFT on the rejection-sampled set",
                      schema="rm_lab.policy.trainer:TrainPolicyConfig")
    rl: Literal["grpo", "dpo", "none"] = param("grpo", doc="the RL step after SFT, in the coupled trainer (none: ship "
                                                          "the SFT policy's candidate)")
    rl_train: dict = param({"max_steps": 2, "group_size": 4, "batch_size": 2, "lr": 5e-4},
                           doc="train-policy keys of each coupled round's RL update (method, policy, data and "
                               "reward_model are the round's)", schema="rm_lab.policy.trainer:TrainPolicyConfig")
    rl_contexts: int = param(8, doc="grpo: fresh prompts per round; dpo: contexts rejection-sampled into pairs",
                             ge=1, le=1_000_000)
    coupled: CoupledConfig = param(default_factory=lambda: CoupledConfig(rounds=2, contexts=8),
                                   doc="the coupled trainer's rounds, guardrails and stop rules")
    refresh: dict = param({"epochs": 3, "pairwise": False}, doc="train-rm keys of a coupled round's reward-model "
                                                                "refresh (ensemble size follows `reward`)",
                          schema="rm_lab.reward.train:TrainRMConfig")
    evaluate: dict = param({"n_contexts": 16}, doc="evaluate keys (model and both policies are the generation's)",
                           schema="rm_lab.policy.evaluate:EvaluateConfig")
    calibration: str | None = param(None, doc="a calibrate run folder (or its calibration.json) whose map predicts "
                                              "each candidate's lift; null: build one in generation 1 from "
                                              "simulated past tests (calibrate keys below)")
    calibrate: dict = param({"n_tests": 16, "offline_contexts": 120, "quality_contexts": 400},
                            doc="calibrate keys when the flywheel builds its calibration (model: generation 1's "
                                "reward model)", schema="rm_lab.calibrate.config:CalibrateConfig")
    ab: ABSettings = param(default_factory=ABSettings, doc="the simulated A/B test of each candidate")
    ship: ShipRule = param(default_factory=ShipRule, doc="the ship rule")
    engine: dict = param({}, doc="EngineConfig keys of every sampling step (engine.model is set per policy)",
                         schema="rm_lab.policy.base:EngineConfig")
    temperature: float = param(0.8, doc="sampling temperature of every step", ge=0, le=5)
    max_new_tokens: int = param(48, doc="token cap per reply of every sampling step", ge=1, le=8192)
    cache_dir: str | None = param(None, doc="embedding cache of the reward models; null: the shared one")
    seed: int = param(0, doc="seed of sampling and training (generation g adds g)", ge=0, le=MAX_SEED)

    def __post_init__(self):
        check_fields(self)
        for key in ("method", "policy", "data", "reward_model"):
            for block in ("sft", "rl_train"):
                if key in getattr(self, block):
                    raise ConfigError(f"{block}.{key}: set by the flywheel for each generation; leave it out")
        for key in ("model", "engine", "contexts"):
            if key in self.rejection:
                raise ConfigError(f"rejection.{key}: set by the flywheel for each generation; leave it out")
        for key in ("model", "candidate", "baseline"):
            if key in self.evaluate:
                raise ConfigError(f"evaluate.{key}: set by the flywheel for each generation; leave it out")
        bad = [g for g in self.plant_emoji if not 1 <= int(g) <= self.generations]
        if bad:
            raise ConfigError(f"plant_emoji: generation {bad[0]} is outside 1..{self.generations} (generations)")
        if "data" in self.reward or "data" in self.refresh:
            raise ConfigError("reward.data / refresh.data: the flywheel trains on its own logs; leave data out")


PATH_KEYS = ("policy", "calibration", "cache_dir")


def with_absolute_paths(cfg: FlywheelConfig) -> FlywheelConfig:
    """Relative paths made absolute, so a resumed flywheel reads the same files from anywhere."""
    import dataclasses
    from pathlib import Path

    ab = lambda v: str(Path(v).expanduser().absolute()) if v else v  # noqa: E731
    return dataclasses.replace(cfg, **{k: ab(getattr(cfg, k)) for k in PATH_KEYS})

