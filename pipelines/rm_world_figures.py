"""Reward-model figures on the simulated world (reports/reward_world.md).

Trains the default multi-head reward model on a seeded world, scores the contexts it held out and
compares with the world's hidden engagement: Spearman of the pointwise score with true engagement,
pairwise accuracy on pairs whose true engagements differ by >= 0.1, and, in the world with the
planted emoji confound, the learned effect of appending one emoji next to the true one.

    HF_HUB_OFFLINE=1 .venv/bin/python pipelines/rm_world_figures.py [--out runs/rm-world-figures]
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

from rm_lab import io  # noqa: E402
from rm_lab.config import parse_overrides  # noqa: E402
from rm_lab.reward.evaluate import EvalRMConfig, evaluate_reward_model, summary_lines  # noqa: E402
from rm_lab.reward.model import RewardModel  # noqa: E402
from rm_lab.reward.train import TrainRMConfig, train_reward_model  # noqa: E402
from rm_lab.world.simulate import WorldConfig, simulate  # noqa: E402

SEED = 0
WORLD = dict(seed=SEED, n_contexts=2000, n_preference_contexts=2000)


def run_world(name: str, out: Path, spurious: bool, train_overrides: dict, n_counterfactual: int) -> dict:
    wc = WorldConfig(**WORLD, spurious_emoji=spurious)
    t0 = time.time()
    records = simulate(wc)
    cfg = TrainRMConfig(seed=SEED, **train_overrides)
    run_dir = out / name
    if run_dir.exists() and (run_dir / "model.safetensors").exists():
        print(f"[{name}] reusing the trained model in {run_dir}", flush=True)
    else:
        train_reward_model(cfg, run_dir, records=records, say=lambda m: print(f"[{name}] {m}", flush=True))
    ecfg = EvalRMConfig(model=str(run_dir), split="heldout", min_truth_gap=0.1, n_counterfactual=n_counterfactual,
                        counterfactuals=["append_emoji"], seed=SEED)
    rm = RewardModel.load(run_dir, cache_dir=_cache_root())
    m = evaluate_reward_model(ecfg, run_dir / "eval", say=lambda s: print(f"[{name}] {s}", flush=True), rm=rm,
                              records=records, world_cfg=wc)
    io.write_json(run_dir / "eval" / "metrics.json", m)
    m["seconds"] = round(time.time() - t0, 1)
    return m


def _cache_root():
    from rm_lab.reward.embed_cache import default_cache_root

    return default_cache_root()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/rm-world-figures")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--n-counterfactual", type=int, default=400)
    ap.add_argument("--inputs", nargs="*", default=None, help="the RM's encoder views (default: the shipped ones)")
    ap.add_argument("--rm", nargs="*", default=[], metavar="KEY=VALUE",
                    help="further TrainRMConfig settings, e.g. head_refit=true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    train = dict(epochs=args.epochs, **parse_overrides(args.rm), **({"inputs": args.inputs} if args.inputs else {}))
    results = {}
    for name, spurious in (("world", False), ("world_spurious_emoji", True)):
        m = run_world(name, out, spurious, train, args.n_counterfactual)
        results[name] = m
        print(f"\n== {name} (seed {SEED}, held-out contexts) ==")
        for line in summary_lines(m):
            print("  " + line)
    w, s = results["world"], results["world_spurious_emoji"]
    emo = s["style_artifacts"]["counterfactual"]["append_emoji"]
    emo_clean = w["style_artifacts"]["counterfactual"]["append_emoji"]
    figures = {
        "spearman_score_vs_true_engagement": w["truth"]["spearman_score_vs_truth"],
        "n_heldout_replies": w["truth"]["n_interactions"],
        "pairwise_accuracy_vs_truth_gap_0.1": w["truth"]["pairwise_accuracy_vs_truth"],
        "pairwise_model_accuracy_vs_truth_gap_0.1": w["truth"].get("pairwise_model_accuracy_vs_truth"),
        "n_pairs_gap_0.1": w["truth"]["n_pairs_gap"],
        "spurious_world": {"spearman_score_vs_true_engagement": s["truth"]["spearman_score_vs_truth"],
                           "spearman_p_continue_vs_true_engagement": s["truth"].get("spearman_p_continue_vs_truth"),
                           "pairwise_accuracy_vs_truth_gap_0.1": s["truth"]["pairwise_accuracy_vs_truth"]},
        "emoji_effect_spurious_world": emo,
        "emoji_effect_clean_world": emo_clean,
    }
    io.write_json(out / "figures.json", figures)
    print("\n== figures ==")
    print(json.dumps(figures, indent=2))
    ok = (figures["spearman_score_vs_true_engagement"] >= 0.80 and figures["pairwise_accuracy_vs_truth_gap_0.1"] >= 0.85)
    print("targets (Spearman >= 0.80, pairwise accuracy >= 0.85):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
