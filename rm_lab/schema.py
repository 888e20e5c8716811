"""Canonical records shared by every stage (DESIGN.md, "Domain model").

Records travel as pandas DataFrames, one row per record, so that the world and the loaders can stay
vectorised. Each record kind declares its fields here once; `validate_frame` checks a whole frame
column by column and raises a `RecordError` that names the file, the row, the field, the offending
value and what was expected, instead of a bare traceback or a silently dropped row.

Nested fields (a conversation history, a list of instructions, instruction kwargs) are JSON-typed:
in memory they are Python lists/dicts, in Parquet they are stored as JSON text so that heterogeneous
kwargs survive the round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TRAFFIC_SOURCES = ("internal", "user")
PREFERENCE_SOURCES = ("human", "ai", "world")
ROLES = ("system", "user", "assistant")
INT64_LIMIT = 2**63  # int fields are stored as int64
# likelihoods of reward-model heads (rm_lab.reward.heads): the `head` records a dataset declares use them
HEAD_LIKELIHOODS = ("bradley_terry", "binomial", "poisson", "negative_binomial", "ordinal", "gaussian", "arm_logit",
                    "arm_mean")


class RecordError(ValueError):
    """A bad record: names where it is (file, row, field), what it holds and what was expected."""

    def __init__(self, path: str | None, row: int | None, field: str | None, value: Any, expected: str):
        self.path, self.row, self.field, self.value, self.expected = path, row, field, value, expected
        where = [f"file {path}" if path else "input"]
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{', '.join(where)}: got {shown}, expected {expected}")


@dataclass(frozen=True)
class Field:
    """One column of a record kind.

    kind: str | int | float | bool | json_list | json_dict | json (list or dict)
    """

    name: str
    kind: str
    required: bool = True  # the column must be present
    nullable: bool = False  # a present column may hold nulls
    nonempty: bool = False  # strings must contain non-whitespace text
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    doc: str = ""


@dataclass(frozen=True)
class Relation:
    """A bound between two fields of one row, `left op right` (right times `times` when given).

    Checked only where every named field is present and non-null, so optional columns stay optional."""

    left: str
    op: str  # "<=", ">=" or "<"
    right: str
    times: str | None = None
    why: str = ""


@dataclass(frozen=True)
class Reference:
    """A foreign key: a record's `field` names a record of kind `kind` by that kind's key field `key`
    (default: the same name). Checked where several kinds are read together (`check_references`)."""

    field: str
    kind: str
    key: str | None = None

    @property
    def target(self) -> str:
        return self.key or self.field


@dataclass(frozen=True)
class RecordKind:
    """A record kind: its fields, the fields that identify one record (`key`), row-level `relations`
    between fields, `references` to records of other kinds, and `check`, a whole-frame rule (e.g. one
    control arm per experiment)."""

    name: str
    fields: tuple[Field, ...]
    doc: str = ""  # extra columns are always kept (sources add provenance, the world adds truth_*)
    # unique together; a repeat is an error naming its row and the key's last field (a missing
    # nullable key column counts as null)
    key: tuple[str, ...] = ()
    relations: tuple[Relation, ...] = ()
    references: tuple[Reference, ...] = ()  # fields that name a record of another kind
    check: Callable[[pd.DataFrame, str | None, Callable[[int], int]], None] | None = None

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


CHARACTER = RecordKind(
    "character",
    (
        Field("character_id", "str", nonempty=True),
        Field("name", "str", nonempty=True),
        Field("persona", "json_list", doc="trait sentences"),
        Field("instructions", "json_list", doc="[{instruction_id, kwargs}] or free-text strings"),
        Field("keywords", "json_list", required=False, doc="words that mark staying in character"),
    ),
    "An AI character: persona traits and the verifiable instructions it must keep.",
    key=("character_id",),
)

CONTEXT = RecordKind(
    "context",
    (
        Field("context_id", "str", nonempty=True),
        Field("character_id", "str", nonempty=True),
        Field("history", "json_list", doc="[{role, content}] turns so far"),
        Field("traffic", "str", choices=TRAFFIC_SOURCES),
        Field("prompt_type", "str", required=False, nullable=True),
        Field("conversation_id", "str", required=False, nullable=True,
              doc="the conversation this context is a prefix of: its contexts are held out together"),
    ),
    "A partial conversation with a character, from internal or user traffic.",
    key=("context_id",),
    references=(Reference("character_id", "character"),),
)

INTERACTION = RecordKind(
    "interaction",
    (
        Field("context_id", "str", nonempty=True),
        Field("response", "str", nonempty=True),
        Field("policy", "str", nonempty=True),
        Field("continued", "bool"),
        Field("thumb", "int", required=False, nullable=True, choices=(-1, 0, 1)),
        Field("depth", "float", required=False, nullable=True, min=0),
        Field("regenerated", "bool", required=False, nullable=True),
    ),
    "A logged reply and what the user did next.",
    references=(Reference("context_id", "context"),),
)

PREFERENCE = RecordKind(
    "preference",
    (
        Field("context_id", "str", nonempty=True),
        Field("chosen", "str", nonempty=True),
        Field("rejected", "str", nonempty=True),
        Field("source", "str", choices=PREFERENCE_SOURCES),
        Field("margin", "float", required=False, nullable=True),
    ),
    "A pair of replies to one context, the chosen one judged more engaging.",
    references=(Reference("context_id", "context"),),
)

STEER_LABEL = RecordKind(
    "steer_label",
    (
        Field("context_id", "str", nonempty=True),
        Field("response", "str", nonempty=True),
        Field("instruction_id", "str", nonempty=True),
        Field("followed", "bool"),
        Field("violation", "bool"),
    ),
    "Whether a reply followed one instruction of its character, and whether it is a violation.",
    references=(Reference("context_id", "context"),),
)

# What a count of an arm implies about its other counts (whole days, at least one message per active
# user-day); a row that breaks one is impossible, not merely unusual.
AB_RELATIONS = (
    Relation("engaged_users", "<=", "users", why="engaged users (clicks) cannot exceed users (impressions)"),
    Relation("engaged_user_days", ">=", "engaged_users", why="an engaged user is active on at least one day"),
    Relation("engaged_user_days", "<=", "engaged_users", "days", why="an engaged user is active at most `days` days"),
    Relation("messages", ">=", "engaged_users", why="an engaged user sends at least one message"),
    Relation("messages", ">=", "engaged_user_days", why="an active user-day has at least one message"),
    Relation("day", "<", "days", why="days are numbered 0 .. days-1"),
    Relation("active_days_sq", ">=", "engaged_user_days", why="a_u^2 >= a_u for whole days a_u"),
    Relation("active_days_sq", "<=", "engaged_user_days", "days", why="a_u <= days"),
    Relation("messages_sq", ">=", "messages", why="m_u^2 >= m_u for whole messages m_u"),
    Relation("active_messages", ">=", "messages", why="a user with messages is active at least one day"),
    Relation("active_messages", "<=", "messages", "days", why="a_u <= days"),
    Relation("active_days_sq_to_date", ">=", "engaged_users", why="a user active today has >= 1 active day to date"),
    Relation("messages_sq_to_date", ">=", "messages", why="a user's messages to date include today's"),
    Relation("active_messages_to_date", ">=", "messages", why="a user with messages today is active to date"),
    Relation("pre_engaged_user_days", "<=", "users", "pre_days", why="a user is active at most pre_days days"),
    Relation("pre_active_days_sq", ">=", "pre_engaged_user_days", why="x_u^2 >= x_u for whole days x_u"),
    Relation("pre_active_days_sq", "<=", "pre_engaged_user_days", "pre_days", why="x_u <= pre_days"),
    Relation("pre_active_days_cross", "<=", "pre_engaged_user_days", "days", why="a_u <= days"),
    Relation("pre_active_days_cross", "<=", "engaged_user_days", "pre_days", why="x_u <= pre_days"),
)

AB_ARM = RecordKind(
    "ab_arm",
    (
        Field("experiment_id", "str", nonempty=True),
        Field("arm", "str", nonempty=True, doc="arm name (a policy, or a headline id)"),
        Field("is_control", "bool"),
        Field("day", "int", required=False, nullable=True, min=0, doc="null for whole-test totals"),
        Field("days", "int", min=1, doc="length of the test in days"),
        Field("users", "int", min=1, doc="users (or impressions) in the arm; an arm without users has no rate"),
        Field("engaged_users", "int", min=0, doc="engaged users (or clicks)"),
        Field("messages", "float", required=False, nullable=True, min=0),
        Field("engaged_user_days", "float", required=False, nullable=True, min=0),
        Field("text", "str", required=False, nullable=True, doc="the arm's text (K-arm text tests)"),
        # user-level second moments, so delta-method intervals can be derived from stored arms
        Field("active_days_sq", "float", required=False, nullable=True, min=0, doc="sum over users of a_u^2"),
        Field("messages_sq", "float", required=False, nullable=True, min=0, doc="sum over users of m_u^2"),
        Field("active_messages", "float", required=False, nullable=True, min=0, doc="sum over users of a_u*m_u"),
        Field("allocation", "float", required=False, nullable=True, min=0, max=1,
              doc="intended share of traffic for the arm (for the sample-ratio-mismatch check)"),
        # per-day rows: user-level moments from day 0 through this day (daily sequential monitoring)
        Field("active_days_sq_to_date", "float", required=False, nullable=True, min=0,
              doc="per-day rows: sum over users of (active days from day 0 through this day)^2"),
        Field("messages_sq_to_date", "float", required=False, nullable=True, min=0,
              doc="per-day rows: sum over users of (messages from day 0 through this day)^2"),
        Field("active_messages_to_date", "float", required=False, nullable=True, min=0,
              doc="per-day rows: sum over users of active days x messages, both from day 0 through this day"),
        # whole-test rows: the same users before the test (CUPED's covariate x_u = pre-period active days)
        Field("pre_days", "int", required=False, nullable=True, min=1, doc="length of the pre-period in days"),
        Field("pre_engaged_user_days", "float", required=False, nullable=True, min=0,
              doc="sum over the arm's users of their active days in the pre-period, x_u"),
        Field("pre_active_days_sq", "float", required=False, nullable=True, min=0, doc="sum over users of x_u^2"),
        Field("pre_active_days_cross", "float", required=False, nullable=True, min=0,
              doc="sum over users of x_u * a_u (pre-period times test active days)"),
    ),
    "ABExperiment, stored long: one row per arm (and optionally per day). Lifts are derived, never stored.",
    key=("experiment_id", "day", "arm"),
    relations=AB_RELATIONS,
    check=lambda df, path, rn: check_ab_experiments(df, path, rn),
)

LABEL = RecordKind(
    "label",
    (
        Field("context_id", "str", nonempty=True),
        Field("response", "str", doc="the reply judged (empty when raters judged the bot saying nothing)"),
        Field("name", "str", nonempty=True, doc="what was judged: the label's name, read by a head of that name"),
        Field("value", "float", doc="a graded rating (e.g. 1-5), a 0/1 judgement, a count or a continuous target"),
        Field("scale_min", "float", required=False, nullable=True, doc="the lowest value of the rating scale"),
        Field("scale_max", "float", required=False, nullable=True, doc="the highest value of the rating scale"),
        Field("rater", "str", required=False, nullable=True, doc="who gave it (an annotator id), when known"),
        Field("source", "str", required=False, nullable=True, doc="the dataset or process that wrote it"),
    ),
    "A graded or continuous label of a (context, reply): a human rating, a judgement, a regression target.",
    references=(Reference("context_id", "context"),),
    relations=(
        Relation("value", ">=", "scale_min", why="a label lies on its scale"),
        Relation("value", "<=", "scale_max", why="a label lies on its scale"),
        Relation("scale_min", "<", "scale_max", why="a scale runs from its lowest to its highest value"),
    ),
)

HEAD = RecordKind(
    "head",
    (
        Field("name", "str", nonempty=True, doc="the head's name (letters, digits, _)"),
        Field("kind", "str", choices=HEAD_LIKELIHOODS, doc="its likelihood"),
        Field("record", "str", required=False, nullable=True,
              choices=("label", "interaction", "steer_label", "ab_arm", "arm_reply_set"),
              doc="the record kind of its labels (default: label)"),
        Field("column", "str", required=False, nullable=True,
              doc="that record's column; for label records the label name (default: the head's name)"),
        Field("levels", "int", required=False, nullable=True, min=2, doc="ordinal: the number of levels"),
        Field("min", "float", required=False, nullable=True, doc="ordinal: the value of the lowest level (default 1)"),
        Field("max", "float", required=False, nullable=True, doc="ordinal: the value of the highest level"),
        Field("scale", "float", required=False, nullable=True, min=0, doc="gaussian: a fixed standard deviation"),
        Field("output", "str", required=False, nullable=True, doc="its key in RewardModel.score"),
        Field("doc", "str", required=False, nullable=True),
    ),
    "A head a dataset declares (rm_lab.reward.heads): which labels train it and with which likelihood.",
    key=("name",),
)

# A past A/B arm as the replies its policy wrote: what arm_mean heads (rm_lab.reward.arm_mean) learn from
ARM_REPLY_SET = RecordKind(
    "arm_reply_set",
    (
        Field("experiment_id", "str", nonempty=True),
        Field("arm", "str", nonempty=True, doc="arm name within the experiment"),
        Field("policy", "str", nonempty=True, doc="the policy (model, generation) the arm served"),
        Field("is_control", "bool", doc="the arm the others' lifts are relative to"),
        Field("context_id", "str", nonempty=True, doc="a sampled context the policy replied to"),
        Field("response", "str", nonempty=True, doc="the policy's reply to it"),
        Field("users", "int", min=1, doc="users in the arm"),
        Field("breadth", "float", min=0, max=1, doc="the arm's measured breadth (per-day engaged share of its users)"),
        Field("breadth_se", "float", min=0, doc="standard error of the measured breadth (> 0)"),
        Field("depth", "float", required=False, nullable=True, min=0,
              doc="the arm's measured depth (messages per engaged user-day)"),
        Field("depth_se", "float", required=False, nullable=True, min=0, doc="standard error of the measured depth"),
        Field("sessions", "float", required=False, nullable=True, min=0,
              doc="engaged user-days (sessions): the denominator of depth"),
    ),
    "An A/B arm's reply set, stored long: one row per sampled context, the arm's measures repeated on each.",
    key=("experiment_id", "arm", "context_id"),
    references=(Reference("context_id", "context"),),
    check=lambda df, path, rn: check_arm_reply_sets(df, path, rn),
)

KINDS: dict[str, RecordKind] = {k.name: k for k in (CHARACTER, CONTEXT, INTERACTION, PREFERENCE, STEER_LABEL, AB_ARM,
                                                    LABEL, HEAD, ARM_REPLY_SET)}


def kind(name: str) -> RecordKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown record kind '{name}', expected one of {sorted(KINDS)}") from None


# ----------------------------------------------------------------------------------------------
# validation

def _is_null(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return v is pd.NA or v is pd.NaT


def _check_value(f: Field, v: Any) -> str | None:
    """Return what was expected when `v` is bad for field `f`, else None."""
    if _is_null(v):
        return None if f.nullable else f"a non-null {f.kind}"
    k = f.kind
    if k == "str":
        if not isinstance(v, str):
            return "a string"
        if f.nonempty and not v.strip():
            return "a non-empty string"
    elif k == "bool":
        if not isinstance(v, (bool, np.bool_)):
            if isinstance(v, (int, np.integer)) and v in (0, 1):
                return None
            return "a boolean (true/false)"
    elif k == "int":
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer, float, np.floating)):
            return "an integer"
        if isinstance(v, (float, np.floating)) and (not math.isfinite(v) or v != int(v)):
            return "an integer"
        if not -INT64_LIMIT <= v < INT64_LIMIT:  # stored as int64: larger values would overflow or wrap
            return "an integer within the 64-bit range (|n| < 2^63)"
    elif k == "float":
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer, float, np.floating)):
            return "a number"
        try:
            finite = math.isfinite(float(v))
        except OverflowError:  # an integer beyond any float
            finite = False
        if not finite:
            return "a finite number"
    elif k == "json_list":
        if not isinstance(v, (list, tuple, np.ndarray)):
            return "a list"
    elif k == "json_dict":
        if not isinstance(v, dict):
            return "an object (dict)"
    elif k == "json":
        if not isinstance(v, (list, tuple, dict, np.ndarray)):
            return "a list or an object"
    if f.choices is not None and v not in f.choices:
        return f"one of {list(f.choices)}"
    if f.min is not None and k in ("int", "float") and float(v) < f.min:
        return f"a value >= {f.min}"
    if f.max is not None and k in ("int", "float") and float(v) > f.max:
        return f"a value <= {f.max}"
    return None


def _check_history(path, row, v):
    for i, turn in enumerate(v):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise RecordError(path, row, "history", turn, f"turn {i} as {{role, content}}")
        if turn["role"] not in ROLES:
            raise RecordError(path, row, "history", turn["role"], f"turn {i} role in {list(ROLES)}")
        if not isinstance(turn["content"], str):
            raise RecordError(path, row, "history", turn["content"], f"turn {i} content as a string")


def validate_frame(df: pd.DataFrame, record: RecordKind | str, path: str | None = None,
                   row_numbers: list[int] | None = None) -> pd.DataFrame:
    """Validate every row; return the frame with canonical dtypes. Raise RecordError on the first bad row.

    `row_numbers` maps frame positions to the row numbers users see (line numbers for JSONL);
    by default the 0-based position (Parquet row index).
    """
    record = kind(record) if isinstance(record, str) else record
    rn = (lambda i: row_numbers[i]) if row_numbers is not None else (lambda i: i)
    if len(df) == 0:
        raise RecordError(path, None, None, "0 rows", f"at least one {record.name} record")
    for f in record.fields:
        if f.name not in df.columns:
            if f.required:
                raise RecordError(path, None, f.name, "missing column",
                                  f"a '{f.name}' column ({f.kind}) in a {record.name} file; "
                                  f"columns found: {list(df.columns)}")
            continue
        col = df[f.name]
        values = col.tolist()
        bad = _fast_bad_rows(f, col)
        candidates = range(len(values)) if bad is None else bad
        for i in candidates:
            exp = _check_value(f, values[i])
            if exp is not None:
                raise RecordError(path, rn(i), f.name, values[i], exp)
        if f.name == "history":
            for i, v in enumerate(values):
                _check_history(path, rn(i), v)
    out = df.copy()
    for f in record.fields:
        if f.name not in out.columns:
            continue
        if f.kind == "bool" and not f.nullable:
            out[f.name] = out[f.name].astype(bool)
        elif f.kind == "int" and not f.nullable:
            out[f.name] = out[f.name].astype(np.int64)
        elif f.kind == "int" and f.nullable:
            out[f.name] = out[f.name].astype("Int64")
        elif f.kind == "float":
            out[f.name] = out[f.name].astype(float)
        elif f.kind.startswith("json"):
            out[f.name] = [list(v) if isinstance(v, (tuple, np.ndarray)) else v for v in out[f.name]]
    _check_relations(out, record, path, rn)
    check_keys(out, record, path, row_numbers)
    if record.check is not None:
        record.check(out, path, rn)
    return out


def _show(v: Any) -> Any:
    """A cell as users wrote it: Python scalars, not numpy ones, in messages."""
    if _is_null(v):
        return None
    return v.item() if isinstance(v, np.generic) else v


def _numbers(df: pd.DataFrame, name: str) -> np.ndarray:
    """A validated numeric column as floats, nulls as NaN."""
    col = df[name]
    try:
        return col.to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):
        return pd.to_numeric(col, errors="coerce").astype(float).to_numpy()


_OPS = {"<=": np.less_equal, ">=": np.greater_equal, "<": np.less}


def _check_relations(df: pd.DataFrame, record: RecordKind, path: str | None, rn: Callable[[int], int]) -> None:
    for r in record.relations:
        names = [r.left, r.right] + ([r.times] if r.times else [])
        if any(n not in df.columns for n in names):
            continue
        left, bound = _numbers(df, r.left), _numbers(df, r.right)
        if r.times:
            bound = bound * _numbers(df, r.times)
        with np.errstate(invalid="ignore"):
            bad = ~_OPS[r.op](left, bound) & ~np.isnan(left) & ~np.isnan(bound)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            rhs = r.right if not r.times else f"{r.right} * {r.times}"
            raise RecordError(path, rn(i), r.left, _show(df[r.left].iloc[i]),
                              f"{r.left} {r.op} {rhs} (= {bound[i]:g}): {r.why}")


def check_keys(df: pd.DataFrame, record: RecordKind | str, path: str | None = None,
               row_numbers: list[int] | None = None) -> None:
    """Raise RecordError on the first row whose key (`record.key`) repeats an earlier row's."""
    record = kind(record) if isinstance(record, str) else record
    cols = [c for c in record.key if c in df.columns]
    if not cols or len(df) < 2:
        return
    seen: dict[tuple, int] = {}
    columns = [[None if _is_null(v) else v for v in df[c].tolist()] for c in cols]  # nulls equal
    for i, key in enumerate(zip(*columns)):
        j = seen.setdefault(key, i)
        if j != i:
            break
    else:
        return
    rn = (lambda k: row_numbers[k]) if row_numbers is not None else (lambda k: k)
    name = record.key[-1]
    if len(record.key) == 1:
        expected = f"a unique {name} ({record.name} key): row {rn(j)} has it too"
    else:
        same = ", ".join(f"{c}={_show(df[c].iloc[i])!r}" if c in df.columns else f"{c}=None" for c in record.key)
        expected = f"a unique ({', '.join(record.key)}) ({record.name} key): row {rn(j)} has {same} too"
    raise RecordError(path, rn(i), name, _show(df[name].iloc[i]) if name in df.columns else None, expected)


