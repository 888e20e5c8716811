"""Reward-model commands: `train-rm` and `eval-rm`."""

from __future__ import annotations

from typing import Optional

import typer

from rm_lab import config as cfgmod, io
from rm_lab.commands.common import new_or_resumed_config, stage_command
from rm_lab.config import ConfigError

TRAIN_KIND = "train-rm"


def _train_config(cls, config, overrides, options, resume=None):
    """A new run: configs/train_rm.yaml (or -c) + overrides. --resume: the run's own config.yaml + overrides."""
    from rm_lab.reward.store import is_train_run
    from rm_lab.reward.train import with_absolute_paths

    return new_or_resumed_config(cls, config, overrides, options, resume, default="train_rm", kind=TRAIN_KIND,
                                 is_run=is_train_run, absolute=with_absolute_paths)


def _train_run(cfg, resume=None):
    from rm_lab.reward.store import is_train_run
    from rm_lab.runs import Run, resolve_run_folder

    if not resume:
        return Run(TRAIN_KIND, cfgmod.to_dict(cfg), resumable=True)
    folder = resolve_run_folder(resume, TRAIN_KIND, is_train_run)
    return Run.reopen(folder, TRAIN_KIND, cfgmod.to_dict(cfg), resumable=True)


def _eval_inputs(cfg):
    if not cfg.model:
        raise ConfigError("model: give a train-rm run folder, e.g. model=runs/train-rm/<id>")


def register(app: typer.Typer) -> None:
    @stage_command(app, "train-rm", "rm_lab.reward.train:TrainRMConfig", config="train_rm", load=_train_config,
                   open_run=_train_run)
    def train_rm_cmd(cfg, run, resume: Optional[str] = typer.Option(
            None, "--resume", help="a stopped train-rm run folder (or its run id) to finish in place")):
        """Train the multi-head reward model (+ pairwise model) on records or an on-the-fly world."""
        from rm_lab.reward.train import train_reward_model

        run.log_metrics(train_reward_model(cfg, run.path, say=typer.echo))
        typer.echo(f"wrote {run.path}")

    @stage_command(app, "eval-rm", "rm_lab.reward.evaluate:EvalRMConfig", config="eval_rm", run_kind="eval-rm",
                   prepare=_eval_inputs)
    def eval_rm_cmd(cfg, run):
        """Evaluate a reward model: pairwise accuracy, calibration per head, depth, style artifacts."""
        from rm_lab.reward.evaluate import evaluate_reward_model, summary_lines

        metrics = evaluate_reward_model(cfg, run.path, say=typer.echo)
        lines = summary_lines(metrics)
        io.write_text(run.file("report.md"), "# eval-rm\n\n" + "\n".join(f"- {x}" for x in lines) + "\n\n"
                      + (run.path / "style_artifacts.md").read_text())
        run.log_metrics(metrics)
        for x in lines:
            typer.echo(x)
        typer.echo(f"wrote {run.path}")
