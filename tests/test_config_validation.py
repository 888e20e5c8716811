"""The one validation layer for stage configs: constraints declared beside each field, checked at load
time for every stage, with the source of a bad value (default, YAML file and line, or override) named;
and the stage-command pattern built on it (shared loading, --runs, --help listing every key)."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rm_helpers import one_error_line, run_cli

from rm_lab import config
from rm_lab.config import ConfigError

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent

# command -> its config dataclass (the stage-command factory builds each command from it)
STAGES = {
    "simulate": "rm_lab.world.simulate:WorldConfig",
    "ab-test": "rm_lab.world.ab:ABConfig",
    "ab-plan": "rm_lab.evaluate.ab_plan:ABPlanConfig",
    "demo": "rm_lab.demo:DemoConfig",
    "ingest": "rm_lab.commands.ingest:IngestConfig",
    "curate": "rm_lab.curate.pipeline:CurateConfig",
    "train-rm": "rm_lab.reward.train:TrainRMConfig",
    "eval-rm": "rm_lab.reward.evaluate:EvalRMConfig",
    "eval-steer": "rm_lab.commands.steer:EvalSteerConfig",
}
# numeric fields whose every finite value means something (a sign switches the check off)
UNBOUNDED = {("CurateConfig", "max_length_ratio"), ("CurateConfig", "max_emoji_diff")}


def _cls(spec: str) -> type:
    return config._resolve(spec)


def _app():
    from rm_lab.cli import app

    return app




# ----------------------------------------------------------------------------------------------
# declarations


@pytest.mark.parametrize("command", sorted(STAGES))
def test_every_field_declares_a_doc_and_numbers_a_range(command):
    cls = _cls(STAGES[command])
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        rule = config.rule_of(f)
        assert rule is not None and rule.doc.strip(), f"{cls.__name__}.{f.name} has no param(doc=...)"
        tp = hints[f.name]
        base = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        if base[0] in (int, float) and (cls.__name__, f.name) not in UNBOUNDED:
            assert rule.range_text() or rule.choices, f"{cls.__name__}.{f.name}: a number without a declared range"


@pytest.mark.parametrize("command", sorted(STAGES))
def test_help_lists_every_config_key_with_type_default_and_doc(command):
    cls = _cls(STAGES[command])
    res = runner.invoke(_app(), [command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert res.exit_code == 0, res.output
    out = res.output
    assert "Config keys" in out and cls.__name__ in out
    hints = typing.get_type_hints(cls)
    listed = set(re.findall(r"^\W*([A-Za-z_][\w.]*): ", out, flags=re.M))
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):  # a nested stage config: its keys are listed dotted
            for sub in dataclasses.fields(hints[f.name]):
                assert f"{f.name}.{sub.name}" in listed, (command, f"{f.name}.{sub.name}")
        else:
            assert f.name in listed, (command, f.name)
    for d in config.describe(cls):  # type, default and doc as declared beside the field
        assert f"{d.key}: {d.type} = {d.default}" in out, d
        assert " ".join(d.doc.split()[:3]) in " ".join(out.split()), d


def test_describe_reads_the_declarations():
    from rm_lab.demo import DemoConfig
    from rm_lab.world.simulate import WorldConfig

    docs = {d.key: d for d in config.describe(WorldConfig)}
    assert docs["user_traffic_share"].type == "float" and docs["user_traffic_share"].default == "0.7"
    assert "in [0, 1]" in docs["user_traffic_share"].doc
    assert "one of baseline" in docs["logging_policies"].doc
    demo = {d.key: d for d in config.describe(DemoConfig)}
    assert demo["world.n_contexts"].default == "1000"  # demo's own smaller world, not WorldConfig's 2000
    assert "TrainRMConfig keys" in demo["train"].doc


def test_python_api_checks_the_same_constraints():
    from rm_lab.world.ab import ABConfig
    from rm_lab.world.simulate import WorldConfig

    with pytest.raises(ConfigError, match=r"WorldConfig.user_traffic_share: expected in \[0, 1\], got 2"):
        WorldConfig(user_traffic_share=2)
    with pytest.raises(ConfigError, match="ABConfig.control: expected one of"):
        ABConfig(control="nope")
    with pytest.raises(ConfigError, match=r"logging_policies\[1\]"):
        WorldConfig(logging_policies=["baseline", "nope"])


# ----------------------------------------------------------------------------------------------
# where a bad value came from


def test_yaml_violation_names_file_and_line(tmp_path):
    from rm_lab.world.simulate import WorldConfig

    y = tmp_path / "w.yaml"
    y.write_text("seed: 1\n# a comment\nn_contexts: 100\nuser_traffic_share: 2\n")
    with pytest.raises(ConfigError) as e:
        config.load(WorldConfig, y)
    assert str(e.value) == f"{y}, line 4: user_traffic_share: expected in [0, 1], got 2.0"
    # a list item and a nested key are named at their own line
    from rm_lab.reward.train import TrainRMConfig

    y2 = tmp_path / "t.yaml"
    y2.write_text("world:\n  seed: 0\n  n_contexts: -5\ninputs:\n  - reply\n  - crossed\n")
    with pytest.raises(ConfigError, match=rf"^{y2}, line 3: world.n_contexts: expected in \[1, "):
        config.load(TrainRMConfig, y2)
    y2.write_text("inputs:\n  - reply\n  - crossed\n")
    with pytest.raises(ConfigError, match=rf"^{y2}, line 3: inputs\[1\]: expected one of"):
        config.load(TrainRMConfig, y2)


def test_override_is_blamed_not_the_yaml(tmp_path):
    """The YAML sets a good value; the command line a bad one: the message names the override only."""
    from rm_lab.world.simulate import WorldConfig

    y = tmp_path / "w.yaml"
    y.write_text("user_traffic_share: 0.5\nn_contexts: 100\n")
    with pytest.raises(ConfigError) as e:
        config.load(WorldConfig, y, ["user_traffic_share=2"])
    assert str(e.value).startswith("override 'user_traffic_share=2': user_traffic_share: expected in [0, 1]")
    assert str(y) not in str(e.value)
    # a list from the command line replaces the YAML's: its items are the override's, not the file's lines
    from rm_lab.reward.train import TrainRMConfig

    y.write_text("inputs:\n  - reply\n  - relevance\n")
    with pytest.raises(ConfigError, match=r"^override 'inputs=\[reply, crossed\]': inputs\[1\]"):
        config.load(TrainRMConfig, y, ["inputs=[reply, crossed]"])
    # a mapping override merges: keys it does not set keep their YAML lines
    y.write_text("world:\n  seed: 0\n  n_contexts: -5\n")
    with pytest.raises(ConfigError, match=rf"^{y}, line 3: world.n_contexts"):
        config.load(TrainRMConfig, y, ["world={seed: 3}"])


def test_cross_field_error_names_each_fields_source(tmp_path):
    from rm_lab.reward.train import TrainRMConfig

    y = tmp_path / "t.yaml"
    y.write_text("epochs: 3\nval_fraction: 0\n")
    with pytest.raises(ConfigError) as e:
        config.load(TrainRMConfig, y, ["early_stopping=2"])
    msg = str(e.value)
    assert "early_stopping from override 'early_stopping=2'" in msg
    assert f"val_fraction from {y}, line 2" in msg and "set val_fraction > 0" in msg


def test_bad_default_is_named_as_the_default():
    @dataclasses.dataclass
    class Broken:
        share: float = config.param(1.5, doc="a share", ge=0, le=1)

    with pytest.raises(ConfigError, match=r"the default of Broken.share: expected in \[0, 1\], got 1.5"):
        config.build(Broken, {})


def test_nested_world_keys_fail_at_load_time():
    """TrainRMConfig.world / EvalRMConfig.world / DemoConfig.train are checked as their stage's keys."""
    from rm_lab.demo import DemoConfig
    from rm_lab.reward.evaluate import EvalRMConfig
    from rm_lab.reward.train import TrainRMConfig

    with pytest.raises(ConfigError, match=r"^override 'world.n_contexts=-5': world.n_contexts: expected in"):
        config.load(TrainRMConfig, "train_rm", ["world.n_contexts=-5"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['n_contxts'\] for WorldConfig"):
        config.load(EvalRMConfig, "eval_rm", ["world.n_contxts=5"])
    with pytest.raises(ConfigError, match=r"^override 'train.lr=-1': train.lr: expected in \(0, "):
        config.load(DemoConfig, "demo", ["train.lr=-1"])
    with pytest.raises(ConfigError, match=r"world: expected a mapping"):
        config.load(TrainRMConfig, None, ["world=3"])


@pytest.mark.parametrize("overrides, fragment", [
    (["world=3", "world.n_contexts=5"], "override 'world.n_contexts=5' conflicts with override 'world=3'"),
    (["a.b=1", "a=2"], "override 'a=2' conflicts with override 'a.b=1'"),
    (["world.seed=1", "world.seed.x=2"], "override 'world.seed.x=2' conflicts with override 'world.seed=1'"),
])
def test_conflicting_dotted_overrides(overrides, fragment):
    from rm_lab.reward.train import TrainRMConfig

    with pytest.raises(ConfigError, match="cannot be both a value and a mapping") as e:
        config.load(TrainRMConfig, None, overrides)
    assert fragment in str(e.value)


def test_exponent_without_a_dot_is_a_number():
    """YAML 1.1 reads `1e-3` as a string; a float key takes it as the number a user meant."""
    from rm_lab.reward.train import TrainRMConfig

    assert config.load(TrainRMConfig, None, ["lr=1e-3", "encoder_lr=5E-5"]).lr == 0.001
    with pytest.raises(ConfigError, match=r"^override 'lr=1e500': lr: expected a finite number"):
        config.load(TrainRMConfig, None, ["lr=1e500"])


def test_overrides_that_merge_or_repeat_are_fine():
    assert config.parse_overrides(["w.a=1", "w.b=2", "w={c: 3}"]) == {"w": {"a": 1, "b": 2, "c": 3}}
    assert config.parse_overrides(["lr=1", "lr=2"]) == {"lr": 2}  # the last of the same key wins
    for bad in ("=5", "a..b=1", ".a=1", "a b=1"):
        with pytest.raises(ConfigError, match="is not a key"):
            config.parse_overrides([bad])


@pytest.mark.parametrize("overrides, fragment", [
    (["n_contexts=-5"], "n_contexts: expected in [1,"),
    (["n_characters=0"], "n_characters: expected in [1,"),
    (["user_traffic_share=2"], "user_traffic_share: expected in [0, 1]"),
    (["annotator_temperature=0"], "annotator_temperature: expected > 0"),
    (["seed=-1"], "seed: expected in [0,"),
    (["logging_policies=[]"], "logging_policies: expected a non-empty list"),
    (["latent_sd=.nan"], "latent_sd: expected a finite number"),
])
def test_world_values_outside_their_range(overrides, fragment):
    from rm_lab.world.simulate import WorldConfig

    with pytest.raises(ConfigError) as e:
        config.load(WorldConfig, "simulate", overrides)
    assert str(e.value).startswith(f"override '{overrides[0]}': ") and fragment in str(e.value)


@pytest.mark.parametrize("overrides, fragment", [
    (["arm_share=2"], "arm_share: expected in (0, 0.5]"),
    (["arm_share=0"], "arm_share: expected in (0, 0.5]"),
    (["eligible_users=-10"], "eligible_users: expected in [1,"),
    (["days=0"], "days: expected in [1,"),
    (["treatment=nope"], "treatment: expected one of ['baseline'"),
    (["control=improvd"], "did you mean 'improved'?"),
    (["quality_contexts=0"], "quality_contexts: expected in [1,"),
])
def test_ab_settings_outside_their_range(overrides, fragment):
    from rm_lab.world.ab import ABConfig

    with pytest.raises(ConfigError) as e:
        config.load(ABConfig, "ab_test", overrides)
    assert str(e.value).startswith(f"override '{overrides[0]}': ") and fragment in str(e.value)


@pytest.mark.parametrize("overrides, fragment", [
    (["lr=-1"], "lr: expected in (0, "),
    (["lr=0"], "lr: expected in (0, "),
    (["encoder_lr=0"], "encoder_lr: expected in (0, "),
    (["dropout=1"], "dropout: expected in [0, 1)"),
    (["epochs=0"], "epochs: expected in [1,"),
    (["batch_size=-3"], "batch_size: expected in [1,"),
    (["val_fraction=1"], "val_fraction: expected in [0, 1)"),
    (["loss_weights={continue: -1}"], "loss_weights.continue: expected in [0,"),
    (["refit_folds=1"], "refit_folds: expected in [2,"),
    (["precision=bf17"], "precision: expected one of"),
    (["lr=.inf"], "lr: expected a finite number"),
])
def test_train_values_outside_their_range(overrides, fragment):
    from rm_lab.reward.train import TrainRMConfig

    with pytest.raises(ConfigError) as e:
        config.load(TrainRMConfig, "train_rm", overrides)
    assert str(e.value).startswith(f"override '{overrides[0]}': ") and fragment in str(e.value)


def test_other_stage_values_outside_their_range():
    from rm_lab.commands.ingest import IngestConfig
    from rm_lab.curate.pipeline import CurateConfig
    from rm_lab.reward.evaluate import EvalRMConfig

    cases = [(IngestConfig, "ingest", "limit=0", "limit: expected >= 1"),
             (IngestConfig, "ingest", "kind=nope", "kind: expected one of"),
             (CurateConfig, "curate", "sample_size.interaction=0", "sample_size.interaction: expected >= 1"),
             (CurateConfig, "curate", "traffic_mix.bots=1", "traffic_mix.bots: unknown key 'bots'"),
             (CurateConfig, "curate", "minhash_permutations=6", "expected a multiple of 4"),
             (EvalRMConfig, "eval_rm", "split=train", "split: expected one of ['heldout', 'all']"),
             (EvalRMConfig, "eval_rm", "n_bins=1", "n_bins: expected in [2,"),
             (EvalRMConfig, "eval_rm", "counterfactuals=[paint_it_red]", "counterfactuals[0]: expected one of")]
    for cls, yaml_name, override, fragment in cases:
        with pytest.raises(ConfigError) as e:
            config.load(cls, yaml_name, [override])
        assert str(e.value).startswith(f"override '{override}': ") and fragment in str(e.value), str(e.value)


# ----------------------------------------------------------------------------------------------
# config files that are not YAML configs


def test_config_file_that_is_not_a_yaml_file(tmp_path):
    from rm_lab.world.simulate import WorldConfig

    with pytest.raises(ConfigError, match="is a folder; -c/--config expects a YAML file"):
        config.load(WorldConfig, tmp_path)
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ConfigError, match="looks like a binary file"):
        config.load(WorldConfig, binary)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 9"):
        config.load(WorldConfig, latin)
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: 1\nworld: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"^{broken}, line \d+, column \d+: not valid YAML: ") as e:
        config.load(WorldConfig, broken)
    assert "\n" not in str(e.value)
    twice = tmp_path / "twice.yaml"
    twice.write_text("seed: 1\nn_contexts: 5\nseed: 2\n")
    with pytest.raises(ConfigError, match=rf"^{twice}, line 3: key 'seed' is given twice \(first on line 1\)"):
        config.load(WorldConfig, twice)
    with pytest.raises(ConfigError, match="not found"):
        config.load(WorldConfig, tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------------------------
# through the commands


def test_bad_value_fails_before_any_work(runs_dir):
    """A bad value from the command line is named as the override and leaves no run folder behind."""
    app = _app()
    for args in (["train-rm", "lr=-1"], ["train-rm", "world.n_contexts=-5"], ["simulate", "user_traffic_share=2"],
                 ["ab-test", "arm_share=2"], ["ab-test", "days=0"], ["demo", "ab.eligible_users=-1"],
                 ["eval-rm", "model=x", "n_bins=0"], ["curate", "input=x", "n_clusters=0"]):
        res = runner.invoke(app, args)
        assert isinstance(res.exception, ConfigError), (args, res.output, res.exception)
        assert str(res.exception).startswith(f"override '{args[-1]}': "), str(res.exception)
        assert "arms.parquet" not in str(res.exception)
        assert not runs_dir.exists() or not any(runs_dir.rglob("config.yaml")), args


def test_cli_errors_are_one_line_with_exit_2(tmp_path):
    runs = tmp_path / "runs"
    y = tmp_path / "sim.yaml"
    y.write_text("n_contexts: 50\nuser_traffic_share: 0.4\n")
    line = one_error_line(run_cli("simulate", "-c", str(y), "user_traffic_share=2", runs=runs))
    assert line.startswith("error: override 'user_traffic_share=2': user_traffic_share") and str(y) not in line
    y.write_text("n_contexts: 50\nuser_traffic_share: 2\n")
    line = one_error_line(run_cli("simulate", "-c", str(y), runs=runs))
    assert f"{y}, line 2: user_traffic_share: expected in [0, 1]" in line
    line = one_error_line(run_cli("train-rm", "world=3", "world.n_contexts=5", runs=runs))
    assert "conflicts with override 'world=3'" in line
    line = one_error_line(run_cli("simulate", "-c", str(tmp_path), runs=runs))
    assert "is a folder" in line
    (tmp_path / "x.bin").write_bytes(bytes(range(256)))
    assert "binary" in one_error_line(run_cli("ab-test", "-c", str(tmp_path / "x.bin"), runs=runs))
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    line = one_error_line(run_cli("simulate", "n_contexts=5", "--runs", str(a_file), runs=runs))
    assert f"--runs '{a_file}': is a file" in line
    line = one_error_line(run_cli("simulate", "n_contexts=5", runs=a_file))
    assert "$RM_LAB_RUNS" in line and "is a file" in line
    assert not runs.exists()


def test_ingest_kind_option_is_named_as_an_option(runs_dir, tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("{}\n")
    res = runner.invoke(_app(), ["ingest", "records", str(p), "--kind", "interactions"])
    assert res.exit_code == 2
    assert "option '--kind interactions': kind: expected one of" in res.output
    assert "did you mean 'interaction'?" in res.output


def test_train_rm_resume_refuses_a_config_file(tmp_path, runs_dir):
    res = runner.invoke(_app(), ["train-rm", "--resume", str(tmp_path), "-c", "train_rm"])
    assert isinstance(res.exception, ConfigError) and "drop -c/--config" in str(res.exception)


# ----------------------------------------------------------------------------------------------
# generated bad values: config loading raises ConfigError and nothing else

_values = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=12), st.lists(st.integers(-3, 3), max_size=3),
                    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


@pytest.mark.parametrize("command", sorted(STAGES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_values_load_or_fail_with_a_config_error(command, data):
    cls = _cls(STAGES[command])
    names = [f.name for f in dataclasses.fields(cls)]
    key = data.draw(st.sampled_from(names + ["no_such_key"]))
    value = data.draw(_values)
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    try:
        cfg = config.load(cls, None, [f"{key}={text}"])
    except ConfigError as e:
        assert "\n" not in str(e) and "override '" in str(e), str(e)
    else:
        assert isinstance(cfg, cls)


def test_a_folder_named_like_a_shipped_config_does_not_shadow_it(tmp_path, monkeypatch):
    """`cd runs && rm_lab simulate`: the folder runs/simulate/ is not taken for configs/simulate.yaml."""
    from rm_lab.world.simulate import WorldConfig

    (tmp_path / "simulate").mkdir()
    monkeypatch.chdir(tmp_path)
    assert config.load(WorldConfig, "simulate").n_contexts == 4000  # configs/simulate.yaml
    with pytest.raises(ConfigError, match="is a folder"):
        config.load(WorldConfig, tmp_path / "simulate")
