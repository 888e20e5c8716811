"""Stage configs: a dataclass per stage is the schema; YAML files plus `key=value` overrides fill it.

Each field declares its one-line doc and its range or choice constraints once, beside it, with
`param(...)`. `build` checks types and those constraints for every stage and names where the
offending value came from: the default, the YAML file and line, or the command-line override.
Every shipped YAML in `configs/` is checked against its stage (tests do), and `--help` of each
command lists the keys from the same declarations.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import difflib
import importlib
import math
import os
import re
import types
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import yaml

T = TypeVar("T")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
MAX_SEED = 2**31 - 1  # seeds are offset per draw and must stay in Lightning's seed range
RULE = "rm_lab.rule"  # the key of a field's Rule in dataclasses.Field.metadata
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


class ConfigError(ValueError):
    pass


# ----------------------------------------------------------------------------------------------
# declared constraints

def _resolve(spec: Any) -> Any:
    """`"pkg.mod:Name"` -> the object; a zero-argument callable -> its value; else `spec`."""
    if isinstance(spec, str) and ":" in spec:
        mod, name = spec.split(":", 1)
        return getattr(importlib.import_module(mod), name)
    if callable(spec) and not isinstance(spec, type):
        return spec()
    return spec


def _show(value: Any, limit: int = 80) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[: limit - 12] + f"... ({len(s)} chars)"


def _num(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Rule:
    """What a field accepts beyond its type: a range, a set of choices, a length, a nested schema.

    On a list the range and choices apply to each item; on a mapping to each value, and `keys` to
    its keys. `schema` validates a plain mapping as the keys of another stage dataclass.
    """

    doc: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: Any = None  # a collection, a zero-argument callable, or "module:NAME"
    keys: Any = None
    multiple_of: int | None = None
    min_len: int | None = None
    schema: Any = None  # a dataclass or "module:Class"

    def choice_list(self, which: str = "choices") -> list | None:
        spec = getattr(self, which)
        return None if spec is None else list(_resolve(spec))

    def schema_cls(self) -> type | None:
        return None if self.schema is None else _resolve(self.schema)

    def range_text(self) -> str:
        lo = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        hi = (self.le, "]") if self.le is not None else (self.lt, ")") if self.lt is not None else None
        if lo and hi:
            return f"in {lo[0]}{_num(lo[1])}, {_num(hi[0])}{hi[1]}"
        if lo:
            return (">= " if lo[0] == "[" else "> ") + _num(lo[1])
        if hi:
            return ("<= " if hi[1] == "]" else "< ") + _num(hi[0])
        return ""

    def describe(self) -> str:
        """The constraints in words, for --help."""
        parts = [self.range_text()]
        if self.multiple_of:
            parts.append(f"a multiple of {self.multiple_of}")
        if self.choices is not None:
            parts.append("one of " + ", ".join(map(str, self.choice_list())))
        if self.keys is not None:
            parts.append("keys: " + ", ".join(map(str, self.choice_list("keys"))))
        if self.min_len:
            parts.append("non-empty" if self.min_len == 1 else f"at least {self.min_len} long")
        return "; ".join(p for p in parts if p)

    def _scalar(self, v: Any) -> str | None:
        if self.choices is not None:
            ch = self.choice_list()
            if v not in ch:
                near = difflib.get_close_matches(str(v), [str(c) for c in ch], n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                return f"expected one of {ch}, got {_show(v)}{hint}"
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            ok = ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                  and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))
            if isinstance(v, float) and not math.isfinite(v):
                return f"expected a finite number, got {_show(v)}"
            if not ok:
                return f"expected {self.range_text()}, got {_show(v)}"
            if self.multiple_of and v % self.multiple_of:
                return f"expected a multiple of {self.multiple_of}, got {_show(v)}"
        return None

    def violations(self, value: Any) -> list[tuple[tuple, str]]:
        """(sub-path, message) for each part of `value` this rule refuses; [] when it accepts it."""
        if value is None:
            return []
        out: list[tuple[tuple, str]] = []
        if self.min_len is not None and isinstance(value, (str, list, tuple, dict)) and len(value) < self.min_len:
            what = ("list" if isinstance(value, (list, tuple)) else "mapping" if isinstance(value, dict) else "string")
            need = f"a non-empty {what}" if self.min_len == 1 else f"a {what} of length >= {self.min_len}"
            out.append(((), f"expected {need}, got {_show(value)}"))
        if isinstance(value, (list, tuple)):
            out += [((i,), m) for i, v in enumerate(value) if (m := self._scalar(v))]
        elif isinstance(value, dict):
            if self.keys is not None:
                ks = self.choice_list("keys")
                out += [((k,), f"unknown key '{k}', expected one of {ks}") for k in value if k not in ks]
            if self.schema is None:
                out += [((k,), m) for k, v in value.items() if (m := self._scalar(v))]
        else:
            if (m := self._scalar(value)):
                out.append(((), m))
        return out


def param(default: Any = MISSING, *, doc: str, ge: float | None = None, gt: float | None = None,
          le: float | None = None, lt: float | None = None, choices: Any = None, keys: Any = None,
          multiple_of: int | None = None, min_len: int | None = None, schema: Any = None,
          default_factory: Callable[[], Any] | Any = MISSING) -> Any:
    """A dataclass field with its doc and constraints; a list/dict default is copied per instance."""
    rule = Rule(doc=doc, ge=ge, gt=gt, le=le, lt=lt, choices=choices, keys=keys, multiple_of=multiple_of,
                min_len=min_len, schema=schema)
    if default_factory is MISSING and isinstance(default, (list, dict, set)):
        default_factory, default = (lambda d=default: copy.deepcopy(d)), MISSING
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={RULE: rule})
    return dataclasses.field(default=default, metadata={RULE: rule})


def rule_of(f: dataclasses.Field) -> Rule | None:
    return f.metadata.get(RULE)


def _literal_args(tp: Any) -> tuple | None:
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for a in typing.get_args(tp):
            if typing.get_origin(a) is typing.Literal:
                return typing.get_args(a)
    return None


def check_fields(obj: Any) -> None:
    """The declared constraints on an instance (the Python API path; `build` checks earlier, with sources)."""
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        lit = _literal_args(hints[f.name])
        if lit is not None and value not in lit and value is not None:
            raise ConfigError(f"{cls.__name__}.{f.name}: expected one of {list(lit)}, got {_show(value)}")
        rule = rule_of(f)
        if rule is None:
            continue
        for sub, msg in rule.violations(value):
            raise ConfigError(f"{cls.__name__}.{_dotted((f.name, *sub))}: {msg}")
        sc = rule.schema_cls()
        if sc is not None and isinstance(value, dict):
            build(sc, value, f"{cls.__name__}.{f.name}")


# ----------------------------------------------------------------------------------------------
# where values came from

def _dotted(path: Iterable) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class Sources:
    """Key path -> where its value came from ("f.yaml, line 3", "override 'lr=-1'"); unknown paths inherit
    from their longest known prefix."""

    def __init__(self) -> None:
        self.at: dict[tuple, str] = {}

    def set(self, path: tuple, label: str, value: Any = None) -> None:
        """Record `label` for `path` and, for a value that replaces what was below, forget the old entries."""
        self.at[path] = label
        if isinstance(value, dict):
            for k, v in value.items():
                self.set((*path, k), label, v)
        else:
            for p in [p for p in self.at if len(p) > len(path) and p[: len(path)] == path]:
                del self.at[p]

    def label(self, path: tuple) -> str | None:
        for n in range(len(path), 0, -1):
            if path[:n] in self.at:
                return self.at[path[:n]]
        return None


# ----------------------------------------------------------------------------------------------
# reading YAML and overrides

def parse_overrides(overrides: list[str] | None, sources: Sources | None = None) -> dict[str, Any]:
    """`a.b=3` -> {"a": {"b": 3}}; values are parsed as YAML scalars/lists.

    A key that is both set to a value and used as a mapping (`world=3 world.n_contexts=5`,
    `a.b=1 a=2`) is an error naming both overrides; the same key twice keeps the last value.
    """
    out: dict[str, Any] = {}
    origin: dict[tuple, str] = {}  # path -> the override that set it
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{_clip(item)}': expected key=value")
        key, raw = item.split("=", 1)
        parts = tuple(key.strip().split("."))
        bad = [p for p in parts if not _KEY_RE.match(p)]
        if bad:
            raise ConfigError(f"override '{_clip(item)}': '{_clip(key.strip())}' is not a key (expected names like "
                              "lr or world.n_contexts: letters, digits, _ and -, joined by dots)")
        try:
            value = yaml.safe_load(raw) if raw.strip() != "" else ""
        except (yaml.YAMLError, RecursionError):
            value = raw
        node = out
        for i, p in enumerate(parts[:-1]):
            if p in node and not isinstance(node[p], dict):
                raise _conflict(item, origin.get(parts[: i + 1]), _dotted(parts[: i + 1]))
            node = node.setdefault(p, {})
        last = parts[-1]
        if isinstance(node.get(last), dict) and node[last] and not isinstance(value, dict):
            earlier = next((o for p, o in origin.items() if p[: len(parts)] == parts and len(p) > len(parts)), None)
            raise _conflict(item, earlier, _dotted(parts))
        node[last] = _merge(node[last], value) if isinstance(node.get(last), dict) and isinstance(value, dict) else value
        origin[parts] = item
        if sources is not None:
            sources.set(parts, f"override '{_clip(item)}'", value)
    return out


def _clip(s: str, limit: int = 80) -> str:
    s = s.replace("\n", "\\n")
    return s if len(s) <= limit else s[: limit - 12] + f"... ({len(s)} chars)"


def _conflict(item: str, earlier: str | None, key: str) -> ConfigError:
    other = f"override '{_clip(earlier)}'" if earlier else "an earlier override"
    return ConfigError(f"override '{_clip(item)}' conflicts with {other}: '{key}' cannot be both a value and a "
                       f"mapping of keys; give one of them")


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_path(config: str | Path | None) -> Path | None:
    if config is None:
        return None
    p = Path(config)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if cand.is_file():
            return cand
    if p.exists():  # a folder (or a device): load names it
        return p
    raise ConfigError(f"config '{config}' not found (looked in the current folder and {CONFIG_DIR})")


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; -c/--config expects a YAML file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file ({e.strerror or e})") from None
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise ConfigError(f"{path}: looks like a binary file (NUL byte at offset {nul}); expected a YAML config")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r}); "
                          "expected a YAML config") from None


def _yaml_error(path: Path, e: yaml.YAMLError) -> ConfigError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    what = getattr(e, "problem", None) or str(e)
    return ConfigError(f"{where}: not valid YAML: {_clip(str(what), 200)}")


def _key_lines(node: Any, path: Path, prefix: tuple, sources: Sources, walked: set | None = None) -> None:
    """Record the line of every mapping key and list item under `node`; a repeated key is an error.

    A node reached again through an alias is not walked again (its keys take the alias's line): walking
    every path of nested aliases would expand a small "billion laughs" file into billions of entries."""
    walked = set() if walked is None else walked
    if id(node) in walked:
        return
    walked.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
                continue
            line = k.start_mark.line + 1
            if k.value in seen:
                raise ConfigError(f"{path}, line {line}: key '{_dotted((*prefix, k.value))}' is given twice "
                                  f"(first on line {seen[k.value]}); keep one")
            seen[k.value] = line
            sources.at[(*prefix, k.value)] = f"{path}, line {line}"
            _key_lines(v, path, (*prefix, k.value), sources, walked)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            sources.at[(*prefix, i)] = f"{path}, line {v.start_mark.line + 1}"
            _key_lines(v, path, (*prefix, i), sources, walked)


def read_yaml(path: Path) -> tuple[dict, Sources]:
    """A YAML config as a mapping plus the file and line of each of its keys."""
    text = _read_text(path)
    sources = Sources()
    try:
        _key_lines(yaml.compose(text, Loader=yaml.SafeLoader), path, (), sources)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise _yaml_error(path, e) from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data, sources


def load_yaml(path: Path) -> dict:
    return read_yaml(Path(path))[0]


# ----------------------------------------------------------------------------------------------
# types and building

class _Ctx:
    """Where this build's values came from, for error messages."""

    def __init__(self, where: str, sources: Sources | None):
        self.where, self.sources = where, sources or Sources()

    def label(self, path: tuple) -> str:
        return self.sources.label(path) or self.where

    def error(self, path: tuple, msg: str) -> ConfigError:
        return ConfigError(f"{self.label(path)}: {_dotted(path)}: {msg}" if path else f"{self.label(path)}: {msg}")


def _coerce(tp: Any, value: Any, ctx: _Ctx, path: tuple) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, ctx, path)
            except ConfigError as e:
                errors.append(e)
        if errors:
            raise errors[0]
        raise ctx.error(path, f"bad value {_show(value)}")
    if origin is typing.Annotated:
        return _coerce(args[0], value, ctx, path)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ctx.error(path, f"expected a mapping of {tp.__name__} keys, got {_show(value)}")
        return _build(tp, value, ctx, path)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ctx.error(path, f"expected a list, got {_show(value)}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, ctx, (*path, i)) for i, v in enumerate(value)]
        return items if (origin or tp) is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ctx.error(path, f"expected a mapping, got {_show(value)}")
        kt, vt = args if len(args) == 2 else (Any, Any)
        return {_coerce(kt, k, ctx, (*path, k)): _coerce(vt, v, ctx, (*path, k)) for k, v in value.items()}
    if origin is typing.Literal:
        if value not in args:
            raise ctx.error(path, f"expected one of {list(args)}, got {_show(value)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ctx.error(path, f"expected true/false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ctx.error(path, f"expected an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                f = float(value)
            except OverflowError:
                f = math.inf
            if not math.isfinite(f):
                raise ctx.error(path, f"expected a finite number, got {_show(value)}")
            return f
        raise ctx.error(path, f"expected a number, got {_show(value)}")
    if tp is str:
        if isinstance(value, (_dt.date, _dt.datetime)):
            return value.isoformat()
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ctx.error(path, f"expected a string, got {_show(value)}")
    return value


_MENTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _build(cls: type[T], data: dict, ctx: _Ctx, path: tuple) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        near = difflib.get_close_matches(str(unknown[0]), list(fields), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ConfigError(f"{ctx.label((*path, unknown[0]))}: {_dotted(path) + ': ' if path else ''}unknown key(s) "
                          f"{[str(k) for k in unknown]} for {cls.__name__}{hint}; known: {sorted(fields)}")
    kwargs = {}
    for k, v in data.items():
        p = (*path, k)
        kwargs[k] = value = _coerce(hints[k], v, ctx, p)
        rule = rule_of(fields[k])
        if rule is None:
            continue
        for sub, msg in rule.violations(value):
            raise ctx.error((*p, *sub), msg)
        sc = rule.schema_cls()
        if sc is not None and isinstance(value, dict):
            _build(sc, value, ctx, p)
    for name, f in fields.items():  # the defaults obey the same rules (a broken default is named as one)
        rule = rule_of(f)
        if name in data or rule is None or (f.default is MISSING and f.default_factory is MISSING):
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        for sub, msg in rule.violations(default):
            raise ConfigError(f"the default of {cls.__name__}.{_dotted((name, *sub))}: {msg}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        msg = _clip(str(e), 400)
        named = [n for n in dict.fromkeys(_MENTION.findall(msg)) if n in fields]
        origins = []
        for n in named:
            src = ctx.sources.label((*path, n)) if n in data else f"the default of {cls.__name__}.{n}"
            origins.append(f"{_dotted((*path, n))} from {src or ctx.where}")
        where = "; ".join(origins) if origins else (ctx.label(path) + (f": {_dotted(path)}" if path else ""))
        raise ConfigError(f"{where}: {msg}") from None


def build(cls: type[T], data: dict, where: str = "config", *, sources: Sources | None = None,
          path: tuple = ()) -> T:
    """Build dataclass `cls` from a mapping: unknown keys, wrong types and values outside the declared
    constraints are errors naming the key and where its value came from (`sources`, else `where`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} keys, got {_show(data)}")
    return _build(cls, data, _Ctx(where, sources), tuple(path))


def load(cls: type[T], config: str | Path | None = None, overrides: list[str] | None = None, *,
         options: dict[str, tuple[str, Any]] | None = None) -> T:
    """YAML file (optional) + `key=value` overrides + command-line options -> a validated `cls`.

    `options` maps a config key to (flag, value) for options that set a key (`--kind` -> kind); a value
    None leaves the key alone.
    """
    path = resolve_path(config)
    data, sources = read_yaml(path) if path else ({}, Sources())
    data = _merge(data, parse_overrides(overrides, sources))
    for key, (flag, value) in (options or {}).items():
        if value is not None:
            data = _merge(data, {key: value})
            sources.set((key,), f"option '{flag} {_clip(str(value))}'", value)
    return build(cls, data, str(path) if path else "overrides", sources=sources)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


# ----------------------------------------------------------------------------------------------
# describing a schema (for --help)

@dataclass(frozen=True)
class KeyDoc:
    key: str
    type: str
    default: str
    doc: str


def type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " | ".join(names) + (" | null" if type(None) in args else "")
    if origin is typing.Literal:
        return "|".join(map(str, args))
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (list, tuple):
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict:
        return f"mapping[{type_name(args[0])}, {type_name(args[1])}]" if len(args) == 2 else "mapping"
    if tp is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _default_text(v: Any) -> str:
    if dataclasses.is_dataclass(v):
        return f"{type(v).__name__}(...)"
    try:
        return yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
    except yaml.YAMLError:
        return repr(v)


def describe(cls: type, prefix: str = "") -> list[KeyDoc]:
    """Every key of a stage config with its type, default and doc (constraints appended); the keys of a
    nested stage dataclass are listed dotted (`world.n_contexts`)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and default is not MISSING and dataclasses.is_dataclass(default):
            sub = {d.key: d for d in describe(tp, f"{prefix}{f.name}.")}
            for k, d in sub.items():  # the outer default (e.g. demo's smaller world) wins over the class's own
                leaf = k[len(prefix) + len(f.name) + 1:]
                if "." not in leaf and hasattr(default, leaf):
                    d = dataclasses.replace(d, default=_default_text(getattr(default, leaf)))
                out.append(d)
            continue
        rule = rule_of(f) or Rule()
        doc = rule.doc
        sc = rule.schema
        if sc is not None:
            name = sc.rsplit(":", 1)[-1] if isinstance(sc, str) else sc.__name__
            doc = f"{doc} ({name} keys)" if name not in doc else doc
        cons = rule.describe()
        out.append(KeyDoc(f"{prefix}{f.name}", type_name(tp), "required" if default is MISSING else
                          _default_text(default), f"{doc} ({cons})" if cons else doc))
    return out


# Every YAML shipped in configs/ names the stage dataclass it must satisfy (tests load each one).
CONFIG_SCHEMAS: dict[str, str] = {
    "simulate.yaml": "rm_lab.world.simulate:WorldConfig",
    "simulate_spurious.yaml": "rm_lab.world.simulate:WorldConfig",
    "simulate_v2.yaml": "rm_lab.world.simulate:WorldConfig",
    "ab_test.yaml": "rm_lab.world.ab:ABConfig",
    "ab_plan.yaml": "rm_lab.evaluate.ab_plan:ABPlanConfig",
    "demo.yaml": "rm_lab.demo:DemoConfig",
    "train_rm.yaml": "rm_lab.reward.train:TrainRMConfig",
    "eval_rm.yaml": "rm_lab.reward.evaluate:EvalRMConfig",
    "ingest.yaml": "rm_lab.commands.ingest:IngestConfig",
    "curate.yaml": "rm_lab.curate.pipeline:CurateConfig",
    "best_of_n.yaml": "rm_lab.policy.objectives.best_of_n:BestOfNConfig",
    "rejection_sample.yaml": "rm_lab.policy.objectives.rejection:RejectionConfig",
    "train_policy.yaml": "rm_lab.policy.trainer:TrainPolicyConfig",
    "train_policy_dpo.yaml": "rm_lab.policy.trainer:TrainPolicyConfig",
    "train_policy_grpo.yaml": "rm_lab.policy.trainer:TrainPolicyConfig",
    "evaluate.yaml": "rm_lab.policy.evaluate:EvaluateConfig",
    "tune_rm.yaml": "rm_lab.tune.spec:TuneConfig",
    "calibrate.yaml": "rm_lab.calibrate.config:CalibrateConfig",
    "flywheel.yaml": "rm_lab.flywheel.config:FlywheelConfig",
    "demo_flywheel.yaml": "rm_lab.flywheel.config:FlywheelConfig",
    "flywheel_planted.yaml": "rm_lab.flywheel.config:FlywheelConfig",
    "reward_hacking.yaml": "rm_lab.flywheel.config:FlywheelConfig",
}


def schema_for(config_file: str) -> type:
    name = Path(config_file).name
    if name not in CONFIG_SCHEMAS:
        raise ConfigError(f"{config_file}: no stage schema registered in rm_lab.config.CONFIG_SCHEMAS")
    return _resolve(CONFIG_SCHEMAS[name])
