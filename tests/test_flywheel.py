"""`rm_lab flywheel`: the ship rule, the step ledger and its resume, bad input, and the whole loop on tiny models.

The loop test runs two generations with a tiny random Llama (SmolLM2's tokenizer) and a tiny BERT reward-model
backbone, so every stage runs for real (simulate, curate, train-rm, rejection-sample, SFT, GRPO in the coupled
trainer, evaluate, calibrate, predicted lift, A/B test, ship) in about a minute.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rm_lab.flywheel.config import ShipRule
from rm_lab.flywheel.ship import decide, describe

UP = {"lift": 0.05, "low": 0.02, "high": 0.08}
FLAT = {"lift": 0.01, "low": -0.01, "high": 0.03}
DOWN = {"lift": -0.05, "low": -0.08, "high": -0.02}


# ----------------------------------------------------------------------------------------------
# the ship rule

def test_ship_when_guardrails_clear_and_the_measured_lift_is_above_zero():
    d = decide(ShipRule(), [], {"lift": 0.03, "low": -0.01, "high": 0.07}, {"breadth": UP, "depth": FLAT})
    assert d.ship and d.reasons == [] and d.checks == {"guardrails": True, "predicted": True, "measured": True}


def test_a_blocking_alarm_stops_a_winning_candidate():
    alarm = {"name": "ceiling", "metric": "point_user", "why": "win rate 71% above the 65% ceiling"}
    d = decide(ShipRule(), [alarm], UP, {"breadth": UP, "depth": UP})
    assert not d.ship and "ceiling" in d.reasons[0] and "71%" in d.reasons[0]
    # the floor is not blocking by default: a candidate the reward model barely prefers may still ship on the test
    assert decide(ShipRule(), [{**alarm, "name": "floor"}], UP, {"breadth": UP, "depth": UP}).ship


def test_a_noisy_win_rate_alarm_does_not_block_with_interval_evidence():
    gap = {"name": "gap", "metric": "point_user-internal", "threshold": 0.15, "why": "user 31% vs internal 62%"}
    rates = {"point_user": {"rate": 0.31, "low": 0.0, "high": 0.63}, "point_internal": {"rate": 0.62, "low": 0.27,
                                                                                       "high": 0.98}}  # 8 contexts
    ab = {"breadth": UP, "depth": UP}
    assert decide(ShipRule(), [gap], UP, ab, rates).ship
    d = decide(ShipRule(evidence="point"), [gap], UP, ab, rates)
    assert not d.ship and "gap" in d.reasons[0]
    tight = {"point_user": {"rate": 0.71, "low": 0.68, "high": 0.74},
             "point_internal": {"rate": 0.44, "low": 0.41, "high": 0.47}}
    assert not decide(ShipRule(), [gap], UP, ab, tight).ship


def test_the_measured_lift_must_clear_zero_on_the_rules_metric():
    assert not decide(ShipRule(), [], UP, {"breadth": FLAT, "depth": FLAT}).ship
    assert decide(ShipRule(metric="either"), [], UP, {"breadth": FLAT, "depth": UP}).ship
    d = decide(ShipRule(metric="breadth"), [], UP, {"breadth": FLAT, "depth": UP})
    assert not d.ship and "breadth" in d.reasons[0] and "depth" not in d.reasons[0]


def test_a_predicted_loss_blocks_and_a_missing_prediction_does_not():
    d = decide(ShipRule(), [], DOWN, {"breadth": UP, "depth": UP})
    assert not d.ship and "predicted" in d.reasons[0]
    assert decide(ShipRule(require_predicted=False), [], DOWN, {"breadth": UP, "depth": UP}).ship
    for pred in (None, {"lift": 0.0, "low": None, "high": None}):  # no calibration / an infinite interval
        d = decide(ShipRule(), [], pred, {"breadth": UP, "depth": UP})
        assert d.ship and d.checks["predicted"] is None


def test_the_rule_is_said_in_words():
    text = describe(ShipRule(metric="depth", blocking=["gap"]))
    assert "gap" in text and "depth" in text and "predicted" in text and "95%" in text


def test_measured_inside_an_infinite_prediction_interval():
    from rm_lab.flywheel.report import inside

    assert inside({"low": None, "high": None}, 0.3)
    assert inside({"low": -0.01, "high": 0.02}, 0.0) and not inside({"low": -0.01, "high": 0.02}, 0.05)


# ----------------------------------------------------------------------------------------------
# the step ledger: a stopped flywheel resumes at the step it was in

def test_a_stopped_flywheel_resumes_at_the_step_it_was_in(tmp_path, monkeypatch):
    from rm_lab.flywheel import pipeline
    from rm_lab.flywheel.config import FlywheelConfig
    from rm_lab.flywheel.layout import STEPS
    from rm_lab.jobs import Stopped
    from rm_lab.runs import Run, run_status

    calls: list[tuple] = []
    stop_at = {("g2", "rl")}

    def fake(step):
        def fn(gen, run):
            calls.append((f"g{gen.g}", step))
            assert run.path.name == f"{gen.fw.run_id}-g{gen.g}-{step}" and run.parent == gen.fw.run_id
            if (f"g{gen.g}", step) in stop_at:
                stop_at.clear()
                raise Stopped(signal.SIGTERM)
            if step == "ship":
                return {"ship": True, "policy_after": f"policy-g{gen.g}", "reasons": []}
            return {"step": step, "current": gen.current}
        return fn

    for s in STEPS:
        monkeypatch.setitem(pipeline.STEP_FUNCTIONS, s, fake(s))
    monkeypatch.setattr(pipeline, "calibrate", lambda gen, run: calls.append(("setup", "calibrate")) or
                        {"calibration": "cal.json"})
    cfg = FlywheelConfig(generations=2)
    run = Run("flywheel", {}, root=tmp_path, resumable=True)
    with pytest.raises(Stopped):
        with run:
            pipeline.run_flywheel(cfg, run, say=lambda m: None)
    assert run_status(run.path) == "stopped"
    assert run_status(tmp_path / "coupled" / f"{run.run_id}-g2-rl") == "stopped"
    first = list(calls)
    assert first[-1] == ("g2", "rl") and ("setup", "calibrate") in first
    calls.clear()
    again = Run.reopen(run.path, "flywheel", {}, resumable=True)
    with again:
        out = pipeline.run_flywheel(cfg, again, say=lambda m: None)
    # nothing finished is redone: the calibration and generation 1 are kept, generation 2 goes on at rl
    assert calls == [("g2", s) for s in list(STEPS)[list(STEPS).index("rl"):]]
    assert out["final_policy"] == "policy-g2"
    state = json.loads((run.path / "state.json").read_text())
    assert state["g2"]["traffic"]["current"] == "policy-g1", "generation 2 starts from generation 1's shipped policy"
    assert (run.path / "g2" / "report.md").is_file() and (run.path / "report.md").is_file()


# ----------------------------------------------------------------------------------------------
# the real loop on tiny models

@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from policy_helpers import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


def tiny_config(tmp_path: Path, llama: Path, bert: Path, **changes) -> Path:
    cfg = {
        "generations": 2, "policy": str(llama),
        "traffic": {"n_contexts": 60, "n_preference_contexts": 60, "n_characters": 6}, "traffic_contexts": 6,
        "curate": {"diversity": False, "embedding": "tfidf"},
        "reward": {"epochs": 2, "hidden": 16, "batch_size": 16, "max_length": 64, "pairwise": True, "n_ensemble": 2,
                   "backbone": str(bert)},
        "rejection": {"n_contexts": 4, "n": 2, "require_finished": False}, "sft": {"epochs": 1, "batch_size": 4},
        "rl": "grpo", "rl_train": {"max_steps": 1, "group_size": 2, "batch_size": 2, "lr": 0.001}, "rl_contexts": 2,
        "coupled": {"rounds": 2, "contexts": 3},
        "refresh": {"epochs": 1, "hidden": 16, "batch_size": 16, "max_length": 64, "backbone": str(bert)},
        "evaluate": {"n_contexts": 4},
        "calibrate": {"n_tests": 10, "offline_contexts": 20, "quality_contexts": 40, "n_characters": 6},
        "ab": {"eligible_users": 200_000}, "max_new_tokens": 8, "cache_dir": str(tmp_path / "cache"),
    }
    cfg.update(changes)
    path = tmp_path / "flywheel.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_two_generations_end_to_end(tiny_llama, backbone, tmp_path):
    from test_jobs import _cli

    from rm_lab.registry import Registry

    runs = tmp_path / "runs"
    p = _cli(["flywheel", "-c", str(tiny_config(tmp_path, tiny_llama, backbone))], runs)
    p.stdout, stderr = p.communicate(timeout=1200)  # about a minute alone; much longer on a shared machine
    assert p.returncode == 0, stderr[-4000:]
    (fw,) = (runs / "flywheel").iterdir()
    rep = json.loads((fw / "report.json").read_text())
    assert rep["across"]["generations"] == 2 and "ship when" in rep["rule"]
    for s in rep["generations"]:
        assert {"point_user", "point_internal", "pair_user", "pair_internal"} <= set(s["win_rates"])
        assert s["predicted"]["predictor"] == "win_point_user" and s["predicted"]["low"] is not None
        for m in ("breadth", "depth"):
            e = s["measured"][m]
            assert e["low"] <= e["lift"] <= e["high"] and "true_lift" in e
        assert len(s["steerability"]) == 2 and all("n_emoji" in a for a in s["artifacts"].values())
        assert s["coupled"]["method"] == "grpo" and s["coupled"]["rounds"]
        assert isinstance(s["shipped"], bool)
    md = (fw / "g1" / "report.md").read_text()
    assert "Ship rule" in md and "predicted" in md and "Style artifacts" in md and "Coupled trainer" in md
    for line in ("generation 1:", "generation 2:", "win rates (ceiling 65%)", "simulated A/B", "instructions followed"):
        assert line in p.stdout
    # every step is a child run of the flywheel in the registry, and finished
    reg = Registry(runs / "registry.sqlite")
    children = [r for r in reg.runs() if r["parent"] == fw.name]
    kinds = {r["kind"] for r in children}
    assert kinds == {"simulate", "curate", "train-rm", "rejection-sample", "train-policy", "coupled", "evaluate",
                     "predict-lift", "ab-test", "ship", "calibrate"}
    assert len(children) == 2 * 10 + 1 and all(r["status"] == "done" for r in children)
    # generation 2 learns from generation 1's coupled-trainer logs and its own traffic of the current policy
    state = json.loads((fw / "state.json").read_text())
    assert set(state["g1"]["rl"]["logs"]) <= set(state["g2"]["reward"]["logs"])
    assert state["g2"]["traffic"]["source"] == "the current policy"


@pytest.mark.slow
def test_a_killed_flywheel_resumes_at_the_step_it_was_in(tiny_llama, backbone, tmp_path):
    from rm_helpers import signal_when
    from test_jobs import _cli

    runs = tmp_path / "runs"
    cfg = tiny_config(tmp_path, tiny_llama, backbone, generations=1, rl="none")
    p = _cli(["flywheel", "-c", str(cfg)], runs)
    out, err = signal_when(p, lambda: any(runs.glob("rejection-sample/*-g1-rejection")), signal.SIGTERM)
    assert p.returncode == 143, (p.returncode, err[-3000:])
    (fw,) = (runs / "flywheel").iterdir()
    assert f"rm_lab flywheel --resume {fw.resolve()}" in err and "Traceback" not in err
    state = json.loads((fw / "state.json").read_text())
    assert list(state["g1"]) == ["traffic", "curate", "reward"]
    reward_status = next(runs.glob("train-rm/*-g1-reward")) / "status.json"
    before = json.loads(reward_status.read_text())["updated"]
    res = _cli(["flywheel", "--resume", str(fw)], runs)
    out, err = res.communicate(timeout=600)
    assert res.returncode == 0, err[-3000:]
    assert "rejection: resuming in" in out and "traffic: resuming" not in out
    assert json.loads(reward_status.read_text())["updated"] == before, "a finished step is not run again"
    state = json.loads((fw / "state.json").read_text())
    assert list(state["g1"]) == ["traffic", "curate", "reward", "rejection", "sft", "rl", "evaluate", "predict",
                                 "ab", "ship"]
    assert state["g1"]["rl"]["skipped"] == "rl=none"
    for m in ("breadth", "depth"):  # the A/B interval holds the evaluation contexts' noise, not only the users'
        ab = state["g1"]["ab"][m]
        assert ab["context_log_sd"] >= 0 and "p_value_users" in ab
        assert ab["low"] <= ab["users_low"] + 1e-12 and ab["high"] >= ab["users_high"] - 1e-12


def test_bad_input_is_one_error_line(tiny_llama, backbone, tmp_path):
    from rm_helpers import one_error_line, run_cli

    runs = tmp_path / "runs"
    cfg = str(tiny_config(tmp_path, tiny_llama, backbone))
    line = one_error_line(run_cli("flywheel", "-c", cfg, "rl_train.reward_heads={engagingness: 1.0}", runs=runs))
    assert "engagingness" in line and "preference" in line  # names the missing head and the heads there are
    line = one_error_line(run_cli("flywheel", "-c", cfg, "rejection.n_contexts=0", runs=runs))
    assert "rejection.n_contexts" in line
    assert not (runs / "flywheel").exists(), "bad input leaves no run folder"


@pytest.mark.parametrize("override, words", [
    ("policy=/nowhere/at/all", ["policy", "/nowhere/at/all"]),
    ("rl_train.group_size=1", ["group_size"]),
    ("rl_train.beta=-0.1", ["beta"]),
    ("evaluate.n_contexts=0", ["evaluate.n_contexts"]),
    ("sft.data=somewhere", ["sft.data", "leave it out"]),
    ("rejection.model=x", ["rejection.model"]),
    ("calibration=/nowhere/cal.json", ["calibration"]),
    ("calibrate.predictor=pred_lift", ["calibrate.predictor", "win rate"]),
    ("plant_emoji=[99]", ["plant_emoji", "generation 99", "generations"]),
])
def test_inputs_are_checked_before_any_work(override, words):
    from rm_lab import config as cfgmod
    from rm_lab.commands.common import USER_ERRORS
    from rm_lab.flywheel.config import FlywheelConfig
    from rm_lab.flywheel.pipeline import check_inputs

    with pytest.raises(USER_ERRORS) as e:
        check_inputs(cfgmod.load(FlywheelConfig, "flywheel", [override]))
    assert all(w in str(e.value) for w in words), str(e.value)


def test_a_planted_hack_poisons_only_the_sft_targets_and_the_report_says_so(tmp_path):
    from rm_lab import io
    from rm_lab.features.style import count_emoji
    from rm_lab.flywheel.report import across, across_markdown, generation_markdown, generation_summary
    from rm_lab.flywheel.steps import plant_emoji
    from rm_lab.policy.objectives.best_of_n import world_prompts
    from rm_lab.reward.data import read_record_folder

    ctx, chars = world_prompts(3, "user", 0, 2, prefix="p")
    src = tmp_path / "rs"
    src.mkdir()
    io.write_records(chars, src / "character.parquet", "character")
    io.write_records(ctx, src / "context.parquet", "context")
    replies = ["Sounds fun! What will you cook? 🙂", "I love that idea.", "Tell me more about the trip."]
    labels = pd.DataFrame({"context_id": list(ctx["context_id"]) + [ctx["context_id"][0]],
                           "response": replies + ["kept as it is"], "name": ["rejection_pick"] * 3 + ["other"],
                           "value": [1.0, 0.5, 0.2, 0.0], "source": "test"})
    io.write_records(labels, src / "label.parquet", "label")
    out = read_record_folder(plant_emoji(str(src), tmp_path / "planted", 3, "rejection_pick"))
    lab = out["label"].set_index("name")
    picks = out["label"][out["label"]["name"] == "rejection_pick"]
    assert [count_emoji(r) for r in picks["response"]] == [3, 3, 3]  # exactly k, the reply's own removed
    assert picks["response"].iloc[1].startswith("I love that idea.")
    assert lab.loc["other", "response"] == "kept as it is"  # other labels untouched
    assert out["context"]["context_id"].tolist() == ctx["context_id"].tolist()
    # a share: a seeded subset of the targets, the same one for the same seed
    many = pd.DataFrame({"context_id": [ctx["context_id"][i % 3] for i in range(200)],
                         "response": ["Tell me more about the trip."] * 200, "name": "rejection_pick",
                         "value": 1.0, "source": "test"})
    io.write_records(many, src / "label.parquet", "label")
    counts = [[count_emoji(r) for r in read_record_folder(plant_emoji(str(src), tmp_path / f"half{i}", 2,
                                                                      "rejection_pick", 0.5, 3))["label"]["response"]]
              for i in (0, 1)]
    assert counts[0] == counts[1] and set(counts[0]) == {0, 2} and 70 < counts[0].count(2) < 130
    # the generation's report and the one across generations name the planted generation and whether it shipped
    planted = "3 emoji after the first sentence of every SFT target"
    gens = [generation_summary(g, {"sft": {"planted": planted if g == 2 else None},
                                   "ship": {"ship": g != 2, "reasons": [] if g != 2 else ["style_drift"]}}, 0.65)
            for g in (1, 2)]
    assert across(gens)["planted"] == [2] and across(gens)["planted_shipped"] == []
    assert "Planted reward hack in this generation: 3 emoji" in generation_markdown(gens[1], "rule")
    md = across_markdown(gens, "rule", "t")
    assert "every one kept out; generation 2 by style_drift." in md, md
    assert "| 2 (planted) | no |" in md
    # which checks held it back: the ship rule's and the coupled trainer's stop
    kept = generation_summary(3, {"sft": {"planted": "x"}, "ship": {"ship": False, "reasons": [
        "A/B lift not above 0 with 95% confidence (breadth +1.13% [-26.12%, +38.42%])"]},
        "rl": {"method": "grpo", "rounds": [], "stopped": {"round": 1, "alarms": ["style_drift"], "why": "w"}}}, 0.65)
    assert across([kept])["planted_kept_out_by"] == {3: ["the A/B test", "coupled trainer stopped on style_drift "
                                                          "(round 1)"]}


def test_the_coupled_rounds_table_shows_the_true_lift_beside_the_reward_models_verdict():
    from rm_lab.flywheel.report import generation_markdown, generation_summary

    rounds = [{"round": 1, "win_rates": {"point_user": 0.81, "point_internal": 0.7}, "alarms": [], "stopping": [],
               "uncertainty": 1.1, "emoji": 1.5, "words": 20.0, "true_lift": 0.042},
              {"round": 2, "win_rates": {"point_user": 0.9}, "alarms": ["style_drift (n_emoji)"],
               "stopping": [], "uncertainty": None, "emoji": 3.0, "words": 21.0, "true_lift": -0.0125},
              {"round": 3, "win_rates": {}, "alarms": [], "stopping": [], "emoji": 3.0, "words": 21.0}]
    s = generation_summary(1, {"rl": {"method": "grpo", "rounds": rounds, "stopped": None}}, 0.65)
    md = generation_markdown(s, "rule")
    assert "| true lift vs start (user) |" in md
    assert "| +4.20% | none |" in md and "| -1.25% | style_drift (n_emoji) |" in md
    assert "| n/a | none |" in md  # a round without a world truth
    assert "which no guardrail reads" in md
