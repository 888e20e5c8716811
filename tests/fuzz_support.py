"""Support for tests/test_fuzz.py: the real CLI in-process, bad values derived from each stage's field
declarations, valid records per kind to break, and the tally of what was tried.

The oracle here is the declarations (type hints and `param(...)` rules), never the validation code: a
generated value is garbage because the field's declared type or range says so, and the suite then checks
that the command refuses it with one `error:` line naming where the value came from.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io as _io
import json
import math
import os
import sys
import tempfile
import types
import typing
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml
from hypothesis import strategies as st

from rm_lab import config as cfgmod

# ----------------------------------------------------------------------------------------------
# the tally (what the README reports)

OUTCOMES = ("refused", "traceback", "silent", "misnamed", "left_run", "accepted_valid", "refused_valid")


class Tally:
    """Per (section, target): how many inputs were tried and how each ended.

    refused: the promised refusal (exit 2 and one named line, or a RecordError naming file/row/field);
    traceback: any other exception; silent: garbage accepted (exit 0, or config loading returned);
    misnamed: refused, but the line does not name the source, row or field it should;
    left_run: refused, but a run folder was left behind that is not marked failed (or, for config errors,
    any run folder: config is checked before the run opens);
    accepted_valid / refused_valid: the valid controls (a valid input must still be accepted).
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self.examples: dict[tuple[str, str, str], str] = {}

    def add(self, section: str, target: str, outcome: str, detail: str = "") -> str:
        assert outcome in OUTCOMES, outcome
        self.counts[(section, target)][outcome] += 1
        if outcome not in ("refused", "accepted_valid"):
            self.examples.setdefault((section, target, outcome), detail[:300])
        return outcome

    def rows(self) -> list[dict]:
        out = []
        for (section, target), c in sorted(self.counts.items()):
            out.append({"section": section, "target": target, "tried": sum(c.values()),
                        **{k: c.get(k, 0) for k in OUTCOMES}})
        return out

    def write(self, path: str | os.PathLike) -> Path:
        """JSON (`.json`) or a markdown table (anything else)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.rows()
        if path.suffix == ".json":
            path.write_text(json.dumps({"rows": rows, "problems": [
                {"section": s, "target": t, "outcome": o, "example": e} for (s, t, o), e in self.examples.items()]},
                indent=2) + "\n")
            return path
        lines = ["| section | command / loader | bad inputs tried | refused, named | tracebacks | silent acceptances "
                 "| misnamed | runs left looking complete | valid controls accepted |",
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        tot: Counter = Counter()
        for r in rows + [None]:
            if r is None:  # the total line
                r, label = {k: tot[k] for k in ("tried", *OUTCOMES)}, ("**all**", "")
            else:
                tot.update({k: r[k] for k in ("tried", *OUTCOMES)})
                label = (r["section"], r["target"])
            valid = r["accepted_valid"] + r["refused_valid"]
            lines.append(f"| {label[0]} | {label[1]} | {r['tried'] - valid} | {r['refused']} | {r['traceback']} | "
                         f"{r['silent']} | {r['misnamed']} | {r['left_run']} | "
                         + (f"{r['accepted_valid']}/{valid}" if valid else "-")
                         + " |")
        if self.examples:
            lines += ["", "Problems (first example of each):", ""]
            lines += [f"- {s} / {t} / {o}: `{e}`" for (s, t, o), e in self.examples.items()]
        path.write_text("\n".join(lines) + "\n")
        return path


TALLY = Tally()


# ----------------------------------------------------------------------------------------------
# the real CLI, in-process

class Accepted(BaseException):
    """Raised by the tripwire when config loading returns: the command would now start its work."""

    def __init__(self, cfg: Any):
        super().__init__(f"config accepted: {cfg!r}"[:300])
        self.cfg = cfg


@dataclass
class Result:
    code: int | None
    out: str
    err: str
    exc: BaseException | None  # an exception that escaped rm_lab.cli.main (a traceback), or Accepted

    @property
    def lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


@contextlib.contextmanager
def tripwire() -> Iterator[None]:
    """Make `rm_lab.config.load` raise `Accepted` instead of returning, so that a command handed garbage
    that its config loading lets through is caught at that point, before any real work starts."""
    real = cfgmod.load

    def load(*a, **kw):
        raise Accepted(real(*a, **kw))

    cfgmod.load = load
    try:
        yield
    finally:
        cfgmod.load = real


def cli(args: list[str], runs: Path) -> Result:
    """`rm_lab ARGS` through `rm_lab.cli.main` (as the console script runs it), with $RM_LAB_RUNS=runs;
    the environment and argv are restored afterwards (`--runs` sets $RM_LAB_RUNS for the process)."""
    from rm_lab import cli as climod

    env, argv = dict(os.environ), sys.argv
    os.environ["RM_LAB_RUNS"] = str(runs)
    sys.argv = ["rm_lab", *args]
    out, err = _io.StringIO(), _io.StringIO()
    code, exc = None, None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            climod.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001  (a traceback, or the tripwire)
        if isinstance(e, KeyboardInterrupt):
            raise
        exc = e
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(env)
    return Result(code, out.getvalue(), err.getvalue(), exc)


def judge(res: Result, must_name: list[str], must_not_name: list[str] = ()) -> tuple[str, str]:
    """(outcome, detail) of a command run on garbage: refused with one `error:` line that contains every
    string of `must_name` (and none of `must_not_name`), or what went wrong instead."""
    if isinstance(res.exc, Accepted):
        return "silent", str(res.exc)
    if res.exc is not None:
        return "traceback", f"{type(res.exc).__name__}: {res.exc}"
    if "Traceback (most recent call last)" in res.err + res.out:
        return "traceback", res.err[-300:]
    if res.code == 0:
        return "silent", f"exit 0; stdout {res.out[-200:]!r}"
    lines = res.lines
    if res.code != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
        return "misnamed", f"exit {res.code}, stderr {res.err[-300:]!r}"
    missing = [s for s in must_name if s not in lines[0]]
    wrong = [s for s in must_not_name if s in lines[0]]
    if missing or wrong:
        return "misnamed", f"{lines[0]!r} lacks {missing}" + (f" but names {wrong}" if wrong else "")
    return "refused", lines[0]


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per generated example (hypothesis examples must not share state)."""
    with tempfile.TemporaryDirectory(prefix="rm_lab_fuzz_") as d:
        yield Path(d)


# ----------------------------------------------------------------------------------------------
# run folders: nothing left that claims to be complete

