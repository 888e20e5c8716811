"""`rm_lab flywheel`: G generations of the whole loop, each step a child run, resumable at the step it was in.

The current policy of generation g is the last shipped candidate (the starting policy until one ships).
Bad input is refused before the flywheel's run folder exists (`check_inputs`): a missing starting policy
or calibration, a reward weight naming a head the reward model will not have, an empty prompt set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from rm_lab import io, jobs
from rm_lab.config import ConfigError
from rm_lab.flywheel import report as rep
from rm_lab.flywheel.config import FlywheelConfig
from rm_lab.flywheel.layout import CALIBRATE, STEPS, FlywheelRun
from rm_lab.flywheel.steps import STEP_FUNCTIONS, Gen, calibrate


def check_inputs(cfg: FlywheelConfig) -> None:
    """Everything that can be checked before hours of work (ConfigError / FileNotFoundError, one line each)."""
    from rm_lab import config as cfgmod
    from rm_lab.policy.trainer import TrainPolicyConfig

    if cfg.policy and not Path(cfg.policy).exists():
        raise FileNotFoundError(f"policy: '{cfg.policy}' does not exist (a causal-LM folder; null: packaged SmolLM2)")
    from rm_lab.flywheel.steps import PREDICTOR_KEYS

    if cfg.calibration:
        from rm_lab.calibrate.intervals import load_calibration

        cal = load_calibration(cfg.calibration)
        if cal.predictor not in PREDICTOR_KEYS:
            raise ConfigError(f"calibration {cfg.calibration}: predictor {cal.predictor!r}; the flywheel predicts from "
                              f"a win rate ({sorted(PREDICTOR_KEYS)})")
    else:
        predictor = cfg.calibrate.get("predictor", "win_point_user")
        if predictor not in PREDICTOR_KEYS:
            raise ConfigError(f"calibrate.predictor: {predictor!r}; the flywheel predicts from a win rate "
                              f"({sorted(PREDICTOR_KEYS)})")
        if predictor.startswith("win_pair") and not cfg.reward.get("pairwise", True):
            raise ConfigError(f"calibrate.predictor: {predictor} needs the pairwise model; set reward.pairwise=true "
                              "or use a win_point_* predictor")
    # the stage configs the steps will build, with stand-in paths: their own checks run now
    sft = {**cfg.sft, "method": "sft"}
    cfgmod.build(TrainPolicyConfig, sft, "sft")
    if cfg.rl == "grpo" or cfg.rl == "dpo":
        rl = {"max_completion_tokens": cfg.max_new_tokens, **cfg.rl_train, "method": cfg.rl}
        if cfg.rl == "grpo":
            rl["reward_model"] = "flywheel"
        cfgmod.build(TrainPolicyConfig, rl, "rl_train")
        if cfg.rl == "grpo":
            check_reward_heads(cfg)


def check_reward_heads(cfg: FlywheelConfig) -> None:
    """GRPO's reward weights must name heads the generation's reward model will have: the heads train-rm
    builds from these logs with these settings (read off a tiny world of the same kind)."""
    from rm_lab.policy.rewards import resolve_heads
    from rm_lab.reward.data import build_reward_data
    from rm_lab.world.simulate import WorldConfig, simulate

    names = list((cfg.rl_train.get("reward_heads") or {"preference": 1.0}))
    world = WorldConfig(**{**cfg.traffic, "seed": cfg.world_seed, "n_characters": 4, "n_contexts": 40,
                           "n_preference_contexts": 40, "world_version": cfg.world_version})
    data = build_reward_data(simulate(world), cfg.reward.get("heads"), cfg.reward.get("aggregate", True))

    class _Heads:
        specs = {h: data.spec(h) for h in data.heads}

    resolve_heads(_Heads(), names, where="the flywheel's reward model (rl_train.reward_heads)")


def run_flywheel(cfg: FlywheelConfig, run, say: Callable[[str], None] = print) -> dict:
    """Every generation (finished steps skipped on a resume); returns the report across generations."""
    fw = FlywheelRun(run.path, run.run_id, Path(run.root))
    current, calibration = cfg.policy, cfg.calibration
    summaries, before = [], []
    ceiling = cfg.coupled.guardrail.ceiling
    from rm_lab.flywheel.ship import describe

    rule = describe(cfg.ship)
    for g in range(1, cfg.generations + 1):
        gen = Gen(cfg, fw, g, current, out=dict(fw.state().get(f"g{g}", {})), before=list(before),
                  calibration=calibration, say=say)
        say(f"generation {g}/{cfg.generations}: current policy {current or 'packaged SmolLM2'}")
        for step in STEPS:
            if step == "predict" and gen.calibration is None:
                done = fw.done(None, CALIBRATE[0])
                if done is None:
                    done = _child(fw, None, CALIBRATE[0], CALIBRATE[1], calibrate, gen, say)
                calibration = gen.calibration = done["calibration"]
            if step in gen.out:
                continue
            gen.out[step] = _child(fw, g, step, STEPS[step], STEP_FUNCTIONS[step], gen, say)
        current = gen.out["ship"]["policy_after"]
        s = rep.generation_summary(g, gen.out, ceiling)
        io.write_json(fw.generation_dir(g) / "report.json", s)
        io.write_text(fw.generation_dir(g) / "report.md", rep.generation_markdown(s, rule))
        summaries.append(s)
        before.append(gen.out)
        for line in rep.console_lines(s):
            say(line)
        _write_across(fw, summaries, rule, run.run_id)
    out = {"generations": summaries, "across": rep.across(summaries), "rule": rule, "final_policy": current}
    run.log_metrics({"across": rep.across(summaries)})
    return out


def _write_across(fw: FlywheelRun, summaries: list[dict], rule: str, run_id: str) -> None:
    io.write_json(fw.report_json, {"generations": summaries, "across": rep.across(summaries), "rule": rule})
    io.write_text(fw.report_md, rep.across_markdown(summaries, rule, f"rm_lab flywheel {run_id}"))


def _child(fw: FlywheelRun, g: int | None, step: str, kind: str, fn, gen: Gen, say) -> dict:
    """Run one step as a child run (reopened at the same folder on a resume); record its outputs when done."""
    from rm_lab.runs import Run

    jobs.safe_point()
    t0 = time.time()
    path = fw.child_path(g, step, kind)
    if path.exists():
        say(f"  {step}: resuming in {path}")
    child = Run(kind, {"flywheel": fw.run_id, "generation": g, "step": step}, root=fw.runs_root, path=path,
                parent=fw.run_id)
    with child:
        outputs = fn(gen, child)
    outputs = io.json_safe(outputs)
    fw.mark_done(g, step, outputs)
    say(f"  {step}: done in {time.time() - t0:.0f}s ({path.name})")
    return outputs
