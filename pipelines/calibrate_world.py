"""Lift-calibration figures on the simulated world (README "Lift calibration").

Two `rm_lab calibrate` runs, composed from the library: the clean world (40 simulated A/B tests
between scripted policies of varying quality; held-out Spearman, coverage, calibration line, and the
guardrail on the emoji-heavy preset), and the world with the emoji-lover confound planted, where the
reward model trained on its logs over-rates emoji (the guardrail must fire there too). The summary
of both goes to --report (default reports/calibrate_world.md), with each run's plot copied beside it.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python pipelines/calibrate_world.py [--out runs/calibrate-world]
        [--model-world RUN] [--model-spurious RUN] [--reuse-world CALIBRATE_RUN] [key=value ...]

--reuse-world / --reuse-spurious report a finished calibrate run (its metrics.json) instead of running it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rm_lab import config as cfgmod, io  # noqa: E402
from rm_lab.calibrate.config import CalibrateConfig  # noqa: E402
from rm_lab.calibrate.report import reliability_table  # noqa: E402
from rm_lab.calibrate.stage import run_calibrate  # noqa: E402
from rm_lab.runs import Run  # noqa: E402


def one(name: str, overrides: list[str], out: Path, reuse: str | None = None) -> tuple[dict, Path]:
    if reuse:
        from rm_lab.runs import run_status

        path = Path(reuse)
        if run_status(path) != "done":
            raise SystemExit(f"error: --reuse-{name.split('_')[0]} {reuse}: not a finished calibrate run")
        return io.read_json(path / "metrics.json"), path
    cfg = cfgmod.load(CalibrateConfig, "calibrate", overrides)
    os.environ["RM_LAB_RUNS"] = str(out / name)
    with Run("calibrate", cfgmod.to_dict(cfg)) as run:
        m = run_calibrate(cfg, run, say=lambda s: print(f"[{name}] {s}", flush=True))
        return m, run.path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/calibrate-world")
    ap.add_argument("--report", default="reports/calibrate_world.md")
    ap.add_argument("--model-world", default=None, help="a train-rm run on the clean world (default: train one)")
    ap.add_argument("--model-spurious", default=None, help="a train-rm run on the spurious world (default: train one)")
    ap.add_argument("--reuse-world", default=None, help="a finished calibrate run on the clean world to report")
    ap.add_argument("--reuse-spurious", default=None, help="a finished calibrate run on the spurious world to report")
    ap.add_argument("--spurious-tests", type=int, default=None, help="n_tests of the spurious-world run")
    ap.add_argument("overrides", nargs="*", help="CalibrateConfig key=value for both runs")
    args = ap.parse_args(argv)
    out = Path(args.out)
    runs = {"world": [*([f"model={args.model_world}"] if args.model_world else []), *args.overrides],
            "spurious_emoji": ["spurious_emoji=true", *([f"model={args.model_spurious}"] if args.model_spurious
                                                        else []), *args.overrides,
                               *([f"n_tests={args.spurious_tests}"] if args.spurious_tests else [])]}
    reuse = {"world": args.reuse_world, "spurious_emoji": args.reuse_spurious}
    lines = ["# Lift calibration on the simulated world", ""]
    for name, ov in runs.items():
        m, path = one(name, ov, out, reuse[name])
        h, g = m["heldout"], m["guardrail"]
        report = Path(args.report)
        plot = report.with_name(f"{report.stem}_{name}.png")
        with io.atomic_path(plot) as tmp:
            shutil.copyfile(path / "predicted_vs_observed.png", tmp)
        lines += [f"## {name} ({m['n_tests']} tests, `{m['predictor']}`, run `{path}`)", "",
                  f"![predicted vs observed]({plot.name})", "",
                  "| target | value | met |", "|---|---|---|"]
        lines += [f"| {k} | {v['value']:.3f} | {'yes' if v['met'] else 'NO'} |" for k, v in m["targets"].items()]
        lines += ["", f"sign agreement {h['sign_agreement']:.1%}, calibration slope {h['calibration_slope']:.3f}, "
                  f"intercept {h['calibration_intercept']:.4f}, mean 90% interval width {h['mean_width']:.1%}", "",
                  reliability_table(m["by_predictor"]), "",
                  f"guardrail on the over-optimised preset: {'ok' if g['ok'] else 'ALARM ' + ', '.join(g['alarms'])}",
                  ""]
        print(f"[{name}] " + ", ".join(f"{k}={v['value']:.3f}" for k, v in m["targets"].items()), flush=True)
    io.write_text(args.report, "\n".join(lines) + "\n")
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