DONE_FILES = ("model.safetensors", "rm_config.json", "pairwise.safetensors", "report.md", "report.json",
              "analysis.csv", "metrics.json")


def incomplete_artifacts(runs: Path) -> list[str]:
    """What under the runs root claims a completed run although the command failed: a registry row or a
    status.json that is not failed/stopped, a run folder without status, or a completion file in a failed
    run. [] when the command left nothing or left only failed runs."""
    problems = []
    if not runs.exists():
        return problems
    reg = runs / "registry.sqlite"
    if reg.exists():
        from rm_lab.registry import Registry

        for r in Registry(reg).runs():
            if r["status"] not in ("failed", "stopped"):
                problems.append(f"registry row {r['run_id']} ({r['kind']}) is {r['status']}")
    for cfg in runs.rglob("config.yaml"):
        folder = cfg.parent
        status = folder / "status.json"
        if not status.is_file():
            problems.append(f"{folder}: no status.json")
            continue
        st_ = json.loads(status.read_text()).get("status")
        if st_ not in ("failed", "stopped"):
            problems.append(f"{folder}: status {st_}")
        for name in DONE_FILES:
            if (folder / name).exists():
                problems.append(f"{folder}: {name} in a {st_} run")
    return problems


def run_folders(runs: Path) -> list[Path]:
    return sorted(p.parent for p in runs.rglob("config.yaml")) if runs.exists() else []


# ----------------------------------------------------------------------------------------------
# commands and their configs

@dataclass(frozen=True)
class Command:
    """A stage command as the factory registered it: its config dataclass, default YAML and the arguments
    and options it requires besides the config (filled with placeholders: config loading comes first)."""

    name: str
    schema: Any  # a class or "module:Class"
    default_config: str | None  # the YAML in configs/ used when -c is not given
    required: tuple[tuple[str, str | None], ...] = ()  # (parameter name, option flag or None for an argument)
    value_options: tuple[tuple[str, str], ...] = ()  # (config key, flag) of options that set a config key
    flags: tuple[str, ...] = ()  # every option's first flag (--runs, --resume, ...)

    @property
    def cls(self) -> type:
        return cfgmod._resolve(self.schema)

    def argv(self, tmp: Path, rest: list[str]) -> list[str]:
        """The command line: the required arguments (placeholder paths), `rest`, the required options."""
        args, opts = [], []
        for name, flag in self.required:
            placeholder = tmp / f"placeholder_{name}.jsonl"
            placeholder.touch()
            (opts.extend([flag, str(placeholder)]) if flag else args.append(str(placeholder)))
        return [self.name, *args, *rest, *opts]

    def shipped(self) -> dict:
        """The default YAML's mapping (what a user copies and edits); {} when the command has none."""
        if self.default_config is None:
            return {}
        return cfgmod.load_yaml(cfgmod.resolve_path(self.default_config))


SHARED_PARAMS = ("overrides", "config", "runs")


def discover_commands() -> dict[str, Command]:
    """Every command registered on `rm_lab.cli.app` that the stage-command factory built (each has a config
    dataclass); a command added later is fuzzed without editing this file."""
    import typer.main

    from rm_lab.cli import app
    from rm_lab.commands.common import StageCommand

    out = {}
    for name, c in typer.main.get_command(app).commands.items():
        if not isinstance(c, StageCommand):
            continue
        fields = {f.name for f in dataclasses.fields(cfgmod._resolve(c.schema_spec))}
        required, value_options = [], []
        flags = tuple(p.opts[0] for p in c.params if p.param_type_name == "option")
        for p in c.params:
            if p.name in SHARED_PARAMS:
                continue
            is_arg = p.param_type_name == "argument"
            if p.required or is_arg:  # an optional positional too: overrides typed first would fill it
                required.append((p.name, None if is_arg else p.opts[0]))
            elif not is_arg and p.name in fields and not getattr(p, "is_flag", False):
                value_options.append((p.name, p.opts[0]))
        out[name] = Command(name, c.schema_spec, c.default_config, tuple(required), tuple(value_options), flags)
    return out


def registered_commands() -> list[str]:
    import typer.main

    from rm_lab.cli import app

    return sorted(typer.main.get_command(app).commands)


# ----------------------------------------------------------------------------------------------
# what a declared type accepts (before its rule), read from the hints

def _args(tp: Any) -> tuple[list[Any], bool]:
    """The alternatives of a (possibly optional) type, and whether null is one of them."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        a = typing.get_args(tp)
        return [x for x in a if x is not type(None)], type(None) in a
    return [tp], tp is type(None)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def type_accepts(tp: Any, v: Any) -> bool:
    """Whether a value of this shape is of declared type `tp` (bounds and choices aside): ints for floats,
    numbers written for a text field, lists for lists of the item type, mappings for mappings/dataclasses."""
    alts, nullable = _args(tp)
    if v is None:
        return nullable or tp is Any
    if len(alts) > 1 or nullable:
        return any(type_accepts(a, v) for a in alts)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin is typing.Literal:
        return v in args and not (isinstance(v, bool) and not any(isinstance(a, bool) for a in args))
    if dataclasses.is_dataclass(tp) or tp is dict or origin is dict:
        if not isinstance(v, dict):
            return False
        if origin is dict and len(args) == 2:
            return all(type_accepts(args[0], k) and type_accepts(args[1], x) for k, x in v.items())
        return True
    if tp in (list, tuple) or origin in (list, tuple):
        return isinstance(v, list) and all(type_accepts(args[0], x) for x in v) if args else isinstance(v, list)
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        if not _is_num(v):
            return False
        try:
            return math.isfinite(float(v))
        except OverflowError:
            return False
    if tp is str:
        return _is_num(v) or isinstance(v, str)
    return True


# ----------------------------------------------------------------------------------------------
# bad values for a field

TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=24)
KEY = st.from_regex(r"[a-z_][a-z0-9_]{0,14}", fullmatch=True)
_SCALARS = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                     TEXT, st.none(), st.integers(10**19, 10**40), st.integers(-10**40, -10**19))
POOL = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3), st.dictionaries(KEY, _SCALARS, max_size=2),
                 st.lists(st.dictionaries(KEY, st.integers(), max_size=1), min_size=1, max_size=2))
# the shapes of values, each with examples: a declared type that refuses every example of a shape gets
# values of that shape as wrong-typed ones (so the generators rarely have to filter)
SHAPES = [
    (st.booleans(), [True, False]),
    (st.integers(-10**6, 10**6), [0, 7, -3]),
    (st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)), [0.5, -2.25]),
    (st.sampled_from([math.nan, math.inf, -math.inf]), [math.nan, math.inf]),
    (TEXT.filter(lambda s: s.strip()), ["x", "five", "1.5"]),
    (st.none(), [None]),
    (st.integers(10**19, 10**40), [10**30]),
    (st.lists(st.one_of(st.integers(), TEXT), min_size=1, max_size=3), [[1], ["x"]]),
    (st.lists(st.one_of(st.booleans(), st.none(), st.dictionaries(KEY, st.integers(), max_size=1)), min_size=1,
              max_size=2), [[True], [None], [{"a": 1}]]),
    (st.dictionaries(KEY, _SCALARS, min_size=1, max_size=2), [{"a": 1}, {"b": "x"}]),
]


@dataclass(frozen=True)
class Case:
    """One key of a stage config: its dotted path, declared type and rule."""

    path: tuple[str, ...]
    tp: Any
    rule: cfgmod.Rule | None

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def cases(cls: type, prefix: tuple[str, ...] = (), depth: int = 0) -> list[Case]:
    """Every key of `cls`, and the keys of the stage dataclasses nested in it (typed, or by `schema=`)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        rule, tp = cfgmod.rule_of(f), hints[f.name]
        out.append(Case((*prefix, f.name), tp, rule))
        nested = tp if dataclasses.is_dataclass(tp) else (rule.schema_cls() if rule and rule.schema else None)
        if nested is not None and depth < 2:
            out += cases(nested, (*prefix, f.name), depth + 1)
    return out


