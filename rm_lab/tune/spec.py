"""TuneConfig: what one `rm_lab tune` run is (configs/tune_rm.yaml).

The stage's own config (its YAML `base` plus the `fixed` keys) is what every trial starts from; `space`
names the keys each trial draws. Everything is checked before a study or run folder exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rm_lab.config import MAX_SEED, check_fields, param

STAGES = ("train-rm",)  # stages with an objective in rm_lab.tune.objective
METRICS = ("auto", "truth_spearman", "pairwise_accuracy", "val_loss")


@dataclass
class TuneConfig:
    """tune: an Optuna study over a stage's config keys (configs/tune_rm.yaml)."""

    stage: str = param("train-rm", doc="the stage whose config keys are tuned", choices=STAGES)
    base: str | None = param("train_rm", doc="the stage's YAML every trial starts from (a path or a name in "
                             "configs/); null: the stage's defaults")
    fixed: dict = param({}, doc="stage keys every trial sets on top of `base` (e.g. fewer epochs)")
    space: dict = param({}, doc="stage key (dotted for nested keys, e.g. loss_weights.preference) -> distribution: "
                        "{type: float|int|categorical, low, high, log, step, choices} (rm_lab.tune.space)",
                        min_len=1)
    metric: str = param("auto", doc="what a trial is scored by on the held-out split: truth_spearman (simulated world: "
                        "Spearman of the score with the hidden engagement), pairwise_accuracy (held-out pairs), "
                        "val_loss (held-out loss); auto: the first the data allows", choices=METRICS)
    n_trials: int = param(20, doc="trials the study should hold: workers stop once it has this many (a resumed "
                          "study runs only the missing ones)", ge=1, le=100_000)
    workers: int = param(1, doc="worker processes sharing the study (with SQLite keep this small; PostgreSQL for "
                         "many)", ge=1, le=256)
    study: str = param("tune-train-rm", doc="the study's name: runs given the same name and storage share it")
    storage: str | None = param(None, doc="SQLAlchemy URL of the study's storage, e.g. postgresql://user@host/db; "
                                "null: SQLite at <runs>/tune/optuna.sqlite")
    sampler: Literal["tpe", "random"] = param("tpe", doc="Optuna sampler")
    pruner: Literal["median", "none"] = param("median", doc="median: stop a trial whose per-epoch held-out "
                                              "`prune_monitor` is worse than the median of earlier trials")
    prune_monitor: str = param("val/loss", doc="the per-epoch Lightning metric reported to the pruner (a loss: "
                               "lower is better), e.g. val/loss or val/loss/preference")
    n_startup_trials: int = param(3, doc="trials that are never pruned (the median needs them)", ge=0, le=100_000)
    n_warmup_steps: int = param(1, doc="epochs of each trial that are never pruned", ge=0, le=100_000)
    enqueue_base: bool = param(True, doc="the study's first trial is the base config itself, so the best trial is "
                               "compared with the default on the same split")
    seed: int = param(0, doc="seed of the sampler (each worker offsets it)", ge=0, le=MAX_SEED)

    def __post_init__(self):
        check_fields(self)
