"""steerability_report: rates, Wilson intervals, prompt-level grouping and the per-type breakdown."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rm_lab.evaluate.steerability import steerability_report, verdict_rows, wilson
from rm_lab.schema import RecordError


def test_wilson_known_values():
    p, lo, hi = wilson(8, 10)
    assert p == 0.8
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    p, lo, hi = wilson(0, 20)
    assert p == 0 and lo == 0 and 0.15 < hi < 0.17
    assert all(math.isnan(x) for x in wilson(0, 0))


def _rows():
    # policy A: 2 contexts; c1 follows both instructions, c2 follows one of two
    # policy B: 1 context following its only instruction, 1 failing it with a violation
    return pd.DataFrame([
        ("A", "c1", "punctuation:no_comma", True, False),
        ("A", "c1", "character:max_emoji", True, False),
        ("A", "c2", "punctuation:no_comma", False, True),
        ("A", "c2", "character:max_emoji", True, False),
        ("B", "c1", "punctuation:no_comma", True, False),
        ("B", "c2", "punctuation:no_comma", False, True),
    ], columns=["policy", "context_id", "instruction_id", "followed", "violation"])


def test_overall_rates():
    rep = steerability_report(_rows())
    a = rep.overall.set_index("policy").loc["A"]
    assert a["n_instructions"] == 4 and a["follow_rate"] == 0.75
    assert a["n_prompts"] == 2 and a["prompt_rate"] == 0.5
    assert a["violation_rate"] == 0.5  # one of A's two replies has a violation
    assert (a["follow_lo"], a["follow_hi"]) == pytest.approx(wilson(3, 4)[1:])
    assert (a["prompt_lo"], a["prompt_hi"]) == pytest.approx(wilson(1, 2)[1:])
    b = rep.overall.set_index("policy").loc["B"]
    assert b["follow_rate"] == 0.5 and b["prompt_rate"] == 0.5 and b["violation_rate"] == 0.5
    for col in ("follow", "prompt", "violation"):
        assert (rep.overall[f"{col}_lo"] <= rep.overall[f"{col}_rate"]).all()
        assert (rep.overall[f"{col}_rate"] <= rep.overall[f"{col}_hi"]).all()


def test_breakdown_by_instruction_type():
    by = steerability_report(_rows()).by_instruction.set_index(["policy", "instruction_id"])
    assert by.loc[("A", "punctuation:no_comma"), "follow_rate"] == 0.5
    assert by.loc[("A", "character:max_emoji"), "follow_rate"] == 1.0
    assert by.loc[("A", "character:max_emoji"), "category"] == "character"
    assert len(by) == 3


def test_without_violation_column_rates_are_nan():
    rep = steerability_report(_rows().drop(columns="violation"))
    assert rep.overall["violation_rate"].isna().all()
    assert rep.overall["follow_rate"].notna().all()


def test_bad_input_is_an_error():
    with pytest.raises(RecordError, match="followed"):
        steerability_report(_rows().drop(columns="followed"))
    bad = _rows()
    bad["followed"] = bad["followed"].astype(object)
    bad.loc[2, "followed"] = "yes"
    with pytest.raises(RecordError, match="boolean"):
        steerability_report(bad)
    with pytest.raises(RecordError):
        steerability_report(_rows().iloc[:0])


def test_verdict_rows_then_report():
    recs = [
        {"policy": "gen1", "context_id": "c1", "response": "Ahoy, matey! Want tea?",
         "instruction_id_list": ["character:end_with_question", "character:no_lists"], "kwargs": [{}, {}]},
        {"policy": "gen1", "context_id": "c2", "response": "Options:\n- tea\n- rum",
         "instruction_id_list": ["character:end_with_question", "character:no_lists"], "kwargs": [{}, {}]},
    ]
    rows = verdict_rows(recs)
    assert rows["followed"].tolist() == [True, True, False, False]
    rep = steerability_report(rows)
    assert rep.overall.loc[0, "prompt_rate"] == 0.5 and rep.overall.loc[0, "follow_rate"] == 0.5
