"""Does learning from past A/B outcomes (the `arm_mean` heads) rank held-out policies' lifts better than a
reward model of per-reply signals alone?

1. The world's logs (interactions, preferences, steer labels) as a records folder (`simulate`).
2. Many past A/B tests between scripted policies of varying quality (rm_lab.calibrate.simulated.design_tests:
   a control preset against a treatment moved part of the way toward another preset, knobs jittered), each
   arm kept as its reply set: its policy's replies to the test's first contexts, with the measured breadth
   and depth (rm_lab.calibrate.reply_set_tests).
3. Cross-fitting over folds of tests: the per-reply model (train-rm on the logs only) once, and per fold the
   same model with the other folds' reply sets as a second source (the ab_breadth / ab_depth arm_mean heads).
4. On every arm, predicted by a model that never saw its test: the predicted log lift (mean output over the
   arm's replies minus the control's) against the measured and the true lift: Spearman and sign agreement,
   and the Spearman gain over the per-reply model with a paired bootstrap interval.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python pipelines/ab_landscape.py \\
        [--out runs/ab-landscape] [--report reports/ab_landscape] [--n-tests 80] [key=value train-rm overrides]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rm_lab import config as cfgmod, io  # noqa: E402
from rm_lab.calibrate.reply_set_tests import (experiment_folds, paired_bootstrap,  # noqa: E402
                                               simulate_reply_set_tests, subset_reply_sets)
from rm_lab.calibrate.simulated import design_tests  # noqa: E402
from rm_lab.reward.arm_mean import lift_agreement, predicted_arm_lifts  # noqa: E402
from rm_lab.reward.embed_cache import default_cache_root  # noqa: E402
from rm_lab.reward.model import RewardModel  # noqa: E402
from rm_lab.reward.train import TrainRMConfig, train_reward_model  # noqa: E402
from rm_lab.world.engagement import Population  # noqa: E402
from rm_lab.world.simulate import WorldConfig, simulate  # noqa: E402

COMMAND = "OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python pipelines/ab_landscape.py"
TREATMENTS = ["engaging", "emoji_heavy", "preachy", "terse", "verbose", "improved"]
V2_TREATMENTS = ["parrot", "forgetful"]  # knobs that act on world v2's contexts only
# the outputs whose arm means predict a lift: the per-reply model's, and the arm_mean heads'
PER_REPLY = ["score", "p_continue"]
ARM_HEADS = {"breadth": "ab_breadth", "depth": "ab_depth"}
BASELINES = {"score": "per-reply only:score", "p_continue": "per-reply only:p_continue"}


def write_folder(records, folder: Path) -> Path:
    for kind, df in records.frames.items():
        io.write_records(df, folder / f"{kind}.parquet", kind)
    return folder


def train(name: str, data: list[str], out: Path, overrides: list[str], seed: int) -> RewardModel:
    base = {"data": data, "epochs": 15, "pairwise": False, "seed": seed}
    cfg = cfgmod.build(TrainRMConfig, {**base, **cfgmod.parse_overrides(overrides)} if overrides else base, name)
    t0 = time.time()
    train_reward_model(cfg, out / name, say=lambda s: print(f"[{name}] {s}", flush=True))
    print(f"[{name}] trained in {time.time() - t0:.0f}s", flush=True)
    return RewardModel.load(out / name, default_cache_root())


def agreement_rows(t, label: str, cols) -> list[dict]:
    """Spearman and sign agreement of each predictor column with the measured and the true lift, and the
    paired-bootstrap difference of its Spearman (measured) from each per-reply output's."""
    rows = []
    for col in cols:
        for metric in ("breadth", "depth"):
            a = lift_agreement(t[col], t[f"{metric}_log_lift"], t[f"{metric}_true_log_lift"])
            gains = {f"spearman_gain_vs_per_reply_{k}": paired_bootstrap(t[b], t[col], t[f"{metric}_log_lift"])
                     for k, b in BASELINES.items()}
            rows.append({"model": label, "output": col.split(":")[1], "metric": metric, **a, **gains})
    return rows


