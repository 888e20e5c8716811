"""`rm_lab ab-plan`: the minimum detectable lift of a planned A/B test, or the users and days a target needs."""

from __future__ import annotations

import typer

from rm_lab import io
from rm_lab.commands.common import stage_command


def _baseline(cfg):
    """Read the past test (or take the given rate) before a run folder exists: bad records leave none."""
    from rm_lab.evaluate.ab_plan import baseline_from_arms, baseline_from_rate

    if cfg.records:
        return baseline_from_arms(io.read_records(cfg.records, "ab_arm"), cfg.experiment_id, source=cfg.records)
    return baseline_from_rate(cfg.baseline_rate, cfg.user_variance, cfg.variance_days)


def register(app: typer.Typer) -> None:
    @stage_command(app, "ab-plan", "rm_lab.evaluate.ab_plan:ABPlanConfig", config="ab_plan", run_kind="ab-plan",
                   prepare=_baseline)
    def ab_plan_cmd(cfg, run, inputs):
        """Plan an A/B test: MDE for users/days/power, or users and days for a target lift."""
        from rm_lab.evaluate.ab_plan import plan, plan_table

        table = plan(cfg, inputs)
        text = plan_table(cfg, table, inputs)
        with io.atomic_path(run.file("plan.csv")) as tmp:
            table.to_csv(tmp, index=False)
        io.write_text(run.file("report.md"), f"# ab-plan\n\n{text}\n")
        io.write_json(run.file("report.json"), {"baseline": {"rate": inputs.rate, "between_var": inputs.between_var,
                                                             "days_measured": inputs.days_measured,
                                                             "depth": inputs.depth, "source": inputs.source},
                                                "plan": table.to_dict("records")})
        run.log_metrics({f"{r['metric']}_mde": r["mde"] for _, r in table.iterrows()})
        print(text)