def row_number(df: pd.DataFrame, i: int) -> int:
    """The row users see for position `i`: its JSONL line when the frame still has one per row."""
    lines = df.attrs.get("line_numbers")
    return lines[i] if lines is not None and len(lines) == len(df) else i


def _isin(values: pd.Series, among: pd.Series) -> np.ndarray:
    """`values.isin(among)` as a bool array, through Arrow's hash set: on pandas 3's Arrow-backed strings
    pandas' own `isin` walks Python objects (~50x slower on 40k ids)."""
    try:
        found = pc.is_in(pa.array(values, from_pandas=True), value_set=pa.array(among, from_pandas=True).unique())
        return found.to_numpy(zero_copy_only=False).astype(bool)
    except (pa.ArrowException, TypeError, ValueError):  # mixed or unhashable cells of unvalidated frames
        return values.isin(among).to_numpy(bool)


def check_references(frames: Mapping[str, pd.DataFrame], source: str | None = None) -> None:
    """Raise RecordError on the first record that names a record of another kind (`RecordKind.references`)
    that `frames`, the records of one folder or source, do not hold: a label of a missing context, a
    context of a missing character. Reading a folder or handing records over in memory checks this, so
    a dangling id is named where it is written, not found later by training.

    A frame's file is its `attrs["path"]` (else `source`), its rows its JSONL lines when known.
    A kind absent from `frames` is not checked against: a folder may hold only some kinds (stages that
    need one say so). One vectorised `isin` per reference."""
    for name, df in frames.items():
        record = KINDS.get(name)
        if record is None:
            continue
        for ref in record.references:
            target = frames.get(ref.kind)
            if target is None or ref.field not in df.columns or ref.target not in target.columns:
                continue
            values = df[ref.field]
            bad = ~_isin(values, target[ref.target]) & values.notna().to_numpy()
            if not bad.any():
                continue
            pos = np.flatnonzero(bad)
            i = int(pos[0])
            where = target.attrs.get("path") or source
            where = f"in {where}" if where else "among those given"
            missing = values.iloc[pos].nunique()
            raise RecordError(df.attrs.get("path") or source, row_number(df, i), ref.field, _show(values.iloc[i]),
                              f"a {ref.target} of a {ref.kind} record {where}"
                              f" (no {ref.kind} record has it; {len(pos)} {name} row{'s' * (len(pos) > 1)} "
                              f"name{'s' * (len(pos) == 1)} {missing} missing {ref.kind}{'s' * (missing > 1)})")


