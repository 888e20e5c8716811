"""World commands: `simulate`, `ab-test`, `demo`."""

from __future__ import annotations

import time
from typing import Optional

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from rm_lab import config as cfgmod, io
from rm_lab.commands.common import ConfigOpt, OverridesArg, RunsOpt, maybe, use_runs_root

console = Console()


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_cmd(overrides: Optional[list[str]] = OverridesArg, config: Optional[str] = ConfigOpt,
                     runs: Optional[str] = RunsOpt):
        """Log traffic of scripted policies in the simulated world (interactions, preferences, steer labels)."""
        from rm_lab.runs import Run
        from rm_lab.world.report import policy_table, steer_table
        from rm_lab.world.simulate import WorldConfig, simulate

        use_runs_root(runs)
        cfg = cfgmod.load(WorldConfig, config or "simulate", maybe(overrides))
        with Run("simulate", cfgmod.to_dict(cfg)) as run:
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                          console=console, transient=True) as prog:
                task = prog.add_task("simulating", total=None)
                records = simulate(cfg, progress=lambda m: prog.update(task, description=m))
                for name, df in records.frames.items():
                    prog.update(task, description=f"writing {name}")
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

    @app.command("ab-test")
    def ab_test_cmd(overrides: Optional[list[str]] = OverridesArg, config: Optional[str] = ConfigOpt,
                    runs: Optional[str] = RunsOpt):
        """A/B test: simulate two policies in the world, or analyse stored arms (records=PATH)."""
        from rm_lab.evaluate.ab import analyze
        from rm_lab.runs import Run
        from rm_lab.world.ab import ABConfig, simulate_ab
        from rm_lab.world.report import ab_table

        use_runs_root(runs)
        cfg = cfgmod.load(ABConfig, config or "ab_test", maybe(overrides))
        with Run("ab-test", cfgmod.to_dict(cfg)) as run:
            t0 = time.time()
            if cfg.records:
                arms, truth = io.read_records(cfg.records, "ab_arm"), None
            else:
                with console.status("simulating the A/B test"):
                    arms, truth = simulate_ab(cfg)
                io.write_records(arms, run.file("arms.parquet"), "ab_arm")
            analysis = analyze(arms)
            analysis.to_csv(run.file("analysis.csv"), index=False)
            table = ab_table(analysis.head(20), truth)
            extra = "" if len(analysis) <= 20 else f"\n({len(analysis)} comparisons; all in analysis.csv)\n"
            io.write_text(run.file("report.md"), f"# ab-test\n\n{table}\n{extra}")
            io.write_json(run.file("report.json"), {"truth": truth, "n_comparisons": len(analysis),
                                                    "seconds": time.time() - t0})
            if len(analysis) == 1:
                run.log_metrics(analysis.iloc[0].drop(["experiment_id", "control", "treatment"]).to_dict())
        print(table + extra)
        console.print(f"[green]wrote[/green] {run.path}")

    @app.command("demo")
    def demo_cmd(overrides: Optional[list[str]] = OverridesArg, config: Optional[str] = ConfigOpt,
                 runs: Optional[str] = RunsOpt):
        """The main job of `make demo`: simulate traffic, A/B-test two policies, compare with the truth."""
        from rm_lab.demo import DemoConfig, run_demo

        use_runs_root(runs)
        cfg = cfgmod.load(DemoConfig, config or "demo", maybe(overrides))
        run_demo(cfg, say=lambda m: print(m, flush=True))
