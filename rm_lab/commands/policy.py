"""Policy commands: `best-of-n`, `rejection-sample`, `train-policy`, `evaluate`."""

from __future__ import annotations

from typing import Optional

import typer

from rm_lab import config as cfgmod
from rm_lab.commands.common import new_or_resumed_config, stage_command

TRAIN_KIND = "train-policy"


def _prepare_sampling(cfg):
    from rm_lab.policy.objectives.best_of_n import prepare_sampling

    return prepare_sampling(cfg)


def _train_config(cls, config, overrides, options, resume=None):
    """A new run: configs/train_policy.yaml (or -c) + overrides + --method. --resume: the run's own config."""
    from rm_lab.policy.trainer import is_policy_run, with_absolute_paths

    return new_or_resumed_config(cls, config, overrides, options, resume, default="train_policy",
                                 kind=TRAIN_KIND, is_run=is_policy_run, absolute=with_absolute_paths,
                                 resume_options=True)


def _train_inputs(cfg, resume=None):
    """The data (SFT set, preference pairs, or prompts and reward model) and the starting policy are read
    (and refused) before a run folder exists."""
    from rm_lab.policy.objectives.sft import load_sft_set
    from rm_lab.policy.trainer import load_trainable_policy

    if cfg.method == "sft":
        load_sft_set(cfg.data, cfg.targets, cfg.label_name)
    elif cfg.method == "dpo":
        from rm_lab.policy.objectives.dpo_train import load_preference_set

        load_preference_set(cfg.data)
    elif cfg.method == "grpo":
        from rm_lab.policy.objectives.grpo_train import check_inputs

        check_inputs(cfg)
    return load_trainable_policy(cfg.policy)


def _train_run(cfg, resume=None):
    from rm_lab.policy.trainer import is_policy_run
    from rm_lab.runs import Run, resolve_run_folder

    if not resume:
        return Run(TRAIN_KIND, cfgmod.to_dict(cfg), resumable=True)
    folder = resolve_run_folder(resume, TRAIN_KIND, is_policy_run)
    return Run.reopen(folder, TRAIN_KIND, cfgmod.to_dict(cfg), resumable=True)


def _summary(rep: dict) -> list[str]:
    s = rep["scores"]
    out = [f"{rep['n_contexts']} contexts x {rep['n']}: {rep['n_picked']} picked; score mean all "
           f"{s['all'].get('mean', float('nan')):.3f}, picked {s['chosen'].get('mean', float('nan')):.3f}"]
    if "truth" in rep:
        t = rep["truth"]
        out.append(f"true engagement best-of-{t['n']} {t['best_of_n']['mean']:.4f} vs best-of-1 "
                   f"{t['best_of_1']['mean']:.4f}: {t['lift']['mean']:+.4f} [{t['lift']['low']:+.4f}, "
                   f"{t['lift']['high']:+.4f}]")
    return out