def drop_dangling(frames: Mapping[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], list[tuple]]:
    """(`frames` less the records whose referred-to record is not among them, [(kind, index label of the
    dropped row, its Reference, the missing value)]), referred-to kinds first, so a character left out
    takes its contexts and their labels with it. For subsets taken by count (`ingest limit=`), where
    cutting each kind alone would leave dangling ids."""
    out, dropped = dict(frames), []
    for name in [k for k in KINDS if k in out]:  # KINDS lists referred-to kinds first
        df = out[name]
        for ref in KINDS[name].references:
            target = out.get(ref.kind)
            if target is None or ref.field not in df.columns or ref.target not in target.columns:
                continue
            ok = _isin(df[ref.field], target[ref.target]) | df[ref.field].isna().to_numpy()
            dropped += [(name, i, ref, v) for i, v in df[ref.field][~ok].items()]
            df = df[ok]
        out[name] = df.reset_index(drop=True) if len(df) < len(out[name]) else df
    return out, dropped


def check_ab_experiments(df: pd.DataFrame, path: str | None = None,
                         rn: Callable[[int], int] = lambda i: i) -> None:
    """ABExperiment rules across the rows of each experiment: one test length, every arm with a
    whole-test row (day null) that its per-day rows add up to, exactly one control, at least one
    treatment, allocations summing to at most 1, and user-level moments whose variances are >= 0."""
    _check_ab_moments(df, path, rn)
    _check_ab_pre_period(df, path, rn)
    n = len(df)
    day = df["day"].isna().to_numpy() if "day" in df.columns else np.ones(n, bool)
    arm, ctrl, days = df["arm"].to_numpy(), df["is_control"].to_numpy(bool), df["days"].to_numpy()
    counts = {c: _numbers(df, c) for c in ("users", "engaged_users")}
    for exp, idx in df.groupby("experiment_id", sort=False).indices.items():
        where = f"experiment '{exp}'"
        odd = idx[days[idx] != days[idx[0]]]
        if len(odd):
            raise RecordError(path, rn(odd[0]), "days", _show(days[odd[0]]),
                              f"days={_show(days[idx[0]])} as in row {rn(idx[0])}: one test length per {where}")
        tot = idx[day[idx]]
        if not len(tot):
            raise RecordError(path, rn(idx[0]), "day", _show(df["day"].iloc[idx[0]]),
                              f"whole-test rows (day null) in {where}: it has no whole-test rows, and per-day "
                              "rows alone do not determine the lift's interval")
        total_of = {arm[t]: t for t in tot}
        for i in idx[~day[idx]]:
            t = total_of.get(arm[i])
            if t is None:
                raise RecordError(path, rn(i), "day", _show(df["day"].iloc[i]),
                                  f"a whole-test row (day null) for arm '{arm[i]}' of {where}, as its other arms "
                                  "have: per-day and whole-test rows are mixed")
            if ctrl[i] != ctrl[t]:
                raise RecordError(path, rn(i), "is_control", bool(ctrl[i]),
                                  f"{bool(ctrl[t])}, as in the arm's whole-test row {rn(t)}")
            for name, v in counts.items():
                if v[i] > v[t]:
                    raise RecordError(path, rn(i), name, _show(df[name].iloc[i]),
                                      f"at most the arm's whole-test {name} ({v[t]:g}, row {rn(t)})")
        _check_day_sums(df, idx, day, arm, days, total_of, path, rn)
        controls = tot[ctrl[tot]]
        if len(controls) != 1:
            r = controls[1] if len(controls) > 1 else tot[0]
            found = "none" if not len(controls) else f"{len(controls)} (rows {', '.join(str(rn(c)) for c in controls)})"
            raise RecordError(path, rn(r), "is_control", bool(ctrl[r]),
                              f"exactly one control arm (is_control true) in {where}, found {found}")
        if len(tot) < 2:
            raise RecordError(path, rn(tot[0]), "arm", arm[tot[0]],
                              f"a control and at least one treatment arm in {where}, found a single arm")
        if "allocation" in df.columns:
            alloc = _numbers(df, "allocation")[tot]
            if np.nansum(alloc) > 1 + 1e-9:
                last = tot[np.flatnonzero(~np.isnan(alloc))[-1]]
                raise RecordError(path, rn(last), "allocation", _show(df["allocation"].iloc[last]),
                                  f"allocations of the arms of {where} summing to at most 1 "
                                  f"(they sum to {np.nansum(alloc):.6g})")


