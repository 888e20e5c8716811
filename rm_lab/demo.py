"""`rm_lab demo` (what `make demo` runs): simulate traffic, A/B-test two policies, report vs the truth."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from rm_lab import io
from rm_lab.evaluate.ab import analyze
from rm_lab.runs import Run
from rm_lab.world.ab import ABConfig, simulate_ab
from rm_lab.world.report import ab_table, policy_table, steer_table
from rm_lab.world.simulate import WorldConfig, simulate


@dataclass
class DemoConfig:
    world: WorldConfig = field(default_factory=lambda: WorldConfig(n_contexts=3000, n_preference_contexts=2000))
    ab: ABConfig = field(default_factory=ABConfig)
    null_ab: bool = True  # also run an A/A test (same policy in both arms)


def run_demo(cfg: DemoConfig, say=print) -> Run:
    run = Run("demo", asdict(cfg))
    t0 = time.time()
    records = simulate(cfg.world, progress=lambda m: say(f"  simulate: {m}"))
    for name, df in records.frames.items():
        io.write_records(df, run.file(f"records/{name}.parquet"), name)
    say(f"simulated {records.counts()} in {time.time() - t0:.1f}s")
    arms, truth = simulate_ab(cfg.ab)
    io.write_records(arms, run.file("ab/arms.parquet"), "ab_arm")
    analysis = analyze(arms)
    sections = [f"# rm_lab demo ({run.run_id})", "",
                "## Logged traffic by scripted policy (hidden truth vs observed signals)", "",
                policy_table(records["interaction"]), "",
                "## Steerability of the logging policies (character instructions, 95% Wilson intervals)", "",
                steer_table(records["interaction"], records["steer_label"]), "",
                f"## Simulated A/B test: {cfg.ab.treatment} vs {cfg.ab.control}, {cfg.ab.days} days, "
                f"{cfg.ab.arm_share:.0%} of {cfg.ab.eligible_users:,} eligible users per arm", "",
                ab_table(analysis, truth), ""]
    metrics = {"ab": analysis.iloc[0].drop(["experiment_id", "control", "treatment"]).to_dict(), "truth": truth}
    if cfg.null_ab:
        aa_cfg = ABConfig(**{**asdict(cfg.ab), "treatment": cfg.ab.control, "experiment_id": "sim-aa",
                             "seed": cfg.ab.seed + 1})
        aa_arms, aa_truth = simulate_ab(aa_cfg)
        aa = analyze(aa_arms)
        sections += ["## A/A test (same policy in both arms): intervals should cover 0", "",
                     ab_table(aa, aa_truth), ""]
        metrics["aa"] = aa.iloc[0].drop(["experiment_id", "control", "treatment"]).to_dict()
    sections += [f"SRM check p-value: {analysis.iloc[0]['srm_p_value']:.3f} "
                 f"({'MISMATCH' if analysis.iloc[0]['srm_flag'] else 'ok'})", "",
                 f"Finished in {time.time() - t0:.1f}s. Records: `{run.path / 'records'}`."]
    report = "\n".join(sections) + "\n"
    io.write_text(run.file("report.md"), report)
    run.log_metrics(metrics)
    run.finish()
    say(report)
    return run