def nested_class(case: Case) -> type | None:
    if dataclasses.is_dataclass(case.tp):
        return case.tp
    return case.rule.schema_cls() if case.rule and case.rule.schema else None


def _below(lo: float, strict: bool, integer: bool) -> st.SearchStrategy:
    """Numbers the lower bound refuses: below it, or at it when the bound is strict (gt)."""
    if integer:
        top = math.floor(lo) if strict else math.ceil(lo) - 1
        return st.one_of(st.integers(top - 10**6, top), st.integers(-10**40, min(top, -10**19)))
    return st.floats(min_value=lo - 1e12, max_value=lo, exclude_max=not strict)


def _above(hi: float, strict: bool, integer: bool) -> st.SearchStrategy:
    """Numbers the upper bound refuses, up to integers beyond any float (they must not overflow)."""
    if integer:
        bottom = math.ceil(hi) if strict else math.floor(hi) + 1
        return st.one_of(st.integers(bottom, bottom + 10**6), st.integers(max(bottom, 10**19), 10**40),
                         st.integers(10**309, 10**310))
    return st.one_of(st.floats(min_value=hi, max_value=hi + 1e12, exclude_min=not strict),
                     st.integers(10**309, 10**310))


def _numeric_base(case: Case) -> type | None:
    """int or float when the rule's range applies to the value (or to each item/value of a container)."""
    for a in _args(case.tp)[0]:
        origin, args = typing.get_origin(a), typing.get_args(a)
        if a in (int, float):
            return a
        if origin in (list, dict) and args and args[-1] in (int, float):
            return args[-1]
        if a is dict and case.rule is not None and case.rule.range_text():  # untyped, with a range (loss_weights)
            return float
    return None


def _wrap(case: Case, item: st.SearchStrategy) -> st.SearchStrategy:
    """A bad item placed where the rule applies: the value itself, an item of a list, a value of a mapping."""
    alts = _args(case.tp)[0]
    a = alts[0]
    origin = typing.get_origin(a)
    if origin is list or a is list:
        good = case.rule.choice_list() if case.rule and case.rule.choices is not None else []
        return st.tuples(st.lists(st.sampled_from(good), max_size=2) if good else st.just([]), item,
                         st.integers(0, 2)).map(lambda t: t[0][:t[2]] + [t[1]] + t[0][t[2]:])
    if origin is dict or a is dict:
        keys = case.rule.choice_list("keys") if case.rule and case.rule.keys is not None else None
        return st.tuples(st.sampled_from(keys) if keys else KEY, item).map(lambda t: {t[0]: t[1]})
    return item


def wrong_types(tp: Any) -> st.SearchStrategy:
    """Values of shapes that declared type `tp` refuses (filtered for the odd value that it would accept)."""
    shapes = [s for s, examples in SHAPES if not any(type_accepts(tp, v) for v in examples)]
    if not shapes:
        return POOL.filter(lambda v: not type_accepts(tp, v))
    return st.one_of(shapes).filter(lambda v: not type_accepts(tp, v))


def bad_values(case: Case) -> st.SearchStrategy:
    """Values the declaration of `case` refuses: of another type, outside the range, not a choice,
    not a multiple, too short, or (for a nested stage) a mapping with an unknown key."""
    rule = case.rule or cfgmod.Rule()
    alts, nullable = _args(case.tp)
    strategies = [wrong_types(case.tp)]
    base = _numeric_base(case)
    if base is not None:
        integer = base is int
        if rule.ge is not None or rule.gt is not None:
            lo, strict = (rule.gt, True) if rule.gt is not None else (rule.ge, False)
            strategies.append(_wrap(case, _below(lo, strict, integer)))
        if rule.le is not None or rule.lt is not None:
            hi, strict = (rule.lt, True) if rule.lt is not None else (rule.le, False)
            strategies.append(_wrap(case, _above(hi, strict, integer)))
        if base is float:
            strategies.append(_wrap(case, st.sampled_from([math.nan, math.inf, -math.inf])))
        if not any(a in (int, float) for a in alts):
            # the items or values of a container with a range are numbers: other things are refused
            strategies.append(_wrap(case, wrong_types(base)))
        if rule.multiple_of:
            lo = int(rule.ge or 0)
            hi = int(rule.le if rule.le is not None else lo + 10**6)
            strategies.append(st.integers(lo, hi).filter(lambda v: v % rule.multiple_of != 0))
    if rule.choices is not None:
        good = [str(c) for c in rule.choice_list()]
        strategies.append(_wrap(case, TEXT.filter(lambda s: s not in good)))
    lit = cfgmod._literal_args(case.tp)
    if lit is not None:
        strategies.append(TEXT.filter(lambda s: s not in lit))
    if rule.keys is not None:
        keys = rule.choice_list("keys")
        strategies.append(st.tuples(KEY.filter(lambda k: k not in keys), st.integers(1, 5)).map(lambda t: {t[0]: t[1]}))
    if rule.min_len:
        empty = {list: [], dict: {}, str: ""}
        for a in alts:
            o = typing.get_origin(a) or a
            if o in empty:
                strategies.append(st.just(empty[o]))
    nested = nested_class(case)
    if nested is not None:
        known = {f.name for f in dataclasses.fields(nested)}
        strategies.append(st.tuples(KEY.filter(lambda k: k not in known), st.integers(0, 3))
                          .map(lambda t: {t[0]: t[1]}))
    return st.one_of(strategies)