ARM_MEASURES = ("policy", "is_control", "users", "breadth", "breadth_se", "depth", "depth_se", "sessions")


def check_arm_reply_sets(df: pd.DataFrame, path: str | None = None, rn: Callable[[int], int] = lambda i: i) -> None:
    """Reply-set rules: an arm's measures are the same on each of its rows, standard errors are > 0 and a
    depth comes with its standard error, and every experiment has exactly one control arm, at least one
    treatment arm, and a control depth wherever a treatment has one (a lift needs its reference)."""
    exp, arm = df["experiment_id"].to_numpy(object), df["arm"].to_numpy(object)
    for name in ("breadth_se", "depth_se"):
        if name in df.columns:
            v = _numbers(df, name)
            _raise_first_bad(df, path, rn, name, v <= 0, "a standard error > 0 (the weight of the arm is 1/se^2)")
    if "depth" in df.columns or "depth_se" in df.columns:
        d = _numbers(df, "depth") if "depth" in df.columns else np.full(len(df), np.nan)
        s = _numbers(df, "depth_se") if "depth_se" in df.columns else np.full(len(df), np.nan)
        for name, bad in (("depth_se", ~np.isnan(d) & np.isnan(s)), ("depth", np.isnan(d) & ~np.isnan(s))):
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise RecordError(path, rn(i), name, _show(df[name].iloc[i]) if name in df.columns else None,
                                  "depth and depth_se given together")
    cols = [c for c in ARM_MEASURES if c in df.columns]
    first: dict[tuple, int] = {}
    values = {c: [None if _is_null(v) else v for v in df[c].tolist()] for c in cols}
    for i, key in enumerate(zip(exp, arm)):
        j = first.setdefault(key, i)
        if j == i:
            continue
        for c in cols:
            if values[c][i] != values[c][j]:
                raise RecordError(path, rn(i), c, _show(df[c].iloc[i]),
                                  f"{_show(df[c].iloc[j])!r} as on row {rn(j)}: one {c} per arm "
                                  f"('{arm[i]}' of experiment '{exp[i]}')")
    ctrl = df["is_control"].to_numpy(bool)
    depth = _numbers(df, "depth") if "depth" in df.columns else np.full(len(df), np.nan)
    by_exp: dict = {}
    for key, i in first.items():
        by_exp.setdefault(key[0], []).append(i)
    for e, rows in by_exp.items():
        controls = [i for i in rows if ctrl[i]]
        if len(controls) != 1:
            i = controls[1] if controls else rows[0]
            raise RecordError(path, rn(i), "is_control", bool(ctrl[i]),
                              f"exactly one control arm in experiment '{e}', found {len(controls)}")
        if len(rows) < 2:
            raise RecordError(path, rn(rows[0]), "arm", arm[rows[0]],
                              f"a control and at least one treatment arm in experiment '{e}', found a single arm")
        c = controls[0]
        for i in rows:
            if i != c and not np.isnan(depth[i]) and np.isnan(depth[c]):
                raise RecordError(path, rn(c), "depth", None,
                                  f"the control's depth: treatment arm '{arm[i]}' (row {rn(i)}) of experiment "
                                  f"'{e}' has one, and its lift needs the control's")


