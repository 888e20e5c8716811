"""`rm_lab demo` (what `make demo` runs): simulate traffic, fit a reward model, A/B-test two policies.

Each step is reported next to the world's hidden truth: the reward model's agreement with the true
engagement of held-out replies, and the A/B lifts with their intervals next to the true lifts.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from rm_lab import io
from rm_lab.config import check_fields, param
from rm_lab.evaluate.ab import analyze
from rm_lab.runs import Run
from rm_lab.world.ab import ABConfig, simulate_ab
from rm_lab.world.report import ab_table, policy_table, steer_table
from rm_lab.world.simulate import WorldConfig, simulate


@dataclass
class DemoConfig:
    """demo: simulate traffic, fit a reward model, A/B-test two policies (configs/demo.yaml)."""

    world: WorldConfig = param(default_factory=lambda: WorldConfig(n_contexts=1000, n_preference_contexts=1000),
                               doc="the simulated world and its logged traffic")
    ab: ABConfig = param(default_factory=ABConfig, doc="the simulated A/B test")
    null_ab: bool = param(True, doc="also run an A/A test (same policy in both arms)")
    reward_model: bool = param(True, doc="fit the multi-head reward model on the simulated traffic")
    train: dict = param({"epochs": 20, "pairwise": True}, doc="TrainRMConfig keys of that reward model",
                        schema="rm_lab.reward.train:TrainRMConfig")

    def __post_init__(self):
        check_fields(self)


def run_demo(cfg: DemoConfig, say=print) -> Run:
    with Run("demo", asdict(cfg)) as run:
        t0 = time.time()
        records = simulate(cfg.world, progress=lambda m: say(f"  simulate: {m}"))
        for name, df in records.frames.items():
            io.write_records(df, run.file(f"records/{name}.parquet"), name)
        say(f"simulated {records.counts()} in {time.time() - t0:.1f}s")
        metrics: dict = {}
        if cfg.reward_model:
            sections_rm, metrics["reward_model"] = _reward_model(cfg, records, run, say)
        else:
            sections_rm = []
        arms, truth = simulate_ab(cfg.ab)
        io.write_records(arms, run.file("ab/arms.parquet"), "ab_arm")
        analysis = analyze(arms)
        sections = [f"# rm_lab demo ({run.run_id})", "",
                    "## Logged traffic by scripted policy (hidden truth vs observed signals)", "",
                    policy_table(records["interaction"]), "", *sections_rm,
                    "## Steerability of the logging policies (character instructions, 95% Wilson intervals)", "",
                    steer_table(records["interaction"], records["steer_label"]), "",
                    f"## Simulated A/B test: {cfg.ab.treatment} vs {cfg.ab.control}, {cfg.ab.days} days, "
                    f"{cfg.ab.arm_share:.0%} of {cfg.ab.eligible_users:,} eligible users per arm", "",
                    ab_table(analysis, truth), ""]
        metrics |= {"ab": analysis.iloc[0].drop(["experiment_id", "control", "treatment"]).to_dict(), "truth": truth}
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
    say(report)
    return run


def _reward_model(cfg: DemoConfig, records, run: Run, say) -> tuple[list[str], dict]:
    """Train on the logged traffic, score the held-out contexts, compare with the hidden engagement."""
    from rm_lab import config as cfgmod
    from rm_lab.reward.evaluate import EvalRMConfig, evaluate_reward_model
    from rm_lab.reward.model import RewardModel
    from rm_lab.reward.embed_cache import default_cache_root
    from rm_lab.reward.train import TrainRMConfig, train_reward_model

    t0 = time.time()
    tcfg = cfgmod.build(TrainRMConfig, {"seed": cfg.world.seed, **cfg.train}, "train")
    rm_dir = run.path / "reward_model"
    train_reward_model(tcfg, rm_dir, records=records, say=lambda m: say(f"  train-rm: {m}"))
    rm = RewardModel.load(rm_dir, cache_dir=tcfg.cache_dir or default_cache_root())
    m = evaluate_reward_model(EvalRMConfig(model=str(rm_dir), split="heldout", n_counterfactual=300,
                                           seed=cfg.world.seed), rm_dir / "eval", say=lambda s: None,
                              rm=rm, records=records, world_cfg=cfg.world)
    t = m.get("truth", {})
    pa = m.get("pairwise_accuracy", {})
    cont = m.get("continue", {})
    lines = [f"## Reward model (frozen MiniLM, inputs {', '.join(rm.cfg.inputs)}, style features, {len(rm.heads)} heads) "
             "vs the hidden truth", "",
             f"Trained and evaluated in {time.time() - t0:.0f}s; held-out contexts only.", "",
             "| figure | value |", "| --- | --- |",
             f"| Spearman(pointwise score, true engagement) | {t.get('spearman_score_vs_truth', float('nan')):.3f} |",
             f"| pairwise accuracy vs the hidden function (pairs with true gap >= 0.1) | "
             f"{t.get('pairwise_accuracy_vs_truth', float('nan')):.3f} |",
             f"| pairwise accuracy vs the annotators' labels: pointwise / pairwise model | "
             f"{pa.get('pointwise', float('nan')):.3f} / {pa.get('pairwise_model', float('nan')):.3f} |"]
    if isinstance(cont, dict) and "raw" in cont:
        lines.append(f"| p(continue): AUC; ECE raw -> temperature -> isotonic | {cont['raw']['auc']:.3f}; "
                     f"{cont['raw']['ece']:.3f} -> {cont['temperature_scaled']['ece']:.3f} -> "
                     f"{cont['isotonic']['ece']:.3f} |")
    return lines + [""], {"truth": t, "pairwise_accuracy": pa}