def register(app: typer.Typer) -> None:
    @stage_command(app, "best-of-n", "rm_lab.policy.objectives.best_of_n:BestOfNConfig", config="best_of_n",
                   run_kind="best-of-n", prepare=_prepare_sampling)
    def best_of_n_cmd(cfg, run, inputs):
        """Sample N replies per context, keep the reward model's pick (user-signal heads as filters)."""
        from rm_lab.commands.common import progress
        from rm_lab.policy.objectives.best_of_n import run_sampling

        with progress("sampling") as say:
            rep = run_sampling(cfg, run.path, inputs, fallback=True, say=say)
        run.log_metrics(_flat(rep))
        for line in _summary(rep):
            typer.echo(line)
        typer.echo(f"wrote {run.path}")

    @stage_command(app, "rejection-sample", "rm_lab.policy.objectives.rejection:RejectionConfig",
                   config="rejection_sample", run_kind="rejection-sample", prepare=_prepare_sampling)
    def rejection_cmd(cfg, run, inputs):
        """Build an SFT set: the reward model's picks of N samples on fresh prompts, filtered, as records."""
        from rm_lab.commands.common import progress
        from rm_lab.policy.objectives.rejection import rejection_sample

        with progress("sampling") as say:
            rep = rejection_sample(cfg, run.path, inputs, say=say)
        run.log_metrics(_flat(rep))
        for line in _summary(rep):
            typer.echo(line)
        typer.echo(f"wrote {run.path} (SFT set: label rows named '{cfg.label_name}')")

    @stage_command(app, "train-policy", "rm_lab.policy.trainer:TrainPolicyConfig", config="train_policy",
                   load=_train_config, prepare=_train_inputs, open_run=_train_run,
                   config_options={"method": "--method"})
    def train_policy_cmd(cfg, run, inputs, resume: Optional[str] = typer.Option(
            None, "--resume", help="a stopped train-policy run folder (or its run id) to finish in place"),
            method: Optional[str] = typer.Option(None, "--method", help="the objective (sft, dpo, grpo)")):
        """Train a new policy generation: SFT on an SFT set, DPO on preference pairs, or online GRPO against a
        reward model; LoRA or full weights; resumable."""
        from rm_lab.policy.trainer import train_policy

        metrics = train_policy(cfg, run.path, say=typer.echo, loaded=inputs)
        run.log_metrics(metrics)
        typer.echo(f"wrote {run.path} (the new policy: {metrics['policy']})")

    @stage_command(app, "evaluate", "rm_lab.policy.evaluate:EvaluateConfig", config="evaluate", run_kind="evaluate",
                   prepare=_evaluate_inputs)
    def evaluate_cmd(cfg, run):
        """Two policies on fresh contexts: win rates, steerability, refusals, artifacts, truth and A/B lift."""
        from rm_lab import io
        from rm_lab.commands.common import progress
        from rm_lab.policy.evaluate import evaluate_policies, render

        with progress("evaluating") as say:
            rep = evaluate_policies(cfg, say=say)
        r = rep.pop("_replies")
        df = r["contexts"][["context_id", "character_id", "traffic"]].copy()
        df["candidate"], df["baseline"] = r["candidate"], r["baseline"]
        df["candidate_score"], df["baseline_score"] = r["candidate_score"], r["baseline_score"]
        with io.atomic_path(run.file("replies.parquet")) as tmp:
            df.to_parquet(tmp, index=False)
        io.write_json(run.file("report.json"), rep)
        text = render(rep)
        io.write_text(run.file("report.md"), text)
        w = rep["win_rates"]
        run.log_metrics({k: v["rate"] for k, v in w.items()} | {f"ab_{m}_lift": rep["ab"][m]["lift"]
                                                                for m in ("breadth", "depth")})
        typer.echo(text)
        typer.echo(f"wrote {run.path}")


def _evaluate_inputs(cfg):
    from rm_lab.policy.objectives.best_of_n import load_scorer

    load_scorer(cfg.model)  # a missing or broken reward model is refused before the run folder opens


def _flat(rep: dict) -> dict:
    """The report's headline numbers for metrics.json and the registry."""
    out = {"n_contexts": rep["n_contexts"], "n": rep["n"], "n_picked": rep["n_picked"],
           "score_mean_all": rep["scores"]["all"].get("mean"), "score_mean_chosen": rep["scores"]["chosen"].get("mean"),
           "pass_rate": rep["scores"]["pass_rate"], "seconds": rep["seconds"], "tokens_per_s": rep.get("tokens_per_s")}
    if "truth" in rep:
        t = rep["truth"]
        out.update(truth_best_of_n=t["best_of_n"]["mean"], truth_best_of_1=t["best_of_1"]["mean"],
                   truth_lift=t["lift"]["mean"], truth_lift_low=t["lift"]["low"], truth_lift_high=t["lift"]["high"])
    return out