def render(res: dict) -> str:
    s = res["settings"]
    lines = ["# Learning from past A/B outcomes: the arm_mean heads (`pipelines/ab_landscape.py`)", "",
             f"Command: `{res['command']}`", "",
             f"World v{s['world_version']}{' with the emoji-lover confound' if s['spurious_emoji'] else ''}: "
             f"{s['n_tests']} simulated tests (controls {s['controls']}, treatments moved toward {s['treatments']}, "
             f"strength {s['strength']}, jitter {s['jitter']}), {s['eligible_users'] * s['arm_share']:.0f} users per "
             f"arm, {s['days']} days; each arm's reply set = its policy's replies to {s['reply_contexts']} contexts. "
             f"Cross-fitted over {s['folds']} folds of tests: every test is held out once, whole (each treatment is "
             "its own jittered policy), and predicted by a model that never saw it. The per-reply model: train-rm "
             f"on the world's logs ({s['world_contexts']} interaction + as many preference contexts); the arm_mean "
             "model: the same settings on the same logs plus the other folds' reply sets (heads ab_breadth, "
             f"ab_depth). Settings of both: `{s['train']}`.", "",
             "Predicted log lift of an arm = mean output over its replies minus its control's. Over the held-out "
             "treatment arms, against the measured lift and the true expected lift (the hidden engagement "
             "function); the last columns are the Spearman (measured) gain over the per-reply model's `score` and "
             "`p_continue`, each with a 90% paired bootstrap interval over arms:", "",
             "| model | output | metric | arms | Spearman (measured) | sign (measured) | Spearman (true) | "
             "sign (true) | gain vs per-reply score | gain vs per-reply p_continue |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["heldout"]:
        g = [r[f"spearman_gain_vs_per_reply_{k}"] for k in BASELINES]
        lines.append(f"| {r['model']} | {r['output']} | {r['metric']} | {r['n_arms']} | {r['spearman_measured']:.3f} "
                     f"| {r['sign_agreement_measured']:.3f} | {r['spearman_true']:.3f} | {r['sign_agreement_true']:.3f} "
                     + "".join(f"| {x['diff']:+.3f} [{x['low']:+.3f}, {x['high']:+.3f}] " for x in g) + "|")
    lines += ["", f"Measured log lifts: breadth {res['lift_range']['breadth']}, depth {res['lift_range']['depth']} "
              f"(min / max); median standard error {res['median_se']['breadth']:.4f} (breadth), "
              f"{res['median_se']['depth']:.4f} (depth).", "", f"Seconds: {res['seconds']:.0f}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/ab-landscape")
    ap.add_argument("--report", default="reports/ab_landscape")
    ap.add_argument("--world-version", type=int, default=1, choices=(1, 2))
    ap.add_argument("--spurious-emoji", action="store_true", help="the world with the emoji-lover confound")
    ap.add_argument("--world-contexts", type=int, default=2000)
    ap.add_argument("--n-tests", type=int, default=80)
    ap.add_argument("--reply-contexts", type=int, default=32)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rerender", action="store_true", help="recompute the figures of --report from the "
                    "predictions.json of --out (no simulation, no training)")
    ap.add_argument("overrides", nargs="*", help="TrainRMConfig key=value for every fit")
    a = ap.parse_args(argv)
    if a.rerender:
        res = io.read_json(Path(f"{a.report}.json"))
        t = pd.DataFrame(io.read_json(Path(a.out) / "predictions.json"))
        res["heldout"] = [r for label in ("per-reply only", "with arm_mean")
                          for r in agreement_rows(t, label, [c for c in t.columns if c.startswith(label + ":")])]
        io.write_json(Path(f"{a.report}.json"), res)
        io.write_text(Path(f"{a.report}.md"), render(res))
        print(render(res))
        return 0
    t0 = time.time()
    out = Path(a.out)
    treatments = TREATMENTS + (V2_TREATMENTS if a.world_version == 2 else [])
    s = {"world_version": a.world_version, "spurious_emoji": a.spurious_emoji, "world_contexts": a.world_contexts,
         "n_tests": a.n_tests, "reply_contexts": a.reply_contexts, "controls": ["baseline", "improved", "terse"],
         "treatments": treatments, "strength": [0.1, 1.0], "jitter": 0.25, "eligible_users": 200_000,
         "arm_share": 0.1, "days": 7, "quality_contexts": 1000, "folds": a.folds, "seed": a.seed,
         "train": " ".join(["epochs=15", "pairwise=false", *a.overrides])}
    world = simulate(WorldConfig(seed=0, n_contexts=a.world_contexts, n_preference_contexts=a.world_contexts,
                                 world_version=a.world_version, spurious_emoji=a.spurious_emoji))
    logs = str(write_folder(world, out / "world"))
    pop = Population(world_version=a.world_version, spurious_emoji=a.spurious_emoji)
    tests = design_tests(a.n_tests, s["controls"], treatments, (0.1, 1.0), 0.25, a.seed)
    sets, table = simulate_reply_set_tests(tests, pop, a.reply_contexts, s["quality_contexts"], s["eligible_users"],
                                           s["arm_share"], s["days"], a.seed)
    io.write_json(out / "tests.json", table.to_dict("records"))
    per_reply = train("per_reply", [logs], out, a.overrides, a.seed)
    preds = []
    for k, held_ids in enumerate(experiment_folds(table, a.folds, a.seed)):
        held = subset_reply_sets(sets, held_ids)
        train_ids = [e for e in table["experiment_id"] if e not in set(held_ids)]
        arms_dir = str(write_folder(subset_reply_sets(sets, train_ids), out / f"reply_sets_fold{k}"))
        rm = train(f"with_arm_mean_fold{k}", [logs, arms_dir], out, a.overrides, a.seed)
        p0 = predicted_arm_lifts(per_reply, held, PER_REPLY).rename(columns={f"pred_{o}": f"per-reply only:{o}"
                                                                             for o in PER_REPLY})
        p1 = predicted_arm_lifts(rm, held, PER_REPLY + list(ARM_HEADS.values()))
        p1 = p1.rename(columns={f"pred_{o}": f"with arm_mean:{o}" for o in PER_REPLY + list(ARM_HEADS.values())})
        preds.append(p0.merge(p1.drop(columns=["n_replies"]), on=["experiment_id", "arm"]).assign(fold=k))
    t = table.merge(pd.concat(preds, ignore_index=True), on=["experiment_id", "arm"])
    io.write_json(out / "predictions.json", t.to_dict("records"))
    res = {"command": f"{COMMAND} {' '.join(argv if argv is not None else sys.argv[1:])}".strip(), "settings": s,
           "heldout": []}
    for label in ("per-reply only", "with arm_mean"):
        res["heldout"] += agreement_rows(t, label, [c for c in t.columns if c.startswith(label + ":")])
    res["lift_range"] = {m: [round(float(t[f"{m}_log_lift"].min()), 4), round(float(t[f"{m}_log_lift"].max()), 4)]
                         for m in ("breadth", "depth")}
    res["median_se"] = {m: float(t[f"{m}_log_lift_se"].median()) for m in ("breadth", "depth")}
    res["seconds"] = time.time() - t0
    io.write_json(Path(f"{a.report}.json"), res)
    io.write_text(Path(f"{a.report}.md"), render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
