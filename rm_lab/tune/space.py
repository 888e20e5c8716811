"""The search space: stage config keys -> Optuna distributions, written in YAML and checked like any config.

    space:
      lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      n_layers: {type: int, low: 1, high: 3}
      inputs: {type: categorical, choices: [[reply, relevance], [reply, relevance, conversation]]}
      loss_weights.preference: {type: float, low: 0.5, high: 4}

Each entry is a `Dist` built by `rm_lab.config` (unknown keys and wrong types are named with their YAML
line); its key must be a field of the stage dataclass (dotted into nested stage configs and mappings),
and its bounds and choices must be values that field accepts: each is put into the stage config and
built, so the field's own declared constraints decide, and the error names the space entry's line.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from rm_lab import config as cfgmod
from rm_lab.config import ConfigError, Sources, param


@dataclass
class Dist:
    """One key's distribution."""

    type: Literal["float", "int", "categorical"] = param(doc="float, int or categorical")
    low: float | None = param(None, doc="lower bound (float, int)")
    high: float | None = param(None, doc="upper bound (float, int)")
    log: bool = param(False, doc="sample on a log scale (float, int; low > 0)")
    step: float | None = param(None, doc="grid step (float, int; not with log)", gt=0)
    choices: list | None = param(None, doc="the values (categorical)", min_len=1)

    def __post_init__(self):
        if self.type == "categorical":
            if self.choices is None:
                raise ValueError("type categorical needs choices: [...]")
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("type categorical takes choices only (no low, high, log, step)")
            return
        if self.choices is not None:
            raise ValueError(f"type {self.type} takes low/high, not choices (use type: categorical)")
        if self.low is None or self.high is None:
            raise ValueError(f"type {self.type} needs both low and high")
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"log needs low > 0, got low {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        if self.type == "int":
            for name in ("low", "high", "step"):
                v = getattr(self, name)
                if v is not None and float(v) != int(v):
                    raise ValueError(f"type int needs whole numbers: {name} is {v:g}")

    def bounds(self) -> list:
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]

    def distribution(self):
        import optuna.distributions as D

        if self.type == "float":
            return D.FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)
        if self.type == "int":
            return D.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return D.CategoricalDistribution([choice_label(c) for c in self.choices or []])


def choice_label(value: Any) -> Any:
    """Optuna stores str/int/float/bool/None choices: a list or mapping is stored as its YAML flow text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()


@dataclass
class SearchSpace:
    """The checked space of one stage: key -> Dist, plus the base data every trial starts from."""

    schema: type
    base: dict
    dists: dict[str, Dist]

    def suggest(self, trial) -> dict[str, Any]:
        """The trial's values, key -> stage value (categorical labels mapped back to the YAML values)."""
        out = {}
        for key, d in self.dists.items():
            if d.type == "float":
                out[key] = trial.suggest_float(key, float(d.low), float(d.high), log=d.log, step=d.step)
            elif d.type == "int":
                out[key] = trial.suggest_int(key, int(d.low), int(d.high), log=d.log, step=int(d.step or 1))
            else:
                labels = [choice_label(c) for c in d.choices]
                out[key] = d.choices[labels.index(trial.suggest_categorical(key, labels))]
        return out

    def values_from_params(self, params: dict) -> dict[str, Any]:
        """Optuna's stored params of a trial -> stage values."""
        out = {}
        for key, v in params.items():
            d = self.dists.get(key)
            if d is not None and d.type == "categorical":
                labels = [choice_label(c) for c in d.choices]
                v = d.choices[labels.index(v)] if v in labels else v
            out[key] = v
        return out

    def base_values(self) -> dict[str, Any]:
        """The base config's value of each key (what the enqueued default trial draws), where it is defined
        and inside the distribution."""
        built = dataclasses.asdict(cfgmod.build(self.schema, self.base, "base"))
        out = {}
        for key, d in self.dists.items():
            node: Any = built
            for p in key.split("."):
                node = node.get(p, _MISSING) if isinstance(node, dict) else _MISSING
            if node is _MISSING:
                continue
            ok = node in d.choices if d.type == "categorical" else (
                isinstance(node, (int, float)) and not isinstance(node, bool) and d.low <= node <= d.high)
            if ok:
                out[key] = choice_label(node) if d.type == "categorical" else node
        return out

    def config_data(self, values: dict[str, Any]) -> dict:
        """The stage config mapping of a trial: the base with each dotted key set."""
        return apply(self.base, values)

    def build(self, values: dict[str, Any], where: str):
        return cfgmod.build(self.schema, self.config_data(values), where)


