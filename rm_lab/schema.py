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
from typing import Any, Iterable

import numpy as np
import pandas as pd

TRAFFIC_SOURCES = ("internal", "user")
PREFERENCE_SOURCES = ("human", "ai", "world")
ROLES = ("system", "user", "assistant")


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
class RecordKind:
    name: str
    fields: tuple[Field, ...]
    doc: str = ""  # extra columns are always kept (sources add provenance, the world adds truth_*)

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
)

AB_ARM = RecordKind(
    "ab_arm",
    (
        Field("experiment_id", "str", nonempty=True),
        Field("arm", "str", nonempty=True, doc="arm name (a policy, or a headline id)"),
        Field("is_control", "bool"),
        Field("day", "int", required=False, nullable=True, min=0, doc="null for whole-test totals"),
        Field("days", "int", min=1, doc="length of the test in days"),
        Field("users", "int", min=0, doc="users (or impressions) in the arm"),
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
    ),
    "ABExperiment, stored long: one row per arm (and optionally per day). Lifts are derived, never stored.",
)

KINDS: dict[str, RecordKind] = {k.name: k for k in (CHARACTER, CONTEXT, INTERACTION, PREFERENCE, STEER_LABEL, AB_ARM)}


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
    elif k == "float":
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer, float, np.floating)):
            return "a number"
        if not math.isfinite(float(v)):
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
    return out


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
                bad |= np.isfinite(arr) & (arr != np.round(arr))
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
