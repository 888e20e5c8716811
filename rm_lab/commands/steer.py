"""`rm_lab eval-steer`: check verifiable instructions on any JSONL of responses, IFEval-style."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from rm_lab.commands.common import stage_command
from rm_lab.config import check_fields, param


def run_eval_steer(path: Path, out: Path, loose: bool = False, responses: Optional[Path] = None) -> dict:
    """Check every row of `path`, write verdicts to `out` atomically; return a summary."""
    from rm_lab.evaluate.steerability import load_steer_inputs, steer_verdicts
    from rm_lab.io import atomic_path

    rows, _lines, skipped = load_steer_inputs(path, responses)
    verdicts = steer_verdicts(rows, loose=loose)
    with atomic_path(out) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for v in verdicts:
                fh.write(json.dumps(v, ensure_ascii=False) + "\n")
    n_inst = sum(len(v["follow_instruction_list"]) for v in verdicts)
    followed = sum(sum(v["follow_instruction_list"]) for v in verdicts)
    prompts = sum(v["follow_all_instructions"] for v in verdicts)
    return {"rows": len(verdicts), "skipped_without_response": skipped, "instructions": n_inst,
            "instructions_followed": followed, "prompts_followed": prompts}


@dataclass
class EvalSteerConfig:
    """How `rm_lab eval-steer` reads and checks the responses."""

    loose: bool = param(False, doc="loose mode (IFEval's eval_results_loose): also accept the response with "
                        "its first/last line or markdown emphasis removed")
    responses: Optional[str] = param(None, doc="JSONL of {prompt, response} joined by prompt (IFEval layout)")

    def __post_init__(self):
        check_fields(self)


def register(app: typer.Typer) -> None:
    @stage_command(app, "eval-steer", EvalSteerConfig, config_options={"loose": "--loose", "responses": "--responses"},
                   runs_option=False)
    def eval_steer(
        cfg, run,
        path: Path = typer.Argument(..., help="JSONL of {prompt, response, instruction_id_list, kwargs}"),
        out: Path = typer.Option(..., "--out", help="verdicts JSONL, one line per input row"),
        loose: Optional[bool] = typer.Option(None, "--loose", help="loose mode (IFEval's eval_results_loose)"),
        responses: Optional[Path] = typer.Option(
            None, "--responses", help="JSONL of {prompt, response} joined by prompt (IFEval layout)"),
    ) -> None:
        """Check verifiable instructions; write per-instruction verdicts like IFEval's eval results."""
        resp = Path(cfg.responses) if cfg.responses else None
        s = run_eval_steer(path, out, loose=cfg.loose, responses=resp)
        mode = "loose" if cfg.loose else "strict"
        inst = s["instructions_followed"] / max(1, s["instructions"])
        prm = s["prompts_followed"] / max(1, s["rows"])
        typer.echo(f"{mode}: {s['rows']} responses, instructions followed "
                   f"{s['instructions_followed']}/{s['instructions']} ({inst:.2%}), prompts "
                   f"{s['prompts_followed']}/{s['rows']} ({prm:.2%}) -> {out}")
        if s["skipped_without_response"]:
            typer.secho(f"warning: {s['skipped_without_response']} prompt(s) had no response and "
                        f"were skipped", fg=typer.colors.YELLOW, err=True)
