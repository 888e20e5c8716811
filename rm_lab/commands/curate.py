"""`rm_lab curate input=RUN_OR_FOLDER`: scrubbed, de-duplicated, pair-filtered, diversity-sampled records."""

from __future__ import annotations

import time

import typer
from rich.console import Console

from rm_lab import io
from rm_lab.commands.common import progress, stage_command

console = Console()


def render_report(report: dict) -> str:
    """Markdown summary: counts in and out per kind, then what each step removed and why."""
    kinds = list(report["input"])
    lines = ["| records | in | out |", "|---|---|---|"]
    lines += [f"| {k} | {report['input'][k]} | {report['output'].get(k, 0)} |" for k in kinds]
    steps = report["steps"]
    lines.append("\n| step | kind | removed | why |\n|---|---|---|---|")
    if "scrub" in steps:
        rep = steps["scrub"]["replaced"]
        lines.append("| scrub | all text | 0 | replaced " + ", ".join(f"{v} {k}" for k, v in rep.items()) + " |")
    for kind, rep in steps.get("dedup", {}).items():
        lines.append(f"| dedup | {kind} | {rep['exact_duplicates'] + rep['near_duplicates']} | "
                     f"{rep['exact_duplicates']} exact, {rep['near_duplicates']} near (Jaccard >= {rep['threshold']}) |")
    if "pair_filter" in steps:
        rep = steps["pair_filter"]
        lines.append(f"| pair filter | preference | {rep['removed']} | {rep['dropped_length_only']} length ratio > "
                     f"{rep['max_length_ratio']}, {rep['dropped_emoji_only']} emoji diff > {rep['max_emoji_diff']}, "
                     f"{rep['dropped_both']} both |")
    for kind, rep in steps.get("diversity", {}).items():
        if "skipped" in rep:
            lines.append(f"| diversity | {kind} | 0 | skipped: {rep['skipped']} |")
            continue
        strata = ", ".join(f"{s}: {v['selected']}/{v['target']}" + (f" (short {v['shortfall']})" if v["shortfall"] else "")
                           for s, v in rep["per_stratum"].items())
        lines.append(f"| diversity | {kind} | {rep['removed']} | {rep['n_clusters']} {rep['embedding']} clusters; "
                     f"{strata}; {rep['excluded_by_mix']} outside the mix |")
    casc = report.get("cascade", {})
    if casc:
        lines.append("\nFollowing their items: " + ", ".join(f"{k} {v}" for k, v in casc.items()) + ".")
    return "\n".join(lines) + "\n"


def _records(cfg):
    """The records to curate, read and checked before a run folder exists."""
    from rm_lab.curate.pipeline import load_folder, resolve_input

    folder = resolve_input(cfg.input)
    return folder, load_folder(folder)


def register(app: typer.Typer) -> None:
    @stage_command(app, "curate", "rm_lab.curate.pipeline:CurateConfig", config="curate", run_kind="curate",
                   prepare=_records)
    def curate_cmd(cfg, run, inputs):
        """Curate records before training: scrub identifiers, drop duplicates and lopsided pairs, diversity-sample."""
        from rm_lab.curate.pipeline import curate

        folder, records = inputs
        t0 = time.time()
        with progress("curating") as say:
            out, report = curate(records, cfg, progress=say)
            for name, df in out.frames.items():
                say(f"writing {name}")
                run.artifact(name, io.write_records(df, run.file(f"{name}.parquet"), name))
        report["input_folder"] = str(folder)
        report["seconds"] = round(time.time() - t0, 3)
        io.write_json(run.file("report.json"), report)
        md = render_report(report)
        io.write_text(run.file("report.md"), f"# curate\n\ninput: {folder}\n\n{md}")
        run.log_metrics({"input": report["input"], "output": report["output"]})
        print(md)
        console.print(f"[green]wrote[/green] {run.path}")
