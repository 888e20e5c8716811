"""The arm_mean head: A/B arms as the replies their policies wrote, labelled by the arm's measured breadth and
depth. Its record kind's validation, its likelihood's value and gradient against hand computation, training
it through train-rm (in memory and on the CLI), eval-rm's report of it and of arm_logit heads, and the
world's A/B simulator writing reply sets."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from rm_lab.config import ConfigError
from rm_lab.reward.arm_mean import (arm_mean_nll, arm_mean_nll_np, arm_predictions, arm_targets,
                                    lift_agreement, set_values)
from rm_lab.reward.heads import BUILTIN, HeadSpec, declare
from rm_lab.schema import RecordError, Records, validate_frame

EMO = "😊"


def synth(n_exp=10, n_ctx=12, seed=0, effect=0.04):
    """Experiments of a control and two treatments replying to the same contexts; an arm's true log lift is
    `effect` times its mean emoji count over the control's (the style features see emoji)."""
    rng = np.random.default_rng(seed)
    chars = pd.DataFrame({"character_id": ["c0"], "name": ["Ada"], "persona": [["likes tea"]], "instructions": [[]]})
    ctx = pd.DataFrame({"context_id": [f"x{i}" for i in range(n_ctx)], "character_id": "c0",
                        "history": [[{"role": "user", "content": f"hello number {i}"}] for i in range(n_ctx)],
                        "traffic": "user"})
    rows = []
    for e in range(n_exp):
        lams = [0.0, *rng.uniform(0, 3, 2)]
        ks = [rng.poisson(lam, n_ctx) for lam in lams]
        for j, k in enumerate(ks):
            lift = effect * (k.mean() - ks[0].mean())
            b = 0.3 * math.exp(lift + (rng.normal(0, 0.004) if j else 0.0))
            for i in range(n_ctx):
                rows.append(dict(experiment_id=f"{seed}-e{e}", arm=f"a{j}", policy=f"p{e}-{j}", is_control=j == 0,
                                 context_id=f"x{i}", response=f"reply {i} to you " + EMO * int(k[i]), users=40_000,
                                 breadth=b, breadth_se=0.3 * 0.004))
    return Records({"character": chars, "context": ctx, "arm_reply_set": pd.DataFrame(rows)})


def _rows():
    return synth(n_exp=2, n_ctx=3)["arm_reply_set"]


# ----------------------------------------------------------------------------------------------
# the record kind

@pytest.mark.parametrize("edit, row, field", [
    (lambda d: d.assign(breadth_se=d.breadth_se.where(d.index != 4, 0.0)), 4, "breadth_se"),
    (lambda d: d.assign(breadth=d.breadth.where(d.index != 2, 1.5)), 2, "breadth"),
    (lambda d: d.assign(users=d.users.where(d.index != 5, 39_999)), 5, "users"),  # one users per arm
    (lambda d: d.assign(is_control=d.arm.isin(["a0", "a1"])), 3, "is_control"),  # two controls
    (lambda d: d.assign(depth=np.where(d.arm == "a1", 3.0, np.nan)), 3, "depth_se"),  # depth without its se
    (lambda d: d.assign(depth=np.where(d.arm == "a1", 3.0, np.nan), depth_se=np.where(d.arm == "a1", 0.01, np.nan)),
     0, "depth"),  # a treatment depth without the control's
    (lambda d: pd.concat([d, d.iloc[[7]]], ignore_index=True), 18, "context_id"),  # a reply twice in one arm
    (lambda d: d[d.arm != "a0"].reset_index(drop=True), 0, "is_control"),  # no control
])
def test_bad_reply_sets_name_file_row_and_field(edit, row, field):
    with pytest.raises(RecordError) as e:
        validate_frame(edit(_rows()), "arm_reply_set", "sets.parquet")
    assert (e.value.path, e.value.row, e.value.field) == ("sets.parquet", row, field), str(e.value)


def test_single_arm_experiment_is_refused():
    d = _rows()
    d = d[(d.experiment_id != d.experiment_id.iloc[0]) | (d.arm == "a0")].reset_index(drop=True)
    with pytest.raises(RecordError) as e:
        validate_frame(d, "arm_reply_set", "s")
    assert e.value.field == "arm" and "single arm" in e.value.expected


