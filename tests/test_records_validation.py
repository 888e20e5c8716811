"""Records that are impossible, repeated or unreadable are refused with one line naming the file, the
row and the field: A/B arms (counts, arms, controls, days), record keys, held-out contexts checked by
content, and read errors (Parquet text, huge CSV cells, binary files, an output path that is a folder)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rm_lab import io
from rm_lab.evaluate.ab import analyze
from rm_lab.schema import AB_ARM, KINDS, RecordError, validate_frame
from rm_lab.world.ab import ArmQuality, run_ab
from rm_lab.world.engagement import Population


def _main(argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """`rm_lab ARGV` through the real entry point (rm_lab.cli.main): exit status and stderr."""
    from rm_lab import cli

    monkeypatch.setattr(sys, "argv", ["rm_lab", *argv])
    with pytest.raises(SystemExit) as e:
        cli.main()
    return e.value.code or 0, capsys.readouterr().err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _named(e: RecordError, row, field):
    assert (e.row, e.field) == (row, field), str(e)
    assert f"row {row}" in str(e) and f"field '{field}'" in str(e)


# ----------------------------------------------------------------------------------------------
# A/B arms

def _arms(**cols) -> pd.DataFrame:
    """A valid 3-arm text test (impressions/clicks), with columns replaced by `cols`."""
    base = {"experiment_id": ["t", "t", "t"], "arm": ["a", "b", "c"], "is_control": [True, False, False],
            "days": [1, 1, 1], "users": [1000, 1000, 1000], "engaged_users": [10, 20, 30]}
    base.update(cols)
    return pd.DataFrame(base)


def _sim_arms(per_day=True, seed=0) -> pd.DataFrame:
    c, t = ArmQuality("control", np.array([-0.2, -0.1, -0.1])), ArmQuality("treat", np.array([-0.1, 0.0, 0.0]))
    return run_ab(c, t, Population(), 20_000, 0.1, 7, np.random.default_rng(seed), per_day=per_day)


def _jsonl(path: Path, df: pd.DataFrame) -> Path:
    rows = [{k: (None if not isinstance(v, (list, dict)) and pd.isna(v) else v) for k, v in r.items()}
            for r in df.astype(object).to_dict("records")]
    path.write_text("".join(json.dumps(r, default=int) + "\n" for r in rows), encoding="utf-8")
    return path


def _totals(df):
    return df[df["day"].isna()].reset_index(drop=True)


# (name, frame, 0-based row of the defect, field named, words in the message)
AB_DEFECTS = [
    ("clicks above impressions", _arms(engaged_users=[10, 4950, 30], users=[1000, 100, 1000]), 1, "engaged_users",
     "engaged_users <= users"),
    ("negative count", _arms(engaged_users=[10, -1, 30]), 1, "engaged_users", ">= 0"),
    ("zero users", _arms(users=[1000, 0, 1000], engaged_users=[10, 0, 30]), 1, "users", ">= 1"),
    ("messages below engaged", _arms(messages=[50.0, 5.0, 60.0]), 1, "messages", "messages >= engaged_users"),
    ("duplicated arm id", _arms(arm=["a", "b", "b"]), 2, "arm", "unique (experiment_id, day, arm)"),
    ("arm compared with itself", _arms(arm=["a", "a", "c"]), 1, "arm", "arm='a' too"),
    ("single arm", _arms().iloc[:1], 0, "arm", "single arm"),
    ("no control", _arms(is_control=[False, False, False]), 0, "is_control", "exactly one control"),
    ("two controls", _arms(is_control=[True, True, False]), 1, "is_control", "exactly one control"),
    ("test lengths differ", _arms(days=[1, 2, 1]), 1, "days", "one test length"),
    ("allocations above 1", _arms(allocation=[0.5, 0.4, 0.3]), 2, "allocation", "at most 1"),
    ("day beyond the test", _arms(day=pd.array([None, None, 3], dtype="Int64"), days=[2, 2, 2]), 2, "day",
     "day < days"),
]


@pytest.mark.parametrize("name,df,row,field,words", AB_DEFECTS, ids=[d[0] for d in AB_DEFECTS])
def test_impossible_ab_arms_are_refused(name, df, row, field, words, tmp_path):
    with pytest.raises(RecordError) as e:
        analyze(df)
    _named(e.value, row, field)
    assert words in str(e.value)
    path = _jsonl(tmp_path / "ab_arm.jsonl", df)  # the same from a file: JSONL rows are line numbers
    with pytest.raises(RecordError) as e:
        io.read_records(path, "ab_arm")
    _named(e.value, row + 1, field)
    assert str(path) in str(e.value)


def test_a_multi_day_test_without_user_days_is_not_analysed(tmp_path, runs_dir, capsys, monkeypatch):
    df = _arms(days=[7, 7, 7])  # a valid record of totals, but breadth needs active user-days
    path = io.write_records(df, tmp_path / "arms.jsonl", "ab_arm")
    code, err = _main(["ab-test", f"records={path}"], capsys, monkeypatch)  # was: an empty table, exit 0
    line = _one_error_line(err)
    assert code == 2 and f"file {path}, row 1, field 'engaged_user_days'" in line and "7-day test" in line


def test_mixed_per_day_and_whole_test_rows():
    arms = _sim_arms()
    mixed = arms[~(arms["is_control"] & arms["day"].isna())].reset_index(drop=True)  # control: per-day rows only
    with pytest.raises(RecordError, match="per-day and whole-test rows are mixed") as e:
        analyze(mixed)
    assert e.value.field == "day" and e.value.row == 0
    with pytest.raises(RecordError, match="no whole-test rows"):
        analyze(arms[arms["day"].notna()])


def test_per_day_rows_must_add_up_to_the_whole_test():
    arms = _sim_arms()
    assert len(analyze(arms)) == 1  # the simulator's rows add up
    bad = arms.copy()
    i = bad.index[(bad["day"] == 3) & ~bad["is_control"]][0]
    bad.loc[i, "messages"] += 5
    with pytest.raises(RecordError) as e:
        analyze(bad)
    assert e.value.field == "messages" and "sum of the arm's per-day messages" in str(e.value)
    bad = arms.copy()
    bad.loc[i, "is_control"] = True  # a per-day row that contradicts its arm
    with pytest.raises(RecordError, match="as in the arm's whole-test row"):
        analyze(bad)


def test_user_moments_must_give_a_variance():
    tot = _totals(_sim_arms())
    assert analyze(tot)["breadth_se_log"].iloc[0] > 0
    bad = tot.copy()
    bad.loc[1, "active_days_sq"] = bad.loc[1, "engaged_user_days"] * 1.01  # sum a^2 < (sum a)^2 / n
    with pytest.raises(RecordError) as e:
        analyze(bad)
    _named(e.value, 1, "active_days_sq")


def test_valid_arms_still_analyse(tmp_path):
    res = analyze(_arms())
    assert list(res["treatment"]) == ["b", "c"] and res["breadth_lift"].iloc[0] == pytest.approx(1.0)
    from rm_lab.world.report import ab_table

    no_clicks = analyze(_arms(engaged_users=[0, 20, 30]))  # possible, but the lift is undefined:
    table = ab_table(no_clicks)  # shown as such, never dropped into an empty table
    assert table.count("breadth (") == 2 and "n/a" in table and "nan%" not in table
    arms = _sim_arms()
    back = io.read_records(io.write_records(arms, tmp_path / "ab_arm.parquet", "ab_arm"), "ab_arm")
    pd.testing.assert_frame_equal(analyze(back), analyze(arms))


def test_real_upworthy_tests_pass_the_checks(shared_data):
    from rm_lab.sources import upworthy

    arms = upworthy.load(shared_data / "upworthy")["ab_arm"]  # validated as ab_arm records inside
    assert arms["experiment_id"].nunique() == 4216 and arms["is_control"].sum() == 4216


CLI_DEFECTS = [d for d in AB_DEFECTS if d[0] in ("clicks above impressions", "arm compared with itself",
                                                   "single arm", "zero users", "two controls", "no control")]


@pytest.mark.parametrize("name,df,row,field,words", CLI_DEFECTS, ids=[d[0] for d in CLI_DEFECTS])
def test_ab_test_records_exit_2_with_one_line(name, df, row, field, words, tmp_path, runs_dir, capsys,
                                              monkeypatch):
    path = _jsonl(tmp_path / "arms.jsonl", df)
    code, err = _main(["ab-test", f"records={path}"], capsys, monkeypatch)
    line = _one_error_line(err)
    assert code == 2 and f"file {path}, row {row + 1}, field '{field}'" in line and words in line
    assert not (runs_dir / "ab-test").exists() or not any((runs_dir / "ab-test").iterdir())


@pytest.mark.parametrize("setting,key", [("arm_share=2", "arm_share"), ("eligible_users=-5", "eligible_users"),
                                         ("control=nosuch", "control"), ("days=0", "days")])
def test_ab_test_bad_settings_blame_the_setting(setting, key, runs_dir, capsys, monkeypatch):
    code, err = _main(["ab-test", setting, "quality_contexts=20"], capsys, monkeypatch)
    line = _one_error_line(err)
    assert code == 2 and key in line and "arms.parquet" not in line


def test_simulated_arm_without_users_blames_the_settings(monkeypatch):
    from rm_lab.config import ConfigError
    from rm_lab.world import ab

    cfg = ab.ABConfig(eligible_users=10, arm_share=0.1, quality_contexts=20)
    monkeypatch.setattr(ab, "run_ab", lambda *a, **k: _arms(users=[1000, 0, 1000], engaged_users=[1, 0, 1]))
    with pytest.raises(ConfigError, match="eligible_users=10, arm_share=0.1") as e:
        ab.simulate_ab(cfg)
    assert "arms.parquet" not in str(e.value)


def test_ingest_limit_keeps_whole_experiments(tmp_path, runs_dir):
    from rm_lab.commands.ingest import load_records

    df = pd.concat([_arms(), _arms(experiment_id=["u"] * 3)], ignore_index=True)
    path = io.write_records(df, tmp_path / "ab_arm.parquet", "ab_arm")
    got = load_records(path, None, limit=1)["ab_arm"]
    assert list(got["arm"]) == ["a", "b", "c"] and set(got["experiment_id"]) == {"t"}


# ----------------------------------------------------------------------------------------------
# identity: keys

def _contexts(ids=("x1", "x2", "x3")) -> pd.DataFrame:
    return pd.DataFrame({"context_id": list(ids), "character_id": "c1",
                         "history": [[{"role": "user", "content": f"hi {i}"}] for i in range(len(ids))],
                         "traffic": "user"})


def _characters(ids=("c1",)) -> pd.DataFrame:
    return pd.DataFrame({"character_id": list(ids), "name": "Ada", "persona": [["likes tea"]] * len(ids),
                         "instructions": [[]] * len(ids)})


def test_every_kind_declares_its_key_fields():
    for k in KINDS.values():
        assert set(k.key) <= set(k.columns), k.name
    assert KINDS["context"].key == ("context_id",) and KINDS["character"].key == ("character_id",)
    assert set(KINDS["ab_arm"].key) == {"experiment_id", "arm", "day"}


@pytest.mark.parametrize("ext", [".parquet", ".jsonl"])
def test_duplicate_keys_are_refused_where_read(tmp_path, ext):
    path = tmp_path / f"context{ext}"
    io.write_records(_contexts(("x1", "x2", "x1")), path, "context", validate=False)
    with pytest.raises(RecordError) as e:
        io.read_records(path, "context")
    row = 2 if ext == ".parquet" else 3  # Parquet: 0-based row; JSONL: line number
    _named(e.value, row, "context_id")
    assert str(path) in str(e.value) and f"row {0 if ext == '.parquet' else 1} has it too" in str(e.value)
    with pytest.raises(RecordError):
        io.write_records(_contexts(("x1", "x1")), tmp_path / "out.parquet", "context")
    with pytest.raises(RecordError, match="character_id"):
        validate_frame(_characters(("c1", "c1")), "character")


def test_ab_key_includes_the_day():
    arms = _sim_arms()
    dup = pd.concat([arms, arms.iloc[[3]]], ignore_index=True)  # a per-day row twice
    with pytest.raises(RecordError, match="unique") as e:
        analyze(dup)
    assert e.value.row == len(arms) and e.value.field == "arm"


def test_duplicates_fail_in_ingest(tmp_path, runs_dir, capsys, monkeypatch):
    path = tmp_path / "context.jsonl"
    io.write_records(_contexts(("x1", "x2", "x2")), path, "context", validate=False)
    code, err = _main(["ingest", "records", str(path)], capsys, monkeypatch)
    assert code == 2 and f"file {path}, row 3, field 'context_id'" in _one_error_line(err)


def test_a_folder_with_two_files_of_one_kind_is_ambiguous(tmp_path):
    from rm_lab.commands.ingest import load_records

    io.write_records(_contexts(), tmp_path / "context.parquet", "context")
    io.write_records(_contexts(), tmp_path / "context.jsonl", "context")
    for read in (lambda: io.read_record_folder(tmp_path), lambda: load_records(tmp_path, None, None)):
        with pytest.raises(RecordError, match="one context file"):
            read()


def test_duplicates_fail_in_reading_folders_and_training(tmp_path):
    from rm_lab.reward.data import build_reward_data, read_record_folder
    from rm_lab.schema import Records

    io.write_records(_characters(), tmp_path / "character.parquet", "character")
    io.write_records(_contexts(("x1", "x2", "x1")), tmp_path / "context.parquet", "context", validate=False)
    with pytest.raises(RecordError, match="context_id"):
        read_record_folder(tmp_path)
    labels = pd.DataFrame({"context_id": ["x1", "x2"], "response": ["a", "b"], "policy": "p",
                           "continued": [True, False]})
    recs = Records({"character": _characters(), "context": _contexts(("x1", "x2", "x1")), "interaction": labels})
    with pytest.raises(RecordError, match="a unique context_id"):  # in-memory records handed to training
        build_reward_data(recs)


def test_check_keys_names_a_missing_nullable_key_column_as_null():
    from rm_lab.schema import check_keys

    tot = _arms().drop(columns=[])  # no `day` column: every row is a whole-test row
    check_keys(tot, AB_ARM)
    with pytest.raises(RecordError, match="day=None"):
        check_keys(_arms(arm=["a", "b", "a"]), AB_ARM)


# ----------------------------------------------------------------------------------------------
# identity: held-out contexts by content

def test_heldout_fingerprints_follow_content_not_id(tmp_path):
    from rm_lab.reward.data import check_heldout_content, context_fingerprints
    from rm_lab.schema import Records

    ctx, chars = _contexts(), _characters()
    fp = context_fingerprints(ctx, chars, ["x1", "x2"])
    # the same records after a Parquet round trip: same fingerprints
    for k, df in (("context", ctx), ("character", chars)):
        io.write_records(df, tmp_path / f"{k}.parquet", k)
    back = io.read_record_folder(tmp_path)
    assert context_fingerprints(back["context"], back["character"], ["x1", "x2"]) == fp
    split = {"heldout_contexts": ["x1", "x2"], "heldout_fingerprints": fp}
    check_heldout_content(split, back, str(tmp_path), say=lambda m: None)
    # another data set whose ids collide: other history, or another character card
    other = ctx.copy()
    other.at[1, "history"] = [{"role": "user", "content": "something else"}]
    with pytest.raises(RecordError, match="held out under this id") as e:
        check_heldout_content(split, Records({"context": other, "character": chars}), "other", say=lambda m: None)
    assert e.value.value == "x2" and e.value.row == 1 and e.value.field == "context_id"
    renamed = chars.assign(persona=[["hates tea"]])
    with pytest.raises(RecordError, match="1 of the 1 held-out ids found"):
        check_heldout_content(split, Records({"context": ctx.iloc[:1], "character": renamed}), "x", say=lambda m: None)


@pytest.mark.models
def test_eval_rm_heldout_refuses_a_world_whose_ids_collide(backbone, tmp_path):
    from rm_helpers import tiny_world

    from rm_lab.reward.evaluate import EvalRMConfig, evaluate_reward_model
    from rm_lab.reward.train import TrainRMConfig, train_reward_model
    from rm_lab.world.simulate import WorldConfig, simulate

    world = tiny_world(seed=0, n=40)
    cfg = TrainRMConfig(backbone=str(backbone), epochs=1, pairwise=False, hidden=16, batch_size=32,
                        max_length=64, cache_dir=str(tmp_path / "cache"), val_fraction=0.3)
    run = tmp_path / "rm"
    train_reward_model(cfg, run, records=world, say=lambda m: None)
    split = json.loads((run / "split.json").read_text())
    assert set(split["heldout_fingerprints"]) == set(split["heldout_contexts"]) and split["heldout_contexts"]

    def write(records, folder):
        for k, df in records.frames.items():
            io.write_records(df, folder / f"{k}.parquet", k)
        return folder

    same = write(world, tmp_path / "same")
    ev = EvalRMConfig(model=str(run), data=str(same), n_counterfactual=4, cache_dir=str(tmp_path / "cache"))
    assert evaluate_reward_model(ev, tmp_path / "ev1", say=lambda m: None)["n_items"] > 0
    # same seed, other characters: the context ids are the same strings, the contexts are not
    other = simulate(WorldConfig(seed=0, n_characters=3, n_contexts=40, n_preference_contexts=40))
    assert set(split["heldout_contexts"]) & set(other["context"]["context_id"])
    folder = write(other, tmp_path / "other")
    with pytest.raises(RecordError, match="held out under this id") as e:
        evaluate_reward_model(EvalRMConfig(model=str(run), data=str(folder), n_counterfactual=4,
                                           cache_dir=str(tmp_path / "cache")), tmp_path / "ev2", say=lambda m: None)
    assert str(folder) in str(e.value) and e.value.field == "context_id"


# ----------------------------------------------------------------------------------------------
# messages that blame the right place

def _bad_utf8_parquet(path: Path, n: int = 5, bad_row: int = 3, row_group: int | None = None) -> Path:
    vals = [f"reply {i}".encode() for i in range(n)]
    vals[bad_row] = b"caf\xe9 au lait"  # Latin-1, not UTF-8
    raw = pa.array(vals, type=pa.binary())
    text = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())  # a string column holding bad bytes
    table = pa.table({"context_id": [f"x{i}" for i in range(n)], "response": text, "policy": ["p"] * n,
                      "continued": [True] * n})
    pq.write_table(table, path, row_group_size=row_group)
    return path


@pytest.mark.parametrize("n,bad_row,row_group", [(5, 3, None), (5000, 3777, 1000)])
def test_parquet_text_that_is_not_utf8_names_row_and_field(tmp_path, n, bad_row, row_group):
    path = _bad_utf8_parquet(tmp_path / "interaction.parquet", n, bad_row, row_group)
    with pytest.raises(RecordError) as e:
        io.read_records(path, "interaction")
    _named(e.value, bad_row, "response")
    assert str(path) in str(e.value) and "UTF-8" in str(e.value) and e.value.value == b"caf\xe9 au lait"


def test_parquet_errors_reach_the_cli_as_one_line(tmp_path, runs_dir, capsys, monkeypatch):
    path = _bad_utf8_parquet(tmp_path / "interaction.parquet")
    code, err = _main(["ingest", "records", str(path)], capsys, monkeypatch)
    assert code == 2 and f"file {path}, row 3, field 'response'" in _one_error_line(err)


def _pe_csv(path: Path, reply: str) -> Path:
    path.write_text(f'query,response,human_score\nhello there,"{reply}",3\nhow are you,fine,4\n', encoding="utf-8")
    return path


def test_a_10_mb_csv_field_is_read_whole(tmp_path):
    from rm_lab.sources import predictive_engagement

    big = "word " * (2 * 2**20)  # 10 MiB in one quoted cell (Python's csv stops at 128 KiB by default)
    recs = predictive_engagement.load(_pe_csv(tmp_path / "scores.csv", big))
    assert recs["engagement"]["response"].iloc[0] == big
    import csv

    assert csv.field_size_limit() == 131072  # the process-wide limit is left as it was


def test_a_csv_field_beyond_the_bound_is_named(tmp_path, monkeypatch):
    from rm_lab.sources import _common, predictive_engagement

    monkeypatch.setattr(_common, "MAX_FIELD_CHARS", 1000)
    path = _pe_csv(tmp_path / "scores.csv", "x" * 1001)
    with pytest.raises(RecordError) as e:
        predictive_engagement.load(path)
    _named(e.value, 2, "response")
    assert "at most 1,000 characters" in str(e.value)


def test_a_jsonl_line_beyond_the_bound_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "MAX_LINE_BYTES", 200)
    path = tmp_path / "context.jsonl"
    io.write_records(_contexts(), path, "context")
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace("hi 1", "y" * 300)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError) as e:
        io.read_records(path, "context")
    assert e.value.row == 2 and "at most 200 bytes" in str(e.value)


def test_a_jsonl_line_that_is_not_an_object_names_the_line(tmp_path):
    from rm_lab.sources._common import load_jsonl

    path = tmp_path / "context.jsonl"
    io.write_records(_contexts(), path, "context")
    path.write_text(path.read_text() + '["not", "an", "object"]\n')
    for read in (lambda: io.read_records(path, "context"), lambda: load_jsonl(path)):
        with pytest.raises(RecordError, match="a JSON object per line") as e:
            read()
        assert e.value.row == 4


@pytest.mark.parametrize("name,source", [("interaction.jsonl", "records"), ("interaction.parquet", "records"),
                                         ("scores.csv", "predictive-engagement"), ("tests.parquet", "upworthy"),
                                         ("input_data.jsonl", "ifeval")])
def test_binary_files_given_as_records_name_the_file(name, source, tmp_path, runs_dir, capsys, monkeypatch):
    path = tmp_path / name
    path.write_bytes(Path(sys.executable).read_bytes()[:4096])
    code, err = _main(["ingest", source, str(path)], capsys, monkeypatch)
    line = _one_error_line(err)
    assert code == 2 and f"file {path}" in line
    assert ("binary file" in line) if path.suffix != ".parquet" else ("not Parquet" in line)


def test_an_output_path_that_is_a_folder_is_named(tmp_path, capsys, monkeypatch):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "Say hi", "response": "hi", "instruction_id_list": ["punctuation:no_comma"],
                               "kwargs": [{}]}) + "\n")
    folder = tmp_path / "verdicts"
    folder.mkdir()
    code, err = _main(["eval-steer", str(src), "--out", str(folder)], capsys, monkeypatch)
    assert code == 2 and f"file {folder}" in _one_error_line(err) and "folder" in err
    assert list(folder.iterdir()) == []
    under_file = src / "verdicts.jsonl"  # a file where a folder should be
    code, err = _main(["eval-steer", str(src), "--out", str(under_file)], capsys, monkeypatch)
    assert code == 2 and "is a file" in _one_error_line(err)
    with pytest.raises(RecordError, match="not a folder"):
        io.write_json(folder, {"a": 1})


# ----------------------------------------------------------------------------------------------
# identity: references between the kinds of one folder

def _label_folder(folder: Path, ext: str = ".parquet", **replace) -> Path:
    """A valid folder of every kind that refers to another (contexts x1..x3 of character c1), with the
    columns of `replace` ({kind: {column: values}}) swapped in after the valid files are made."""
    frames = {
        "character": _characters(), "context": _contexts(),
        "interaction": pd.DataFrame({"context_id": ["x1", "x2", "x3"], "response": ["a", "b", "c"], "policy": "p",
                                     "continued": [True, False, True]}),
        "preference": pd.DataFrame({"context_id": ["x1", "x2"], "chosen": ["a", "b"], "rejected": ["z", "y"],
                                    "source": "human"}),
        "steer_label": pd.DataFrame({"context_id": ["x1", "x3"], "response": ["a", "c"], "instruction_id": "i",
                                     "followed": [True, False], "violation": [False, True]}),
        "label": pd.DataFrame({"context_id": ["x1", "x2", "x3"], "response": ["a", "b", "c"], "name": "engaging",
                               "value": [1.0, 3.0, 5.0]}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for k, df in frames.items():
        for col, values in replace.get(k, {}).items():
            df = df.assign(**{col: values})
        io.write_records(df, folder / f"{k}{ext if k in replace else '.parquet'}", k)
    return folder


def test_every_reference_names_the_key_of_a_declared_kind():
    refs = {(k.name, r.field, r.kind) for k in KINDS.values() for r in k.references}
    assert refs == {("context", "character_id", "character"), ("interaction", "context_id", "context"),
                    ("preference", "context_id", "context"), ("steer_label", "context_id", "context"),
                    ("label", "context_id", "context"), ("arm_reply_set", "context_id", "context")}
    for k in KINDS.values():
        for r in k.references:
            assert r.field in k.columns and KINDS[r.kind].key == (r.target,), (k.name, r)
            assert list(KINDS).index(r.kind) < list(KINDS).index(k.name)  # drop_dangling: referred-to first


DANGLING = [("interaction", "context_id", ["x1", "x9", "x3"], 1, "context"),
            ("preference", "context_id", ["x1", "x9"], 1, "context"),
            ("steer_label", "context_id", ["x1", "x9"], 1, "context"),
            ("label", "context_id", ["x1", "x2", "x9"], 2, "context"),
            ("context", "character_id", ["c1", "c1", "c9"], 2, "character")]


@pytest.mark.parametrize("ext", [".parquet", ".jsonl"])
@pytest.mark.parametrize("kind,field,values,pos,target", DANGLING)
def test_a_dangling_reference_is_named_where_a_folder_is_read(kind, field, values, pos, target, ext, tmp_path):
    from rm_lab.curate.pipeline import load_folder
    from rm_lab.reward.data import read_record_folder, read_sources

    folder = _label_folder(tmp_path / "d", ext, **{kind: {field: values}})
    row = pos if ext == ".parquet" else pos + 1  # Parquet: 0-based row; JSONL: line number
    for read in (io.read_record_folder, read_record_folder, load_folder, read_sources):
        with pytest.raises(RecordError) as e:
            read(folder)
        _named(e.value, row, field)
        msg = str(e.value)
        assert e.value.path == str(folder / f"{kind}{ext}") and e.value.value == values[pos]
        assert f"in {folder / f'{target}.parquet'}" in msg and f"no {target} record has it" in msg, msg


def test_dangling_references_exit_2_in_every_command_that_reads_a_folder(tmp_path, runs_dir, capsys, monkeypatch):
    folder = _label_folder(tmp_path / "d", ".jsonl", label={"context_id": ["x1", "x7", "x7"]})
    want = f"file {folder / 'label.jsonl'}, row 2, field 'context_id': got 'x7'"
    for argv in (["ingest", "records", str(folder)], ["curate", f"input={folder}"], ["train-rm", f"data={folder}"]):
        code, err = _main(argv, capsys, monkeypatch)
        line = _one_error_line(err)
        assert code == 2 and want in line and str(folder / "context.parquet") in line, (argv, line)
        assert "2 label rows name 1 missing context" in line


def test_records_handed_to_training_in_memory_are_checked(tmp_path):
    from rm_lab.reward.data import build_reward_data
    from rm_lab.schema import Records

    labels = pd.DataFrame({"context_id": ["x1", "x2"], "response": ["a", "b"], "policy": "p",
                           "continued": [True, False]})
    ok = Records({"character": _characters(), "context": _contexts(), "interaction": labels})
    assert len(build_reward_data(ok)) == 2
    orphan = Records({"character": _characters(("c2",)), "context": _contexts(), "interaction": labels})
    with pytest.raises(RecordError) as e:  # a context of a missing character: the old code trained on
        build_reward_data(orphan)
    _named(e.value, 0, "character_id")
    assert e.value.value == "c1" and "among those given" in str(e.value)


def test_each_source_of_a_multi_source_set_is_checked_on_its_own(tmp_path):
    """A label of source b whose context only source a has is b's error, not resolved by merging."""
    from rm_lab.reward.data import build_reward_data, read_sources

    a = _label_folder(tmp_path / "a")
    b = tmp_path / "b"
    b.mkdir()
    io.write_records(_characters(), b / "character.parquet", "character")
    io.write_records(_contexts(("y1", "y2")), b / "context.parquet", "context")
    io.write_records(pd.DataFrame({"context_id": ["y1", "x3"], "response": ["r", "s"], "name": "engaging",
                                   "value": [2.0, 4.0]}), b / "label.parquet", "label")
    with pytest.raises(RecordError) as e:
        read_sources([a, b])
    _named(e.value, 1, "context_id")
    assert e.value.path == str(b / "label.parquet") and str(b / "context.parquet") in str(e.value)
    from rm_lab.reward.data import Source
    from rm_lab.schema import Records

    mem = [Source("a", io.read_record_folder(a)), Source("b", Records({k: io.read_records(b / f"{k}.parquet", k)
                                                                       for k in ("character", "context", "label")}))]
    with pytest.raises(RecordError, match="label.parquet, row 1"):
        build_reward_data(mem)


