"""A 20-trial Optuna study of the reward model on the simulated world (README "Tuning").

Composes library calls only: `rm_lab.tune.tuning.tune` with configs/tune_rm.yaml on a seeded world (trial 0
is the default train-rm config, so default and tuned are scored on the same data and the same held-out
contexts: Spearman of the score with the hidden engagement), then
`rm_lab.reward.evaluate.evaluate_reward_model` of both models on a fresh world (another seed, every
row), which no trial saw: the check that the tuned config is better, not just luckier on the split it
was picked on.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python pipelines/tune_world.py [--out runs/tune-world] \
        [--n-contexts 800] [--epochs 12] [--n-trials 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rm_lab import config as cfgmod, io  # noqa: E402
from rm_lab.reward.embed_cache import default_cache_root  # noqa: E402
from rm_lab.reward.evaluate import EvalRMConfig, evaluate_reward_model  # noqa: E402
from rm_lab.reward.model import RewardModel  # noqa: E402
from rm_lab.runs import Run  # noqa: E402
from rm_lab.tune import tuning  # noqa: E402
from rm_lab.world.simulate import WorldConfig, simulate  # noqa: E402


def fresh_world_spearman(run_dir: str, world: dict) -> float:
    """Spearman with the hidden truth of a model on every row of another world."""
    wc = cfgmod.build(WorldConfig, world, "fresh world")
    m = evaluate_reward_model(EvalRMConfig(model=run_dir, split="all", counterfactuals=[], n_counterfactual=1),
                              Path(run_dir) / "eval_fresh", say=lambda s: None,
                              rm=RewardModel.load(run_dir, default_cache_root()), records=simulate(wc), world_cfg=wc)
    return float(m["truth"]["spearman_score_vs_truth"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/tune-world")
    ap.add_argument("--n-contexts", type=int, default=800)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--n-trials", type=int, default=20)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    runs = out / "runs"
    world = dict(seed=args.seed, n_contexts=args.n_contexts, n_preference_contexts=args.n_contexts)
    overrides = [f"fixed.world={json.dumps(world)}", f"fixed.epochs={args.epochs}", f"n_trials={args.n_trials}",
                 f"workers={args.workers}", f"study=tune-world-{args.n_contexts}-{args.epochs}",
                 f"storage=sqlite:///{out / 'optuna.sqlite'}"]
    cfg, space = tuning.load("tune_rm", overrides)
    t0 = time.time()
    with Run("tune", cfgmod.to_dict(cfg), root=runs) as run:
        s = tuning.tune(cfg, space, run.path, runs, run.run_id, say=lambda m: print(m, flush=True))
    trials = {t["number"]: t for t in s["trials"]}
    default, best = trials[0], trials[s["best"]["number"]]
    fresh = dict(world, seed=args.seed + 1)
    figures = {
        "world": world, "epochs": args.epochs, "n_trials": s["n_trials"], "states": s["states"],
        "metric": s["metric"], "heldout": "the contexts train-rm held out (val_fraction 0.2, seed 0), same for all",
        "default": {"trial": 0, "params": default["params"], "heldout_spearman": default["value"],
                    "fresh_world_spearman": fresh_world_spearman(default["run"], fresh)},
        "tuned": {"trial": best["number"], "params": best["params"], "heldout_spearman": best["value"],
                  "fresh_world_spearman": fresh_world_spearman(best["run"], fresh)},
        "fresh_world": fresh, "importances": s["importances"], "best_config": s["best_config"],
        "seconds": round(time.time() - t0, 1),
    }
    io.write_json(out / "figures.json", figures)
    print(json.dumps(figures, indent=2))
    ok = figures["tuned"]["heldout_spearman"] >= figures["default"]["heldout_spearman"]
    print("tuned held-out Spearman >= default:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
