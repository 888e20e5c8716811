"""Bad A/B input through the CLI (ab-test and ab-plan): exit 2 and one `error:` line naming file, row
(the JSONL line) and field: clicks above impressions, negative counts, one arm only, duplicated arm
ids, an arm with no users, and the pre-period and daily fields CUPED and the monitor read."""

import json
import sys

import numpy as np
import pandas as pd
import pytest

from rm_lab.world.ab import ArmQuality, run_ab
from rm_lab.world.engagement import Population

TEXT = [{"experiment_id": "t", "arm": a, "is_control": a == "a", "days": 1, "users": 1000, "engaged_users": e}
        for a, e in (("a", 10), ("b", 20), ("c", 30))]


def _rows(**changes):
    """TEXT with {line: {field: value}} changes (1-based JSONL lines); a value None drops the row."""
    rows = [dict(r) for r in TEXT]
    for line, ch in changes.items():
        rows[int(line[1:]) - 1].update(ch)
    return rows


def _sim_rows():
    c = ArmQuality("c", np.array([-0.2, -0.1, -0.1]))
    df = run_ab(c, ArmQuality("t", c.q + 0.1), Population(), 20_000, 0.1, 3, np.random.default_rng(0),
                per_day=True, pre_days=3)
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in df.astype(object).to_dict("records")]


def _main(argv, capsys, monkeypatch):
    from rm_lab import cli

    monkeypatch.setattr(sys, "argv", ["rm_lab", *argv])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return e.value.code, lines[0]


CASES = [
    ("clicks above impressions", _rows(l2={"engaged_users": 1001}), 2, "engaged_users", "engaged_users <= users"),
    ("negative count", _rows(l3={"engaged_users": -4}), 3, "engaged_users", ">= 0"),
    ("one arm only", _rows()[:1], 1, "arm", "single arm"),
    ("duplicated arm id", _rows(l3={"arm": "b"}), 3, "arm", "unique"),
    ("arm with no users", _rows(l2={"users": 0, "engaged_users": 0}), 2, "users", ">= 1"),
    ("negative users", _rows(l1={"users": -10}), 1, "users", ">= 1"),
]


@pytest.mark.parametrize("command", ["ab-test", "ab-plan"])
@pytest.mark.parametrize("name,rows,line,field,words", CASES, ids=[c[0] for c in CASES])
def test_bad_arms_are_one_error_line(command, name, rows, line, field, words, tmp_path, runs_dir, capsys,
                                     monkeypatch):
    path = tmp_path / "arms.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, err = _main([command, f"records={path}"], capsys, monkeypatch)
    assert code == 2 and f"file {path}, row {line}, field '{field}'" in err and words in err, err
    assert not (runs_dir / command).exists() or not any((runs_dir / command).iterdir())  # no run folder left


SIM_CASES = [
    ("pre-period field missing", "pre_active_days_sq", lambda r: r["day"] is None and not r["is_control"], None,
     "come together"),
    ("pre-period above users x days", "pre_engaged_user_days", lambda r: r["day"] is None, 1e12, "pre_days"),
    ("negative to-date moment", "active_days_sq_to_date", lambda r: r["day"] == 1, -1.0, ">= 0"),
    ("to-date moment below its variance", "active_days_sq_to_date", lambda r: r["day"] == 2 and r["is_control"],
     None, "variance cannot be negative"),
]


@pytest.mark.parametrize("name,field,pick,value,words", SIM_CASES, ids=[c[0] for c in SIM_CASES])
def test_bad_pre_period_and_daily_fields(name, field, pick, value, words, tmp_path, runs_dir, capsys, monkeypatch):
    rows = _sim_rows()
    i = next(i for i, r in enumerate(rows) if pick(r))
    if value is None and field == "active_days_sq_to_date":
        value = float(rows[i]["engaged_users"])  # >= that day's users, but below (user-days to date)^2 / users
    rows[i][field] = value
    path = tmp_path / "arms.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, err = _main(["ab-test", f"records={path}"], capsys, monkeypatch)
    assert code == 2 and f"file {path}, row {i + 1}, field '{field}'" in err and words in err, err


def test_good_simulated_records_analyse_through_the_cli(tmp_path, runs_dir, capsys, monkeypatch):
    path = tmp_path / "arms.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _sim_rows()))
    from rm_lab import cli

    monkeypatch.setattr(sys, "argv", ["rm_lab", "ab-test", f"records={path}"])
    try:
        cli.main()
    except SystemExit as e:
        assert (e.code or 0) == 0
    out = capsys.readouterr().out
    assert "CUPED" in out and "Sequential monitoring" in out and "Holm p" in out


def test_k_arm_simulated_test_through_the_cli(runs_dir, capsys, monkeypatch):
    from rm_lab import cli

    monkeypatch.setattr(sys, "argv", ["rm_lab", "ab-test", "eligible_users=30000", "quality_contexts=200",
                                      "more_treatments=[engaging, baseline]", "arm_share=0.25", "days=3"])
    try:
        cli.main()
    except SystemExit as e:
        assert (e.code or 0) == 0
    out = capsys.readouterr().out
    run = next((runs_dir / "ab-test").iterdir())
    report = json.loads((run / "report.json").read_text())
    assert set(report["truth"]["by_arm"]) == {"improved", "engaging", "baseline (treatment 3)"}
    assert report["truth"]["by_arm"]["baseline (treatment 3)"]["breadth_lift"] == 0
    assert report["n_comparisons"] == 3 and "breadth (engaging vs baseline)" in out
    analysis = pd.read_csv(run / "analysis.csv")
    assert (analysis["breadth_p_holm"] >= analysis["breadth_p_value"]).all()


def test_more_arms_than_traffic_is_a_config_error(runs_dir, capsys, monkeypatch):
    code, err = _main(["ab-test", "more_treatments=[engaging, terse]", "arm_share=0.3", "quality_contexts=20"],
                      capsys, monkeypatch)
    assert code == 2 and "arm_share" in err and "more_treatments" in err and "above 1" in err