def unknown_keys(cls: type) -> st.SearchStrategy:
    known = {f.name for f in dataclasses.fields(cls)}
    typos = sorted(({k + "s" for k in known} | {k[:-1] for k in known if len(k) > 2} | {k.upper() for k in known})
                   - known)
    return st.one_of(st.sampled_from(typos), KEY).filter(lambda k: k not in known)


# cross-field rules each stage declares in __post_init__: (overrides, the keys the error must name)
def cross_field(command: str) -> st.SearchStrategy | None:
    ab = st.tuples(st.integers(1, 9), st.just(0.1)).map(
        lambda t: ({"eligible_users": t[0], "arm_share": t[1]}, ["eligible_users", "arm_share"]))
    early = st.integers(1, 50).map(lambda n: ({"early_stopping": n, "val_fraction": 0.0},
                                              ["early_stopping", "val_fraction"]))
    refit = st.sampled_from(["top_k", "full"]).map(lambda m: ({"head_refit": True, "train_mode": m},
                                                               ["head_refit", "train_mode"]))
    mix = st.tuples(st.floats(0, 1), st.floats(0, 1)).filter(lambda t: abs(t[0] + t[1] - 1) > 1e-3).map(
        lambda t: ({"traffic_mix": {"internal": t[0], "user": t[1]}}, ["traffic_mix"]))

    def nest(prefix, s):
        return s.map(lambda t: ({f"{prefix}.{k}": v for k, v in t[0].items()}, [f"{prefix}.{k}" for k in t[1]]))

    return {"ab-test": ab, "train-rm": st.one_of(early, refit), "curate": mix,
            "demo": st.one_of(nest("ab", ab), nest("train", early))}.get(command)


def dump(value: Any) -> str:
    """A value as the text after `key=` (YAML flow style, one line)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True)
    return text.strip().removesuffix("...").strip()


def roundtrips(value: Any) -> bool:
    """The override text parses back to this value (YAML resolves some texts to other types)."""
    try:
        back = yaml.safe_load(dump(value)) if dump(value) != "" else ""
    except yaml.YAMLError:
        return False
    return _same(back, value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def nest(path: tuple[str, ...], value: Any) -> dict:
    out: Any = value
    for p in reversed(path):
        out = {p: out}
    return out


def yaml_with(base: dict, path: tuple[str, ...], value: Any) -> tuple[str, int]:
    """A config file: `base` without the top key of `path`, then `path: value` as a nested block;
    returns the text and the line of the last key of `path`."""
    rest = {k: v for k, v in base.items() if k != path[0]}
    head = yaml.safe_dump(rest, sort_keys=False, allow_unicode=True, width=10**9) if rest else ""
    block = yaml.safe_dump(nest(path, value), sort_keys=False, allow_unicode=True, width=10**9,
                           default_flow_style=False)
    return head + block, head.count("\n") + len(path)


# ----------------------------------------------------------------------------------------------
# valid records of each kind (the inputs the record fuzz breaks one defect at a time)

def _ab_rows() -> list[dict]:
    rows = []
    for arm, eu, ctrl in (("a", 100, True), ("b", 120, False), ("c", 110, False)):
        rows.append({"experiment_id": "t", "arm": arm, "is_control": ctrl, "day": None, "days": 7, "users": 1000,
                     "engaged_users": eu, "messages": 500.0, "engaged_user_days": 300.0, "text": f"headline {arm}",
                     "active_days_sq": 900.0, "messages_sq": 2000.0, "active_messages": 1000.0, "allocation": 0.3})
    return rows


def _reply_set_rows() -> list[dict]:
    """Three arms of one test (one control); the last arm holds one reply, so a field changed on the last
    row alone (the controls' 2 MB text) still leaves every arm's measures consistent."""
    rows = []
    for arm, ctrl, breadth, depth, n in (("a", True, 0.30, 2.0, 2), ("b", False, 0.33, 2.1, 2),
                                         ("c", False, 0.28, 1.9, 1)):
        for i in range(n):
            rows.append({"experiment_id": "t", "arm": arm, "policy": f"policy-{arm}", "is_control": ctrl,
                         "context_id": f"c{i}", "response": f"reply {arm}{i}", "users": 1000, "breadth": breadth,
                         "breadth_se": 0.01, "depth": depth, "depth_se": 0.05, "sessions": 2000.0})
    return rows


VALID_ROWS: dict[str, Callable[[], list[dict]]] = {
    "character": lambda: [{"character_id": f"ch{i}", "name": f"Name {i}", "persona": ["likes tea", "kind"],
                           "instructions": [{"instruction_id": "punctuation:no_comma", "kwargs": {}}, "be brief"],
                           "keywords": ["tea"]} for i in range(3)],
    "context": lambda: [{"context_id": f"c{i}", "character_id": "ch0",
                         "history": [{"role": "user", "content": f"hi {i}"}], "traffic": ("user", "internal")[i % 2],
                         "prompt_type": None, "conversation_id": f"d{i}"} for i in range(3)],
    "interaction": lambda: [{"context_id": f"c{i}", "response": f"reply {i}", "policy": "baseline",
                             "continued": bool(i % 2), "thumb": (-1, 0, 1)[i], "depth": float(i), "regenerated": False}
                            for i in range(3)],
    "preference": lambda: [{"context_id": f"c{i}", "chosen": f"good {i}", "rejected": f"bad {i}",
                            "source": ("human", "ai", "world")[i], "margin": 0.5} for i in range(3)],
    "steer_label": lambda: [{"context_id": f"c{i}", "response": f"reply {i}", "instruction_id": "punctuation:no_comma",
                             "followed": bool(i % 2), "violation": False} for i in range(3)],
    "ab_arm": _ab_rows,
    "arm_reply_set": _reply_set_rows,
    "label": lambda: [{"context_id": f"c{i}", "response": f"reply {i}", "name": "engaging", "value": float(i + 2),
                       "scale_min": 1.0, "scale_max": 5.0, "rater": f"r{i}", "source": "fuzz"} for i in range(3)],
    "head": lambda: [{"name": "engaging", "kind": "ordinal", "record": "label", "column": "engaging", "levels": 5,
                      "min": 1.0, "max": 5.0, "scale": None, "output": None, "doc": None},
                     {"name": "engaged", "kind": "binomial", "record": "label", "column": "engaged", "levels": None,
                      "min": None, "max": None, "scale": None, "output": None, "doc": "0/1"},
                     {"name": "score", "kind": "gaussian", "record": "label", "column": "score", "levels": None,
                      "min": None, "max": None, "scale": 1.0, "output": None, "doc": None}],
}


def wrong_typed(kind: str, nullable: bool) -> st.SearchStrategy:
    """JSON values that are not of record field kind `kind` (the schema's str/int/float/bool/json kinds)."""
    pool = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=True),
                     TEXT, st.lists(st.integers(), max_size=2), st.dictionaries(KEY, st.integers(), max_size=1),
                     st.integers(2**63, 10**40), st.integers(10**309, 10**310))

    def ok(v):
        if kind == "str":
            return isinstance(v, str)
        if kind == "int":
            return isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, float) and math.isfinite(v)
                                                                       and v == int(v))
        if kind == "float":
            return _is_num(v) and math.isfinite(float(v)) if not (isinstance(v, int) and abs(v) > 10**308) else False
        if kind == "bool":
            return isinstance(v, bool) or (isinstance(v, int) and v in (0, 1))
        if kind == "json_list":
            return isinstance(v, list)
        if kind == "json_dict":
            return isinstance(v, dict)
        return isinstance(v, (list, dict))

    return pool.filter(lambda v: not ok(v))


