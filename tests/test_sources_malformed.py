"""Every loader on broken input: a RecordError naming the file, the row and the field, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rm_lab.schema import RecordError
from rm_lab.sources import convai2, ifeval, predictive_engagement, upworthy

DEFECTS = ["missing_column", "wrong_type", "nan", "empty_text", "non_utf8", "truncated"]


def check(err: RecordError, path: Path, row, field):
    msg = str(err)
    assert str(path) in msg, msg
    if row is not None:
        assert err.row == row and f"row {row}" in msg, msg
    if field is not None:
        assert err.field == field and f"field '{field}'" in msg, msg


# ----------------------------------------------------------------------------------------------
# Upworthy (Parquet; rows are 0-based)

def _upworthy_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "clickability_test_id": ["t1", "t1", "t2", "t2"],
        "headline": ["A", "B", "C", "D"], "lede": ["<p>x</p>"] * 4, "excerpt": ["e", None, "e", "e"],
        "impressions": [100, 110, 90, 95], "clicks": [5, 7, 3, 4], "significance": [1.0, 90.0, 2.0, 3.0],
        "winner": [False, True, False, False], "first_place": [False, True, True, False],
        "test_week": [201401] * 4, "eyecatcher_id": ["i1"] * 4,
    })


def test_upworthy_valid(tmp_path):
    p = tmp_path / "u.parquet"
    _upworthy_frame().to_parquet(p)
    arms = upworthy.load(p)["ab_arm"]
    assert arms["is_control"].tolist() == [True, False, True, False]
    assert arms["users"].tolist() == [100, 110, 90, 95]


@pytest.mark.parametrize("defect", DEFECTS)
def test_upworthy(tmp_path, defect):
    df = _upworthy_frame()
    p = tmp_path / "upworthy.parquet"
    row, field = 2, None
    if defect == "missing_column":
        df, row, field = df.drop(columns=["clicks"]), 0, "clicks"
    elif defect == "wrong_type":
        df["impressions"] = ["100", "110", "many", "95"]
        field = "impressions"
    elif defect == "nan":
        df["clicks"] = [5, 7, float("nan"), 4]
        field = "clicks"
    elif defect == "empty_text":
        df.loc[2, "headline"] = "  "
        field = "headline"
    elif defect == "non_utf8":
        df["headline"] = [b"A", b"B", b"C\xff", b"D"]
        field = "headline"
    if defect == "truncated":
        df.to_parquet(p)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) * 2 // 3])
        row = None
    else:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), p)
    with pytest.raises(RecordError) as e:
        upworthy.load(p)
    check(e.value, p, row, field)
    if defect == "truncated":  # Parquet keeps its schema at the end: no row or field survives a cut
        assert "truncated" in str(e.value)
    if defect == "non_utf8":
        assert "UTF-8" in str(e.value)


def test_upworthy_more_clicks_than_impressions(tmp_path):
    df = _upworthy_frame()
    df.loc[1, "clicks"] = 500
    p = tmp_path / "u.parquet"
    df.to_parquet(p)
    with pytest.raises(RecordError) as e:
        upworthy.load(p)
    check(e.value, p, 1, "clicks")


# ----------------------------------------------------------------------------------------------
# ConvAI2 (JSON lists; row = 0-based dialogue index, field = path inside the dialogue)

def _dialogues() -> list[dict]:
    return [
        {"dialog": [{"id": 0, "sender": "participant1", "text": "hi", "evaluation_score": None, "sender_class": "Human"},
                    {"id": 1, "sender": "participant2", "text": "hello! i love tea", "evaluation_score": 1,
                     "sender_class": "Bot"},
                    {"id": 2, "sender": "participant1", "text": "nice", "evaluation_score": None,
                     "sender_class": "Human"}],
         "bot_profile": ["i love tea."], "user_profile": ["i run."], "eval_score": 4, "profile_match": 1,
         "participant1_id": {"class": "User", "user_id": "u"}, "participant2_id": {"class": "Bot", "user_id": "Bot 7"}},
        {"dialog_id": "0xab", "dialog": [{"id": 0, "sender": "participant1", "text": "yo"},
                                         {"id": 1, "sender": "participant2", "text": "hey there"},
                                         {"id": 2, "sender": "participant1", "text": "bye"}],
         "eval_score": None, "profile_match": ""},
        {"dialog_id": "0xcd", "dialog": [{"id": 0, "sender": "participant1", "text": "anyone?"}],
         "eval_score": 1, "profile_match": 0},
    ]


def _dump(p: Path, obj) -> None:
    p.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def test_convai2_valid(tmp_path):
    p = tmp_path / "chats.json"
    _dump(p, _dialogues())
    r = convai2.load(p)
    inter = r["interaction"]
    assert inter["thumb"].iloc[0] == 1 and pd.isna(inter["thumb"].iloc[1])
    assert inter["continued"].tolist() == [True, True]
    assert inter["policy"].tolist() == ["Bot 7", "convai2:chats"]
    assert r["dropped"][["row", "reason"]].values.tolist() == [[2, "no bot turn"]]
    assert r["context"]["history"].iloc[0] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("defect", DEFECTS)
def test_convai2(tmp_path, defect):
    d = _dialogues()
    p = tmp_path / "data_intermediate.json"
    row, field = 1, None
    if defect == "missing_column":
        del d[1]["dialog"][1]["text"]
        field = "dialog[1].text"
    elif defect == "wrong_type":
        d[1]["eval_score"] = "great"
        field = "eval_score"
    elif defect == "nan":
        d[1]["eval_score"] = float("nan")  # json writes the NaN token
        field = "eval_score"
    elif defect == "empty_text":
        d[1]["dialog"][2]["text"] = " "
        field = "dialog[2].text"
    if defect == "non_utf8":
        d[1]["dialog"][1]["text"] = "MARK"
        p.write_bytes(json.dumps(d).encode().replace(b"MARK", b"caf\xe9"))
        field = "dialog[1].text"
    elif defect == "truncated":
        text = json.dumps(d, indent=1)
        cut = text.index('"hey there"') + 5
        p.write_text(text[:cut], encoding="utf-8")
        field = "text"  # the key the cut fell in
    else:
        _dump(p, d)
    with pytest.raises(RecordError) as e:
        convai2.load(p)
    check(e.value, p, row, field)
    if defect == "truncated":
        assert "truncated" in str(e.value)


def test_convai2_folder_names_the_bad_file(tmp_path):
    _dump(tmp_path / "a.json", _dialogues())
    bad = _dialogues()
    bad[0]["dialog"][0]["sender_class"] = "Alien"
    _dump(tmp_path / "b.json", bad)
    with pytest.raises(RecordError) as e:
        convai2.load(tmp_path)
    check(e.value, tmp_path / "b.json", 0, "dialog[0].sender_class")


# ----------------------------------------------------------------------------------------------
# IFEval (JSONL; row = 1-based line)

def _ifeval_folder(tmp: Path) -> dict[str, list[dict]]:
    prompts = [
        {"key": 1, "prompt": "Write a poem without commas.", "instruction_id_list": ["punctuation:no_comma"],
         "kwargs": [{}]},
        {"key": 2, "prompt": "Write 3 bullets.", "instruction_id_list": ["detectable_format:number_bullet_lists",
                                                                           "change_case:english_lowercase"],
         "kwargs": [{"num_bullets": 3}, {}]},
        {"key": 3, "prompt": "Say hi in 5 words.", "instruction_id_list": ["length_constraints:number_words"],
         "kwargs": [{"relation": "less than", "num_words": 5}]},
    ]
    responses = [{"prompt": p["prompt"], "response": f"answer {p['key']}"} for p in prompts]
    strict = [{"prompt": p["prompt"], "response": f"answer {p['key']}", "instruction_id_list": p["instruction_id_list"],
               "follow_instruction_list": [True] * len(p["instruction_id_list"]), "follow_all_instructions": True}
              for p in prompts[:2]]
    return {"input_data.jsonl": prompts, "input_response_data_gpt4.jsonl": responses,
            "eval_results_strict.jsonl": strict, "eval_results_loose.jsonl": strict}


def _write_folder(tmp: Path, files: dict[str, list[dict]]) -> None:
    for name, rows in files.items():
        (tmp / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_ifeval_valid(tmp_path):
    _write_folder(tmp_path, _ifeval_folder(tmp_path))
    r = ifeval.load(tmp_path)
    assert r.counts() == {"prompts": 3, "responses": 3, "verdicts": 3, "steer_label": 3, "dropped": 1}
    assert r["steer_label"]["context_id"].tolist() == ["1", "2", "2"]


@pytest.mark.parametrize("defect", DEFECTS)
def test_ifeval(tmp_path, defect):
    files = _ifeval_folder(tmp_path)
    rows = files["input_data.jsonl"]
    p = tmp_path / "input_data.jsonl"
    row, field = 2, None
    if defect == "missing_column":
        del rows[1]["prompt"]
        field = "prompt"
    elif defect == "wrong_type":
        rows[1]["kwargs"] = {"num_bullets": 3}
        field = "kwargs"
    elif defect == "nan":
        rows[1]["key"] = float("nan")
        field = "key"
    elif defect == "empty_text":
        rows[1]["instruction_id_list"][1] = ""
        field = "instruction_id_list[1]"
    _write_folder(tmp_path, files)
    if defect == "non_utf8":
        p.write_bytes(p.read_bytes().replace(b"3 bullets", b"3 bull\xffets"))
        field = "prompt"
    elif defect == "truncated":
        data = p.read_bytes()
        p.write_bytes(data[: data.index(b"num_words") + 3])
        row, field = 3, "relation"  # the innermost key the cut fell in (kwargs[0].relation)
    with pytest.raises(RecordError) as e:
        ifeval.load(tmp_path)
    check(e.value, p, row, field)
    if defect == "truncated":
        assert "truncated" in str(e.value)


@pytest.mark.parametrize("defect", ["wrong_type", "inconsistent", "other_instructions", "empty_response"])
def test_ifeval_bad_verdicts(tmp_path, defect):
    files = _ifeval_folder(tmp_path)
    v = files["eval_results_strict.jsonl"][1]
    name = "eval_results_strict.jsonl"
    if defect == "wrong_type":
        v["follow_instruction_list"] = ["yes", True]
        field = "follow_instruction_list[0]"
    elif defect == "inconsistent":
        v["follow_instruction_list"] = [True, False]
        field = "follow_all_instructions"
    elif defect == "other_instructions":
        v["instruction_id_list"] = ["punctuation:no_comma", "x"]
        field = "instruction_id_list"
    else:
        name = "input_response_data_gpt4.jsonl"
        files[name][1]["response"] = ""
        field = "response"
    _write_folder(tmp_path, files)
    with pytest.raises(RecordError) as e:
        ifeval.load(tmp_path)
    check(e.value, tmp_path / name, 2, field)


# ----------------------------------------------------------------------------------------------
# Predictive Engagement (CSV; row = spreadsheet row, header = 1)

SCORES_CSV = (
    'query,response,human_score,Ruber_Unref_Score,CTX_Unref_Score,Eng_Score_MeanPooling,Eng_Score_MaxPooling\n'
    'hi ?,Not really .,2,"7.99e-06\n","0.00055\n","0.87\n","0.42\n"\n'
    '"Good evening , madam .",brick ?,1,"0.0011\n","1.5e-19\n","0.41\n","0.56\n"\n'
    'What about soup ?,I like soup,4,"0.01\n","0.2\n","0.6\n","0.7\n"\n'
)
UTT_CSV = 'id,query,reply,label\n0,Are you a student,sir .,0\n1,Where ?,,0\n2,Hi,"Hello , friend !",1'


def _pe_folder(tmp: Path, scores=SCORES_CSV, utt=UTT_CSV) -> Path:
    (tmp / "Eng_Scores_queries_gen_gtruth_replies.csv").write_bytes(scores.encode() if isinstance(scores, str) else scores)
    (tmp / "humanAMT_engscores_utt.csv").write_bytes(utt.encode() if isinstance(utt, str) else utt)
    return tmp


def test_pe_valid(tmp_path):
    r = predictive_engagement.load(_pe_folder(tmp_path))
    e = r["engagement"]
    assert e["Eng_Score_MeanPooling"].tolist() == [0.87, 0.41, 0.6]
    assert e["human_score"].tolist() == [2.0, 1.0, 4.0]
    assert r["engagement_utt"]["engaged"].tolist() == [False, False, True]
    assert len(r["context"]) == 6


@pytest.mark.parametrize("defect", DEFECTS)
def test_predictive_engagement(tmp_path, defect):
    s = SCORES_CSV
    row, field = 3, None
    if defect == "missing_column":
        s = s.replace(",human_score,", ",score,")
        row, field = 1, "human_score"
    elif defect == "wrong_type":
        s = s.replace("brick ?,1,", "brick ?,high,")
        field = "human_score"
    elif defect == "nan":
        s = s.replace('"0.41\n"', "nan")
        field = "Eng_Score_MeanPooling"
    elif defect == "empty_text":
        s = s.replace("brick ?", "  ")
        field = "response"
    elif defect == "non_utf8":
        s = s.replace("madam", "mad\udcffam")
        field = "query"
    elif defect == "truncated":
        s = s[: s.index('"0.6\n"') + 3]
        row, field = 4, "Eng_Score_MeanPooling"
    data = s.encode("utf-8", "surrogateescape")
    _pe_folder(tmp_path, scores=data)
    p = tmp_path / "Eng_Scores_queries_gen_gtruth_replies.csv"
    with pytest.raises(RecordError) as e:
        predictive_engagement.load(tmp_path)
    check(e.value, p, row, field)
    if defect == "non_utf8":
        assert "UTF-8" in str(e.value)
    if defect == "truncated":
        assert "truncated" in str(e.value)


@pytest.mark.parametrize("defect", ["missing_column", "wrong_type", "short_row", "empty_query"])
def test_pe_utterances(tmp_path, defect):
    u = UTT_CSV
    row, field = 3, None
    if defect == "missing_column":
        u = u.replace("id,query,reply,label", "id,query,reply,lbl")
        row, field = 1, "label"
    elif defect == "wrong_type":
        u = u.replace("1,Where ?,,0", "1,Where ?,,maybe")
        field = "label"
    elif defect == "short_row":
        u = u.replace("1,Where ?,,0", "1,Where ?")
        field = "reply"
    else:
        u = u.replace("1,Where ?", "1,")
        field = "query"
    _pe_folder(tmp_path, utt=u)
    with pytest.raises(RecordError) as e:
        predictive_engagement.load(tmp_path)
    check(e.value, tmp_path / "humanAMT_engscores_utt.csv", row, field)


def test_missing_paths(tmp_path):
    for load in (upworthy.load, convai2.load, predictive_engagement.load, ifeval.load):
        with pytest.raises(RecordError) as e:
            load(tmp_path / "absent")
        assert "absent" in str(e.value)