def test_valid_sets_pass_and_reference_their_contexts(tmp_path):
    from rm_lab.reward.data import build_reward_data

    rec = synth(n_exp=2, n_ctx=3)
    validate_frame(rec["arm_reply_set"], "arm_reply_set")
    ctx = rec["context"][rec["context"].context_id != "x1"].reset_index(drop=True)
    with pytest.raises(RecordError) as e:
        build_reward_data(Records({**rec.frames, "context": ctx}), ["ab_breadth"])
    assert e.value.field == "context_id" and e.value.value == "x1"


def test_measure_without_a_log_is_an_error_naming_its_row():
    d = _rows()
    d.loc[d.arm == "a2", "breadth"] = 0.0
    with pytest.raises(RecordError) as e:
        set_values(BUILTIN["ab_breadth"], d, "s.parquet")
    assert (e.value.row, e.value.field) == (int(np.flatnonzero(d.arm == "a2")[0]), "breadth")


# ----------------------------------------------------------------------------------------------
# the likelihood

def test_nll_and_its_gradient_through_the_replies_match_hand_computation():
    # one experiment: control arm {0, 1}, treatment {2, 3, 4}; a second: control {5}, treatment {6}
    eta = torch.tensor([0.1, 0.3, 0.5, 0.2, 0.8, -0.2, 0.4], dtype=torch.float64, requires_grad=True)
    item = torch.tensor([0, 1, 2, 3, 4, 5, 6])
    arm = torch.tensor([0, 0, 1, 1, 1, 2, 3])
    ctrl = torch.tensor([-1, 0, -1, 2])
    y = torch.tensor([0.0, 0.25, 0.0, 0.5], dtype=torch.float64)
    v = torch.tensor([0.0, 0.01, 0.0, 0.04], dtype=torch.float64)
    log_tau = torch.tensor(math.log(0.1), dtype=torch.float64, requires_grad=True)
    nll = arm_mean_nll(eta, item, arm, ctrl, y, v, log_tau)
    nll.backward()
    d1, d2 = 0.5 - 0.2, 0.6  # mean(.5,.2,.8) - mean(.1,.3); 0.4 - (-0.2)
    var1, var2 = 0.01 + 0.01, 0.04 + 0.01
    want = 0.5 * (((0.25 - d1) ** 2 / var1 + math.log(2 * math.pi * var1))
                  + ((0.5 - d2) ** 2 / var2 + math.log(2 * math.pi * var2))) / 2
    assert float(nll.detach()) == pytest.approx(want, rel=1e-12)
    g1, g2 = -(0.25 - d1) / var1 / 2, -(0.5 - d2) / var2 / 2  # d nll / d d_a (mean over 2 arms)
    want_grad = [-g1 / 2, -g1 / 2, g1 / 3, g1 / 3, g1 / 3, -g2, g2]
    assert eta.grad.numpy() == pytest.approx(want_grad, rel=1e-10)
    # tau: d/dlog_tau of 0.5[(r^2)/(v+t^2) + log(v+t^2)] = t^2 (1/(v+t^2) - r^2/(v+t^2)^2), averaged
    t2 = 0.01
    want_tau = np.mean([t2 * (1 / var - r ** 2 / var ** 2) for var, r in ((var1, 0.25 - d1), (var2, 0.5 - d2))])
    assert float(log_tau.grad) == pytest.approx(want_tau, rel=1e-10)
    p = arm_mean_nll_np([d1, d2], [0.25, 0.5], [0.01, 0.04], 0.1)
    assert p == pytest.approx(want, rel=1e-12)


def test_only_within_experiment_differences_enter():
    eta = torch.tensor([0.1, 0.3, 0.5, 0.2], dtype=torch.float64)
    args = (torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 1, 1]), torch.tensor([-1, 0]),
            torch.tensor([0.0, 0.1], dtype=torch.float64), torch.tensor([0.0, 0.01], dtype=torch.float64),
            torch.tensor(-2.0, dtype=torch.float64))
    base = arm_mean_nll(eta, *args)
    assert float(arm_mean_nll(eta + 7.0, *args)) == pytest.approx(float(base), rel=1e-12)
    no_treat = arm_mean_nll(eta, args[0], args[1], torch.tensor([-1, -1]), *args[3:])
    assert float(no_treat) == 0.0


