"""`rm_lab ingest SOURCE PATH`: a public dataset or the user's own records -> validated Parquet in a run folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import typer

from rm_lab import config as cfgmod
from rm_lab import io
from rm_lab.commands.common import stage_command
from rm_lab.config import ConfigError, check_fields, param
from rm_lab.runs import Run
from rm_lab.schema import KINDS, RecordError, Records, check_references, drop_dangling, row_number
from rm_lab.sources._common import dropped_frame

RECORDS = "records"


@dataclass
class IngestConfig:
    """What `rm_lab ingest SOURCE PATH` keeps and where it writes."""

    limit: Optional[int] = param(None, doc="keep the first N source units (tests, dialogues, prompts, rows; "
                                 "A/B records: experiments) for quick runs; null: all", ge=1)
    out: Optional[str] = param(None, doc="write the Parquet frames to this folder instead of the run folder "
                               "(the report stays in the run)")
    kind: Optional[str] = param(None, doc="record kind of a `records` file (null: from its file name, "
                                "e.g. interaction.parquet)", choices=lambda: sorted(KINDS))

    def __post_init__(self):
        check_fields(self)


def source_names() -> list[str]:
    from rm_lab.sources import SOURCES

    return [*SOURCES, RECORDS]


def load_records(path: Path, kind: str | None, limit: int | None) -> Records:
    """The user's canonical file (.parquet/.jsonl), or a folder of <kind>.parquet/.jsonl files."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".parquet", ".jsonl") and p.stem in KINDS)
        if not files:
            raise RecordError(str(path), None, None, "no record files",
                              f"files named <kind>.parquet or <kind>.jsonl, kind in {sorted(KINDS)}")
        pairs = [(p, kind or p.stem) for p in files]
    else:
        k = kind or (path.stem if path.stem in KINDS else None)
        if k is None:
            raise ConfigError(f"{path}: cannot tell the record kind from the file name; pass --kind "
                              f"(one of {sorted(KINDS)})")
        pairs = [(path, k)]
    frames: dict[str, pd.DataFrame] = {}
    for p, k in pairs:
        twins = [q.name for q, kk in pairs if kk == k]
        if len(twins) > 1:  # which one holds the records? (and keys would repeat across them)
            raise RecordError(str(path), None, None, twins, f"one {k} file in the folder")
        frames[k] = io.read_records(p, k)
    check_references(frames, str(path))  # the whole input: a dangling id is the file's, not the limit's
    if limit is None:
        return Records(frames)
    kept, cut = drop_dangling({k: _head(df, k, limit) for k, df in frames.items()})  # rows stay positions
    dropped = [{"source_file": Path(frames[k].attrs["path"]).name, "row": row_number(frames[k], int(i)),
                "reason": f"limit: its {ref.kind} ({ref.field}) is not among the first {limit}"}
               for k, i, ref, _ in cut]
    return Records({**{k: df for k, df in kept.items() if len(df)}, "dropped": dropped_frame(dropped)})


def _head(df: pd.DataFrame, kind: str, limit: int | None) -> pd.DataFrame:
    """The first `limit` records; for A/B arms the first `limit` experiments, never part of one."""
    if limit is None:
        return df
    if kind == "ab_arm":
        return df[df["experiment_id"].isin(pd.unique(df["experiment_id"])[:limit])].reset_index(drop=True)
    return df.head(limit).reset_index(drop=True)


def _write_frame(df: pd.DataFrame, path: Path) -> Path:
    """Non-canonical frames: nested cells stored as JSON text, like the canonical JSON fields."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object and out[c].map(lambda v: isinstance(v, (list, dict))).any():
            out[c] = [json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v for v in out[c]]
    table = pa.Table.from_pandas(out, preserve_index=False)
    with io.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def ingest(source: str, path: Path, cfg: IngestConfig) -> tuple[Run, dict[str, Any]]:
    from rm_lab.sources import SOURCES

    if source == RECORDS:
        records = load_records(path, cfg.kind, cfg.limit)
    elif source in SOURCES:
        records = SOURCES[source](path, limit=cfg.limit)
    else:
        raise ConfigError(f"unknown source '{source}', expected one of {source_names()}")
    check_references(records.frames, str(path))  # what is written is a folder later stages read together
    run = Run("ingest", {"source": source, "path": str(path), **cfgmod.to_dict(cfg)})
    out_dir = Path(cfg.out) if cfg.out else run.path
    files = {}
    try:
        for name, df in records.frames.items():
            target = out_dir / f"{name}.parquet"
            if name in KINDS:
                io.write_records(df, target, name)
            elif len(df) or name != "dropped":
                _write_frame(df, target)
            else:
                continue
            files[name] = str(run.artifact(name, target))
    except BaseException:
        run.finish("failed")
        raise
    dropped = records.frames.get("dropped")
    report = {
        "source": source, "path": str(path), "run_id": run.run_id, "limit": cfg.limit,
        "counts": {k: int(len(v)) for k, v in records.frames.items() if k != "dropped"},
        "dropped": (dropped.groupby(["source_file", "reason"]).size().rename("n").reset_index().to_dict("records")
                    if dropped is not None and len(dropped) else []),
        "by_file": {k: v["source_file"].value_counts().sort_index().to_dict()
                    for k, v in records.frames.items() if "source_file" in v.columns and k != "dropped"},
        "out_dir": str(out_dir),
        "files": files,
    }
    io.write_json(run.file("report.json"), report)
    run.log_metrics({f"counts/{k}": v for k, v in report["counts"].items()})
    run.finish()
    return run, report


def _print_summary(run: Run, report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ingest {report['source']}")
    table.add_column("frame")
    table.add_column("rows", justify="right")
    for k, n in report["counts"].items():
        table.add_row(k, f"{n:,}")
    for d in report["dropped"]:
        table.add_row(f"dropped: {d['reason']} ({d['source_file']})", f"{d['n']:,}")
    console = Console()
    console.print(table)
    where = f"wrote {run.path}"
    if Path(report["out_dir"]) != run.path:
        where += f" (frames in {report['out_dir']})"
    console.print(where)


def register(app: typer.Typer) -> None:
    @stage_command(app, "ingest", IngestConfig, config="ingest", config_options={"kind": "--kind"},
                   catch_errors=True)
    def ingest_cmd(
        cfg, run,
        source: str = typer.Argument(..., help="upworthy | convai2 | ifeval | predictive-engagement | records"),
        path: Path = typer.Argument(..., help="the dataset file or folder (records: a .parquet/.jsonl file)"),
        kind: Optional[str] = typer.Option(None, "--kind", help=f"record kind of a `records` file: {sorted(KINDS)}"),
    ):
        """Load a public dataset or your own canonical records, validate, write Parquet + report.json."""
        if source not in source_names():
            raise ConfigError(f"unknown source '{source}', expected one of {source_names()}")
        run, report = ingest(source, path, cfg)  # the run folder opens once the records are read and valid
        _print_summary(run, report)
