"""One GRPO generation of SmolLM2 in the simulated world, judged by the world's hidden truth and a simulated A/B test.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python pipelines/grpo_climb.py \
        [--out runs/grpo-climb] [--report reports/grpo_climb] [rm_run=runs/train-rm/<id>] [key=value ...]

Composition only (each step a library stage in its own folder under --out; a finished step is reused and
`train-policy` resumes from its checkpoint, so a killed pipeline continues where it stopped):

1. `simulate` world v2 logs and `train-rm` the default reward model on them (or `rm_run=`);
2. prompts: a fresh world-v2 draw (other users, the same kind of traffic), its context and character records;
3. `train-policy --method grpo`: LoRA GRPO of SmolLM2 on the reward model's preference head, with DAPO's
   overlong punishment for replies the token cap cuts (`truncation_penalty`);
4. `evaluate`: the GRPO policy vs SmolLM2 on other fresh contexts: win rates, artifacts, true engagement,
   the simulated A/B lifts with their intervals next to the true lifts.

The summary is written to --out and, as the recorded run, to `--report`.md/.json, with the training curve.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rejection_sft import (EVALUATE_KEYS, RM, WORLD, done, evaluate_lines, evaluate_step, start, step,  # noqa: E402
                           world_and_reward_model, write_report)

from rm_lab import config as cfgmod, io  # noqa: E402
from rm_lab.policy.trainer import PolicyRun, TrainPolicyConfig, train_policy  # noqa: E402
from rm_lab.world.simulate import WorldConfig, simulate  # noqa: E402


@dataclass
class Pipeline:
    """The stage configs of the pipeline (each its stage's own dataclass; override any key dotted)."""

    world: dict = field(default_factory=lambda: dict(WORLD))
    rm: dict = field(default_factory=lambda: dict(RM))
    prompts: dict = field(default_factory=lambda: {"world_version": 2, "seed": 100, "n_contexts": 400,
                                                   "n_preference_contexts": 1})
    grpo: dict = field(default_factory=lambda: {
        "n_prompts": 48, "group_size": 8, "batch_size": 2, "max_completion_tokens": 48, "temperature": 0.8,
        "reward_heads": {"preference": 1.0}, "truncation_penalty": 3.0, "loss_type": "dapo", "beta": 0.04,
        "lora_r": 16, "lr": 5e-4, "epochs": 1})
    evaluate: dict = field(default_factory=lambda: {"n_contexts": 128, "world_version": 2, "world_seed": 7,
                                                    "max_new_tokens": 48})
    rm_run: str | None = None  # reuse a finished train-rm run instead of step 1


def main(argv=None) -> dict:
    p, args, out, timings, say = start(Pipeline, argv, __doc__, out="runs/grpo-climb", report="reports/grpo_climb",
                                       example="grpo.n_prompts=8")

    rm_dir = world_and_reward_model(p.world, p.rm, p.rm_run, out, timings, say)

    prompts, ok = step(out, "prompts", timings)
    if not ok:
        t0 = time.time()
        frames = simulate(cfgmod.build(WorldConfig, p.prompts)).frames
        for kind in ("character", "context"):
            io.write_records(frames[kind], prompts / f"{kind}.parquet", kind)
        done(prompts, timings, "prompts", t0)

    grpo_dir, ok = step(out, "train-policy", timings)
    if not ok:
        t0 = time.time()
        train_policy(cfgmod.build(TrainPolicyConfig, {**p.grpo, "method": "grpo", "data": str(prompts.resolve()),
                                                      "reward_model": str(rm_dir.resolve())}), grpo_dir, say=say)
        done(grpo_dir, timings, "train-policy", t0)
    run = PolicyRun(grpo_dir)

    ev_dir, ev = evaluate_step(p.evaluate, rm_dir, run.policy, "smollm2-grpo", out, timings, say)
    io.write_json(out / "timings.json", timings)

    steps = json.loads(run.steps.read_text()) if run.steps.is_file() else []
    summary = {"sizes": asdict(p), "timings_s": timings, "total_s": round(sum(timings.values()), 1),
               "rm_run": str(rm_dir), "curve": curve(steps),
               "evaluate": {k: ev[k] for k in EVALUATE_KEYS}}
    text = report(summary, grpo_dir, ev_dir)
    write_report(summary, text, out, args.report)
    return summary


CURVE = ("reward_raw", "rewards/preference/mean", "rewards/truncated/mean", "completions/mean_length",
         "completions/clipped_ratio", "kl", "zero_std_groups")


def curve(steps: list[dict], parts: int = 4) -> list[dict]:
    """The training curve in `parts` consecutive blocks of steps: each logged series' mean per block."""
    if not steps:
        return []
    size = max(1, -(-len(steps) // parts))
    blocks = [steps[i:i + size] for i in range(0, len(steps), size)]
    return [{"steps": f"{b[0]['step']}-{b[-1]['step']}",
             **{k: sum(r[k] for r in b) / len(b) for k in CURVE if all(k in r for r in b)}} for b in blocks]


def report(s: dict, grpo_dir: Path, ev_dir: Path) -> str:
    lines = ["# One GRPO generation of SmolLM2 in world v2", "",
             f"Total {s['total_s']:.0f} s on this machine (steps: {s['timings_s']}); sizes: "
             f"{json.dumps(s['sizes'])}", ""]
    if s["curve"]:
        keys = [k for k in CURVE if k in s["curve"][0]]
        lines += ["## Training curve (means over blocks of steps)", "", "| steps | " + " | ".join(keys) + " |",
                  "|---|" + "---|" * len(keys)]
        lines += [f"| {b['steps']} | " + " | ".join(f"{b[k]:.3f}" for k in keys) + " |" for b in s["curve"]]
        lines.append("")
    lines += evaluate_lines(s["evaluate"], "GRPO")
    lines += ["", f"Details: {grpo_dir}/steps.json, {ev_dir}/report.md", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