def test_targets_are_log_lifts_over_the_control_with_delta_method_variance():
    rows = set_values(BUILTIN["ab_breadth"], _rows(), None)
    m = arm_targets(rows)
    a1 = m[(m.arm == "a1")].iloc[0]
    d = _rows()
    b0, b1 = d[d.arm == "a0"].breadth.iloc[0], d[d.arm == "a1"].breadth.iloc[0]
    assert a1.y == pytest.approx(math.log(b1 / b0))
    assert a1.v == pytest.approx((0.0012 / b1) ** 2 + (0.0012 / b0) ** 2)
    assert m[m.is_control].y.isna().all()


def test_registry_entries_and_declaration_rules():
    s = BUILTIN["ab_breadth"]
    assert (s.likelihood, s.record, s.col, s.is_set, s.stats()) == ("arm_mean", "arm_reply_set", "breadth", True, ("n",))
    assert BUILTIN["ab_depth"].col == "depth"
    d = declare("lift_msgs", {"kind": "arm_mean", "column": "depth"})
    assert d.record == "arm_reply_set" and d.is_set
    with pytest.raises(ConfigError, match="arm_reply_set"):
        declare("x", {"kind": "arm_mean", "record": "label"})
    with pytest.raises(ConfigError, match="arm_reply_set"):
        HeadSpec("y", "binomial", record="arm_reply_set")


# ----------------------------------------------------------------------------------------------
# data, batches, training

def test_batches_hold_every_reply_of_an_experiment():
    from rm_lab.reward.data import build_reward_data
    from rm_lab.reward.train import UnitCollator, unit_loader

    data = build_reward_data(synth(n_exp=3, n_ctx=4), ["ab_breadth"])
    data.items["feat_row"] = np.arange(len(data.items))
    col = UnitCollator(data, torch.zeros(len(data.items), 3), np.zeros((len(data.items), 2), np.float32),
                       ["ab_breadth"])
    assert col.n_units == 3 and col.sets.n_units == 3
    for batch in unit_loader(col, batch_size=1, seed=0, shuffle=True):
        ctrl = batch["ab_breadth.ctrl"]
        assert ctrl.tolist() == [-1, 0, 0]  # the control, then two treatments referring to it
        counts = torch.zeros(3).index_add(0, batch["ab_breadth.arm"], torch.ones(len(batch["ab_breadth.arm"])))
        assert counts.tolist() == [4, 4, 4]  # every reply of every arm (shared replies map to one item)
        assert int(batch["ab_breadth.item"].max()) < batch["style"].shape[0]


def _train(records, root, backbone, epochs, **kw):
    from rm_lab.reward.train import TrainRMConfig, train_reward_model

    cfg = TrainRMConfig(backbone=str(backbone), epochs=epochs, hidden=16, batch_size=4, max_length=64,
                        pairwise=False, cache_dir=str(root / "cache"), lr=3e-3, **kw)
    run = root / f"run{epochs}"
    m = train_reward_model(cfg, run, records=records, say=lambda s: None)
    return run, m


def test_head_trains_lowers_its_held_out_loss_and_eval_rm_reports_it(tmp_path, backbone):
    from rm_lab.reward import store
    from rm_lab.reward.evaluate import EvalRMConfig, evaluate_reward_model, summary_lines

    run, m = _train(synth(), tmp_path, backbone, 30)
    assert m["heads"] == ["ab_breadth"]
    hist = store.read_history(store.TrainRun(run).member(0))
    first, best = hist[0]["val/loss/ab_breadth"], min(h["val/loss/ab_breadth"] for h in hist)
    assert best < first - 0.5, (first, best)
    cfg = EvalRMConfig(model=str(run), split="all", cache_dir=str(tmp_path / "cache"), n_counterfactual=5)
    ev = evaluate_reward_model(cfg, tmp_path / "eval", records=synth(seed=1), say=lambda s: None)
    r = ev["ab_breadth"]
    assert r["likelihood"] == "arm_mean" and r["n_arms"] == 20 and r["n_experiments"] == 10
    assert r["spearman_measured"] > 0.6 and r["sign_agreement_measured"] > 0.7 and r["tau"] > 0
    assert any(line.startswith("ab_breadth (arm_mean, 20 arms") for line in summary_lines(ev))


