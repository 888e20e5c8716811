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


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_keys_have_lines_and_declared_docs(path):
    """Every key of a shipped YAML is traced to its line, and is a declared field with a doc."""
    import dataclasses

    data, sources = config.read_yaml(path)
    lines = path.read_text().splitlines()
    cls = config.schema_for(path.name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        label = sources.label((key,))
        assert label and label.startswith(f"{path}, line "), (key, label)
        n = int(label.rsplit(" ", 1)[1])
        assert lines[n - 1].lstrip().startswith(f"{key}:"), (key, n)
        assert config.rule_of(fields[key]).doc


def test_unknown_key_in_a_yaml_names_its_line(tmp_path):
    y = tmp_path / "sim.yaml"
    y.write_text("seed: 1\n\nn_contxts: 5\n")
    with pytest.raises(config.ConfigError, match=rf"^{y}, line 3: unknown key\(s\) \['n_contxts'\] for WorldConfig "
                                                 r"\(did you mean 'n_contexts'\?\)"):
        config.load(WorldConfig, y)
    with pytest.raises(config.ConfigError, match=r"^override 'n_contxts=5': unknown key"):
        config.load(WorldConfig, None, ["n_contxts=5"])
