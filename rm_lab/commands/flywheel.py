"""`rm_lab flywheel`: G generations of the whole loop, a report per generation and one across them; resumable."""

from __future__ import annotations

from typing import Optional

import typer

from rm_lab import config as cfgmod
from rm_lab.commands.common import new_or_resumed_config, stage_command

KIND = "flywheel"


def _is_flywheel(folder) -> bool:
    return (folder / "state.json").is_file()


def _config(cls, config, overrides, options, resume=None):
    from rm_lab.flywheel.config import with_absolute_paths

    return new_or_resumed_config(cls, config, overrides, options, resume, default="flywheel", kind=KIND,
                                 is_run=_is_flywheel, absolute=with_absolute_paths)


def _inputs(cfg, resume=None):
    from rm_lab.flywheel.pipeline import check_inputs

    check_inputs(cfg)


def _run(cfg, resume=None):
    from rm_lab.runs import Run, resolve_run_folder

    if not resume:
        return Run(KIND, cfgmod.to_dict(cfg), resumable=True)
    return Run.reopen(resolve_run_folder(resume, KIND, _is_flywheel), KIND, cfgmod.to_dict(cfg), resumable=True)


def register(app: typer.Typer) -> None:
    @stage_command(app, "flywheel", "rm_lab.flywheel.config:FlywheelConfig", config="flywheel", load=_config,
                   prepare=_inputs, open_run=_run)
    def flywheel_cmd(cfg, run, resume: Optional[str] = typer.Option(
            None, "--resume", help="a stopped flywheel run folder (or its run id): go on at the step it was in")):
        """G generations: traffic, curate, reward model, rejection sampling + SFT, RL in the coupled trainer,
        evaluate, predicted lift, simulated A/B test, ship or not; each step a child run."""
        from rm_lab.flywheel.pipeline import run_flywheel

        out = run_flywheel(cfg, run, say=typer.echo)
        a = out["across"]
        typer.echo(f"{a['shipped']} of {a['generations']} generations shipped "
                   f"({a['shipped_with_positive_true_lift']} with a positive true lift); rule: {out['rule']}")
        typer.echo(f"wrote {run.path} (report.md, report.json; g<N>/report.md per generation)")
