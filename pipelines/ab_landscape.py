"""Does learning from past A/B outcomes (the `arm_mean` heads) rank held-out policies' lifts better than a
reward model of per-reply signals alone?

1. The world's logs (interactions, preferences, steer labels) as a records folder (`simulate`).
2. Many past A/B tests between scripted policies of varying quality (rm_lab.calibrate.simulated.design_tests:
   a control preset against a treatment moved part of the way toward another preset, knobs jittered), each
   arm kept as its reply set: its policy's replies to the test's first contexts, with the measured breadth
   and depth (rm_lab.calibrate.reply_set_tests). A random share of the tests is held out whole.
3. Two `train-rm` fits with the same settings: the per-reply model on the logs only, and the same model
   with the training tests' reply sets as a second source (the ab_breadth / ab_depth arm_mean heads).
4. On the held-out arms: each model's predicted log lift (mean output over the arm's replies minus the
   control's) against the measured and the true lift: Spearman and sign agreement.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python pipelines/ab_landscape.py \\
        [--out runs/ab-landscape] [--report reports/ab_landscape] [--n-tests 80] [key=value train-rm overrides]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rm_lab import config as cfgmod, io  # noqa: E402
from rm_lab.calibrate.reply_set_tests import simulate_reply_set_tests, split_experiments, subset_reply_sets  # noqa: E402
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


def agreement_rows(pred, table, label: str) -> list[dict]:
    """Spearman and sign agreement of each predictor column with the measured and the true lift."""
    rows = []
    t = table.merge(pred, on=["experiment_id", "arm"])
    for col in [c for c in pred.columns if c.startswith("pred_")]:
        for metric in ("breadth", "depth"):
            a = lift_agreement(t[col], t[f"{metric}_log_lift"], t[f"{metric}_true_log_lift"])
            rows.append({"model": label, "output": col[5:], "metric": metric, **a})
    return rows


def render(res: dict) -> str:
    s = res["settings"]
    lines = ["# Learning from past A/B outcomes: the arm_mean heads (`pipelines/ab_landscape.py`)", "",
             f"Command: `{res['command']}`", "",
             f"World v{s['world_version']}: {s['n_tests']} simulated tests (controls {s['controls']}, treatments "
             f"moved toward {s['treatments']}, strength {s['strength']}, jitter {s['jitter']}), "
             f"{s['eligible_users'] * s['arm_share']:.0f} users per arm, {s['days']} days; each arm's reply set "
             f"= its policy's replies to {s['reply_contexts']} contexts. {res['n_train_tests']} tests train, "
             f"{res['n_heldout_tests']} are held out whole (each treatment is its own jittered policy). Both "
             f"models: train-rm on the world's logs ({s['world_contexts']} interaction + as many preference "
             f"contexts), the same settings ({s['train']}); the arm_mean model also reads the training tests' "
             "reply sets (heads ab_breadth, ab_depth).", "",
             "Predicted log lift of an arm = mean output over its replies minus its control's. Spearman and sign "
             "agreement over the held-out treatment arms, against the measured lift and the true expected lift "
             "(the hidden engagement function):", "",
             "| model | output | metric | arms | Spearman (measured) | sign (measured) | Spearman (true) | sign (true) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["heldout"]:
        lines.append(f"| {r['model']} | {r['output']} | {r['metric']} | {r['n_arms']} | {r['spearman_measured']:.3f} "
                     f"| {r['sign_agreement_measured']:.3f} | {r['spearman_true']:.3f} | {r['sign_agreement_true']:.3f} |")
    lines += ["", "The same on the training tests (in-sample, for reference):", "",
              "| model | output | metric | arms | Spearman (measured) | sign (measured) |", "| --- | --- | --- | --- | --- | --- |"]
    for r in res["train"]:
        lines.append(f"| {r['model']} | {r['output']} | {r['metric']} | {r['n_arms']} | {r['spearman_measured']:.3f} "
                     f"| {r['sign_agreement_measured']:.3f} |")
    lines += ["", f"Measured lifts of the held-out arms: breadth {res['lift_range']['breadth']}, depth "
              f"{res['lift_range']['depth']} (log scale, min / max); median standard error "
              f"{res['median_se']['breadth']:.4f} (breadth), {res['median_se']['depth']:.4f} (depth).", "",
              f"Seconds: {res['seconds']:.0f}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/ab-landscape")
    ap.add_argument("--report", default="reports/ab_landscape")
    ap.add_argument("--world-version", type=int, default=1, choices=(1, 2))
    ap.add_argument("--world-contexts", type=int, default=2000)
    ap.add_argument("--n-tests", type=int, default=80)
    ap.add_argument("--reply-contexts", type=int, default=32)
    ap.add_argument("--heldout", type=float, default=0.35)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*", help="TrainRMConfig key=value for both fits")
    a = ap.parse_args(argv)
    t0 = time.time()
    out = Path(a.out)
    treatments = TREATMENTS + (V2_TREATMENTS if a.world_version == 2 else [])
    s = {"world_version": a.world_version, "world_contexts": a.world_contexts, "n_tests": a.n_tests,
         "reply_contexts": a.reply_contexts, "controls": ["baseline", "improved", "terse"], "treatments": treatments,
         "strength": [0.1, 1.0], "jitter": 0.25, "eligible_users": 200_000, "arm_share": 0.1, "days": 7,
         "quality_contexts": 1000, "heldout_fraction": a.heldout, "seed": a.seed,
         "train": " ".join(["epochs=15", "pairwise=false", *a.overrides])}
    world = simulate(WorldConfig(seed=0, n_contexts=a.world_contexts, n_preference_contexts=a.world_contexts,
                                 world_version=a.world_version))
    logs = write_folder(world, out / "world")
    tests = design_tests(a.n_tests, s["controls"], treatments, (0.1, 1.0), 0.25, a.seed)
    sets, table = simulate_reply_set_tests(tests, Population(world_version=a.world_version), a.reply_contexts,
                                           s["quality_contexts"], s["eligible_users"], s["arm_share"], s["days"],
                                           a.seed)
    train_ids, held_ids = split_experiments(table, a.heldout, a.seed)
    arms_dir = write_folder(subset_reply_sets(sets, train_ids), out / "reply_sets_train")
    held = subset_reply_sets(sets, held_ids)
    write_folder(held, out / "reply_sets_heldout")
    io.write_json(out / "tests.json", table.to_dict("records"))
    train_sets = subset_reply_sets(sets, train_ids)
    models = {"per-reply only": (train("per_reply", [str(logs)], out, a.overrides, a.seed), PER_REPLY),
              "with arm_mean": (train("with_arm_mean", [str(logs), str(arms_dir)], out, a.overrides, a.seed),
                                PER_REPLY + list(ARM_HEADS.values()))}
    res = {"command": f"{COMMAND} {' '.join(argv if argv is not None else sys.argv[1:])}".strip(), "settings": s,
           "n_train_tests": len(train_ids), "n_heldout_tests": len(held_ids), "heldout": [], "train": []}
    for label, (rm, outs) in models.items():
        res["heldout"] += agreement_rows(predicted_arm_lifts(rm, held, outs), table, label)
        res["train"] += agreement_rows(predicted_arm_lifts(rm, train_sets, outs), table, label)
    ht = table[table["experiment_id"].isin(held_ids)]
    res["lift_range"] = {m: [round(float(ht[f"{m}_log_lift"].min()), 4), round(float(ht[f"{m}_log_lift"].max()), 4)]
                         for m in ("breadth", "depth")}
    res["median_se"] = {m: float(ht[f"{m}_log_lift_se"].median()) for m in ("breadth", "depth")}
    res["seconds"] = time.time() - t0
    io.write_json(Path(f"{a.report}.json"), res)
    io.write_text(Path(f"{a.report}.md"), render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
