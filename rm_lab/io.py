"""Reading and writing canonical records (Parquet, JSONL) and run artifacts, always atomically.

Every write goes to a temporary file in the target folder and is renamed into place, so a killed
job never leaves a half-written artifact behind. Every read validates against `rm_lab.schema`.
Row numbers in errors: 1-based line numbers for JSONL, 0-based row indices for Parquet.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rm_lab.schema import KINDS, RecordError, RecordKind, Records, check_references, kind, validate_frame


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path next to `path`; on success rename it over `path`, on failure remove it."""
    path = writable_file(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def writable_file(path: str | os.PathLike) -> Path:
    """`path` as a file to (over)write, its folder made; a folder there, or a file where its folder
    should be, is a RecordError naming the path (checked before any work, not after it)."""
    path = Path(path)
    if path.is_dir():
        raise RecordError(str(path), None, None, "a folder", "a file path to write (not a folder)")
    for parent in (path.parent, *path.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise RecordError(str(path), None, None, f"{parent} is a file", "a path whose folders are folders")
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_safe(obj: Any) -> Any:
    """`obj` with NaN and infinities as None (JSON has no such numbers) and numpy values as Python ones."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Always valid JSON: NaN/inf are written as null (never the bare `NaN` that JSON parsers reject)."""
    text = json.dumps(json_safe(obj), indent=2, default=_json_default, ensure_ascii=False, allow_nan=False)
    return write_text(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(str(path), None, None, "no such file", "an existing JSON file") from None
    except UnicodeDecodeError as e:
        raise RecordError(str(path), None, None, f"byte offset {e.start}", "UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise RecordError(str(path), e.lineno, None, e.msg, "valid JSON") from None
    except RecursionError:  # Python's parser gives up on deep nesting: that is bad input, not a crash
        raise RecordError(str(path), None, None, "JSON nested too deeply", DEEP_JSON) from None


# ----------------------------------------------------------------------------------------------
# records

def _json_fields(record: RecordKind) -> list[str]:
    return [f.name for f in record.fields if f.kind.startswith("json")]


def _to_storable(df: pd.DataFrame, record: RecordKind) -> pd.DataFrame:
    out = df.copy()
    for name in _json_fields(record):
        if name in out.columns:
            out[name] = [json.dumps(v, default=_json_default, ensure_ascii=False) for v in out[name]]
    return out


def write_records(df: pd.DataFrame, path: str | os.PathLike, record: RecordKind | str,
                  validate: bool = True) -> Path:
    """Validate then write `df` as Parquet (.parquet) or JSONL (.jsonl), atomically."""
    record = kind(record) if isinstance(record, str) else record
    path = Path(path)
    if validate:
        df = validate_frame(df, record, str(path))
    if path.suffix == ".parquet":
        table = pa.Table.from_pandas(_to_storable(df, record), preserve_index=False)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    elif path.suffix in (".jsonl", ".json"):
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in df.to_dict(orient="records"):
                    rec = {k: (None if _scalar_null(v) else v) for k, v in rec.items()}
                    fh.write(json.dumps(rec, default=_json_default, ensure_ascii=False) + "\n")
    else:
        raise ValueError(f"{path}: unsupported extension '{path.suffix}', expected .parquet or .jsonl")
    return path


def _scalar_null(v: Any) -> bool:
    if isinstance(v, (list, dict, tuple, np.ndarray)):
        return False
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


DEEP_JSON = "JSON nested at most ~1000 levels deep"
MAX_LINE_BYTES = 256 * 2**20  # one JSONL record: far above any real reply, short of exhausting memory


def read_jsonl(path: str | os.PathLike) -> pd.DataFrame:
    """Read JSON Lines; a bad line raises RecordError with its 1-based line number."""
    path = Path(path)
    if not path.exists():
        raise RecordError(str(path), None, None, "no such file", "an existing JSONL file")
    if path.is_dir():
        raise RecordError(str(path), None, None, "a folder", "a JSONL file")
    rows: list[dict] = []
    lines: list[int] = []
    with open(path, "rb") as fh:
        if b"\x00" in fh.read(8192):
            raise RecordError(str(path), None, None, "NUL bytes",
                              "UTF-8 JSON Lines text (NUL bytes: a binary file, or UTF-16 text?)")
        fh.seek(0)
        for lineno, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise RecordError(str(path), lineno, None, f"a line over {MAX_LINE_BYTES:,} bytes",
                                  f"lines of at most {MAX_LINE_BYTES:,} bytes (one record per line)")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RecordError(str(path), lineno, _field_with_bad_bytes(raw),
                                  raw[max(0, e.start - 10): e.end + 10], "UTF-8 text") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                what = "a complete JSON object (file truncated?)" if not raw.endswith(b"\n") else "a JSON object"
                raise RecordError(str(path), lineno, None, line.strip()[:80], f"{what}: {e.msg}") from None
            except RecursionError:
                raise RecordError(str(path), lineno, None, line.strip()[:80], DEEP_JSON) from None
            if not isinstance(obj, dict):
                raise RecordError(str(path), lineno, None, obj, "a JSON object per line")
            rows.append(obj)
            lines.append(lineno)
    if not rows:
        raise RecordError(str(path), None, None, "no records", "at least one JSON object")
    df = pd.DataFrame(rows)
    df.attrs["line_numbers"] = lines
    return df


def _field_with_bad_bytes(raw: bytes) -> str | None:
    """The top-level key whose value (or name) holds the undecodable bytes, when the line still parses."""
    try:
        obj = json.loads(raw.decode("utf-8", errors="surrogateescape"))
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None

    def bad(v: Any) -> bool:
        if isinstance(v, str):
            return any("\udc80" <= ch <= "\udcff" for ch in v)
        if isinstance(v, dict):
            return any(bad(k) or bad(x) for k, x in v.items())
        if isinstance(v, list):
            return any(bad(x) for x in v)
        return False

    return next((k for k, v in obj.items() if bad(k) or bad(v)), None)


def read_parquet(path: str | os.PathLike) -> pd.DataFrame:
    """A Parquet file as a frame; an unreadable file, text that is not UTF-8, or a column that does
    not convert is a RecordError naming the file and, where it can be found, the row and field."""
    path = Path(path)
    if not path.exists():
        raise RecordError(str(path), None, None, "no such file", "an existing Parquet file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise RecordError(str(path), None, None, str(e)[:100], "a readable Parquet file (truncated or not Parquet?)") from None
    _check_text(path, table)
    try:
        return table.to_pandas()
    except (pa.ArrowException, ValueError) as e:
        for name in table.column_names:  # name the column that does not convert
            try:
                table.select([name]).to_pandas()
            except (pa.ArrowException, ValueError):
                raise RecordError(str(path), None, name, str(e)[:100],
                                  f"a column that converts to a table ({table.schema.field(name).type})") from None
        raise RecordError(str(path), None, None, str(e)[:100], "Parquet columns that convert to a table") from None


def _holds_text(t: pa.DataType) -> bool:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", bool)(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _holds_text(t.value_type)
    if pa.types.is_struct(t):
        return any(_holds_text(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _holds_text(t.key_type) or _holds_text(t.item_type)
    return False


def _check_text(path: Path, table: pa.Table) -> None:
    """Arrow reads text without checking its UTF-8 (pandas then fails later, anywhere): check each
    text column here, and bisect a bad chunk to the first bad row."""
    for name in table.column_names:
        col = table.column(name)
        if not _holds_text(col.type):
            continue
        start = 0
        for chunk in col.chunks:
            try:
                chunk.validate(full=True)
            except pa.ArrowInvalid:
                lo, hi = 0, len(chunk)  # chunk[:lo] is valid, chunk[:hi] is not
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    try:
                        chunk.slice(0, mid).validate(full=True)
                        lo = mid
                    except pa.ArrowInvalid:
                        hi = mid
                cell = chunk.slice(hi - 1, 1)
                shown = (cell.cast(pa.large_binary())[0].as_py()[:60]
                         if pa.types.is_string(cell.type) or pa.types.is_large_string(cell.type) else "text")
                raise RecordError(str(path), start + hi - 1, name, shown,
                                  "UTF-8 text (found non-UTF-8 bytes)") from None
            start += len(chunk)


def read_records(path: str | os.PathLike, record: RecordKind | str) -> pd.DataFrame:
    """Read and validate a canonical record file (.parquet or .jsonl)."""
    record = kind(record) if isinstance(record, str) else record
    path = Path(path)
    if path.suffix == ".parquet":
        df = read_parquet(path)
        for name in _json_fields(record):
            if name in df.columns:
                df[name] = [_decode_json_cell(path, i, name, v) for i, v in enumerate(df[name])]
    elif path.suffix in (".jsonl", ".json"):
        df = read_jsonl(path)
    else:
        raise RecordError(str(path), None, None, path.suffix, "a .parquet or .jsonl file")
    out = validate_frame(df, record, str(path), row_numbers=df.attrs.get("line_numbers"))
    out.attrs["path"] = str(path)  # where later checks (references, heads) say a row is
    return out


def _decode_json_cell(path: Path, row: int, field: str, v: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            raise RecordError(str(path), row, field, v, "JSON text (a list or an object)") from None
        except RecursionError:
            raise RecordError(str(path), row, field, v[:80], DEEP_JSON) from None
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def read_record_folder(folder: str | os.PathLike, kinds=None) -> Records:
    """Every canonical record file `<kind>.parquet` (or `.jsonl`) in a run folder, validated, with every
    reference between them (`schema.check_references`: a label's context, a context's character) found.

    The hand-over format between stages: simulate, ingest and curate write such folders, and
    curate, train-rm and eval-rm read them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RecordError(str(folder), None, None, "no such folder", "a folder of <kind>.parquet record files")
    from rm_lab.runs import check_finished

    check_finished(folder, "records")  # a failed or stopped run's records may be partial
    frames: dict[str, pd.DataFrame] = {}
    for name in kinds or KINDS:
        found = [folder / f"{name}{ext}" for ext in (".parquet", ".jsonl") if (folder / f"{name}{ext}").exists()]
        if len(found) > 1:  # which one holds the records? neither is silently preferred
            raise RecordError(str(folder), None, None, [p.name for p in found], f"one {name} file in the folder")
        if found:
            frames[name] = read_records(found[0], name)
    if not frames:
        raise RecordError(str(folder), None, None, f"files {sorted(p.name for p in folder.iterdir())}",
                          f"files named <kind>.parquet or <kind>.jsonl, kinds {sorted(kinds or KINDS)}")
    check_references(frames, str(folder))  # a label of a missing context is named here, not in training
    return Records(frames)
