"""Property-based fuzz of every command's config loading and every record loader (issue 10).

Generated garbage goes through the real entry point (`rm_lab.cli.main`, in-process) and the loaders:

- configs: for every key of every stage command (nested keys included), values its declaration refuses
  (wrong type, out of range, NaN/inf, huge integers, unknown choices and keys, empty lists), given as
  `key=value`, in a `-c` YAML file, or as an override on top of a valid YAML; conflicting dotted
  overrides, malformed overrides, cross-field conflicts, `--runs`/`--resume` that are no folders; and `-c`
  files that are no config at all (binary, not UTF-8, broken YAML, a folder, a missing file, a list, deep
  nesting, repeated keys, an alias bomb);
- records: every record kind read by `rm_lab.io.read_records` from JSONL and Parquet with one defect
  (wrong type, null, missing column, out of range, repeated key, impossible A/B rows, bad history) or a
  damaged file (truncated, binary, not UTF-8, lines that are not objects, overlong lines, deep nesting),
  the same files through `ingest records` and `ab-test records=`, and the four public-data sources;
- run folders: train-rm on bad records or bad head declarations, eval-rm on a damaged model folder or
  bad rm_config.json values, ingest into an unwritable `out=` (these fail after their run opens).

Each input must be refused with exit status 2 and exactly one `error:` line naming the source (the
override, the YAML file and line, the file, row and field), never a traceback, never accepted; config
loading is stopped by a tripwire the moment it accepts, so garbage that slips through is caught before
any real work starts. Failing commands must leave no run folder that looks complete.

Counts: `RM_LAB_FUZZ_REPORT=reports/fuzz.md` (or `.json`) writes the table of inputs tried per command and
loader, tracebacks and silent acceptances. Examples are derandomised (the same inputs every run); set
`RM_LAB_FUZZ_RANDOM=1` to explore new ones and `RM_LAB_FUZZ_SCALE=4` for four times as many.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from unittest import mock

import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import fuzz_support as F
from rm_lab import io
from rm_lab.schema import KINDS, RecordError

SCALE = float(os.environ.get("RM_LAB_FUZZ_SCALE", "1"))
COMMANDS = F.discover_commands()


def fuzz(n: int):
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, database=None,
                    derandomize=not os.environ.get("RM_LAB_FUZZ_RANDOM"),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def fuzz_report():
    """Write the tally when RM_LAB_FUZZ_REPORT names a file (the counts the README quotes)."""
    yield F.TALLY
    target = os.environ.get("RM_LAB_FUZZ_REPORT")
    if target:
        F.TALLY.write(target)


def _check(section: str, target: str, outcome: str, detail: str) -> None:
    F.TALLY.add(section, target, outcome, detail)
    assert outcome == "refused", f"{target}: {outcome}: {detail}"


def _run_config(command: F.Command, rest: list[str], tmp: Path, must_name: list[str],
                must_not_name: list[str] = ()) -> None:
    """`rm_lab COMMAND ... REST` with the tripwire on: refused, one line naming `must_name`, no run left."""
    runs = tmp / "runs"
    with F.tripwire():
        res = F.cli(command.argv(tmp, rest), runs)
    outcome, detail = F.judge(res, must_name, must_not_name)
    left = F.incomplete_artifacts(runs) + [f"a run folder {p}" for p in F.run_folders(runs)]
    if outcome == "refused" and left:
        outcome, detail = "left_run", f"{detail}; but left {left}"
    _check("config", command.name, outcome, f"{' '.join(rest)[:200]} -> {detail}")


# ----------------------------------------------------------------------------------------------
# every command is fuzzed


def test_every_registered_command_has_a_config_to_fuzz():
    """A command built outside the stage-command factory would escape the shared validation (and this suite)."""
    assert sorted(COMMANDS) == F.registered_commands()
    assert {"simulate", "ab-test", "demo", "ingest", "curate", "train-rm", "eval-rm", "eval-steer"} <= set(COMMANDS)


def test_the_oracle_refuses_what_the_declarations_refuse():
    """The generators' notion of garbage is read from the declarations: spot checks that it agrees with them."""
    from rm_lab.world.simulate import WorldConfig

    case = next(c for c in F.cases(WorldConfig) if c.path == ("user_traffic_share",))
    assert not F.type_accepts(case.tp, "x") and F.type_accepts(case.tp, 1) and not F.type_accepts(case.tp, math.nan)
    assert not F.type_accepts(case.tp, 10**400) and not F.type_accepts(case.tp, True)
    policies = next(c for c in F.cases(WorldConfig) if c.path == ("logging_policies",))
    assert F.type_accepts(policies.tp, ["a"]) and not F.type_accepts(policies.tp, "a")
    demo = [c.dotted for c in F.cases(COMMANDS["demo"].cls)]
    assert {"world.n_contexts", "ab.arm_share", "train.lr", "train.world.seed"} <= set(demo)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_valid_configs_reach_the_tripwire(name, tmp_path):
    """The controls: each command's shipped config (as the default, and as a `-c` copy) passes config loading
    and reaches the tripwire, so a refusal in the fuzz below is the garbage's doing, not the harness's."""
    command = COMMANDS[name]
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump(command.shipped() or {}))
    for rest in ([], ["-c", str(copy)]):
        with F.tripwire():
            res = F.cli(command.argv(tmp_path, rest), tmp_path / "runs")
        ok = isinstance(res.exc, F.Accepted)
        F.TALLY.add("config", name, "accepted_valid" if ok else "refused_valid", res.err or repr(res.exc))
        assert ok, (rest, res)
    assert not F.run_folders(tmp_path / "runs")


# ----------------------------------------------------------------------------------------------
# config values: every key of every command, as an override, in a YAML file, and both together


