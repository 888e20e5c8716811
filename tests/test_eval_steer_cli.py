"""`rm_lab eval-steer` on small hand-made files: output format, loose mode, clear errors."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from rm_lab.commands.steer import register
from rm_lab.schema import RecordError

ROWS = [
    {"prompt": "Write without commas.", "response": "Fine then no commas.",
     "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    {"prompt": "Quote it and say apple.", "response": "Sure:\n\"An apple a day\"",
     "instruction_id_list": ["startend:quotation", "keywords:existence"],
     "kwargs": [{}, {"keywords": ["apple"]}]},
    {"prompt": "Be a pirate, ask back.", "response": "Ahoy, what be yer name? 🏴‍☠️🏴‍☠️",
     "instruction_id_list": ["character:stay_in_character", "character:max_emoji",
                             "character:end_with_question"],
     "kwargs": [{"keywords": ["ahoy"]}, {"max": 1}, None]},
]


def _app():
    app = typer.Typer()
    register(app)

    @app.command("noop")  # a second command keeps typer in multi-command mode, as in rm_lab
    def _noop() -> None:
        pass

    return app


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _run(*args):
    return CliRunner().invoke(_app(), ["eval-steer", *map(str, args)])


def test_strict_output_format(tmp_path):
    inp, out = _write(tmp_path / "in.jsonl", ROWS), tmp_path / "verdicts.jsonl"
    res = _run(inp, "--out", out)
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == len(ROWS)
    for line, row in zip(lines, ROWS):
        assert list(line) == ["follow_all_instructions", "follow_instruction_list", "instruction_id_list",
                              "prompt", "response"]
        assert line["prompt"] == row["prompt"] and line["response"] == row["response"]
        assert line["instruction_id_list"] == row["instruction_id_list"]
        assert line["follow_all_instructions"] == all(line["follow_instruction_list"])
    assert [x["follow_instruction_list"] for x in lines] == [[True], [False, True], [True, False, False]]
    assert "strict: 3 responses" in res.output


def test_loose_mode(tmp_path):
    inp, out = _write(tmp_path / "in.jsonl", ROWS), tmp_path / "verdicts.jsonl"
    res = _run(inp, "--out", out, "--loose")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert lines[1]["follow_instruction_list"] == [True, True]  # the preamble line is dropped


def test_responses_joined_by_prompt(tmp_path):
    prompts = [{k: v for k, v in r.items() if k != "response"} for r in ROWS]
    prompts.append({"prompt": "No answer here.", "instruction_id_list": ["punctuation:no_comma"],
                    "kwargs": [{}]})
    inp = _write(tmp_path / "in.jsonl", prompts)
    resp = _write(tmp_path / "resp.jsonl", [{"prompt": r["prompt"], "response": r["response"]} for r in ROWS])
    out = tmp_path / "v.jsonl"
    res = _run(inp, "--out", out, "--responses", resp)
    assert res.exit_code == 0, res.output
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3


@pytest.mark.parametrize("bad,field,fragment", [
    ({"instruction_id_list": ["punctuation:no_coma"]}, "instruction_id_list[0]", "known instruction id"),
    ({"kwargs": [{"num_words": 3}]}, "kwargs[0]", "no kwargs"),
    ({"kwargs": []}, "kwargs", "one per instruction"),
    ({"response": 7}, "response", "a string"),
    ({"instruction_id_list": "punctuation:no_comma"}, "instruction_id_list", "list"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, bad, field, fragment):
    rows = [dict(ROWS[0]), {**ROWS[0], **bad}]
    inp, out = _write(tmp_path / "in.jsonl", rows), tmp_path / "v.jsonl"
    from rm_lab.commands.steer import run_eval_steer

    with pytest.raises(RecordError) as e:
        run_eval_steer(inp, out)
    msg = str(e.value)
    assert str(inp) in msg and "row 2" in msg and f"field '{field}'" in msg and fragment in msg
    assert not out.exists()  # nothing half-written


def test_truncated_line_is_an_error(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps(ROWS[0]) + "\n" + '{"prompt": "x", "resp', encoding="utf-8")
    res = _run(inp, "--out", tmp_path / "v.jsonl")
    assert res.exit_code != 0
    assert isinstance(res.exception, RecordError) and "row 2" in str(res.exception)


def test_real_cli_entry_point_lists_the_command():
    rm_lab_cli = pytest.importorskip("rm_lab.cli", reason="rm_lab.cli does not import in this tree")
    names = {c.name for c in rm_lab_cli.app.registered_commands}
    assert "eval-steer" in names