def test_ingest_limit_drops_what_refers_past_the_limit(tmp_path, runs_dir):
    from rm_lab.commands.ingest import IngestConfig, ingest, load_records
    from rm_lab.schema import check_references

    folder = _label_folder(tmp_path / "d", ".jsonl", label={"context_id": ["x3", "x1", "x2"]},
                           steer_label={"context_id": ["x1", "x3"]})
    got = load_records(folder, None, limit=2)  # contexts x1, x2: the labels of x3 go, never dangle
    assert list(got["label"]["context_id"]) == ["x1"] and list(got["steer_label"]["context_id"]) == ["x1"]
    dropped = got["dropped"]
    assert set(zip(dropped["source_file"], dropped["row"])) == {("label.jsonl", 1), ("steer_label.jsonl", 2)}
    assert dropped["reason"].str.contains("context").all()
    _, report = ingest("records", folder, IngestConfig(limit=2, out=str(tmp_path / "out")))
    check_references(io.read_record_folder(tmp_path / "out").frames)
    assert report["counts"]["label"] == 1 and sum(d["n"] for d in report["dropped"]) == 2


def test_curate_never_writes_a_label_of_a_context_it_removed(tmp_path):
    """Labels pass through curate untouched; a context removed as a duplicate takes its labels with it."""
    from rm_lab.curate.pipeline import CurateConfig, curate
    from rm_lab.schema import Records, check_references

    ctx = _contexts(("x1", "x2", "x3")).assign(history=[[{"role": "user", "content": "the same words here"}]] * 2
                                                + [[{"role": "user", "content": "something else entirely"}]])
    labels = pd.DataFrame({"context_id": ["x1", "x2", "x3"], "response": ["a", "b", "c"], "name": "engaging",
                           "value": [1.0, 2.0, 3.0]})
    out, report = curate(Records({"character": _characters(), "context": ctx, "label": labels}),
                         CurateConfig(scrub=False, pair_filter=False, diversity=False))
    assert list(out["context"]["context_id"]) == ["x1", "x3"]  # x2 repeats x1's history
    check_references(out.frames)
    assert list(out["label"]["context_id"]) == ["x1", "x3"] and report["cascade"]["label_removed"] == 1


def test_reference_check_is_vectorised():
    """400k references against 100k contexts: a hash-set lookup per column, not a Python loop per row."""
    import time

    from rm_lab.schema import check_references

    ids = [f"ctx{i}" for i in range(100_000)]
    frames = {"context": pd.DataFrame({"context_id": pd.Series(ids, dtype="str")}),
              "label": pd.DataFrame({"context_id": pd.Series(ids * 4, dtype="str")})}
    t0 = time.perf_counter()
    check_references(frames)
    assert time.perf_counter() - t0 < 5.0  # ~0.1 s on a loaded 2-core machine; a per-row loop takes far longer
    frames["label"].loc[399_999, "context_id"] = "gone"
    with pytest.raises(RecordError, match="1 label row names 1 missing context"):
        check_references(frames)
