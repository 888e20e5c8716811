"""Reward-model commands: `train-rm` and `eval-rm`."""

from __future__ import annotations

from typing import Optional

import typer

from rm_lab import config as cfgmod, io
from rm_lab.commands.common import ConfigOpt, OverridesArg, RunsOpt, maybe, use_runs_root


def register(app: typer.Typer) -> None:
    @app.command("train-rm")
    def train_rm_cmd(overrides: Optional[list[str]] = OverridesArg, config: Optional[str] = ConfigOpt,
                     runs: Optional[str] = RunsOpt,
                     resume: Optional[str] = typer.Option(None, "--resume", help="a killed train-rm run folder to finish")):
        """Train the multi-head reward model (+ pairwise model) on records or an on-the-fly world."""
        from pathlib import Path

        import yaml

        from rm_lab.reward.train import TrainRMConfig, train_reward_model
        from rm_lab.runs import Run

        use_runs_root(runs)
        if resume:
            rdir = Path(resume)
            if not (rdir / "config.yaml").is_file():
                raise cfgmod.ConfigError(f"--resume: '{resume}' is not a train-rm run folder (no config.yaml)")
            base = yaml.safe_load((rdir / "config.yaml").read_text()) or {}
            cfg = cfgmod.build(TrainRMConfig, cfgmod._merge(base, cfgmod.parse_overrides(maybe(overrides))),
                               str(rdir / "config.yaml"))
            run = Run("train-rm", cfgmod.to_dict(cfg), root=rdir.parent.parent, run_id=rdir.name)
        else:
            cfg = cfgmod.load(TrainRMConfig, config or "train_rm", maybe(overrides))
            run = Run("train-rm", cfgmod.to_dict(cfg))
        with run:
            run.log_metrics(train_reward_model(cfg, run.path, say=typer.echo))
        typer.echo(f"wrote {run.path}")

    @app.command("eval-rm")
    def eval_rm_cmd(overrides: Optional[list[str]] = OverridesArg, config: Optional[str] = ConfigOpt,
                    runs: Optional[str] = RunsOpt):
        """Evaluate a reward model: pairwise accuracy, calibration per head, depth, style artifacts."""
        from rm_lab.reward.evaluate import EvalRMConfig, evaluate_reward_model, summary_lines
        from rm_lab.runs import Run

        use_runs_root(runs)
        cfg = cfgmod.load(EvalRMConfig, config or "eval_rm", maybe(overrides))
        if not cfg.model:
            raise cfgmod.ConfigError("model: give a train-rm run folder, e.g. model=runs/train-rm/<id>")
        with Run("eval-rm", cfgmod.to_dict(cfg)) as run:
            metrics = evaluate_reward_model(cfg, run.path, say=typer.echo)
            lines = summary_lines(metrics)
            io.write_text(run.file("report.md"), "# eval-rm\n\n" + "\n".join(f"- {x}" for x in lines) + "\n\n"
                          + (run.path / "style_artifacts.md").read_text())
            run.log_metrics(metrics)
        for x in lines:
            typer.echo(x)
        typer.echo(f"wrote {run.path}")