def test_arm_predictions_are_mean_differences():
    members = arm_targets(set_values(BUILTIN["ab_breadth"], _rows(), None))
    items = members.drop_duplicates(["context_id", "response"]).reset_index(drop=True)
    eta = np.arange(len(items), dtype=float)
    first = {k: i for i, k in reversed(list(enumerate(zip(items.context_id, items.response))))}
    p = arm_predictions(members, eta, lambda c, r: first.get((c, r), -1))
    e0 = members[members.experiment == members.experiment.iloc[0]]
    mean = {a: np.mean([eta[first[(c, r)]] for c, r in zip(g.context_id, g.response)]) for a, g in e0.groupby("arm")}
    got = p[(p.experiment == e0.experiment.iloc[0]) & (p.arm == "a2")].pred_log_lift.iloc[0]
    assert got == pytest.approx(mean["a2"] - mean["a0"])
    agree = lift_agreement([0.1, -0.2, 0.3], [0.2, -0.1, 0.1], [0.3, -0.3, -0.1])
    assert agree["sign_agreement_measured"] == 1.0 and agree["sign_agreement_true"] == pytest.approx(2 / 3)
    assert agree["spearman_measured"] == pytest.approx(0.5)


def test_eval_rm_reports_arm_logit_heads(tmp_path, backbone):
    from rm_lab.reward.evaluate import EvalRMConfig, evaluate_reward_model, summary_lines
    from rm_lab.reward.train import TrainRMConfig, train_reward_model

    rng = np.random.default_rng(0)
    chars = pd.DataFrame({"character_id": ["c0"], "name": ["Up"], "persona": [[]], "instructions": [[]]})
    rows, ctx = [], []
    for g in range(8):
        ctx.append({"context_id": f"t{g}", "character_id": "c0", "history": [], "traffic": "user"})
        for j in range(3):
            n = 2000
            rows.append({"experiment_id": f"t{g}", "arm": f"h{j}", "is_control": j == 0, "days": 1, "users": n,
                         "engaged_users": int(rng.binomial(n, 0.02 * (1 + j))), "text": f"headline {g} " + EMO * j})
    rec = Records({"character": chars, "context": pd.DataFrame(ctx), "ab_arm": pd.DataFrame(rows)})
    cfg = TrainRMConfig(backbone=str(backbone), epochs=20, hidden=16, batch_size=4, max_length=64, pairwise=False,
                        cache_dir=str(tmp_path / "cache"), lr=3e-3, val_fraction=0)
    train_reward_model(cfg, tmp_path / "run", records=rec, say=lambda s: None)
    ev = evaluate_reward_model(EvalRMConfig(model=str(tmp_path / "run"), split="all", cache_dir=str(tmp_path / "cache"),
                                            n_counterfactual=5), tmp_path / "eval", records=rec, say=lambda s: None)
    r = ev["ab_engaged"]
    assert r["likelihood"] == "arm_logit" and r["n_experiments"] == 8 and r["n_pairs"] > 0
    assert r["nll_per_click"] < r["nll_per_click_equal_arms"] and r["pair_accuracy"] > 0.7
    assert any(line.startswith("ab_engaged (arm_logit, 8 experiments)") for line in summary_lines(ev))


def test_train_rm_cli_reads_a_reply_set_folder(tmp_path, backbone):
    from rm_helpers import one_error_line, run_cli

    from rm_lab import io

    folder = tmp_path / "sets"
    for kind, df in synth(n_exp=4, n_ctx=6).frames.items():
        io.write_records(df, folder / f"{kind}.parquet", kind)
    runs = tmp_path / "runs"
    p = run_cli("train-rm", f"data={folder}", f"backbone={backbone}", "epochs=2", "hidden=16", "batch_size=4",
                "max_length=64", "pairwise=false", f"cache_dir={tmp_path / 'cache'}", runs=runs)
    assert p.returncode == 0, p.stderr[-2000:]
    run = next((runs / "train-rm").iterdir())
    assert json.loads((run / "rm_config.json").read_text())["heads"] == ["ab_breadth"]
    bad = synth(n_exp=4, n_ctx=6)["arm_reply_set"]
    bad.loc[5, "breadth_se"] = -1.0
    bad.to_parquet(folder / "arm_reply_set.parquet")
    line = one_error_line(run_cli("train-rm", f"data={folder}", f"backbone={backbone}", "epochs=1", runs=runs))
    assert "arm_reply_set.parquet" in line and "row 5" in line and "breadth_se" in line