def _check_day_sums(df, idx, day, arm, days, total_of, path, rn) -> None:
    """Per-day counts of an arm add up to at most its whole-test counts, exactly when every day is there."""
    for name, per_day in (("engaged_user_days", "engaged_users"), ("messages", "messages")):
        if name not in df.columns or per_day not in df.columns:
            continue
        tot_v, day_v = _numbers(df, name), _numbers(df, per_day)
        for a, t in total_of.items():
            rows = idx[~day[idx] & (arm[idx] == a)]
            if not len(rows) or np.isnan(tot_v[t]) or np.isnan(day_v[rows]).any():
                continue
            s = float(day_v[rows].sum())
            complete = len(rows) == int(days[t])
            tol = 1e-9 * max(abs(s), abs(tot_v[t]), 1.0)
            if s > tot_v[t] + tol or (complete and abs(s - tot_v[t]) > tol):
                raise RecordError(path, rn(t), name, _show(df[name].iloc[t]),
                                  f"the sum of the arm's per-day {per_day} ({s:g} over {len(rows)} of "
                                  f"{int(days[t])} days){'' if complete else ' or more'}")


def _check_ab_moments(df: pd.DataFrame, path: str | None, rn: Callable[[int], int]) -> None:
    """User-level second moments must give variances >= 0 (and |correlation| <= 1), else intervals lie."""
    need = ("users", "engaged_user_days", "active_days_sq", "messages", "messages_sq", "active_messages")
    have = {c: _numbers(df, c) if c in df.columns else np.full(len(df), np.nan) for c in need}
    n = have["users"]
    with np.errstate(invalid="ignore", divide="ignore"):
        ma, mm = have["engaged_user_days"] / n, have["messages"] / n
        var_a = have["active_days_sq"] / n - ma ** 2
        var_m = have["messages_sq"] / n - mm ** 2
        cov = have["active_messages"] / n - ma * mm
    for name, bad, what in (
            ("active_days_sq", var_a < -1e-9 * np.abs(have["active_days_sq"] / n),
             "active_days_sq >= engaged_user_days^2 / users (a variance cannot be negative)"),
            ("messages_sq", var_m < -1e-9 * np.abs(have["messages_sq"] / n),
             "messages_sq >= messages^2 / users (a variance cannot be negative)"),
            ("active_messages", cov ** 2 > var_a * var_m * (1 + 1e-9) + 1e-12 * (ma * mm) ** 2,
             "a covariance of active days and messages with |correlation| <= 1")):
        _raise_first_bad(df, path, rn, name, bad, what)  # NaN compares False: rows without moments pass