def jsonl_bytes(rows: list[dict], blank_after: set[int] = frozenset()) -> tuple[bytes, list[int]]:
    """JSON Lines (NaN written as NaN, as Python's json does) with blank lines after the rows in
    `blank_after`; returns the bytes and each row's 1-based line number."""
    out, lines, n = [], [], 0
    for i, r in enumerate(rows):
        n += 1
        lines.append(n)
        out.append(json.dumps(r, ensure_ascii=False))
        if i in blank_after:
            out.append("")
            n += 1
    return ("\n".join(out) + "\n").encode("utf-8"), lines


def write_parquet(rows: list[dict], path: Path, kind: str) -> Path:
    """Rows as a Parquet file the way rm_lab stores them (JSON fields as JSON text), without validating."""
    import pandas as pd

    from rm_lab import io

    cols = list(dict.fromkeys(k for r in rows for k in r))
    df = pd.DataFrame({c: [r.get(c) for r in rows] for c in cols}) if rows else pd.DataFrame(columns=cols)
    return io.write_records(df, path, kind, validate=False)


def copy_rows(rows: list[dict]) -> list[dict]:
    return copy.deepcopy(rows)


# ----------------------------------------------------------------------------------------------
# defects of canonical records: each names the row (0-based index into the rows) and field it breaks

INT64 = 2**63


@dataclass
class Defect:
    """Rows with one defect, and where a loader must say it is (row: index into `rows`; None: no row)."""

    what: str
    rows: list[dict]
    row: int | None
    field: str | None
    parquet_ok: bool = True  # the defect survives a Parquet round trip (mixed-type columns do not)


def _field_bad(kind: str, integer_floats: bool = True) -> Callable[[Any], bool]:
    """Whether a JSON value is NOT of record field kind `kind`: ints within int64 (or integral floats) for
    int, finite numbers for float, true/false or 0/1 for bool, lists/objects for the JSON kinds."""
    def bad(v: Any) -> bool:
        if kind == "str":
            return not isinstance(v, str)
        if kind == "int":
            if isinstance(v, bool):
                return True
            if isinstance(v, int):
                return abs(v) >= INT64
            return not (isinstance(v, float) and math.isfinite(v) and v == int(v) and abs(v) < INT64)
        if kind == "float":
            if isinstance(v, bool) or not _is_num(v):
                return True
            try:
                return not math.isfinite(float(v))
            except OverflowError:
                return True
        if kind == "bool":
            return not (isinstance(v, bool) or (type(v) is int and v in (0, 1)))
        if kind == "json_list":
            return not isinstance(v, list)
        if kind == "json_dict":
            return not isinstance(v, dict)
        return not isinstance(v, (list, dict))
    return bad


RECORD_SHAPES = [
    (st.booleans(), [True, False]),
    (st.integers(-10**6, 10**6), [2, -3]),
    (st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)), [0.5, -2.25]),
    (st.sampled_from([math.inf, -math.inf]), [math.inf]),
    (TEXT, ["x", ""]),
    (st.lists(st.integers(-3, 3), max_size=2), [[], [1]]),
    (st.dictionaries(KEY, st.integers(), max_size=1), [{}, {"a": 1}]),
    (st.one_of(st.integers(INT64, 10**40), st.integers(-10**40, -INT64)), [INT64, -INT64 - 1]),
    (st.integers(10**309, 10**310), [10**309]),
    (st.sampled_from([1e19, -1e19, 1e300]), [1e19, 1e300]),
]


def record_wrong_types(kind: str) -> st.SearchStrategy:
    """JSON values of shapes that record field kind `kind` refuses (the odd accepted value filtered out)."""
    bad = _field_bad(kind)
    shapes = [s for s, examples in RECORD_SHAPES if all(bad(v) for v in examples)]
    return st.one_of(shapes).filter(bad)


RECORD_POOL = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=True),
                        TEXT, st.lists(st.integers(-3, 3), max_size=2), st.dictionaries(KEY, st.integers(), max_size=1),
                        st.integers(INT64, 10**40), st.integers(-10**40, -INT64), st.integers(10**309, 10**310),
                        st.sampled_from([1e19, -1e19, 1e300]))


def _range_bad(f) -> st.SearchStrategy | None:
    """Values of the right type that the field's declared choices, bounds or non-emptiness refuse."""
    opts = []
    if f.choices is not None:
        if f.kind == "str":
            opts.append(TEXT.filter(lambda s: s not in f.choices))
        else:
            opts.append(st.integers(-10**6, 10**6).filter(lambda v: v not in f.choices))
    if f.min is not None and f.kind in ("int", "float"):
        opts.append(st.integers(int(math.ceil(f.min)) - 10**6, int(math.ceil(f.min)) - 1) if f.kind == "int" else
                    st.floats(f.min - 1e9, f.min, exclude_max=True))
    if f.max is not None and f.kind in ("int", "float"):
        opts.append(st.integers(int(f.max) + 1, int(f.max) + 10**6) if f.kind == "int" else
                    st.floats(f.max, f.max + 1e9, exclude_min=True))
    if f.nonempty:
        opts.append(st.sampled_from(["", " ", "   ", "\t"]))
    return st.one_of(opts) if opts else None


