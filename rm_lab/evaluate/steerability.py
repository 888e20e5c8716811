"""Steerability metrics per policy: instruction following, prompt-level following and violations.

The paper tracks instruction following (59.2% -> 84.8%) and violations (26.6% -> 5.8%) across
generations; here each rate comes with a Wilson 95% interval so two generations can be compared
without over-reading a few dozen labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from rm_lab.evaluate.instructions import check_many
from rm_lab.schema import RecordError

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """(rate, low, high); NaNs when n == 0."""
    if n <= 0:
        return (math.nan, math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class SteerabilityReport:
    overall: pd.DataFrame
    """One row per policy."""
    by_instruction: pd.DataFrame
    """One row per (policy, instruction_id)."""


def _as_bool(df: pd.DataFrame, col: str) -> pd.Series:
    s = df[col]
    bad = ~s.isin([True, False, 0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise RecordError(None, i, col, s.iloc[i], "a boolean (true/false)")
    return s.astype(bool)


def _rates(g: pd.DataFrame, unit: str, with_violation: bool) -> dict:
    n = len(g)
    f, flo, fhi = wilson(int(g["followed"].sum()), n)
    per_prompt = g.groupby(unit, sort=False)["followed"].all()
    p, plo, phi = wilson(int(per_prompt.sum()), len(per_prompt))
    row = {"n_instructions": n, "follow_rate": f, "follow_lo": flo, "follow_hi": fhi,
           "n_prompts": len(per_prompt), "prompt_rate": p, "prompt_lo": plo, "prompt_hi": phi}
    if with_violation:  # the paper's violation rate: share of replies with any violation
        per_reply = g.groupby(unit, sort=False)["violation"].any()
        v, vlo, vhi = wilson(int(per_reply.sum()), len(per_reply))
    else:
        v = vlo = vhi = math.nan
    row.update({"violation_rate": v, "violation_lo": vlo, "violation_hi": vhi})
    return row


def steerability_report(rows: pd.DataFrame, unit: str = "context_id") -> SteerabilityReport:
    """Rates per policy and per (policy, instruction type).

    rows: one verdict per (response, instruction) with columns `policy`, `unit` (the prompt or
    context the response answers), `instruction_id`, `followed` and optionally `violation`
    (without it the violation columns are NaN: not following is not the same as a violation).
    Prompt-level rate: share of the policy's prompts whose every instruction was followed;
    violation rate: share of the policy's replies with at least one violation.
    """
    need = ["policy", unit, "instruction_id", "followed"]
    for col in need:
        if col not in rows.columns:
            raise RecordError(None, None, col, "missing column",
                              f"a '{col}' column; columns found: {list(rows.columns)}")
    if len(rows) == 0:
        raise RecordError(None, None, None, "0 rows", "at least one verdict row")
    df = rows.copy()
    df["followed"] = _as_bool(df, "followed")
    with_violation = "violation" in df.columns
    if with_violation:
        df["violation"] = _as_bool(df, "violation")
    overall = pd.DataFrame([{"policy": pol, **_rates(g, unit, with_violation)}
                            for pol, g in df.groupby("policy", sort=True)])
    parts = []
    for (pol, iid), g in df.groupby(["policy", "instruction_id"], sort=True):
        parts.append({"policy": pol, "instruction_id": iid, "category": str(iid).split(":")[0],
                      **_rates(g, unit, with_violation)})
    by_instruction = pd.DataFrame(parts)
    return SteerabilityReport(overall=overall, by_instruction=by_instruction)


def verdict_rows(records: Iterable[dict], loose: bool = False, unit: str = "context_id") -> pd.DataFrame:
    """Check `{policy, <unit>, response, instruction_id_list, kwargs[, prompt]}` records into verdict rows."""
    out = []
    for rec in records:
        ids = list(rec["instruction_id_list"])
        verdicts = check_many(ids, rec.get("kwargs") or [{}] * len(ids), rec["response"],
                              prompt=rec.get("prompt", "") or "", loose=loose)
        for iid, ok in zip(ids, verdicts):
            out.append({"policy": rec["policy"], unit: rec[unit], "instruction_id": iid, "followed": ok})
    return pd.DataFrame(out, columns=["policy", unit, "instruction_id", "followed"])


# ----------------------------------------------------------------------------------------------
# IFEval-style files: inputs {prompt, response, instruction_id_list, kwargs} -> verdict rows


def load_steer_inputs(path, responses_path=None) -> tuple[list[dict], list[int], int]:
    """Validated input rows, their line numbers, and how many were skipped for want of a response.

    With `responses_path` (IFEval's layout: prompts and responses in two files) responses are joined
    by prompt text, and prompts that have none are skipped, as the reference evaluation does.
    """
    from rm_lab.evaluate.instructions import InstructionError, validate_kwargs
    from rm_lab.io import read_jsonl

    src = str(path)
    df = read_jsonl(path)
    lines = df.attrs.get("line_numbers") or list(range(1, len(df) + 1))
    joined: dict[str, str] | None = None
    if responses_path is not None:
        rdf = read_jsonl(responses_path)
        rlines = rdf.attrs.get("line_numbers") or list(range(1, len(rdf) + 1))
        joined = {}
        for ln, rec in zip(rlines, rdf.to_dict(orient="records")):
            for col in ("prompt", "response"):
                if not isinstance(rec.get(col), str):
                    raise RecordError(str(responses_path), ln, col, rec.get(col), "a string")
            joined[rec["prompt"]] = rec["response"]
    rows, kept_lines, skipped = [], [], 0
    for ln, rec in zip(lines, df.to_dict(orient="records")):
        prompt = rec.get("prompt")
        if not isinstance(prompt, str):
            raise RecordError(src, ln, "prompt", prompt, "a string")
        response = rec.get("response")
        if joined is not None and not isinstance(response, str):
            if prompt not in joined:
                skipped += 1
                continue
            response = joined[prompt]
        if not isinstance(response, str):
            raise RecordError(src, ln, "response", response,
                              "a string (or pass --responses to join responses by prompt)")
        ids = rec.get("instruction_id_list")
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise RecordError(src, ln, "instruction_id_list", ids, "a non-empty list of instruction ids")
        kwargs = rec.get("kwargs")
        if isinstance(kwargs, np.ndarray):
            kwargs = kwargs.tolist()
        if not isinstance(kwargs, list) or len(kwargs) != len(ids):
            raise RecordError(src, ln, "kwargs", kwargs,
                              f"a list of {len(ids)} kwargs objects, one per instruction id")
        norm = []
        for j, (iid, kw) in enumerate(zip(ids, kwargs)):
            try:
                norm.append(validate_kwargs(iid, kw))
            except InstructionError as e:
                fld = f"instruction_id_list[{j}]" if e.kwarg is None and iid not in _registry() \
                    else f"kwargs[{j}]"
                raise RecordError(src, ln, fld, iid if fld.startswith("instr") else kw, str(e)) from None
        rows.append({"prompt": prompt, "response": response, "instruction_id_list": ids, "kwargs": norm})
        kept_lines.append(ln)
    return rows, kept_lines, skipped


def _registry():
    from rm_lab.evaluate.instructions import REGISTRY

    return REGISTRY


def steer_verdicts(rows: list[dict], loose: bool = False) -> list[dict]:
    """Verdict records in the layout of IFEval's eval_results_{strict,loose}.jsonl."""
    out = []
    for rec in rows:
        verdicts = check_many(rec["instruction_id_list"], rec["kwargs"], rec["response"],
                              prompt=rec["prompt"], loose=loose)
        out.append({"follow_all_instructions": all(verdicts), "follow_instruction_list": verdicts,
                    "instruction_id_list": rec["instruction_id_list"], "prompt": rec["prompt"],
                    "response": rec["response"]})
    return out
