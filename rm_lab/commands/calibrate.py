"""`rm_lab calibrate`: how much an offline reward-model gain is worth in an A/B test, with intervals."""

from __future__ import annotations

import typer

from rm_lab.commands.common import progress, stage_command


def _model(cfg):
    """A given reward model is loaded and checked before the run folder is opened (bad input leaves none)."""
    from rm_lab.calibrate.stage import given_model

    return given_model(cfg)


def register(app: typer.Typer) -> None:
    @stage_command(app, "calibrate", "rm_lab.calibrate.config:CalibrateConfig", config="calibrate",
                   run_kind="calibrate", prepare=_model)
    def calibrate_cmd(cfg, run, inputs):
        """Fit the offline-prediction -> A/B-lift map on past experiments (simulated world or Upworthy),
        with conformal prediction intervals, held-out reliability and the guardrail verdict."""
        from rm_lab.calibrate.stage import run_calibrate

        with progress("calibrating") as say:
            out = run_calibrate(cfg, run, say, inputs)
        h = out.get("heldout", {})
        typer.echo(f"{out.get('n_tests')} tests, {cfg.predictor} -> {cfg.metric} lift (held out): "
                   f"Spearman {h.get('spearman', float('nan')):.3f}"
                   + (f" (true {h['spearman_true']:.3f})" if "spearman_true" in h else "")
                   + f", coverage {h.get('coverage', float('nan')):.1%}, sign agreement "
                   f"{h.get('sign_agreement', float('nan')):.1%}")
        g = out.get("guardrail")
        if g is not None:
            typer.echo(f"guardrail on {cfg.over_optimised}: " + ("ok" if g["ok"] else "ALARM " + ", ".join(g["alarms"])))
        typer.echo(f"wrote {run.path}")