def _history_bad() -> st.SearchStrategy:
    """A conversation history with one malformed turn (not an object, no role/content, unknown role, non-text)."""
    return st.one_of(
        st.sampled_from(["hello", 5, [1, 2]]).map(lambda t: [{"role": "user", "content": "hi"}, t]),
        st.just([{"content": "hi"}]), st.just([{"role": "user"}]),
        TEXT.filter(lambda r: r not in ("system", "user", "assistant")).map(lambda r: [{"role": r, "content": "x"}]),
        st.sampled_from([5, None, ["x"], {"a": 1}]).map(lambda c: [{"role": "user", "content": c}]))


# relations and whole-experiment rules of the canonical kinds, broken on purpose:
# (what, function(rows, row index, magnitude) -> (rows, row, field))
def _ab_rules() -> list[tuple[str, Callable]]:
    def setv(field, fn, report=None):
        def apply(rows, i, d):
            rows[i][field] = fn(rows[i], d)
            return rows, i, report or field
        return apply

    def second_control(rows, i, d):
        j = 1 + i % (len(rows) - 1)
        rows[j]["is_control"] = True
        return rows, j, "is_control"

    def no_control(rows, i, d):
        for r in rows:
            r["is_control"] = False
        return rows, 0, "is_control"

    def single_arm(rows, i, d):
        return rows[:1], 0, "arm"

    def other_length(rows, i, d):
        j = 1 + i % (len(rows) - 1)
        rows[j]["days"] = rows[0]["days"] + d
        return rows, j, "days"

    def over_allocated(rows, i, d):
        rows[i]["allocation"] = min(1.0, 0.41 + d / 1e7)
        return rows, len(rows) - 1, "allocation"

    def orphan_day(rows, i, d):
        extra = dict(rows[1], arm="zz", day=0, allocation=None)
        return rows + [extra], len(rows), "day"

    def only_days(rows, i, d):
        for r in rows:
            r["day"] = 0
        return rows, 0, "day"

    return [
        ("clicks above impressions", setv("engaged_users", lambda r, d: r["users"] + d)),
        ("fewer user-days than engaged users",
         setv("engaged_user_days", lambda r, d: r["engaged_users"] - min(d, 100))),
        ("more user-days than days allow", setv("engaged_user_days", lambda r, d: r["engaged_users"] * r["days"] + d)),
        ("fewer messages than engaged users", setv("messages", lambda r, d: r["engaged_users"] - min(d, 100))),
        ("a day beyond the test", setv("day", lambda r, d: r["days"] + d - 1)),
        ("a square sum below the sum", setv("active_days_sq", lambda r, d: r["engaged_user_days"] - min(d, 300))),
        ("messages_sq below messages", setv("messages_sq", lambda r, d: r["messages"] - min(d, 500))),
        ("active_messages below messages", setv("active_messages", lambda r, d: r["messages"] - min(d, 500))),
        ("allocation above 1", setv("allocation", lambda r, d: 1 + d / 1e3)),
        ("two controls", second_control), ("no control", no_control), ("a single arm", single_arm),
        ("arms of different lengths", other_length), ("allocations summing above 1", over_allocated),
        ("a per-day row without its arm's total", orphan_day), ("per-day rows only", only_days),
    ]


def _label_rules() -> list[tuple[str, Callable]]:
    def below(rows, i, d):
        rows[i]["value"] = rows[i]["scale_min"] - d
        return rows, i, "value"

    def above(rows, i, d):
        rows[i]["value"] = rows[i]["scale_max"] + d
        return rows, i, "value"

    def empty_scale(rows, i, d):
        rows[i]["scale_min"] = rows[i]["scale_max"] = rows[i]["value"]
        return rows, i, "scale_min"

    return [("a value below its scale", below), ("a value above its scale", above), ("an empty scale", empty_scale)]


RULES = {"ab_arm": _ab_rules, "label": _label_rules}


@st.composite
def record_defects(draw, kind_name: str) -> Defect:
    """Valid rows of `kind_name` with exactly one defect the schema declares as such."""
    from rm_lab.schema import KINDS

    kind = KINDS[kind_name]
    rows = copy.deepcopy(VALID_ROWS[kind_name]())
    i = draw(st.integers(0, len(rows) - 1))
    fields = [f for f in kind.fields if f.name in rows[0]]
    options = ["type", "null", "missing", "range", "key", "rule", "history"]
    what = draw(st.sampled_from(options))
    if what == "type":
        f = draw(st.sampled_from(fields))
        v = draw(record_wrong_types(f.kind))
        rows[i][f.name] = v
        return Defect(f"{f.name} = {v!r:.60}", rows, i, f.name, parquet_ok=False)
    if what == "null":
        cand = [f for f in fields if not f.nullable]
        f = draw(st.sampled_from(cand))
        rows[i][f.name] = None
        return Defect(f"{f.name} = null", rows, i, f.name)
    if what == "missing":
        f = draw(st.sampled_from([f for f in fields if f.required]))
        for r in rows:
            r.pop(f.name)
        return Defect(f"no {f.name} column", rows, None, f.name)
    if what == "range":
        cand = [f for f in fields if _range_bad(f) is not None]
        if cand:
            f = draw(st.sampled_from(cand))
            v = draw(_range_bad(f))
            rows[i][f.name] = v
            return Defect(f"{f.name} = {v!r:.60}", rows, i, f.name)
    if what == "key" and kind.key:
        j = draw(st.integers(1, len(rows) - 1))
        for k in kind.key:
            if k in rows[0]:
                rows[j][k] = rows[0][k]
        return Defect(f"row {j} repeats the key {kind.key} of row 0", rows, j, kind.key[-1])
    if what == "rule" and kind_name in RULES:
        name, apply = draw(st.sampled_from(RULES[kind_name]()))
        rows, row, field = apply(rows, i, draw(st.integers(1, 10**4)))
        return Defect(name, rows, row, field)
    if what == "history" and "history" in rows[0]:
        rows[i]["history"] = draw(_history_bad())
        return Defect(f"history = {rows[i]['history']!r:.60}", rows, i, "history")
    # the kind has no such rule: a null in its first required field instead
    f = next(f for f in fields if not f.nullable)
    rows[i][f.name] = None
    return Defect(f"{f.name} = null", rows, i, f.name)