def test_the_ab_simulator_writes_reply_sets_of_its_arms():
    from rm_lab.world.ab import ABConfig, simulate_ab, simulate_ab_reply_sets

    cfg = ABConfig(reply_contexts=6, quality_contexts=50, more_treatments=["emoji_heavy"], per_day=False,
                   eligible_users=20_000)
    arms, truth, rec = simulate_ab_reply_sets(cfg)
    sets = rec["arm_reply_set"]
    assert rec.counts() == {"character": 24, "context": 6, "arm_reply_set": 18}
    assert sorted(sets.policy.unique()) == ["baseline", "emoji_heavy", "improved"]
    tot = arms[arms.day.isna()].set_index("arm")
    b = sets.drop_duplicates("arm").set_index("arm")
    for a in tot.index:  # measured breadth = engaged user-days / (users * days)
        assert b.loc[a, "breadth"] == pytest.approx(tot.loc[a, "engaged_user_days"] / (tot.loc[a, "users"] * 7))
        assert b.loc[a, "sessions"] == tot.loc[a, "engaged_user_days"] and b.loc[a, "breadth_se"] > 0
    assert (sets.groupby("arm").context_id.apply(tuple).nunique()) == 1  # every arm on the same contexts
    emoji = sets[sets.policy == "emoji_heavy"].response.str.count(EMO[0]).mean()
    assert emoji > sets[sets.policy == "baseline"].response.str.count(EMO[0]).mean()
    arms2, truth2 = simulate_ab(ABConfig(quality_contexts=50, more_treatments=["emoji_heavy"], per_day=False,
                                         eligible_users=20_000))
    pd.testing.assert_frame_equal(arms2, arms)  # asking for reply sets changes no draw of the test
    assert truth2 == truth


def test_ab_test_cli_writes_a_train_rm_folder_and_names_a_bad_sample_size(tmp_path):
    from rm_helpers import one_error_line, run_cli

    from rm_lab.reward.data import read_record_folder
    from rm_lab.schema import validate_frame as check

    runs = tmp_path / "runs"
    p = run_cli("ab-test", "reply_contexts=5", "quality_contexts=40", "per_day=false", "eligible_users=20000", runs=runs)
    assert p.returncode == 0, p.stderr[-2000:]
    run = next((runs / "ab-test").iterdir())
    rec = read_record_folder(run)  # characters, contexts and reply sets: what train-rm reads
    assert len(check(rec["arm_reply_set"], "arm_reply_set")) == 10 and len(rec["context"]) == 5
    line = one_error_line(run_cli("ab-test", "reply_contexts=50", "quality_contexts=40", runs=runs))
    assert "reply_contexts" in line and "quality_contexts" in line


def test_simulated_past_tests_folds_and_the_paired_bootstrap():
    from rm_lab.calibrate.reply_set_tests import (experiment_folds, paired_bootstrap, simulate_reply_set_tests,
                                                  subset_reply_sets)
    from rm_lab.calibrate.simulated import design_tests
    from rm_lab.world.engagement import Population

    tests = design_tests(4, ["baseline"], ["emoji_heavy", "terse"], (0.5, 1.0), 0.1, seed=0)
    rec, table = simulate_reply_set_tests(tests, Population(), 4, 60, 20_000, 0.1, 7, seed=0, say=lambda s: None)
    assert len(table) == 4 and len(rec["arm_reply_set"]) == 4 * 2 * 4
    t = table.set_index("experiment_id")
    rows = rec["arm_reply_set"].drop_duplicates(["experiment_id", "arm"]).set_index(["experiment_id", "is_control"])
    e = t.index[0]
    assert t.loc[e, "breadth_log_lift"] == pytest.approx(math.log(rows.loc[(e, False), "breadth"] /
                                                                  rows.loc[(e, True), "breadth"]))
    for m in ("breadth", "depth"):  # the measured lift is the true one plus sampling noise of its own size
        z = (table[f"{m}_log_lift"] - table[f"{m}_true_log_lift"]) / table[f"{m}_log_lift_se"]
        assert np.all(np.abs(z) < 5), z.tolist()
    folds = experiment_folds(table, 2, seed=0)
    assert sorted(sum(folds, [])) == sorted(table.experiment_id) and all(len(f) == 2 for f in folds)
    sub = subset_reply_sets(rec, folds[0])
    assert set(sub["arm_reply_set"].experiment_id) == set(folds[0])
    y = np.arange(40.0)
    good, bad = y + np.random.default_rng(0).normal(0, 1, 40), np.random.default_rng(1).normal(0, 1, 40)
    d = paired_bootstrap(bad, good, y, n_boot=300)
    assert d["diff"] > 0.5 and d["low"] > 0 and d["low"] <= d["diff"] <= d["high"]
