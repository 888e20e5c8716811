"""One trial of a stage: its library call on the trial's config, scored on the held-out split.

train-rm: `rm_lab.reward.train.train_reward_model` into a child run (kind train-rm, its parent the tune
run, so the registry holds each trial's config and metrics), with optuna-integration's Lightning pruning
callback reporting the per-epoch held-out loss; then `rm_lab.reward.evaluate.evaluate_reward_model` on the
contexts the trial held out (split=heldout): in a simulated world the Spearman of the score with the
hidden engagement (the figure pipelines/rm_world_figures.py reports), else held-out pairwise accuracy or
the held-out loss. A pruned trial's run is recorded with status "pruned".
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable

import lightning as L

from rm_lab import config as cfgmod
from rm_lab.config import ConfigError
from rm_lab.tune.space import SearchSpace

DIRECTIONS = {"truth_spearman": "maximize", "pairwise_accuracy": "maximize", "val_loss": "minimize"}
PRUNED = "pruned"  # the registry status of a pruned trial's run


class SignedMetric(L.Callback):
    """Copies `-source` into the callback metrics as `name` at each validation end, so a loss can drive the
    pruner of a study that maximizes (the pruner compares intermediate values in the study's direction)."""

    def __init__(self, source: str, name: str):
        self.source, self.name = source, name

    def on_validation_end(self, trainer, pl_module):
        v = trainer.callback_metrics.get(self.source)
        if v is not None:
            trainer.callback_metrics[self.name] = -v


def has_truth(records) -> bool:
    return (records is not None and not isinstance(records, list) and "interaction" in records
            and "truth_engagement" in records["interaction"].columns)


def resolve_metric(metric: str, records) -> str:
    """`auto` -> truth_spearman in a simulated world, else pairwise_accuracy when there are preferences, else
    val_loss; an explicit truth_spearman on data without a hidden truth is a ConfigError."""
    recs = records
    if isinstance(records, list):
        from rm_lab.reward.data import merge_sources

        recs = merge_sources(records)
    if metric == "auto":
        if has_truth(recs):
            return "truth_spearman"
        return "pairwise_accuracy" if "preference" in recs else "val_loss"
    if metric == "truth_spearman" and not has_truth(recs):
        raise ConfigError("metric=truth_spearman needs a simulated world (data: null, or a simulate run folder "
                          "with truth_engagement); use metric=pairwise_accuracy or val_loss")
    if metric == "pairwise_accuracy" and "preference" not in recs:
        raise ConfigError("metric=pairwise_accuracy needs preference records; use metric=val_loss")
    return metric


def _val_loss(run_dir: Path, n_members: int, keep_best: bool) -> float:
    """Mean over members of the held-out loss of the epoch each kept (the lowest with keep_best, else the last)."""
    from rm_lab.reward import store

    vals = []
    for k in range(n_members):
        hist = [r["val/loss"] for r in store.read_history(store.TrainRun(run_dir).member(k)) if "val/loss" in r]
        if hist:
            vals.append(min(hist) if keep_best else hist[-1])
    if not vals:
        raise ConfigError("metric=val_loss: the trial has no held-out loss (set val_fraction > 0)")
    return float(sum(vals) / len(vals))


class TrainRMObjective:
    """Callable(trial) -> the trial's held-out score; built once per worker process."""

    stage = "train-rm"

    def __init__(self, space: SearchSpace, metric: str, runs_root: Path, parent: str | None,
                 prune_monitor: str = "val/loss", say: Callable[[str], None] = print):
        from rm_lab.reward.train import load_records

        self.space, self.runs_root, self.parent, self.say = space, Path(runs_root), parent, say
        self.reload = any(k == "data" or k.split(".")[0] == "world" for k in space.dists)
        base = space.build({}, "the base config of the trials")
        self.records = None if self.reload else load_records(base, say=lambda m: None)
        self.metric = resolve_metric(metric, self.records if self.records is not None else
                                     load_records(base, say=lambda m: None))
        self.direction = DIRECTIONS[self.metric]
        self.prune_monitor = prune_monitor

    def callbacks(self, trial) -> list:
        from optuna_integration import PyTorchLightningPruningCallback

        if self.direction == "minimize":
            return [PyTorchLightningPruningCallback(trial, monitor=self.prune_monitor)]
        signed = f"tune/-{self.prune_monitor}"
        return [SignedMetric(self.prune_monitor, signed), PyTorchLightningPruningCallback(trial, monitor=signed)]

    def score(self, cfg, run_dir: Path, records) -> tuple[float, dict]:
        from rm_lab.reward.embed_cache import default_cache_root
        from rm_lab.reward.evaluate import EvalRMConfig, evaluate_reward_model
        from rm_lab.reward.model import RewardModel
        from rm_lab.reward.store import TrainRun

        if self.metric == "val_loss":
            v = _val_loss(run_dir, cfg.n_ensemble, cfg.keep_best)
            return v, {"val_loss": v}
        cache = TrainRun(run_dir).embed_cache if cfg.cache_dir == "run" else (  # where training cached them
            Path(cfg.cache_dir) if cfg.cache_dir else default_cache_root())
        world = records is not None and has_truth(records)
        ecfg = EvalRMConfig(model=str(run_dir), data=None if world else cfg.data, world=dict(cfg.world),
                            split="heldout", counterfactuals=[], n_counterfactual=1, cache_dir=str(cache),
                            seed=cfg.seed)
        wc = cfgmod.build(_world_cls(), dict(cfg.world), "world") if world else None
        m = evaluate_reward_model(ecfg, run_dir / "eval", say=lambda s: None, rm=RewardModel.load(run_dir, cache),
                                  records=records if world else None, world_cfg=wc)
        if self.metric == "truth_spearman":
            v = m.get("truth", {}).get("spearman_score_vs_truth")
            detail = dict(m.get("truth", {}))
        else:
            v = m.get("pairwise_accuracy", {}).get("pointwise")
            detail = {"pairwise_accuracy": v}
        if v is None:
            raise ConfigError(f"metric={self.metric}: the trial's held-out split gave no value (too few held-out "
                              f"contexts? raise val_fraction)")
        return float(v), detail

    def __call__(self, trial) -> float:
        import optuna

        from rm_lab.reward.train import load_records, train_reward_model, with_absolute_paths
        from rm_lab.runs import Run

        values = self.space.suggest(trial)
        cfg = with_absolute_paths(self.space.build(values, f"trial {trial.number}"))
        records = self.records if not self.reload else load_records(cfg, say=lambda m: None)
        run = Run(self.stage, cfgmod.to_dict(cfg), root=self.runs_root, parent=self.parent)
        trial.set_user_attr("run", str(run.path.resolve()))
        trial.set_user_attr("run_id", run.run_id)
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        try:
            with warnings.catch_warnings():  # ensemble members 1.. report the epochs member 0 reported already
                warnings.filterwarnings("ignore", message="The reported value is ignored")
                metrics = train_reward_model(cfg, run.path, records=records, callbacks=self.callbacks(trial),
                                             say=lambda m: None)
            value, detail = self.score(cfg, run.path, records)
        except optuna.TrialPruned as e:
            run.log_metrics({"tune/pruned": 1, "tune/trial": trial.number})
            run.finish(PRUNED, str(e))
            raise
        except BaseException as e:
            run.__exit__(type(e), e, None)
            raise
        run.log_metrics({**metrics, "tune/trial": trial.number, "tune/value": value, "tune/metric": detail})
        run.finish("done")
        trial.set_user_attr("detail", _plain(detail))
        self.say(f"trial {trial.number}: {self.metric}={value:.4f} {values}")
        return value


def _world_cls():
    from rm_lab.world.simulate import WorldConfig

    return WorldConfig


def _plain(d: dict) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v) for k, v in d.items()
            if isinstance(v, (int, float, str, bool))}


OBJECTIVES = {"train-rm": TrainRMObjective}
STAGE_SCHEMAS = {"train-rm": "rm_lab.reward.train:TrainRMConfig"}
STAGE_CONFIGS = {"train-rm": "train_rm"}
