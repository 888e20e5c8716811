"""The schema layer: every record kind round-trips through Parquet and JSONL; bad files fail loudly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rm_lab import io
from rm_lab.schema import KINDS, RecordError, validate_frame

SAMPLES = {
    "character": pd.DataFrame({
        "character_id": ["c1", "c2"], "name": ["Ada", "Bo"],
        "persona": [["likes tea", "speaks softly"], []],
        "instructions": [[{"instruction_id": "punctuation:no_comma", "kwargs": {}}], ["be kind"]],
    }),
    "context": pd.DataFrame({
        "context_id": ["x1", "x2"], "character_id": ["c1", "c1"],
        "history": [[{"role": "user", "content": "hi"}], []], "traffic": ["user", "internal"],
    }),
    "interaction": pd.DataFrame({
        "context_id": ["x1", "x2"], "response": ["hello 😀", "bye"], "policy": ["g0", "g1"],
        "continued": [True, False], "thumb": pd.array([1, None], dtype="Int64"), "depth": [2.0, np.nan],
    }),
    "preference": pd.DataFrame({
        "context_id": ["x1"], "chosen": ["a"], "rejected": ["b"], "source": ["human"], "margin": [0.5],
    }),
    "steer_label": pd.DataFrame({
        "context_id": ["x1", "x2"], "response": ["a", "b"], "instruction_id": ["i", "j"],
        "followed": [True, False], "violation": [False, True],
    }),
    "ab_arm": pd.DataFrame({
        "experiment_id": ["e", "e"], "arm": ["A", "B"], "is_control": [True, False],
        "day": pd.array([None, None], dtype="Int64"), "days": [7, 7], "users": [100, 120],
        "engaged_users": [10, 15], "text": ["head A", None],
    }),
    "label": pd.DataFrame({
        "context_id": ["x1", "x1", "x2"], "response": ["a", "a", ""], "name": ["engaging", "engaging", "engaged"],
        "value": [4.0, 2.0, 1.0], "scale_min": [1.0, 1.0, None], "scale_max": [5.0, 5.0, None],
        "source": ["pe", "pe", None],
    }),
    "head": pd.DataFrame({
        "name": ["engaging", "engaged"], "kind": ["ordinal", "binomial"], "record": ["label", None],
        "levels": pd.array([5, None], dtype="Int64"), "min": [1.0, None],
    }),
    "arm_reply_set": pd.DataFrame({
        "experiment_id": ["e", "e", "e", "e"], "arm": ["A", "A", "B", "B"], "policy": ["g0", "g0", "g1", "g1"],
        "is_control": [True, True, False, False], "context_id": ["x1", "x2", "x1", "x2"],
        "response": ["hi", "yo 😀", "hello", "hey"], "users": [100, 100, 120, 120], "breadth": [0.2, 0.2, 0.25, 0.25],
        "breadth_se": [0.01, 0.01, 0.012, 0.012], "depth": [3.0, 3.0, None, None], "depth_se": [0.1, 0.1, None, None],
    }),
}

# (kind, column, bad value, words expected in the message) — one defect per case
WRONG_TYPE = {"interaction": ("continued", "yes"), "ab_arm": ("users", "many"), "character": ("persona", "x"),
              "context": ("traffic", 3), "preference": ("source", "robot"), "steer_label": ("followed", "no"),
              "label": ("value", "high"), "head": ("kind", "logistic"), "arm_reply_set": ("breadth", "wide")}
NAN_FIELD = {"interaction": "response", "ab_arm": "users", "character": "name", "context": "context_id",
             "preference": "chosen", "steer_label": "response", "label": "value", "head": "kind",
             "arm_reply_set": "breadth_se"}
TEXT_FIELD = {"interaction": "response", "ab_arm": "arm", "character": "name", "context": "character_id",
              "preference": "rejected", "steer_label": "instruction_id", "label": "name", "head": "name",
              "arm_reply_set": "policy"}


def _assert_names(err: RecordError, path, row, field):
    msg = str(err)
    assert str(path) in msg
    if row is not None:
        assert err.row == row and f"row {row}" in msg
    if field is not None:
        assert err.field == field and f"'{field}'" in msg


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _rows(kind):
    return [{k: (None if not isinstance(v, (list, dict)) and pd.isna(v) else v) for k, v in r.items()}
            for r in SAMPLES[kind].astype(object).to_dict("records")]


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("ext", [".parquet", ".jsonl"])
def test_round_trip(tmp_path, kind, ext):
    df = validate_frame(SAMPLES[kind], kind)
    path = io.write_records(df, tmp_path / f"{kind}{ext}", kind)
    back = io.read_records(path, kind)
    assert list(back.columns) == list(df.columns)
    assert len(back) == len(df)
    for c in df.columns:
        for a, b in zip(df[c].tolist(), back[c].tolist()):
            if isinstance(a, float) and np.isnan(a) or a is None or a is pd.NA:
                assert b is None or b is pd.NA or (isinstance(b, float) and np.isnan(b))
            else:
                assert a == b, (c, a, b)
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_json_fields_keep_heterogeneous_kwargs(tmp_path):
    df = SAMPLES["character"].copy()
    df["instructions"] = [[{"instruction_id": "a", "kwargs": {"n": 3}}], [{"instruction_id": "b", "kwargs": {"w": ["x"]}}]]
    back = io.read_records(io.write_records(df, tmp_path / "c.parquet", "character"), "character")
    assert back["instructions"][1][0]["kwargs"] == {"w": ["x"]}


def _parquet(path, df):
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("ext", [".parquet", ".jsonl"])
def test_missing_column(tmp_path, kind, ext):
    col = KINDS[kind].fields[1].name
    rows = _rows(kind)
    for r in rows:
        r.pop(col)
    path = tmp_path / f"bad{ext}"
    if ext == ".jsonl":
        _write_jsonl(path, rows)
    else:
        io.write_records(SAMPLES[kind].drop(columns=[col]), path, kind, validate=False)
    with pytest.raises(RecordError) as e:
        io.read_records(path, kind)
    _assert_names(e.value, path, None, col)
    assert "missing column" in str(e.value)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("ext", [".parquet", ".jsonl"])
@pytest.mark.parametrize("defect", ["wrong_type", "nan", "empty_text"])
def test_bad_value(tmp_path, kind, ext, defect):
    rows = _rows(kind)
    bad_row = len(rows) - 1
    if defect == "wrong_type":
        col, val = WRONG_TYPE[kind]
    elif defect == "nan":
        col, val = NAN_FIELD[kind], float("nan")
    else:
        col, val = TEXT_FIELD[kind], "   "
    rows[bad_row][col] = val
    path = tmp_path / f"bad{ext}"
    if ext == ".jsonl":
        _write_jsonl(path, rows)  # json writes NaN as the NaN token, which Python readers accept
        row = bad_row + 1  # 1-based line numbers
    else:
        if defect == "wrong_type":
            # Parquet columns hold one type: the whole column has the wrong one (e.g. bools saved as text)
            is_str = KINDS[kind].field(col).kind == "str"
            for i, r in enumerate(rows):
                r[col] = i if is_str else str(r[col]).lower()
            bad_row = 0
        io.write_records(pd.DataFrame(rows), path, kind, validate=False)
        row = bad_row
    with pytest.raises(RecordError) as e:
        io.read_records(path, kind)
    _assert_names(e.value, path, row, col)


def test_non_utf8_jsonl(tmp_path):
    path = tmp_path / "interaction.jsonl"
    good = json.dumps(_rows("interaction")[0]).encode()
    bad = json.dumps(_rows("interaction")[1]).encode().replace(b'"bye"', b'"by\xff"')
    path.write_bytes(good + b"\n" + bad + b"\n")
    with pytest.raises(RecordError) as e:
        io.read_records(path, "interaction")
    _assert_names(e.value, path, 2, "response")
    assert "UTF-8" in str(e.value)


def test_non_utf8_parquet(tmp_path):
    df = SAMPLES["interaction"].copy()
    df["response"] = [b"fine", b"by\xff"]  # a binary column: bytes that are not text
    path = tmp_path / "interaction.parquet"
    _parquet(path, df)
    with pytest.raises(RecordError) as e:
        io.read_records(path, "interaction")
    _assert_names(e.value, path, 0, "response")  # a bytes column is not text, from its first row
    assert "expected a string" in str(e.value)


def test_truncated_jsonl(tmp_path):
    path = tmp_path / "steer_label.jsonl"
    _write_jsonl(path, _rows("steer_label"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 25])
    with pytest.raises(RecordError) as e:
        io.read_records(path, "steer_label")
    _assert_names(e.value, path, 2, None)
    assert "truncated" in str(e.value)


def test_truncated_parquet(tmp_path):
    path = io.write_records(SAMPLES["ab_arm"], tmp_path / "ab_arm.parquet", "ab_arm")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordError) as e:
        io.read_records(path, "ab_arm")
    assert str(path) in str(e.value) and "truncated" in str(e.value)  # Parquet keeps no row to name


def test_missing_file(tmp_path):
    with pytest.raises(RecordError, match="no such file"):
        io.read_records(tmp_path / "nope.parquet", "interaction")


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "interaction.parquet"

    def boom(table, where, *a, **k):
        with open(where, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(io.pq, "write_table", boom)
    with pytest.raises(OSError):
        io.write_records(SAMPLES["interaction"], target, "interaction")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = io.write_records(SAMPLES["preference"], tmp_path / "preference.jsonl", "preference")
    before = target.read_bytes()
    bad = SAMPLES["preference"].assign(margin=[object()])  # not JSON serialisable: fails mid-write
    with pytest.raises(TypeError):
        io.write_records(bad, target, "preference", validate=False)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["preference.jsonl"]


def test_invalid_frame_is_not_written(tmp_path):
    bad = SAMPLES["interaction"].assign(response=["ok", ""])
    with pytest.raises(RecordError) as e:
        io.write_records(bad, tmp_path / "interaction.parquet", "interaction")
    _assert_names(e.value, tmp_path / "interaction.parquet", 1, "response")
    assert list(tmp_path.iterdir()) == []
