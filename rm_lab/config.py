"""Stage configs: a dataclass per stage is the schema; YAML files plus `key=value` overrides fill it.

Unknown keys and values of the wrong type are errors that name the file and the key, so every
shipped YAML in `configs/` can be checked against its stage (tests do).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    pass


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """`a.b=3` -> {"a": {"b": 3}}; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


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
    if p.exists():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if cand.exists():
            return cand
    raise ConfigError(f"config '{config}' not found (looked in the current folder and {CONFIG_DIR})")


def load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _coerce(tp: Any, value: Any, where: str) -> Any:
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
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def build(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def load(cls: type[T], config: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """YAML file (optional) + overrides -> a validated `cls` instance."""
    path = resolve_path(config)
    data = load_yaml(path) if path else {}
    data = _merge(data, parse_overrides(overrides))
    return build(cls, data, str(path) if path else "overrides")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


# Every YAML shipped in configs/ names the stage dataclass it must satisfy (tests load each one).
CONFIG_SCHEMAS: dict[str, str] = {
    "simulate.yaml": "rm_lab.world.simulate:WorldConfig",
    "simulate_spurious.yaml": "rm_lab.world.simulate:WorldConfig",
    "ab_test.yaml": "rm_lab.world.ab:ABConfig",
    "demo.yaml": "rm_lab.demo:DemoConfig",
    "train_rm.yaml": "rm_lab.reward.train:TrainRMConfig",
    "eval_rm.yaml": "rm_lab.reward.evaluate:EvalRMConfig",
    "ingest.yaml": "rm_lab.commands.ingest:IngestConfig",
    "curate.yaml": "rm_lab.curate.pipeline:CurateConfig",
}


def schema_for(config_file: str) -> type:
    import importlib

    name = Path(config_file).name
    if name not in CONFIG_SCHEMAS:
        raise ConfigError(f"{config_file}: no stage schema registered in rm_lab.config.CONFIG_SCHEMAS")
    mod, cls = CONFIG_SCHEMAS[name].split(":")
    return getattr(importlib.import_module(mod), cls)