def _bad_value_run(command: F.Command, case: F.Case, value, mode: str) -> None:
    """One bad value of one key, as an override, in a YAML file, or as an override on top of a valid YAML."""
    with F.scratch() as tmp:
        if mode == "yaml":
            text, line = F.yaml_with(command.shipped(), case.path, value)
            path = tmp / "bad.yaml"
            path.write_text(text, encoding="utf-8")
            where = f"{path}, line {line}" if not isinstance(value, (list, dict)) else f"{path}, line "
            _run_config(command, ["-c", str(path)], tmp, [where, case.dotted])
            return
        item = f"{case.dotted}={F.dump(value)}"
        rest, not_named = [item], []
        if mode == "override on a yaml":  # the value comes from the command line: the file is not blamed
            path = tmp / "good.yaml"
            path.write_text(yaml.safe_dump(command.shipped() or {}), encoding="utf-8")
            rest, not_named = ["-c", str(path), item], [str(path)]
        _run_config(command, rest, tmp, [f"override '{item[:40]}", case.dotted], not_named)


MODES = ["override", "yaml", "override on a yaml"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
@fuzz(2)
@given(data=st.data())
def test_every_config_key_refuses_a_bad_value(name, data):
    """A sweep: each example gives every key of the command (nested keys included) one bad value."""
    command = COMMANDS[name]
    plan = []  # every draw first: an example that hypothesis rejects mid-way then runs nothing
    for case in F.cases(command.cls):
        value = data.draw(F.bad_values(case), label=case.dotted)
        plan.append((case, value, data.draw(st.sampled_from(MODES), label="mode") if F.roundtrips(value) else "yaml"))
    for case, value, mode in plan:
        _bad_value_run(command, case, value, mode)


@pytest.mark.parametrize("name", sorted(COMMANDS))
@fuzz(40)
@given(data=st.data())
def test_bad_config_values_are_refused_naming_source_and_key(name, data):
    """Random keys and bad values (shrunk to the simplest failing one when a refusal is missing)."""
    command = COMMANDS[name]
    case = data.draw(st.sampled_from(F.cases(command.cls)), label="key")
    value = data.draw(F.bad_values(case), label="value")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    assume(mode == "yaml" or F.roundtrips(value))
    _bad_value_run(command, case, value, mode)


@pytest.mark.parametrize("name", sorted(COMMANDS))
@fuzz(30)
@given(data=st.data())
def test_unknown_keys_conflicts_and_malformed_overrides_are_refused(name, data):
    command = COMMANDS[name]
    cls = command.cls
    cases = F.cases(cls)
    kinds = ["unknown key", "unknown key in yaml", "conflict", "malformed", "cross-field", "option"]
    what = data.draw(st.sampled_from(kinds), label="what")
    with F.scratch() as tmp:
        if what in ("unknown key", "unknown key in yaml"):
            mapping = [c for c in cases if F.nested_class(c) is not None]
            parent = data.draw(st.sampled_from([None, *mapping]), label="under")
            known = F.nested_class(parent) if parent else cls
            key = data.draw(F.unknown_keys(known), label="key")
            path = ((*parent.path, key) if parent else (key,))
            dotted = ".".join(path)
            if what == "unknown key":
                item = f"{dotted}=1"
                return _run_config(command, [item], tmp, [f"override '{item[:40]}", key])
            text, line = F.yaml_with(command.shipped(), path, 1)
            (tmp / "c.yaml").write_text(text)
            return _run_config(command, ["-c", str(tmp / "c.yaml")], tmp, [f"{tmp / 'c.yaml'}, line {line}", key])
        if what == "conflict":  # `k=v` and `k.sub=w`: k cannot be both a value and a mapping
            case = data.draw(st.sampled_from(cases), label="key")
            sub = data.draw(F.KEY, label="sub")
            v = data.draw(st.one_of(st.integers(), F.TEXT.filter(lambda s: s.strip() and "=" not in s), st.booleans())
                          .filter(lambda v: not isinstance(yaml.safe_load(F.dump(v) or "''"), dict)), label="v")
            items = [f"{case.dotted}={F.dump(v)}", f"{case.dotted}.{sub}=1"]
            if data.draw(st.booleans(), label="mapping first"):
                items.reverse()
            return _run_config(command, items, tmp, [f"override '{items[0][:40]}", f"override '{items[1][:40]}",
                                                     case.dotted])
        if what == "malformed":
            item = data.draw(st.one_of(
                F.KEY,  # no '='
                st.tuples(F.KEY, st.sampled_from([" ", "..", "!", "/", "[0]", "@", "$", ":", "*"]), F.KEY)
                .map(lambda t: f"{t[0]}{t[1]}{t[2]}=1"),
                st.sampled_from(["=1", ".a=1", "a.=1", "1a=2", "a..b=3", " =4"])), label="item")
            return _run_config(command, [item], tmp, [f"override '{item[:40]}"])
        if what == "cross-field" and F.cross_field(name) is not None:
            overrides, keys = data.draw(F.cross_field(name), label="values")
            items = [f"{k}={F.dump(v)}" for k, v in overrides.items()]
            return _run_config(command, items, tmp, [*keys, f"override '{items[0][:40]}"])
        if what == "option" and command.value_options:
            key, flag = data.draw(st.sampled_from(command.value_options), label="option")
            rule = next(c for c in cases if c.path == (key,)).rule
            if rule is not None and rule.choices is not None:
                good = [str(c) for c in rule.choice_list()]
                bad = data.draw(F.TEXT.filter(lambda s: s not in good and not s.startswith("-")), label="value")
                return _run_config(command, [flag, bad], tmp, [f"option '{flag} {bad[:30]}", key])
        # this command has no such rule or option: a malformed override instead
        return _run_config(command, ["no_equals_sign"], tmp, ["override 'no_equals_sign'"])


@pytest.mark.parametrize("name", sorted(c for c in COMMANDS if {"--runs", "--resume"} & set(COMMANDS[c].flags)))
@fuzz(10)
@given(data=st.data())
def test_runs_roots_and_resume_folders_that_are_not_folders_are_refused(name, data):
    """`--runs` that is a file or lies under one; `--resume` that is no run folder (a file, a missing path, a
    folder of another kind, a run id that is not there): one line naming the option, no run folder."""
    command = COMMANDS[name]
    flags = [f for f in ("--runs", "--resume") if f in command.flags]
    flag = data.draw(st.sampled_from(flags), label="flag")
    with F.scratch() as tmp:
        blocker = tmp / "a_file"
        blocker.write_bytes(data.draw(st.binary(max_size=20), label="content"))
        other = tmp / "other"
        (other / "simulate" / "x").mkdir(parents=True)
        (other / "simulate" / "x" / "config.yaml").write_text("seed: 0\n")
        choices = [blocker, blocker / "sub", blocker / "a" / "b"] if flag == "--runs" else [
            blocker, blocker / "sub", tmp / "missing", other / "simulate" / "x", tmp, "no-such-run-id", "."]
        value = str(data.draw(st.sampled_from(choices), label="value"))
        _run_config(command, [flag, value], tmp, [f"{flag}"] + ([f"'{value}'"] if value != "." else []))


def _not_a_config(data) -> tuple[str, bytes | None]:
    """(what, file content), or content None for a folder / a path that does not exist."""
    what = data.draw(st.sampled_from(["binary", "not utf-8", "broken yaml", "not a mapping", "folder", "missing",
                                      "repeated key", "random text", "alias bomb"]), label="what")
    if what == "binary":
        body = data.draw(st.binary(max_size=300), label="bytes")
        return what, body[: len(body) // 2] + b"\x00" + body[len(body) // 2:]
    if what == "not utf-8":
        text = data.draw(F.TEXT, label="text").encode()
        return what, b"seed: 1\nname: " + text + data.draw(st.sampled_from([b"\xff", b"\xc3(", b"\xe9t\xe9", b"\x80"]))
    if what == "broken yaml":
        return what, data.draw(st.sampled_from(["a: [1, 2", "a: {b: 1", "a: 'open", "a: \"open", "\tseed: 1",
                                                "a: b: c", "- a\nb: 1", "seed: @x", "a:\n  - b\n c: 1", "]", "{",
                                                "key: |\n x\n  y\n z: 1", "? [a\n"]), label="text").encode()
    if what == "not a mapping":
        return what, data.draw(st.sampled_from(["- a\n- b\n", "42\n", "'text'\n", "[1, 2]\n", "true\n", "3.5\n"]),
                               label="text").encode()
    if what in ("folder", "missing"):
        return what, None
    if what == "repeated key":
        return what, b"seed: 1\nseed: 2\n"
    if what == "alias bomb":  # billion laughs: references must not be expanded into memory
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
        return what, ("\n".join(lines) + "\nbomb: *a8\n").encode()
    text = data.draw(st.text(max_size=60), label="text")  # random text: garbage unless it is an empty config
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = "unparsable"
    assume(parsed not in (None, {}))
    return what, text.encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_config_nested_too_deeply_is_refused(name, tmp_path):
    """Deep enough to exhaust the YAML composer's recursion (one example: each takes a second)."""
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 1100 + "]" * 1100 + "\n")
    _run_config(COMMANDS[name], ["-c", str(path)], tmp_path, [str(path)])


@pytest.mark.parametrize("name", sorted(COMMANDS))
@fuzz(25)
@given(data=st.data())
def test_config_files_that_are_not_configs_are_refused(name, data):
    command = COMMANDS[name]
    what, content = _not_a_config(data)
    with F.scratch() as tmp:
        path = tmp / "conf.yaml"
        if what == "folder":
            path.mkdir()
        elif content is not None:
            path.write_bytes(content)
        try:
            parsed = yaml.safe_load(content) if what == "random text" else None
        except yaml.YAMLError:
            parsed = None
        if isinstance(parsed, dict):  # a mapping of random text: refused for its first unknown key
            assume(not all(k in {f.name for f in dataclasses.fields(command.cls)} for k in parsed))
        _run_config(command, ["-c", str(path)], tmp, [str(path)])


# ----------------------------------------------------------------------------------------------
# records: every kind, JSONL and Parquet


def _write(defect_rows: list[dict], kind: str, fmt: str, tmp: Path, blank_after=frozenset()) -> tuple[Path, list]:
    path = tmp / f"{kind}.{fmt}"
    if fmt == "jsonl":
        raw, lines = F.jsonl_bytes(defect_rows, set(blank_after))
        path.write_bytes(raw)
        return path, lines
    F.write_parquet(defect_rows, path, kind)
    return path, list(range(len(defect_rows)))


def _read(path: Path, kind: str, row, field, fmt: str) -> None:
    """read_records must raise a RecordError naming the file, and the row and field where given."""
    target = f"read_records {kind} (.{fmt})"
    try:
        io.read_records(path, kind)
    except RecordError as e:
        named = str(path) in str(e) and (row is None or e.row == row) and (field is None or e.field == field)
        outcome = "refused" if named else "misnamed"
        detail = f"expected row {row} field {field!r}, got {e}"
    except Exception as e:  # noqa: BLE001
        outcome, detail = "traceback", f"{type(e).__name__}: {str(e)[:200]}"
    else:
        outcome, detail = "silent", f"accepted; expected an error at row {row} field {field!r}"
    _check("records", target, outcome, detail)


def _cli_records(argv: list[str], path: Path, row, field, target: str, tmp: Path) -> None:
    """The same file through a command: exit 2, one line naming file, row and field; no completed run."""
    runs = tmp / "runs"
    res = F.cli(argv, runs)
    must = [f"file {path}"] + ([f"row {row}"] if row is not None else []) + ([f"field '{field}'"] if field else [])
    outcome, detail = F.judge(res, must)
    left = F.incomplete_artifacts(runs)
    if outcome == "refused" and left:
        outcome, detail = "left_run", f"{detail}; but left {left}"
    _check("command records", target, outcome, detail)


def test_every_record_kind_has_valid_rows_to_break():
    assert sorted(F.VALID_ROWS) == sorted(KINDS)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_valid_records_are_read(kind, fmt, tmp_path):
    """The controls: the rows the fuzz breaks are valid as they are, with blank lines and a 2 MB reply."""
    rows = F.VALID_ROWS[kind]()
    text_field = next(f.name for f in KINDS[kind].fields if f.kind == "str" and not f.choices and f.name in rows[0]
                      and f.name not in KINDS[kind].key)
    rows[-1][text_field] = "long " * 400_000
    path, _ = _write(rows, kind, fmt, tmp_path, blank_after={0})
    try:
        df = io.read_records(path, kind)
    except Exception as e:  # noqa: BLE001
        F.TALLY.add("records", f"read_records {kind} (.{fmt})", "refused_valid", str(e))
        raise
    F.TALLY.add("records", f"read_records {kind} (.{fmt})", "accepted_valid")
    assert len(df) == len(rows) and df[text_field].iloc[-1] == rows[-1][text_field]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("kind", sorted(KINDS))
@fuzz(40)
@given(data=st.data())
def test_bad_records_are_refused_naming_file_row_and_field(kind, fmt, data):
    d = data.draw(F.record_defects(kind), label="defect")
    blank = data.draw(st.sets(st.integers(0, 3), max_size=2), label="blank lines") if fmt == "jsonl" else set()
    row = d.row
    if fmt == "parquet" and not d.parquet_ok:  # a Parquet column has one type: the whole column is wrong
        v = d.rows[row][d.field]
        for r in d.rows:
            r[d.field] = v
        row = 0
    with F.scratch() as tmp:
        try:
            path, lines = _write(d.rows, kind, fmt, tmp, blank)
        except (OverflowError, ValueError, TypeError, ArithmeticError, pa.ArrowException):  # not in Parquet
            assume(False)
        expect_row = None if row is None else lines[row]
        _read(path, kind, expect_row, d.field, fmt)
        if kind == "ab_arm":
            _cli_records(["ab-test", f"records={path}"], path, expect_row, d.field, "ab-test records=", tmp)
        _cli_records(["ingest", "records", str(path)], path, expect_row, d.field, "ingest records", tmp)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("kind", sorted(KINDS))
@fuzz(2)
@given(data=st.data())
def test_every_record_field_refuses_a_bad_value(kind, fmt, data):
    """A sweep: each example breaks every field of the kind in turn (wrong type, null, out of range)."""
    from rm_lab.schema import KINDS as kinds

    i = data.draw(st.integers(0, 2), label="row")
    plan = []  # every draw first: an example that hypothesis rejects mid-way then runs nothing
    for f in kinds[kind].fields:
        for what in ("type", "null", "range"):
            if f.name not in F.VALID_ROWS[kind]()[0] or (what == "null" and f.nullable) or (
                    what == "range" and F._range_bad(f) is None):
                continue
            if what == "type":
                plan.append((f, data.draw(F.record_wrong_types(f.kind), label=f"{f.name} type"), what))
            else:
                plan.append((f, None if what == "null" else data.draw(F._range_bad(f), label=f"{f.name} range"), what))
    for f, value, what in plan:
        rows, row = F.VALID_ROWS[kind](), i
        if fmt == "parquet" and what == "type":  # one type per Parquet column
            for r in rows:
                r[f.name] = value
            row = 0
        else:
            rows[i][f.name] = value
        with F.scratch() as tmp:
            try:
                path, lines = _write(rows, kind, fmt, tmp)
            except (OverflowError, ValueError, TypeError, ArithmeticError, pa.ArrowException):
                continue  # not representable in Parquet
            _read(path, kind, lines[row], f.name, fmt)
            _cli_records(["ingest", "records", str(path)], path, lines[row], f.name, "ingest records", tmp)


def _damaged(data, kind: str, fmt: str, tmp: Path) -> tuple[Path, int | None, str | None]:
    """A damaged file of valid rows: (path, line/row the error must name or None, field or None)."""
    rows = F.VALID_ROWS[kind]()
    path, lines = _write(rows, kind, fmt, tmp)
    raw = path.read_bytes()
    options = ["truncated", "binary", "random bytes", "not utf-8", "empty", "other suffix", "folder"]
    if fmt == "jsonl":
        options += ["not an object", "overlong line", "deep nesting"]
    else:
        options += ["no rows"]
    what = data.draw(st.sampled_from(options), label="damage")
    text_fields = [f.name for f in KINDS[kind].fields if f.kind == "str" and f.name in rows[0]
                   and all(isinstance(r.get(f.name), str) for r in rows)]
    i = data.draw(st.integers(0, len(rows) - 1), label="row")
    if what == "truncated":
        if fmt == "jsonl":  # cut inside the last line: its object is incomplete
            start = raw.rstrip(b"\n").rfind(b"\n") + 1
            cut = data.draw(st.integers(start + 1, len(raw) - 2), label="cut")
            path.write_bytes(raw[:cut])
            return path, lines[-1], None
        path.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")])
        return path, None, None
    if what == "binary":
        path.write_bytes(data.draw(st.binary(max_size=200), label="bytes") + b"\x00\x01\x02")
        return path, None, None
    if what == "random bytes":  # no NUL: decoded, parsed and checked like text
        body = data.draw(st.binary(min_size=1, max_size=200).filter(lambda b: b"\x00" not in b), label="bytes")
        path.write_bytes(body)
        return path, None, None
    if what == "not utf-8":
        field = data.draw(st.sampled_from(text_fields), label="field")
        if fmt == "parquet":
            F.bad_utf8_parquet(rows, kind, field, i, path)
            return path, i, field
        marked = [dict(r) for r in rows]
        marked[i][field] = "\u2603MARK\u2603"
        raw, lines = F.jsonl_bytes(marked)
        path.write_bytes(raw.replace("\u2603MARK\u2603".encode(), data.draw(
            st.sampled_from([b"caf\xe9", b"\xff\xfe", b"\xc3(", b"abc\x80"]), label="bytes")))
        return path, lines[i], field
    if what == "empty":
        path.write_bytes(data.draw(st.sampled_from([b"", b"\n", b"  \n\n", b"\t"]), label="content"))
        return path, None, None
    if what == "other suffix":
        other = path.with_suffix(data.draw(st.sampled_from([".csv", ".txt", ".json5", ".parq", ""]), label="suffix"))
        path.rename(other)
        return other, None, None
    if what == "folder":
        path.unlink()
        path.mkdir()
        return path, None, None
    if what == "no rows":
        _empty_parquet(rows, kind, path)
        return path, None, None
    lines_text = raw.decode().splitlines()
    if what == "not an object":
        bad = data.draw(st.sampled_from(["[1, 2]", '"text"', "3", "null", "true", "[]", "[{}]"]), label="line")
        lines_text.insert(i, bad)
        path.write_text("\n".join(lines_text) + "\n")
        return path, i + 1, None
    if what == "overlong line":  # the bound lowered to 4 KiB (the real one is 256 MiB)
        io.MAX_LINE_BYTES = 4096  # restored by the caller's mock.patch
        long = dict(rows[i], **{text_fields[0]: "y" * 5000})
        lines_text[i] = json.dumps(long)
        path.write_text("\n".join(lines_text) + "\n")
        return path, i + 1, None
    # deep nesting: a JSON value nested beyond Python's recursion limit
    obj = lines_text[i]
    depth = data.draw(st.integers(50_000, 200_000), label="depth")  # past any recursion limit
    lines_text[i] = obj[:-1] + ', "extra": ' + F.deep_json(depth) + "}"
    path.write_text("\n".join(lines_text) + "\n")
    return path, i + 1, None


def _empty_parquet(rows, kind, path):
    import pandas as pd

    df = pd.DataFrame(rows).iloc[:0]
    return io.write_records(df, path, kind, validate=False)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("kind", sorted(KINDS))
@fuzz(20)
@given(data=st.data())
def test_damaged_record_files_are_refused_naming_the_file(kind, fmt, data):
    with F.scratch() as tmp, mock.patch.object(io, "MAX_LINE_BYTES", io.MAX_LINE_BYTES):
        path, row, field = _damaged(data, kind, fmt, tmp)
        _read(path, kind, row, field, fmt)
        _cli_records(["ingest", "records", str(path), "--kind", kind], path, row, field, "ingest records", tmp)


# ----------------------------------------------------------------------------------------------
# the public-data sources (what `ingest SOURCE PATH` reads)


def _load_source(name: str, path: Path, row, field) -> None:
    from rm_lab.sources import SOURCES

    try:
        SOURCES[name](path)
    except RecordError as e:
        named = str(path) in str(e) and (row is None or e.row == row) and (field is None or e.field == field)
        outcome, detail = ("refused" if named else "misnamed"), f"expected row {row} field {field!r}, got {e}"
    except Exception as e:  # noqa: BLE001
        outcome, detail = "traceback", f"{type(e).__name__}: {str(e)[:200]}"
    else:
        outcome, detail = "silent", f"accepted; expected an error at row {row} field {field!r}"
    _check("sources", f"{name} loader", outcome, detail)


@pytest.mark.parametrize("name", sorted(F.SOURCE_DEFECTS))
def test_valid_source_files_are_read(name, tmp_path):
    from rm_lab.sources import SOURCES

    path = F.valid_source(name, tmp_path / F.SOURCE_DEFECTS[name][1])
    try:
        recs = SOURCES[name](path)
    except Exception as e:  # noqa: BLE001
        F.TALLY.add("sources", f"{name} loader", "refused_valid", str(e))
        raise
    F.TALLY.add("sources", f"{name} loader", "accepted_valid")
    assert all(len(df) for k, df in recs.frames.items() if k in KINDS)


@pytest.mark.parametrize("name", sorted(F.SOURCE_DEFECTS))
@fuzz(40)
@given(data=st.data())
def test_bad_source_files_are_refused_naming_file_row_and_field(name, data):
    from rm_lab.sources import _common

    strategy, filename = F.SOURCE_DEFECTS[name]
    with F.scratch() as tmp, mock.patch.object(_common, "MAX_FIELD_CHARS", _common.MAX_FIELD_CHARS):
        path = tmp / filename
        damage = data.draw(st.sampled_from(["defect"] * 4 + ["truncated", "binary", "empty", "deep or huge"]),
                           label="damage")
        row = field = None
        if damage == "defect":
            d = data.draw(strategy(), label="defect")
            F.write_source(d, path)
            row, field = d.row, d.field
        else:
            raw = F.valid_source(name, path).read_bytes()
            if damage == "truncated":
                cut = data.draw(st.integers(1, len(raw) - 2), label="cut")
                # a CSV or JSONL cut at a line end is a shorter valid file, not garbage: cut inside a line
                assume(name in ("upworthy", "convai2") or raw[cut - 1:cut] != b"\n" and raw[cut:cut + 1] != b"\n")
                if name == "predictive-engagement":  # a cut CSV row is short only when a value is lost
                    assume(raw[:cut].count(b"\n") >= 1 and raw[:cut].rsplit(b"\n", 1)[-1].count(b",") < 3)
                path.write_bytes(raw[:cut])
            elif damage == "binary":
                path.write_bytes(b"\x00" + data.draw(st.binary(max_size=100), label="bytes"))
            elif damage == "empty":
                path.write_bytes(data.draw(st.sampled_from([b"", b"\n", b"   "]), label="content"))
            elif name == "predictive-engagement":  # a cell beyond the bound (lowered to 1,000 characters)
                _common.MAX_FIELD_CHARS = 1000
                rows = F.pe_rows()
                rows[1][1] = "w" * 1001
                path.write_text(F.csv_text(F.PE_HEADER, rows))
                row, field = 3, "response"
            elif name == "upworthy":
                assume(False)
            else:  # JSON nested past any recursion limit
                deep = F.deep_json(100_000)
                if name == "convai2":
                    path.write_text("[" + json.dumps(F.convai2_dialogues()[0])[:-1] + ', "x": ' + deep + "}]")
                    row = 0
                else:
                    path.write_text(json.dumps(F.ifeval_prompts()[0])[:-1] + ', "x": ' + deep + "}\n")
                    row = 1
        _load_source(name, path, row, field)
        runs = tmp / "runs"
        res = F.cli(["ingest", name, str(path)], runs)
        must = [f"file {path}"] + ([f"row {row}"] if row is not None else []) + ([f"field '{field}'"] if field else [])
        outcome, detail = F.judge(res, must)
        if outcome == "refused" and (F.incomplete_artifacts(runs) or F.run_folders(runs)):
            outcome, detail = "left_run", f"{detail}; but left {F.run_folders(runs)}"
        _check("command records", f"ingest {name}", outcome, detail)


# ----------------------------------------------------------------------------------------------
# commands that fail once their run folder is open: the run is marked failed, nothing claims completion

TRAIN_KINDS = ["character", "context", "interaction", "preference", "steer_label", "label", "head"]


def _run_folder_check(section: str, target: str, res: F.Result, runs: Path, must: list[str]) -> None:
    outcome, detail = F.judge(res, must)
    left = F.incomplete_artifacts(runs)
    if left:  # whatever the message, a failed command must not leave a run that looks complete
        outcome, detail = "left_run", f"{detail}; left {left}"
    _check(section, target, outcome, detail)


@pytest.mark.slow
@fuzz(8)
@given(data=st.data())
def test_train_rm_on_bad_records_marks_its_run_failed(data):
    """train-rm opens its run before reading `data`: a bad record file fails it with one line naming the
    file, row and field, and the run is `failed` with no model in it (the first example imports torch)."""
    kind = data.draw(st.sampled_from(TRAIN_KINDS), label="kind")
    d = data.draw(F.record_defects(kind), label="defect")
    with F.scratch() as tmp:
        folder = tmp / "records"
        folder.mkdir()
        path, lines = _write(d.rows, kind, "jsonl", folder)
        row = None if d.row is None else lines[d.row]
        runs = tmp / "runs"
        res = F.cli(["train-rm", f"data={folder}", "epochs=1", "pairwise=false", f"cache_dir={tmp / 'cache'}"], runs)
        must = [f"file {path}"] + ([f"row {row}"] if row is not None else []) + (
            [f"field '{d.field}'"] if d.field else [])
        _run_folder_check("run folders", "train-rm data=", res, runs, must)


def _model_folder(data, tmp: Path) -> tuple[Path, str]:
    """A folder given as eval-rm's model that holds no readable model: (folder, what the error must name)."""
    folder = tmp / "model"
    what = data.draw(st.sampled_from(["missing", "a file", "empty", "config only", "config bytes", "config json",
                                      "config deep", "weights bytes", "weights truncated", "other weights"]),
                     label="model")
    if what == "missing":
        return folder, str(folder)
    if what == "a file":
        folder.write_bytes(data.draw(st.binary(max_size=50), label="bytes"))
        return folder, str(folder)
    folder.mkdir()
    if what == "empty":
        return folder, str(folder)
    (folder / "config.yaml").write_text("lr: 0.001\n")
    if what == "config only":
        return folder, str(folder)
    cfg = folder / "rm_config.json"
    weights = folder / "model.safetensors"
    weights.write_bytes(b"placeholder")
    if what == "config bytes":
        cfg.write_bytes(data.draw(st.binary(max_size=80), label="bytes"))
        return folder, str(cfg)
    if what == "config json":  # valid JSON that is not a model config
        not_a_config = st.one_of(st.lists(st.integers(), max_size=3), st.integers(), F.TEXT,
                                 st.dictionaries(F.KEY, st.integers(), max_size=3))
        cfg.write_text(json.dumps(data.draw(not_a_config, label="json")))
        return folder, str(cfg)
    if what == "config deep":
        cfg.write_text(F.deep_json(100_000))
        return folder, str(cfg)
    cfg.write_text(json.dumps({"backbone": None, "backbone_key": "x", "train_mode": "frozen", "heads": ["preference"],
                               "emb_dim": 384, "hidden": 8, "n_layers": 1, "dropout": 0.1, "max_length": 64,
                               "card_max_tokens": 8, "reply_max_tokens": 8, "n_members": 1, "seeds": [0],
                               "style_features": [], "inputs": ["reply"]}))
    if what == "weights bytes":
        weights.write_bytes(data.draw(st.binary(max_size=100), label="bytes"))
        return folder, str(weights)
    from safetensors.torch import save_file
    import torch

    save_file({"m0.net.w": torch.zeros(16)}, str(weights))
    if what == "weights truncated":
        raw = weights.read_bytes()
        weights.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")])
    # other weights: a valid file of other tensors, refused after the encoder is loaded (whose progress bar
    # once put a second line above the error)
    return folder, str(weights)


@pytest.mark.slow
@fuzz(12)
@given(data=st.data())
def test_eval_rm_on_a_damaged_model_folder_marks_its_run_failed(data):
    with F.scratch() as tmp:
        folder, named = _model_folder(data, tmp)
        runs = tmp / "runs"
        res = F.cli(["eval-rm", f"model={folder}", "split=all"], runs)
        _run_folder_check("run folders", "eval-rm model=", res, runs, [named])


@pytest.mark.slow
def test_an_error_after_the_encoder_loads_is_still_one_line(tmp_path):
    """Was two lines: transformers' "Loading weights" progress bar above the `error:` line."""
    from safetensors.torch import save_file
    import torch

    model = tmp_path / "model"
    model.mkdir()
    (model / "rm_config.json").write_text(json.dumps(
        {"backbone": None, "backbone_key": "x", "train_mode": "frozen", "heads": ["preference"], "emb_dim": 384,
         "hidden": 8, "n_layers": 1, "dropout": 0.1, "max_length": 64, "card_max_tokens": 8, "reply_max_tokens": 8,
         "n_members": 1, "seeds": [0], "style_features": [], "inputs": ["reply"]}))
    save_file({"m0.net.w": torch.zeros(4)}, str(model / "model.safetensors"))
    res = F.cli(["eval-rm", f"model={model}", "split=all"], tmp_path / "runs")
    _run_folder_check("run folders", "eval-rm model=", res, tmp_path / "runs", [str(model / "model.safetensors")])


@fuzz(10)
@given(data=st.data())
def test_ingest_into_an_unwritable_out_marks_its_run_failed(data):
    """The records are valid; the output folder is a file (or under one): the run is failed, no report."""
    with F.scratch() as tmp:
        path, _ = _write(F.VALID_ROWS["preference"](), "preference", "jsonl", tmp)
        blocker = tmp / "a_file"
        blocker.write_text("x")
        out = data.draw(st.sampled_from([blocker, blocker / "sub", blocker / "a" / "b"]), label="out")
        runs = tmp / "runs"
        res = F.cli(["ingest", "records", str(path), f"out={out}"], runs)
        _run_folder_check("run folders", "ingest out=", res, runs, [str(blocker)])


# ----------------------------------------------------------------------------------------------
# regressions: the defects this suite found, each pinned by the input that found it


@fuzz(5)
@given(value=st.one_of(st.integers(2**63, 10**40), st.integers(-10**40, -2**63 - 1)))
@example(value=10**30)
@example(value=2**63)
def test_integers_beyond_int64_in_records_are_refused(value, tmp_path_factory):
    """Was an OverflowError traceback (int fields are stored as int64; a Parquet float column wrapped silently)."""
    tmp = tmp_path_factory.mktemp("int64")
    for kind, field in (("ab_arm", "users"), ("ab_arm", "day"), ("head", "levels"), ("interaction", "thumb")):
        rows = F.VALID_ROWS[kind]()
        rows[1][field] = value
        path, lines = _write(rows, kind, "jsonl", tmp)
        with pytest.raises(RecordError) as e:
            io.read_records(path, kind)
        assert (e.value.row, e.value.field) == (lines[1], field)


@example(value=10**400)
@example(value=10**309)
@fuzz(5)
@given(value=st.integers(10**309, 10**500))
def test_integers_beyond_any_float_in_records_are_refused(value, tmp_path_factory):
    """Was `OverflowError: int too large to convert to float` from a JSON integer literal in a float field."""
    tmp = tmp_path_factory.mktemp("float")
    for kind, field in (("ab_arm", "messages"), ("label", "value"), ("interaction", "depth")):
        rows = F.VALID_ROWS[kind]()
        rows[2][field] = value
        path, lines = _write(rows, kind, "jsonl", tmp)
        with pytest.raises(RecordError, match="a finite number") as e:
            io.read_records(path, kind)
        assert (e.value.row, e.value.field) == (lines[2], field)


def test_a_float_column_beyond_int64_is_refused_in_a_large_parquet(tmp_path):
    """The vectorised pre-screen of >= 1000 rows let 1e19 through an int field (cast to int64: wrapped)."""
    import pandas as pd

    n = 1500
    df = pd.DataFrame({"experiment_id": [f"e{i // 2}" for i in range(n)], "arm": ["a", "b"] * (n // 2),
                       "is_control": [i % 2 == 0 for i in range(n)], "days": 1, "users": [1000.0] * n,
                       "engaged_users": 10.0})
    df.loc[777, "users"] = 1e19
    path = tmp_path / "ab_arm.parquet"
    df.to_parquet(path)
    with pytest.raises(RecordError, match="64-bit") as e:
        io.read_records(path, "ab_arm")
    assert (e.value.row, e.value.field) == (777, "users")


@example(depth=100_000)
@fuzz(3)
@given(depth=st.integers(5_000, 300_000))
def test_json_nested_past_the_recursion_limit_is_refused(depth, tmp_path_factory):
    """Was a RecursionError traceback: a JSONL line, a JSON cell in Parquet, the sources' JSON and JSONL,
    and a run folder's rm_config.json."""
    from rm_lab.sources import convai2, ifeval

    tmp = tmp_path_factory.mktemp("deep")
    deep = F.deep_json(depth)
    jl = tmp / "context.jsonl"
    jl.write_text(json.dumps(F.VALID_ROWS["context"]()[0]) + "\n" + '{"context_id": "x", "extra": ' + deep + "}\n")
    with pytest.raises(RecordError, match="nested") as e:
        io.read_records(jl, "context")
    assert e.value.row == 2
    rows = F.VALID_ROWS["context"]()
    pq_path = tmp / "context.parquet"
    F.write_parquet(rows, pq_path, "context")
    import pyarrow.parquet as pq

    table = pq.read_table(pq_path)
    hist = table.column("history").to_pylist()
    hist[1] = deep
    table = table.set_column(table.column_names.index("history"), "history", pa.array(hist))
    pq.write_table(table, pq_path)
    with pytest.raises(RecordError) as e:
        io.read_records(pq_path, "context")
    assert (e.value.row, e.value.field) == (1, "history")
    src = tmp / "input_data.jsonl"
    src.write_text(json.dumps(F.ifeval_prompts()[0])[:-1] + ', "x": ' + deep + "}\n")
    with pytest.raises(RecordError, match="nested"):
        ifeval.load(src)
    dlg = tmp / "dialogues.json"
    dlg.write_text("[" + deep + "]")
    with pytest.raises(RecordError, match="nested"):
        convai2.load(dlg)
    model = tmp / "model"
    model.mkdir()
    (model / "rm_config.json").write_text(deep)
    (model / "model.safetensors").write_bytes(b"x")
    res = F.cli(["eval-rm", f"model={model}", "split=all"], tmp / "runs")
    outcome, detail = F.judge(res, [str(model / "rm_config.json")])
    assert outcome == "refused", detail


@example(value="x")
@example(value=None)
@fuzz(5)
@given(value=st.one_of(F.TEXT, st.none(), st.lists(st.integers(), max_size=2), st.dictionaries(F.KEY, st.integers(),
                                                                                               max_size=1)))
def test_a_loss_weight_that_is_no_number_is_refused_at_load(value):
    """Was accepted by config loading (an untyped mapping), then a ValueError/TypeError traceback in training."""
    assume(F.roundtrips(value) and not F.type_accepts(float, value))
    item = f"loss_weights.preference={F.dump(value)}"
    with F.scratch() as tmp:
        _run_config(COMMANDS["train-rm"], [item], tmp, [f"override '{item[:40]}", "loss_weights.preference"])


def test_a_billion_laughs_config_is_refused_at_once(tmp_path):
    """Was a MemoryError after ~40 s: the source-line walk expanded every alias path (10^9 of them)."""
    import time

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nbomb: *a8\n")
    t0 = time.perf_counter()
    with F.tripwire():
        res = F.cli(["simulate", "-c", str(path)], tmp_path / "runs")
    assert F.judge(res, [f"{path}, line 1", "unknown key"])[0] == "refused", res
    assert time.perf_counter() - t0 < 5
    from rm_lab import config

    data, sources = config.read_yaml(path)  # aliases stay shared references, their lines the alias's
    assert data["bomb"] is data["a8"] and sources.label(("bomb", 3, 2)) == f"{path}, line 10"


# ----------------------------------------------------------------------------------------------
# a run folder's rm_config.json: its declared fields (RMConfig) are checked on load like a stage config


def _records_folder(tmp: Path) -> Path:
    folder = tmp / "records"
    folder.mkdir()
    for kind in ("character", "context", "interaction", "preference"):
        _write(F.VALID_ROWS[kind](), kind, "jsonl", folder)
    return folder


@pytest.mark.slow
@fuzz(12)
@given(data=st.data())
def test_eval_rm_refuses_bad_values_in_rm_config_json(data):
    """Was a traceback (hidden=-1: RuntimeError, dropout=7: ValueError, emb_dim='x': TypeError) or a model
    of zero members (n_members=0); the bad values come from RMConfig's own declarations."""
    from safetensors.torch import save_file
    import torch

    from rm_lab.reward.model import RMConfig

    case = data.draw(st.sampled_from([c for c in F.cases(RMConfig)]), label="key")
    field, value = case.dotted, data.draw(F.bad_values(case), label="value")
    with F.scratch() as tmp:
        model = tmp / "model"
        model.mkdir()
        cfg = {"backbone": None, "backbone_key": "x", "train_mode": "frozen", "heads": ["preference"], "emb_dim": 384,
               "hidden": 8, "n_layers": 1, "dropout": 0.1, "max_length": 64, "card_max_tokens": 8,
               "reply_max_tokens": 8, "n_members": 1, "seeds": [0], "style_features": [], "inputs": ["reply"]}
        cfg[field] = value
        (model / "rm_config.json").write_text(json.dumps(cfg))
        save_file({"m0.net.w": torch.zeros(4)}, str(model / "model.safetensors"))
        runs = tmp / "runs"
        res = F.cli(["eval-rm", f"model={model}", f"data={_records_folder(tmp)}", "split=all"], runs)
        outcome, detail = F.judge(res, [str(model / "rm_config.json"), field])
        _check("run folders", "eval-rm rm_config.json values", outcome,
               f"{field}={value!r}: {detail}")


@st.composite
def _bad_head_declarations(draw) -> tuple[dict, str]:
    """A `heads` mapping with one declaration its registry refuses, and the key the error must name."""
    from rm_lab.schema import HEAD_LIKELIHOODS

    name = draw(st.sampled_from(["engaging", "score", "x1"]))
    what = draw(st.sampled_from(["bad name", "not a mapping", "unknown key", "unknown kind", "no kind",
                                 "bradley_terry", "few levels", "fractional levels", "negative scale", "bad record",
                                 "truth column", "empty range", "range on binomial", "text levels"]))
    decl: object = {"kind": "binomial"}
    if what == "bad name":
        name = draw(st.sampled_from(["1x", "a-b", "a b", "é", "_"]))
    elif what == "not a mapping":
        decl = draw(st.sampled_from([5, "x", [1], 1.5]))
    elif what == "unknown key":
        decl = {"kind": "binomial", draw(F.KEY.filter(lambda k: k not in (
            "kind", "likelihood", "record", "column", "levels", "min", "max", "equals", "scale", "output", "doc"))): 1}
    elif what == "unknown kind":
        decl = {"kind": draw(F.TEXT.filter(lambda s: s not in HEAD_LIKELIHOODS and s.strip()))}
    elif what == "no kind":
        decl = {"column": "c"}
    elif what == "bradley_terry":
        decl = {"kind": "bradley_terry"}
    elif what == "few levels":
        decl = {"kind": "ordinal", "levels": draw(st.integers(-10, 1))}
    elif what == "fractional levels":
        decl = {"kind": "ordinal", "levels": draw(st.floats(2.01, 9.99))}
    elif what == "negative scale":
        decl = {"kind": "gaussian", "scale": -draw(st.floats(0.001, 100))}
    elif what == "bad record":
        decl = {"kind": "binomial", "record": draw(F.TEXT.filter(lambda s: s not in ("label", "interaction",
                                                                                    "steer_label")))}
    elif what == "truth column":
        decl = {"kind": "binomial", "column": "truth_engagement"}
    elif what == "empty range":
        decl = {"kind": "ordinal", "min": 3, "max": draw(st.integers(-5, 3))}
    elif what == "range on binomial":
        decl = {"kind": "binomial", "min": 0}
    else:
        decl = {"kind": "ordinal", "levels": draw(st.sampled_from(["five", True, [5], ".nan"]))}
    return {name: decl}, "heads"


@pytest.mark.slow
@fuzz(10)
@given(data=st.data())
def test_train_rm_refuses_bad_head_declarations(data):
    """heads and loss_weights are checked against the head registry and the data, after the run opens:
    still one line naming the key, and a run marked failed. (These lines do not yet name the override.)"""
    from rm_lab.reward.heads import BUILTIN

    if data.draw(st.booleans(), label="loss_weights"):  # a weight for a head that is not trained
        head = data.draw(F.KEY.filter(lambda k: k not in BUILTIN), label="head")
        item, key = f"loss_weights.{head}=1", "loss_weights"
    else:
        heads, key = data.draw(_bad_head_declarations(), label="heads")
        item = f"heads={F.dump(heads)}"
    with F.scratch() as tmp:
        runs = tmp / "runs"
        res = F.cli(["train-rm", item, "world.n_contexts=30", "world.n_preference_contexts=30", "world.n_characters=3",
                     "epochs=1", "pairwise=false", f"cache_dir={tmp / 'cache'}"], runs)
        _run_folder_check("run folders", "train-rm heads=, loss_weights=", res, runs, [key])
