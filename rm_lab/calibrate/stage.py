"""The `calibrate` stage: past experiments -> calibration.json, held-out reliability, guardrail, report.

source=world simulates the past experiments (rm_lab.calibrate.simulated) with a reward model trained
on the same world's logs (or the one `model` names); source=upworthy hands over to the Upworthy
pipeline, which calls the same interval code.
"""

from __future__ import annotations

import time
from typing import Callable

from rm_lab import io
from rm_lab.calibrate.evaluation import check_targets, heldout
from rm_lab.calibrate.experiments import PREDICTORS, check_experiments, summary
from rm_lab.calibrate.intervals import fit_calibration, save_calibration
from rm_lab.config import ConfigError

PLOT = "predicted_vs_observed.png"


def reward_model(cfg, run, say: Callable[[str], None] = print):
    """The reward model of the offline predictions: `cfg.model`, or one trained now into run/rm."""
    from rm_lab import config as cfgmod
    from rm_lab.reward.model import RewardModel
    from rm_lab.reward.train import TrainRMConfig, train_reward_model

    from rm_lab.reward.embed_cache import default_cache_root

    if cfg.model:  # the shared cache by default: the tests' contexts are encoded once, not once per policy
        return RewardModel.load(cfg.model, cfg.cache_dir or default_cache_root()), cfg.model
    train = dict(cfg.train)
    world = {"seed": cfg.world_seed, "n_characters": cfg.n_characters, "spurious_emoji": cfg.spurious_emoji,
             "world_version": cfg.world_version,
             **dict(train.pop("world", {}) or {})}
    if cfg.cache_dir and "cache_dir" not in train:
        train["cache_dir"] = cfg.cache_dir
    tcfg = cfgmod.build(TrainRMConfig, {**train, "world": world, "data": None, "pairwise": train.get("pairwise", True)},
                        "calibrate train")
    folder = run.file("rm")
    say(f"training the reward model on the world's logs into {folder}")
    train_reward_model(tcfg, folder, say=lambda m: None)
    return RewardModel.load(folder, tcfg.cache_dir or default_cache_root()), str(folder)


def given_model(cfg):
    """The reward model `cfg.model` names, loaded and checked before any run folder exists (None when a
    model is to be trained)."""
    if cfg.source != "world" or not cfg.model:
        return None
    model, path = reward_model(cfg, None)
    check_model(cfg, model, path)
    return model, path


def check_model(cfg, model, model_path: str) -> None:
    if cfg.lift_output not in model.outputs():
        raise ConfigError(f"lift_output={cfg.lift_output!r}: the reward model {model_path} has outputs "
                          f"{model.outputs()}")
    if cfg.predictor.startswith("win_pair") and model.pairwise is None:
        raise ConfigError(f"predictor={cfg.predictor}: the reward model {model_path} has no pairwise model "
                          "(train it with pairwise=true, or choose a win_point_* predictor)")


def calibrate_world(cfg, run, say: Callable[[str], None] = print, loaded=None) -> dict:
    """`loaded`: (model, path) from `given_model`; None: load or train it now."""
    from rm_lab.calibrate.report import plot_predicted_vs_observed, report_markdown
    from rm_lab.calibrate.simulated import over_optimised_verdict, run_world_tests

    t0 = time.time()
    model, model_path = loaded if loaded is not None else reward_model(cfg, run, say)
    check_model(cfg, model, model_path)
    table, state = run_world_tests(cfg, model, say)
    check_experiments(table, "simulated tests", cfg.predictor)
    predictors = [p for p in PREDICTORS if p in table.columns and table[p].notna().all()]
    by_predictor, tables = {}, {}
    for p in predictors:
        tables[p], by_predictor[p] = heldout(table, p, cfg.method, cfg.confidence, cfg.folds)
    table, metrics = tables[cfg.predictor], by_predictor[cfg.predictor]
    cal = fit_calibration(table[cfg.predictor], table["observed_lift"], table["observed_se"], cfg.method,
                          cfg.confidence, cfg.predictor, cfg.folds or None,
                          meta={"source": "world", "metric": cfg.metric, "model": model_path,
                                "n_tests": len(table), "spurious_emoji": cfg.spurious_emoji})
    save_calibration(cal, run.file("calibration.json"))
    with io.atomic_path(run.file("experiments.csv")) as tmp:
        table.to_csv(tmp, index=False)
    verdict = over_optimised_verdict(cfg, state).to_json() if cfg.over_optimised else None
    if verdict is not None:
        io.write_json(run.file("guardrail.json"), verdict)
    out = {"n_tests": len(table), "predictor": cfg.predictor, "method": cfg.method, "heldout": metrics,
           "targets": check_targets(metrics), "by_predictor": by_predictor, "experiments": summary(table),
           "calibration": {"tau": cal.tau, **cal.lift_map.to_json()},
           "guardrail": None if verdict is None else {"ok": verdict["ok"],
                                                       "alarms": sorted({a["name"] for a in verdict["alarms"]})},
           "seconds": round(time.time() - t0, 1)}
    plot_predicted_vs_observed(table, run.file(PLOT),
                               f"{cfg.predictor} -> {cfg.metric} lift ({len(table)} tests, held out)")
    io.write_text(run.file("report.md"), report_markdown(cfg, out, by_predictor, verdict, PLOT))
    run.log_metrics(out)
    return out


def run_calibrate(cfg, run, say: Callable[[str], None] = print, loaded=None) -> dict:
    if cfg.source == "upworthy":
        import importlib

        try:
            mod = importlib.import_module("rm_lab.calibrate.upworthy")
        except ModuleNotFoundError:
            raise ConfigError("source=upworthy: rm_lab/calibrate/upworthy.py is not in this checkout") from None
        return mod.calibrate_upworthy(cfg, run, say)
    return calibrate_world(cfg, run, say, loaded)
