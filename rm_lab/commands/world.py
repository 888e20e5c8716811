"""World commands: `simulate`, `ab-test`, `demo`."""

from __future__ import annotations

import time

import typer
from rich.console import Console

from rm_lab import io
from rm_lab.commands.common import progress, stage_command

console = Console()


def _stored_arms(cfg):
    """ab-test records=PATH: read and analyse the stored arms before a run folder exists (bad records
    then leave none behind)."""
    from rm_lab.evaluate.ab import analyze

    if not cfg.records:
        return None
    arms = io.read_records(cfg.records, "ab_arm")
    return arms, analyze(arms, source=cfg.records, alpha=cfg.alpha, sequential_tau=cfg.sequential_tau)


def register(app: typer.Typer) -> None:
    @stage_command(app, "simulate", "rm_lab.world.simulate:WorldConfig", config="simulate", run_kind="simulate")
    def simulate_cmd(cfg, run):
        """Log traffic of scripted policies in the simulated world (interactions, preferences, steer labels)."""
        from rm_lab.world.report import policy_table, steer_table
        from rm_lab.world.simulate import simulate

        with progress("simulating") as say:
            records = simulate(cfg, progress=say)
            for name, df in records.frames.items():
                say(f"writing {name}")
                run.artifact(name, io.write_records(df, run.file(f"{name}.parquet"), name))
        it = records["interaction"]
        io.write_json(run.file("report.json"), {
            "counts": records.counts(),
            "truth_engagement_by_policy": it.groupby("policy")["truth_engagement"].mean().to_dict()})
        tables = policy_table(it) + "\n\n" + steer_table(it, records["steer_label"])
        io.write_text(run.file("report.md"), "# simulate\n\n" + tables + "\n")
        run.log_metrics({"counts": records.counts()})
        print(tables)
        console.print(f"[green]wrote[/green] {run.path}")

    @stage_command(app, "ab-test", "rm_lab.world.ab:ABConfig", config="ab_test", run_kind="ab-test",
                   prepare=_stored_arms)
    def ab_test_cmd(cfg, run, inputs):
        """A/B test: simulate two policies in the world, or analyse stored arms (records=PATH)."""
        from rm_lab.evaluate.ab import analyze
        from rm_lab.evaluate.sequential import daily_paths
        from rm_lab.world.ab import simulate_ab_reply_sets
        from rm_lab.world.report import ab_report

        t0 = time.time()
        if inputs is not None:
            (arms, analysis), truth = inputs, None
        else:
            with console.status("simulating the A/B test"):
                arms, truth, sets = simulate_ab_reply_sets(cfg)
            io.write_records(arms, run.file("arms.parquet"), "ab_arm")
            for name, df in (sets.frames.items() if sets is not None else ()):  # a folder train-rm reads
                io.write_records(df, run.file(f"{name}.parquet"), name)
            analysis = analyze(arms, alpha=cfg.alpha, sequential_tau=cfg.sequential_tau)
        with io.atomic_path(run.file("analysis.csv")) as tmp:
            analysis.to_csv(tmp, index=False)
        paths = daily_paths(arms, cfg.alpha, cfg.sequential_tau)
        if len(paths):
            with io.atomic_path(run.file("sequential.csv")) as tmp:
                paths.to_csv(tmp, index=False)
        table = ab_report(analysis.head(20), truth)
        extra = "" if len(analysis) <= 20 else f"\n({len(analysis)} comparisons; all in analysis.csv)\n"
        io.write_text(run.file("report.md"), f"# ab-test\n\n{table}\n{extra}")
        io.write_json(run.file("report.json"), {"truth": truth, "n_comparisons": len(analysis),
                                                "seconds": time.time() - t0})
        if len(analysis) == 1:
            run.log_metrics(analysis.iloc[0].drop(["experiment_id", "control", "treatment"]).to_dict())
        print(table + extra)
        console.print(f"[green]wrote[/green] {run.path}")

    @stage_command(app, "demo", "rm_lab.demo:DemoConfig", config="demo")
    def demo_cmd(cfg, run):
        """The main job of `make demo`: simulate traffic, A/B-test two policies, compare with the truth."""
        from rm_lab.demo import run_demo

        run_demo(cfg, say=lambda m: print(m, flush=True))
