"""Every shipped YAML is valid against its stage's dataclass; overrides and bad keys behave."""

from pathlib import Path

import pytest

from rm_lab import config
from rm_lab.world.simulate import WorldConfig

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path):
    cls = config.schema_for(path.name)
    cfg = config.load(cls, path)
    assert isinstance(cfg, cls)


def test_every_registered_schema_has_a_file():
    names = {p.name for p in CONFIGS}
    missing = [n for n in config.CONFIG_SCHEMAS if n not in names]
    assert not missing


def test_overrides_parse_and_nest():
    assert config.parse_overrides(["a.b=3", "c=[1, 2]", "d=true", "e=x"]) == {"a": {"b": 3}, "c": [1, 2], "d": True, "e": "x"}
    cfg = config.load(WorldConfig, "simulate", ["seed=7", "spurious_emoji=true"])
    assert cfg.seed == 7 and cfg.spurious_emoji is True


def test_unknown_key_and_bad_type_are_named(tmp_path):
    with pytest.raises(config.ConfigError, match=r"unknown key\(s\) \['n_contxts'\]"):
        config.load(WorldConfig, None, ["n_contxts=5"])
    with pytest.raises(config.ConfigError, match="seed: expected an integer"):
        config.load(WorldConfig, None, ["seed=abc"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(config.ConfigError, match="bad.yaml: expected a mapping"):
        config.load(WorldConfig, bad)
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(WorldConfig, "no_such_config")
    with pytest.raises(config.ConfigError, match="key=value"):
        config.parse_overrides(["oops"])
