"""The Upworthy benchmark, end to end: which headline wins a real A/B test, and by how much.

Composes `rm_lab.calibrate.upworthy` (the library path `rm_lab calibrate source=upworthy` runs too):
split by test week with identical headlines on one side, train the reward model's ab_engaged head
(arm_logit) through train_reward_model, cross-fit for the calibration set, score the test pairs beside the
text baselines, calibrate lifts with conformal intervals, and write the report with its two plots.

Run: nice -n 10 .venv/bin/python pipelines/upworthy.py [--data PATH] [--limit N] [--folds 5]
     [--rm key=value ..] [--baselines longer tfidf minilm] [--out-md reports/upworthy.md] [--work DIR]
Writes reports/upworthy.md, reports/upworthy.json, reports/upworthy_lift.png, reports/upworthy_reliability.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rm_lab import config as cfgmod  # noqa: E402
from rm_lab.calibrate import upworthy as U  # noqa: E402
from rm_lab.io import write_json, write_text  # noqa: E402

COMMAND = "nice -n 10 .venv/bin/python pipelines/upworthy.py"


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="the Upworthy Parquet file or folder (default $RM_LAB_DATA/upworthy)")
    ap.add_argument("--limit", type=int, default=None, help="the first N tests only (quick runs)")
    ap.add_argument("--last-train-week", type=int, default=U.LAST_TRAIN_WEEK)
    ap.add_argument("--folds", type=int, default=5, help="cross-fitted reward models for the calibration set")
    ap.add_argument("--conformal-folds", type=int, default=10)
    ap.add_argument("--baselines", nargs="*", default=["longer", "tfidf", "minilm"])
    ap.add_argument("--rm", nargs="*", default=[], help="train-rm key=value settings over the benchmark's")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-md", default=str(ROOT / "reports" / "upworthy.md"))
    ap.add_argument("--work", default=None, help="folder for the trained models (default: a temporary one)")
    a = ap.parse_args(argv)
    train = cfgmod.parse_overrides(a.rm)
    ucfg = cfgmod.build(U.UpworthyConfig, {"data": a.data, "limit": a.limit, "last_train_week": a.last_train_week,
                                           "calib_folds": a.folds, "conformal_folds": a.conformal_folds,
                                           "baselines": a.baselines, "train": train, "cache_dir": a.cache_dir,
                                           "seed": a.seed}, "pipelines/upworthy.py")
    md = Path(a.out_md)
    stem = md.with_suffix("")
    lift_png, rel_png = Path(f"{stem}_lift.png"), Path(f"{stem}_reliability.png")
    with tempfile.TemporaryDirectory() as tmp:
        res = U.run_benchmark(ucfg, Path(a.work) if a.work else Path(tmp), print)
    U.plot_lifts(res.test_pairs, lift_png, ucfg.confidence)
    U.plot_reliability(res.test_pairs, res.coverage_levels, rel_png)
    argv_shown = " ".join(sys.argv[1:] if argv is None else argv)
    write_text(md, U.report_markdown(res, f"{COMMAND} {argv_shown}".strip(), lift_png.name, rel_png.name))
    write_json(md.with_suffix(".json"), res.metrics)
    for name, m in res.metrics["accuracy"].items():
        print(f"{name}: {m['all']['accuracy']:.3f} all, {m['significant']['accuracy']:.3f} significant")
    print(f"lift coverage {res.metrics['lift']['coverage']:.3f}; wrote {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
