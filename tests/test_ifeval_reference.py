"""Our checkers against IFEval's published verdicts on the GPT-4 responses (needs ../shared/data)."""

from __future__ import annotations

import json
import time

import pytest

from rm_lab.evaluate.ifeval_reference import agreement, check_all, data_dir, missing_files

pytestmark = pytest.mark.realdata

FOLDER = data_dir()
MISSING = missing_files(FOLDER)
if MISSING:
    pytest.skip(f"IFEval data not found in {FOLDER} (set RM_LAB_DATA or add ../shared/data): "
                f"missing {MISSING}", allow_module_level=True)

REF_PROMPTS = {"strict": 415, "loose": 431}


@pytest.fixture(scope="module", params=["strict", "loose"])
def result(request):
    return agreement(FOLDER, request.param)


def test_covers_the_reference(result):
    assert result.prompts == 540 and result.instructions == 832
    assert result.ref_prompts == REF_PROMPTS[result.mode]


def test_instruction_level_agreement(result):
    assert result.instruction_agreement >= 0.995, [
        (d.key, d.instruction_id, d.reason) for d in result.disagreements]


def test_prompt_level_rate_within_half_a_point(result):
    assert result.prompt_gap_points <= 0.5, (result.ours_prompts, result.ref_prompts)


def test_every_disagreement_has_a_known_reason(result):
    for d in result.disagreements:
        assert d.reason and "not explained" not in d.reason, d


def test_committed_report_matches_a_fresh_run():
    from pathlib import Path

    report = Path(__file__).resolve().parents[1] / "reports" / "ifeval_agreement.md"
    text = report.read_text(encoding="utf-8")
    for mode in ("strict", "loose"):
        a = agreement(FOLDER, mode)
        assert f"| {mode} | {a.agreeing}/{a.instructions} " in text
        for d in a.disagreements:
            assert f"key {d.key}, `{d.instruction_id}`" in text


def test_throughput_all_541_prompts_under_5s():
    t = time.perf_counter()
    strict = check_all(FOLDER, loose=False)
    loose = check_all(FOLDER, loose=True)
    elapsed = time.perf_counter() - t
    assert len(strict) == len(loose) == 541
    assert elapsed < 5.0, elapsed


def test_eval_steer_output_matches_reference_line_by_line(tmp_path):
    from rm_lab.commands.steer import run_eval_steer

    for mode in ("strict", "loose"):
        out = tmp_path / f"{mode}.jsonl"
        summary = run_eval_steer(FOLDER / "input_data.jsonl", out, loose=mode == "loose",
                                 responses=FOLDER / "input_response_data_gpt4_20231107_145030.jsonl")
        assert summary["skipped_without_response"] == 1
        ours = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        ref = [json.loads(line) for line in
               (FOLDER / f"eval_results_{mode}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(ours) == len(ref) == 540
        same = 0
        for a, b in zip(ours, ref):
            assert list(a) == list(b)
            assert (a["prompt"], a["response"], a["instruction_id_list"]) == \
                (b["prompt"], b["response"], b["instruction_id_list"])
            same += a["follow_instruction_list"] == b["follow_instruction_list"]
        assert same >= 0.995 * 540