def bad_utf8_parquet(rows: list[dict], kind_name: str, field: str, i: int, path: Path) -> Path:
    """Rows as Parquet with the text of `field` in row `i` holding Latin-1 bytes (Arrow writes them as is)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rm_lab import io
    from rm_lab.schema import KINDS

    df = pd.DataFrame(rows)
    table = pa.Table.from_pandas(io._to_storable(df, KINDS[kind_name]), preserve_index=False)
    vals = [None if v is None else v.encode() for v in table.column(field).to_pylist()]
    vals[i] = b"caf\xe9 cr\xe8me"
    raw = pa.array(vals, type=pa.binary())
    text = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers(), null_count=raw.null_count)
    table = table.set_column(table.column_names.index(field), field, text)
    pq.write_table(table, path)
    return path


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


# ----------------------------------------------------------------------------------------------
# the public-data sources: a small valid file of each, and its defects (row and field as each names them:
# Parquet row index, JSON list element, JSONL line, CSV spreadsheet row with the header as row 1)

def upworthy_rows() -> list[dict]:
    tests = [("t1", 3), ("t2", 2)]
    rows = []
    for t, n in tests:
        for k in range(n):
            rows.append({"clickability_test_id": t, "headline": f"Headline {t} {k}", "impressions": 1000 + k,
                         "clicks": 10 + k, "lede": "<p>lede</p>", "excerpt": "excerpt", "eyecatcher_id": f"img{k}",
                         "test_week": 201301, "significance": 1.5, "winner": k == 0, "first_place": k == 0})
    return rows


def convai2_dialogues() -> list[dict]:
    def dialogue(i):
        return {"dialog": [
            {"id": 0, "sender": "participant1", "text": f"hello there {i}", "evaluation_score": None,
             "sender_class": "Human"},
            {"id": 1, "sender": "participant2", "text": "hi, i like cats", "evaluation_score": 1,
             "sender_class": "Bot"},
            {"id": 2, "sender": "participant1", "text": "nice", "evaluation_score": None, "sender_class": "Human"}],
            "bot_profile": ["i like cats", "i live in paris"], "user_profile": ["i like dogs"], "eval_score": 4,
            "profile_match": 1, "participant1_id": {"class": "User", "user_id": "u1"},
            "participant2_id": {"class": "Bot", "user_id": "bot1"}}
    return [dialogue(i) for i in range(2)]


def ifeval_prompts() -> list[dict]:
    return [{"key": 1000 + i, "prompt": f"Write a poem about tea number {i}.",
             "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
             "kwargs": [{}, {"relation": "less than", "num_words": 50}]} for i in range(3)]


PE_HEADER = ["query", "response", "human_score", "Eng_Score_MeanPooling"]


def pe_rows() -> list[list[str]]:
    return [[f"how are you {i}", f"fine thanks {i}", str(1 + i), "0.5"] for i in range(3)]


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    import csv

    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


@dataclass
class SourceDefect:
    """A source file with one defect: its bytes (or rows for Parquet) and where the loader must say it is."""

    what: str
    content: Any  # bytes, or a list of row dicts for Parquet
    row: int | None
    field: str | None


NOT_UTF8 = st.sampled_from([b"caf\xe9", b"\xff\xfe", b"\xc3(", b"x\x80y"])
_MARK = "\u2603BAD\u2603"


def _with_bad_bytes(text: str, bad: bytes) -> bytes:
    return text.encode("utf-8").replace(_MARK.encode(), bad)


@st.composite
def upworthy_defects(draw) -> SourceDefect:
    rows = upworthy_rows()
    i = draw(st.integers(0, len(rows) - 1))
    what = draw(st.sampled_from(["null text", "negative count", "fractional count", "null count", "text count",
                                 "clicks above impressions", "missing column", "bad week", "negative significance",
                                 "text winner", "a single package"]))
    if what == "null text":
        f = draw(st.sampled_from(["clickability_test_id", "headline"]))
        rows[i][f] = None
        return SourceDefect(what, rows, i, f)
    if what in ("negative count", "fractional count", "null count"):
        f = draw(st.sampled_from(["impressions", "clicks"]))
        v = {"negative count": -draw(st.integers(1, 10**6)), "fractional count": draw(st.integers(0, 99)) + 0.5,
             "null count": None}[what]
        for r in rows:  # one column type
            r[f] = float(r[f]) if what != "negative count" else r[f]
        rows[i][f] = v
        return SourceDefect(what, rows, i, f)
    if what == "text count":
        f = draw(st.sampled_from(["impressions", "clicks"]))
        for r in rows:
            r[f] = draw(st.sampled_from(["many", "1e", "ten", "-"]))
        return SourceDefect(what, rows, 0, f)
    if what == "clicks above impressions":
        rows[i]["clicks"] = rows[i]["impressions"] + draw(st.integers(1, 10**6))
        return SourceDefect(what, rows, i, "clicks")
    if what == "missing column":
        f = draw(st.sampled_from(["clickability_test_id", "headline", "impressions", "clicks"]))
        for r in rows:
            r.pop(f)
        return SourceDefect(what, rows, 0, f)
    if what == "bad week":
        for r in rows:
            r["test_week"] = float(r["test_week"])
        rows[i]["test_week"] = 201301.5
        return SourceDefect(what, rows, i, "test_week")
    if what == "negative significance":
        rows[i]["significance"] = -draw(st.floats(0.001, 1e6))
        return SourceDefect(what, rows, i, "significance")
    if what == "text winner":
        for r in rows:
            r["winner"] = "yes"
        return SourceDefect(what, rows, 0, "winner")
    return SourceDefect(what, rows[:-1], 3, "arm")  # t2 left with one package: no comparison


@st.composite
def convai2_defects(draw) -> SourceDefect:
    dialogues = convai2_dialogues()
    i = draw(st.integers(0, len(dialogues) - 1))
    k = draw(st.integers(0, 2))
    d = dialogues[i]
    what = draw(st.sampled_from(["dialog not a list", "no dialog", "not an object", "turn text", "sender class",
                                 "turn score", "score on a human turn", "eval score", "profile match",
                                 "profile not a list", "profile item", "not utf-8", "not a list"]))
    field: str | None
    if what == "dialog not a list":
        d["dialog"], field = draw(st.sampled_from(["x", 3, {"a": 1}])), "dialog"
    elif what == "no dialog":
        d.pop("dialog")
        field = "dialog"
    elif what == "not an object":
        dialogues[i], field = draw(st.sampled_from(["text", 5, [1], None])), None
    elif what == "turn text":
        d["dialog"][k]["text"] = draw(st.sampled_from([5, None, "  ", ["x"]]))
        field = f"dialog[{k}].text"
    elif what == "sender class":
        d["dialog"][k]["sender_class"] = draw(TEXT.filter(lambda s: s not in ("Human", "Bot")))
        field = f"dialog[{k}].sender_class"
    elif what == "turn score":
        d["dialog"][1]["evaluation_score"] = draw(st.sampled_from([2, -1, 0.5, "up"]))
        field = "dialog[1].evaluation_score"
    elif what == "score on a human turn":
        d["dialog"][0]["evaluation_score"] = 1
        field = "dialog[0].evaluation_score"
    elif what == "eval score":
        d["eval_score"] = draw(st.sampled_from([0, 6, 2.5, "good", -3, 10**30]))
        field = "eval_score"
    elif what == "profile match":
        d["profile_match"] = draw(st.sampled_from([2, -1, 0.5, "yes"]))
        field = "profile_match"
    elif what == "profile not a list":
        d["bot_profile"], field = "i like cats", "bot_profile"
    elif what == "profile item":
        d["bot_profile"] = ["i like cats", draw(st.sampled_from([5, None, ""]))]
        field = "bot_profile[1]"
    elif what == "not utf-8":
        d["dialog"][k]["text"] = _MARK
        return SourceDefect(what, _with_bad_bytes(json.dumps(dialogues, ensure_ascii=False), draw(NOT_UTF8)), i,
                            f"dialog[{k}].text")
    else:
        return SourceDefect(what, json.dumps(draw(st.sampled_from([{"dialog": []}, "x", 3]))).encode(), None, None)
    return SourceDefect(what, json.dumps(dialogues).encode(), i, field)


@st.composite
def ifeval_defects(draw) -> SourceDefect:
    rows = ifeval_prompts()
    i = draw(st.integers(0, len(rows) - 1))
    what = draw(st.sampled_from(["key", "repeated key", "no key", "prompt", "ids", "id item", "kwargs length",
                                 "kwargs item", "not an object", "not utf-8"]))
    field: str | None
    row = i
    if what == "key":
        rows[i]["key"], field = draw(st.sampled_from(["x", 1.5, None, True, [1]])), "key"
    elif what == "repeated key":
        row = 1 + i % (len(rows) - 1)
        rows[row]["key"], field = rows[0]["key"], "key"
    elif what == "no key":
        rows[i].pop("key")
        field = "key"
    elif what == "prompt":
        rows[i]["prompt"], field = draw(st.sampled_from(["", "  ", 5, None, ["x"]])), "prompt"
    elif what == "ids":
        rows[i]["instruction_id_list"], field = draw(st.sampled_from([[], "x", None, {}])), "instruction_id_list"
    elif what == "id item":
        rows[i]["instruction_id_list"][1], field = draw(st.sampled_from([5, None, ""])), "instruction_id_list[1]"
    elif what == "kwargs length":
        rows[i]["kwargs"], field = draw(st.sampled_from([[], [{}], [{}, {}, {}], "x"])), "kwargs"
    elif what == "kwargs item":
        rows[i]["kwargs"][0], field = draw(st.sampled_from([5, "x", None, []])), "kwargs[0]"
    elif what == "not an object":
        lines = [json.dumps(r) for r in rows]
        lines.insert(i, draw(st.sampled_from(["[1]", "3", '"x"', "null"])))
        return SourceDefect(what, ("\n".join(lines) + "\n").encode(), i + 1, None)
    else:
        rows[i]["prompt"] = _MARK
        text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
        return SourceDefect(what, _with_bad_bytes(text, draw(NOT_UTF8)), i + 1, "prompt")
    return SourceDefect(what, ("\n".join(json.dumps(r) for r in rows) + "\n").encode(), row + 1, field)


@st.composite
def pe_defects(draw) -> SourceDefect:
    header, rows = list(PE_HEADER), pe_rows()
    i = draw(st.integers(0, len(rows) - 1))
    r = i + 2  # spreadsheet row
    what = draw(st.sampled_from(["score", "empty text", "peer score", "missing column", "short row", "extra value",
                                 "unclosed quote", "not utf-8"]))
    if what == "score":
        rows[i][2] = draw(st.sampled_from(["0", "6", "abc", "", "nan", "inf", "-1", "5.5", "1e400"]))
        return SourceDefect(what, csv_text(header, rows).encode(), r, "human_score")
    if what == "empty text":
        c = draw(st.integers(0, 1))
        rows[i][c] = draw(st.sampled_from(["", "  "]))
        return SourceDefect(what, csv_text(header, rows).encode(), r, header[c])
    if what == "peer score":
        rows[i][3] = draw(st.sampled_from(["x", "", "nan", "--1"]))
        return SourceDefect(what, csv_text(header, rows).encode(), r, "Eng_Score_MeanPooling")
    if what == "missing column":
        c = draw(st.integers(0, 2))
        name = header.pop(c)
        for row in rows:
            row.pop(c)
        return SourceDefect(what, csv_text(header, rows).encode(), 1, name)
    if what == "short row":
        n = draw(st.integers(1, 3))
        rows[i] = rows[i][:n]
        return SourceDefect(what, csv_text(header, rows).encode(), r, header[n])
    if what == "extra value":
        rows[i] = rows[i] + ["surplus"]
        return SourceDefect(what, csv_text(header, rows).encode(), r, None)
    if what == "unclosed quote":
        text = csv_text(header, rows)
        return SourceDefect(what, (text + '"an open quote,fine,3,0.5\n').encode(), None, None)
    c = draw(st.integers(0, 1))
    rows[i][c] = _MARK
    return SourceDefect(what, _with_bad_bytes(csv_text(header, rows), draw(NOT_UTF8)), r, header[c])


SOURCE_DEFECTS = {"upworthy": (upworthy_defects, "tests.parquet"), "convai2": (convai2_defects, "dialogues.json"),
                  "ifeval": (ifeval_defects, "input_data.jsonl"),
                  "predictive-engagement": (pe_defects, "Eng_Scores_queries_gen_gtruth_replies.csv")}


def write_source(defect: SourceDefect, path: Path) -> Path:
    if isinstance(defect.content, (bytes, bytearray)):
        path.write_bytes(defect.content)
        return path
    import pandas as pd

    pd.DataFrame(defect.content).to_parquet(path, index=False)
    return path


def valid_source(name: str, path: Path) -> Path:
    if name == "upworthy":
        import pandas as pd

        pd.DataFrame(upworthy_rows()).to_parquet(path, index=False)
    elif name == "convai2":
        path.write_text(json.dumps(convai2_dialogues()))
    elif name == "ifeval":
        path.write_text("".join(json.dumps(r) + "\n" for r in ifeval_prompts()))
    else:
        path.write_text(csv_text(PE_HEADER, pe_rows()))
    return path