_MISSING = object()


def apply(base: dict, values: dict[str, Any]) -> dict:
    data = copy.deepcopy(base)
    for key, v in values.items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = copy.deepcopy(v)
    return data


def _key_error(label: str, key: str, part: str, cls: type) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    near = difflib.get_close_matches(part, names, n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    return ConfigError(f"{label}: space: unknown key '{key}': {cls.__name__} has no key '{part}'{hint}; "
                       f"known: {sorted(names)}")


def check_key(schema: type, key: str, label: str) -> None:
    """`key` names a field of `schema`, dotted into nested stage dataclasses and mappings."""
    parts = key.split(".")
    cls: type | None = schema
    for i, part in enumerate(parts):
        if cls is None:  # inside a free mapping (loss_weights.<head>): one more name and no deeper
            if i != len(parts) - 1:
                raise ConfigError(f"{label}: space: '{key}': '{'.'.join(parts[:i])}' holds plain values; "
                                  f"expected at most one key below it")
            return
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        if part not in fields:
            raise _key_error(label, key, part, cls)
        f = fields[part]
        if i == len(parts) - 1:
            return
        tp = typing.get_type_hints(cls)[part]
        rule = cfgmod.rule_of(f)
        if dataclasses.is_dataclass(tp):
            cls = tp
        elif rule is not None and rule.schema_cls() is not None:
            cls = rule.schema_cls()
        elif typing.get_origin(tp) is dict or tp is dict:
            cls = None
        else:
            raise ConfigError(f"{label}: space: '{key}': {cls.__name__}.{part} is a "
                              f"{cfgmod.type_name(tp)}, not a mapping of keys")


def parse(space: dict, schema: type, base: dict, sources: Sources | None = None, where: str = "config",
          base_sources: Sources | None = None) -> SearchSpace:
    """Check every entry of `space` against `schema` (the stage dataclass) and the base data (whose keys'
    origins are `base_sources`)."""
    sources = sources or Sources()
    ctx = lambda path: sources.label(path) or where  # noqa: E731
    # the start point itself must be valid
    cfgmod.build(schema, base, "the base config of the trials", sources=base_sources)
    dists: dict[str, Dist] = {}
    for key, spec in space.items():
        path = ("space", key)
        label = ctx(path)
        check_key(schema, str(key), label)
        d = cfgmod.build(Dist, spec, where, sources=sources, path=path) if isinstance(spec, dict) else None
        if d is None:
            raise ConfigError(f"{label}: space.{key}: expected a mapping like {{type: float, low: 0.1, high: 1}}, "
                              f"got {spec!r}")
        for which, value in zip(("low", "high") if d.type != "categorical" else
                                [f"choices[{i}]" for i in range(len(d.choices or []))], d.bounds()):
            sub = (*path, which) if d.type != "categorical" else (*path, "choices", int(which[8:-1]))
            try:
                cfgmod.build(schema, apply(base, {key: value}), "stage")
            except ConfigError as e:
                msg = str(e).split(": ", 1)[-1] if str(e).startswith("stage") else str(e)
                raise ConfigError(f"{ctx(sub)}: space.{key}.{which}: {value!r} is not a value "
                                  f"{schema.__name__}.{key} accepts ({msg})") from None
        dists[str(key)] = d
    return SearchSpace(schema, base, dists)