def _raise_first_bad(df: pd.DataFrame, path: str | None, rn: Callable[[int], int], name: str,
                     bad: np.ndarray, what: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RecordError(path, rn(i), name, _show(df[name].iloc[i]), what)


PRE_PERIOD = ("pre_days", "pre_engaged_user_days", "pre_active_days_sq", "pre_active_days_cross")


def _check_ab_pre_period(df: pd.DataFrame, path: str | None, rn: Callable[[int], int]) -> None:
    """Pre-period moments come together (CUPED needs all four) and give a variance >= 0 and a
    correlation with the test's active days within [-1, 1]."""
    present = [c for c in PRE_PERIOD if c in df.columns]
    if not present:
        return
    have = {c: _numbers(df, c) if c in df.columns else np.full(len(df), np.nan)
            for c in (*PRE_PERIOD, "users", "engaged_user_days", "active_days_sq")}
    known = np.column_stack([~np.isnan(have[c]) for c in PRE_PERIOD])
    partial = known.any(1) & ~known.all(1)
    if partial.any():
        i = int(np.flatnonzero(partial)[0])
        miss = next(c for c, k in zip(PRE_PERIOD, known[i]) if not k)
        raise RecordError(path, rn(i), miss, _show(df[miss].iloc[i]) if miss in df.columns else None,
                          f"a number, as the row's other pre-period fields are given ({', '.join(PRE_PERIOD)} "
                          "come together)")
    n = have["users"]
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, ma = have["pre_engaged_user_days"] / n, have["engaged_user_days"] / n
        var_x = have["pre_active_days_sq"] / n - mx ** 2
        var_a = have["active_days_sq"] / n - ma ** 2
        cov = have["pre_active_days_cross"] / n - mx * ma
    for name, bad, what in (
            ("pre_active_days_sq", var_x < -1e-9 * np.abs(have["pre_active_days_sq"] / n),
             "pre_active_days_sq >= pre_engaged_user_days^2 / users (a variance cannot be negative)"),
            ("pre_active_days_cross", cov ** 2 > var_x * var_a * (1 + 1e-9) + 1e-12 * (mx * ma) ** 2,
             "a covariance of pre-period and test active days with |correlation| <= 1")):
        _raise_first_bad(df, path, rn, name, bad, what)


def _fast_bad_rows(f: Field, col: pd.Series) -> Iterable[int] | None:
    """Vectorised pre-screen for big numeric/str columns: rows worth checking one by one, or None."""
    n = len(col)
    if n < 1000:
        return None
    if f.kind in ("float", "int") and pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        arr = col.to_numpy(dtype=float, na_value=np.nan)
        bad = ~np.isfinite(arr)
        if f.nullable:
            bad &= ~col.isna().to_numpy()
        if f.kind == "int":
            with np.errstate(invalid="ignore"):
                bad |= np.isfinite(arr) & ((arr != np.round(arr)) | (np.abs(arr) >= INT64_LIMIT))
        if f.min is not None:
            bad |= arr < f.min
        if f.max is not None:
            bad |= arr > f.max
        if f.choices is not None:
            bad |= ~np.isin(arr, np.array(f.choices, dtype=float)) & ~col.isna().to_numpy()
        return np.flatnonzero(bad)
    if f.kind == "bool" and pd.api.types.is_bool_dtype(col):
        return np.flatnonzero(col.isna().to_numpy()) if not f.nullable else []
    if f.kind == "str" and col.dtype == object:
        is_str = col.map(type).eq(str).to_numpy()
        bad = ~is_str
        if f.nullable:
            bad &= ~col.isna().to_numpy()
        if f.nonempty:
            bad |= is_str & ~col.where(is_str, "x").str.strip().astype(bool).to_numpy()
        if f.choices is not None:
            bad |= is_str & ~col.isin(f.choices).to_numpy()
        return np.flatnonzero(bad)
    return None


@dataclass
class Records:
    """A small bundle of record frames by kind, the unit `simulate` and `ingest` hand on."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.frames[name]

    def __contains__(self, name: str) -> bool:
        return name in self.frames

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.frames.items()}
