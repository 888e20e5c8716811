"""Shared parsing for the source loaders: every defect becomes a RecordError naming file, row and field.

Text is decoded with `surrogateescape` so that a non-UTF-8 byte does not stop the parse: the cell
holding it is then found and named. Row conventions: JSON lists use the 0-based element index,
JSONL the 1-based line number, CSV the spreadsheet row (header = row 1, first data row = 2),
Parquet the 0-based row index.
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rm_lab.io import DEEP_JSON
from rm_lab.schema import RecordError

_KEY_RE = re.compile(r'"([^"\\]{1,64})"\s*:')
# One CSV cell (Python's csv stops at 128 KiB by default, which a long reply or pasted document
# exceeds): long texts are read whole, a cell beyond this is refused by name.
MAX_FIELD_CHARS = 64 * 2**20


def stable_id(*parts: Any, n: int = 10) -> str:
    """Short content hash: the same input gives the same id on every machine and run."""
    h = hashlib.sha1("\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:n]


def read_text(path: Path) -> str:
    if not path.exists():
        raise RecordError(str(path), None, None, "no such file", "an existing file")
    if path.is_dir():
        raise RecordError(str(path), None, None, "a folder", "a file")
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise RecordError(str(path), None, None, "NUL bytes", "UTF-8 text (NUL bytes: a binary file, or UTF-16 text?)")
    return data.decode("utf-8", errors="surrogateescape")


def _has_bad_bytes(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def _bad_bytes_repr(s: str) -> str:
    return s.encode("utf-8", "surrogateescape")[:80].decode("utf-8", "backslashreplace")


def find_bad_text(obj: Any, where: str = "") -> tuple[str, str] | None:
    """Locate the first string (or key) holding undecodable bytes in a parsed JSON value."""
    if isinstance(obj, str):
        return (where or "value", obj) if _has_bad_bytes(obj) else None
    if isinstance(obj, dict):
        for k, v in obj.items():
            if _has_bad_bytes(k):
                return (f"{where}.{k}" if where else k, k)
            hit = find_bad_text(v, f"{where}.{k}" if where else k)
            if hit:
                return hit
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            hit = find_bad_text(v, f"{where}[{i}]")
            if hit:
                return hit
    return None


def check_utf8(path: Path, row: int | None, obj: Any) -> None:
    hit = find_bad_text(obj)
    if hit:
        raise RecordError(str(path), row, hit[0], _bad_bytes_repr(hit[1]), "UTF-8 text (found non-UTF-8 bytes)")


def _last_key(fragment: str) -> str | None:
    keys = _KEY_RE.findall(fragment)
    return keys[-1] if keys else None


def load_json_list(path: Path) -> list[Any]:
    """A JSON file holding a list; a truncated or broken file names the element (row) and key it stopped in."""
    text = read_text(path)
    dec = json.JSONDecoder()
    i = len(text) - len(text.lstrip())
    if not text[i:i + 1] == "[":
        if not text.strip():
            raise RecordError(str(path), None, None, "empty file", "a JSON list")
        raise RecordError(str(path), None, None, text[i:i + 40], "a JSON list ('[' at the start)")
    i += 1
    out: list[Any] = []
    n = len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            raise RecordError(str(path), len(out), _last_key(text[-2000:]), "end of file",
                              "a complete JSON list (file truncated?)")
        if text[i] == "]" and not out:
            break
        try:
            obj, j = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            frag = text[i:e.pos]
            truncated = e.pos >= n - 1 or not text[e.pos:].strip()
            what = "a complete JSON element (file truncated?)" if truncated else f"valid JSON ({e.msg}, line {e.lineno})"
            raise RecordError(str(path), len(out), _last_key(frag), text[max(i, e.pos - 40):e.pos + 20], what) from None
        except RecursionError:
            raise RecordError(str(path), len(out), None, text[i:i + 40], DEEP_JSON) from None
        out.append(obj)
        i = j
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            raise RecordError(str(path), len(out), None, "end of file", "',' or ']' (file truncated?)")
        if text[i] == ",":
            i += 1
            continue
        if text[i] == "]":
            break
        raise RecordError(str(path), len(out), None, text[i:i + 40], "',' or ']' between list elements")
    if text[i + 1:].strip():
        raise RecordError(str(path), len(out), None, text[i + 1:i + 41], "nothing after the closing ']'")
    for r, obj in enumerate(out):
        check_utf8(path, r, obj)
    return out


def load_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) pairs; a broken or truncated line names its line and the key it stopped in."""
    text = read_text(path)
    out: list[tuple[int, dict]] = []
    lines = text.split("\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            last = lineno == len(lines)
            what = "a complete JSON object (file truncated?)" if last else f"a JSON object ({e.msg})"
            raise RecordError(str(path), lineno, _last_key(line[:e.pos]), line.strip()[:80], what) from None
        except RecursionError:
            raise RecordError(str(path), lineno, None, line.strip()[:80], DEEP_JSON) from None
        if not isinstance(obj, dict):
            raise RecordError(str(path), lineno, None, obj, "a JSON object per line")
        check_utf8(path, lineno, obj)
        out.append((lineno, obj))
    if not out:
        raise RecordError(str(path), None, None, "no records", "at least one JSON object")
    return out


def load_csv(path: Path, required: list[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (spreadsheet row, {column: text}) pairs; short rows and unclosed quotes are truncation."""
    text = read_text(path)
    if not text.strip():
        raise RecordError(str(path), None, None, "empty file", "a CSV file with a header")
    rows: list[list[str]] = []
    limit = csv.field_size_limit(sys.maxsize)  # the text is in memory already; fields are bounded below
    try:
        for rec in csv.reader(_io.StringIO(text, newline=""), strict=True):
            rows.append(rec)
    except csv.Error as e:
        partial = list(csv.reader(_io.StringIO(text, newline="")))
        header = partial[0] if partial else []
        last = partial[-1] if partial else []
        field = header[len(last) - 1] if 0 < len(last) <= len(header) else None
        raise RecordError(str(path), len(rows) + 1, field, (last[-1][-40:] if last else ""),
                          f"a complete CSV row ({e}; file truncated?)") from None
    finally:
        csv.field_size_limit(limit)
    header = [h.strip().lstrip("\ufeff") for h in rows[0]]
    check_utf8(path, 1, header)
    missing = [c for c in required if c not in header]
    if missing:
        raise RecordError(str(path), 1, missing[0], "missing column",
                          f"a '{missing[0]}' column in the header; columns found: {header}")
    out = []
    for r, rec in enumerate(rows[1:], start=2):
        if not rec:
            continue
        if len(rec) < len(header):
            raise RecordError(str(path), r, header[len(rec)], "missing value",
                              f"{len(header)} values, found {len(rec)} (file truncated?)")
        if len(rec) > len(header):
            raise RecordError(str(path), r, None, rec[len(header):], f"{len(header)} values, found {len(rec)}")
        d = dict(zip(header, rec))
        big = next((k for k, v in d.items() if len(v) > MAX_FIELD_CHARS), None)
        if big is not None:
            raise RecordError(str(path), r, big, f"{len(d[big]):,} characters",
                              f"a field of at most {MAX_FIELD_CHARS:,} characters")
        check_utf8(path, r, d)
        out.append((r, d))
    if not out:
        raise RecordError(str(path), None, None, "no data rows", "at least one row after the header")
    return header, out


# ----------------------------------------------------------------------------------------------
# cell checks

def need(path: Path, row: int, obj: dict, key: str, where: str = "") -> Any:
    if not isinstance(obj, dict):
        raise RecordError(str(path), row, where or None, obj, "an object")
    if key not in obj:
        name = f"{where}.{key}" if where else key
        raise RecordError(str(path), row, name, "missing", f"a '{key}' entry; found {sorted(obj)}")
    return obj[key]


def is_nan(v: Any) -> bool:
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def text_cell(path: Path, row: int, field: str, v: Any, nonempty: bool = True) -> str:
    if isinstance(v, (bytes, bytearray)):
        try:
            v = bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            raise RecordError(str(path), row, field, bytes(v)[:60], "UTF-8 text (found non-UTF-8 bytes)") from None
    if v is None or is_nan(v) or v is pd.NA:
        raise RecordError(str(path), row, field, v, "text (got a null / NaN)")
    if not isinstance(v, str):
        raise RecordError(str(path), row, field, v, "text (a string)")
    if _has_bad_bytes(v):
        raise RecordError(str(path), row, field, _bad_bytes_repr(v), "UTF-8 text (found non-UTF-8 bytes)")
    if nonempty and not v.strip():
        raise RecordError(str(path), row, field, v, "non-empty text")
    return v


def number_cell(path: Path, row: int, field: str, v: Any, integer: bool = False,
                lo: float | None = None, hi: float | None = None, nullable: bool = False,
                nan_is_null: bool = False) -> float | int | None:
    """Parse a number from JSON/CSV/Parquet, tolerating surrounding whitespace (quoted CSV newlines).

    NaN is an error unless `nan_is_null` (pandas columns store nulls as NaN; JSON and CSV have no NaN)."""
    kind = "an integer" if integer else "a number"
    if v is None or v is pd.NA or (isinstance(v, str) and not v.strip() and nullable):
        if nullable:
            return None
        raise RecordError(str(path), row, field, v, f"{kind} (got null)")
    if isinstance(v, (bool, np.bool_)):
        raise RecordError(str(path), row, field, v, kind)
    if isinstance(v, str):
        s = v.strip()
        try:
            x = float(s)
        except ValueError:
            raise RecordError(str(path), row, field, v, kind) from None
    elif isinstance(v, (int, np.integer, float, np.floating)):
        x = float(v)
    else:
        raise RecordError(str(path), row, field, v, kind)
    if not math.isfinite(x):
        if nullable and nan_is_null and math.isnan(x):
            return None
        raise RecordError(str(path), row, field, v, f"{kind} (got NaN/inf)")
    if integer and x != int(x):
        raise RecordError(str(path), row, field, v, kind)
    if lo is not None and x < lo or hi is not None and x > hi:
        raise RecordError(str(path), row, field, v, f"{kind} in [{lo}, {hi}]")
    return int(x) if integer else x


def bool_cell(path: Path, row: int, field: str, v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    raise RecordError(str(path), row, field, v, "true or false")


def files_in(path: Path, patterns: list[str], what: str) -> list[Path]:
    """A file, or the files in a folder matching any pattern (sorted), or a clear error."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise RecordError(str(path), None, None, "no such file or folder", f"{what}")
    found = sorted({p for pat in patterns for p in path.glob(pat) if p.is_file()})
    if not found:
        raise RecordError(str(path), None, None, "no matching files", f"{what} ({', '.join(patterns)})")
    return found


def dropped_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["source_file", "row", "reason"]) if rows else \
        pd.DataFrame({"source_file": pd.Series(dtype=str), "row": pd.Series(dtype="Int64"),
                      "reason": pd.Series(dtype=str)})
