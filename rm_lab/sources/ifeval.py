"""IFEval: prompts with verifiable instructions, GPT-4's responses, and the reference checker's verdicts.

Frames: `prompts` (key, prompt, instruction_id_list, kwargs), `responses` (key, prompt, response,
prompt_matches), `verdicts` (one row per prompt x instruction: followed_strict / followed_loose and the
prompt-level follow_all_*), and `steer_label` (context_id = str(key), followed = strict verdict,
violation = False since IFEval marks no violations, kwargs_json = the instruction's kwargs as JSON
text) for every instruction that has a verdict.

A response is joined to its prompt by exact prompt text, else by file position; the response file
holds one response written for a differently worded prompt (`prompt_matches` = False), so a checker
scored against it would measure the wrong instruction. Verdicts are joined by exact prompt text and
must list the same instructions as the prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rm_lab.schema import STEER_LABEL, RecordError, Records, validate_frame
from rm_lab.sources._common import bool_cell, dropped_frame, load_jsonl, need, number_cell, text_cell

INPUT = "input_data.jsonl"
RESPONSES = "input_response_data_*.jsonl"
STRICT = "eval_results_strict.jsonl"
LOOSE = "eval_results_loose.jsonl"


def _prompts(path: Path, limit: int | None) -> list[dict]:
    out, keys = [], {}
    for line, d in load_jsonl(path):
        if limit is not None and len(out) >= limit:
            break
        key = number_cell(path, line, "key", need(path, line, d, "key"), integer=True)
        if key in keys:
            raise RecordError(str(path), line, "key", key, f"a unique key (also on line {keys[key]})")
        keys[key] = line
        prompt = text_cell(path, line, "prompt", need(path, line, d, "prompt"))
        ids = need(path, line, d, "instruction_id_list")
        if not isinstance(ids, list) or not ids:
            raise RecordError(str(path), line, "instruction_id_list", ids, "a non-empty list of instruction ids")
        ids = [text_cell(path, line, f"instruction_id_list[{i}]", v) for i, v in enumerate(ids)]
        kwargs = need(path, line, d, "kwargs")
        if not isinstance(kwargs, list) or len(kwargs) != len(ids):
            raise RecordError(str(path), line, "kwargs", kwargs, f"a list of {len(ids)} objects (one per instruction)")
        for i, k in enumerate(kwargs):
            if not isinstance(k, dict):
                raise RecordError(str(path), line, f"kwargs[{i}]", k, "an object")
        out.append({"key": key, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs, "line": line})
    return out


def _responses(path: Path, prompts: list[dict]) -> tuple[list[dict], list[int]]:
    by_prompt = {p["prompt"]: p for p in prompts}
    rows = []
    for pos, (line, d) in enumerate(load_jsonl(path)):
        prompt = text_cell(path, line, "prompt", need(path, line, d, "prompt"))
        response = text_cell(path, line, "response", need(path, line, d, "response"))
        rows.append((pos, line, prompt, response))
    matched = {r[2] for r in rows if r[2] in by_prompt}
    out, unmatched = [], []
    for pos, line, prompt, response in rows:
        p = by_prompt.get(prompt)
        if p is None and pos < len(prompts) and prompts[pos]["prompt"] not in matched:
            p = prompts[pos]
        if p is None:
            unmatched.append(line)
            continue
        out.append({"key": p["key"], "prompt": p["prompt"], "response": response, "response_prompt": prompt,
                    "prompt_matches": prompt == p["prompt"], "source_file": path.name, "source_line": line})
    return out, unmatched


def _verdicts(path: Path, prompts: list[dict]) -> tuple[dict[str, dict], list[int]]:
    by_prompt = {p["prompt"]: p for p in prompts}
    out, unmatched = {}, []
    for line, d in load_jsonl(path):
        prompt = text_cell(path, line, "prompt", need(path, line, d, "prompt"))
        response = text_cell(path, line, "response", need(path, line, d, "response"))
        ids = need(path, line, d, "instruction_id_list")
        follow = need(path, line, d, "follow_instruction_list")
        follow_all = bool_cell(path, line, "follow_all_instructions", need(path, line, d, "follow_all_instructions"))
        if not isinstance(ids, list):
            raise RecordError(str(path), line, "instruction_id_list", ids, "a list of instruction ids")
        if not isinstance(follow, list) or len(follow) != len(ids):
            raise RecordError(str(path), line, "follow_instruction_list", follow, f"a list of {len(ids)} booleans")
        follow = [bool_cell(path, line, f"follow_instruction_list[{i}]", v) for i, v in enumerate(follow)]
        if follow_all != all(follow):
            raise RecordError(str(path), line, "follow_all_instructions", follow_all,
                              f"all(follow_instruction_list) = {all(follow)}")
        p = by_prompt.get(prompt)
        if p is None:
            unmatched.append(line)
            continue
        if ids != p["instruction_id_list"]:
            raise RecordError(str(path), line, "instruction_id_list", ids,
                              f"the prompt's instructions {p['instruction_id_list']} (key {p['key']})")
        out[prompt] = {"response": response, "follow": follow, "all": follow_all}
    return out, unmatched


def load(path: str | Path, limit: int | None = None) -> Records:
    """Load the ifeval folder (or input_data.jsonl alone); `limit` keeps the first N prompts."""
    path = Path(path)
    if not path.exists():
        raise RecordError(str(path), None, None, "no such file or folder", f"the IFEval folder (with {INPUT})")
    folder = path if path.is_dir() else path.parent
    inp = path if path.is_file() else folder / INPUT
    prompts = _prompts(inp, limit)
    frames: dict[str, pd.DataFrame] = {
        "prompts": pd.DataFrame([{k: v for k, v in p.items() if k != "line"} for p in prompts])}
    dropped: list[dict] = []
    if path.is_dir():
        # rows outside `limit` are left out by request; without a limit, unmatched rows are reported
        report = limit is None
        resp = []
        for rf in sorted(folder.glob(RESPONSES)):
            rows, unmatched = _responses(rf, prompts)
            resp += rows
            dropped += [{"source_file": rf.name, "row": ln, "reason": "response to an unknown prompt"}
                        for ln in unmatched if report]
        if resp:
            frames["responses"] = pd.DataFrame(resp)
        verdicts = {}
        for m, f in (("strict", STRICT), ("loose", LOOSE)):
            if (folder / f).exists():
                verdicts[m], unmatched = _verdicts(folder / f, prompts)
                dropped += [{"source_file": f, "row": ln, "reason": "verdict for an unknown prompt"}
                            for ln in unmatched if report]
        if verdicts:
            vrows, steer = [], []
            for p in prompts:
                got = {m: v.get(p["prompt"]) for m, v in verdicts.items()}
                if all(g is None for g in got.values()):
                    continue
                for i, iid in enumerate(p["instruction_id_list"]):
                    r = {"key": p["key"], "instruction_index": i, "instruction_id": iid, "kwargs": p["kwargs"][i]}
                    for m in ("strict", "loose"):
                        g = got.get(m)
                        r[f"followed_{m}"] = None if g is None else g["follow"][i]
                        r[f"follow_all_{m}"] = None if g is None else g["all"]
                    vrows.append(r)
                    ref = got.get("strict") or got.get("loose")
                    if got.get("strict") is not None:
                        steer.append({"context_id": str(p["key"]), "response": ref["response"], "instruction_id": iid,
                                      "followed": got["strict"]["follow"][i], "violation": False,
                                      "kwargs_json": json.dumps(p["kwargs"][i], sort_keys=True),
                                      "instruction_index": i})
            v = pd.DataFrame(vrows)
            for c in v.columns:
                if c.startswith("follow"):
                    v[c] = pd.array(v[c].tolist(), dtype="boolean")
            frames["verdicts"] = v
            if steer:
                frames["steer_label"] = validate_frame(pd.DataFrame(steer), STEER_LABEL, str(folder / STRICT))
            missing = [p for p in prompts if all(p["prompt"] not in v for v in verdicts.values())]
            dropped += [{"source_file": INPUT, "row": p["line"], "reason": "no reference verdict"} for p in missing]
    frames["dropped"] = dropped_frame(dropped)
    return Records(frames)
