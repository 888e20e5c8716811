"""DPO training (rm_lab.policy.objectives.dpo_train) on a tiny random Llama: a step changes the trainable
parameters and only those, the reference stays the starting policy (adapter off, or a frozen copy); the
objective's loss equals `dpo_loss` on log-probs recomputed by hand; with the policy equal to the reference the
loss is log 2 and the implicit rewards 0; `train-policy --method dpo` learns to rank its pairs, reads a
best-of-n run's pairs, resumes after a kill to the same weights; bad input is one error line."""
from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pandas as pd
import pytest
from rm_helpers import optimizer_step
import torch
from safetensors.torch import load_file

from rm_lab import io
from rm_lab.config import ConfigError
from rm_lab.policy import trainer as tr
from rm_lab.policy.objectives import dpo_train as dt
from rm_lab.policy.objectives.dpo import LOSS_TYPES, dpo_loss
from rm_lab.world.characters import make_characters
from rm_lab.world.contexts import make_contexts


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from policy_helpers import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


def write_pairs(folder: Path, n: int = 8, ties: int = 0) -> Path:
    chars = make_characters(6, seed=0)
    ctx = make_contexts(chars, n, 0.5, seed=4, prefix="dpo")
    chosen = [f"Ahoy friend, tale {i} of the sea: what would you ask?" for i in range(n)]
    rejected = [f"no. {i}" for i in range(n - ties)] + chosen[n - ties:]
    prefs = pd.DataFrame({"context_id": ctx["context_id"], "chosen": chosen, "rejected": rejected, "source": "ai"})
    folder.mkdir(parents=True, exist_ok=True)
    for kind, df in (("character", chars), ("context", ctx), ("preference", prefs)):
        io.write_records(df, folder / f"{kind}.parquet", kind)
    return folder


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs"))


def _cfg(tiny, pairs, **kw):
    base = dict(method="dpo", policy=str(tiny), data=str(pairs), batch_size=4, epochs=1, lora_r=4, lr=0.01, beta=0.5)
    return tr.TrainPolicyConfig(**{**base, **kw})


def _module(cfg):
    tok, model = tr.load_trainable_policy(cfg.policy)
    data = dt.load_preference_set(cfg.data)
    torch.manual_seed(0)
    model, ref = tr.trainable_with_reference(cfg, model, needs_reference=True, say=lambda m: None)
    from rm_lab.policy.engines.common import eos_ids

    obj = dt.DPOObjective(dt.dpo_config(cfg), eos_ids(tok, model.generation_config), tok.pad_token_id)
    return tr.PolicyModule(model, obj, cfg.lr, reference=ref), dt.pair_examples(tok, data, 64, 24)


@pytest.mark.parametrize("lora", [True, False])
def test_a_step_changes_the_trainable_parameters_only_and_the_reference_stays(tiny, pairs, lora):
    module, ex = _module(_cfg(tiny, pairs, lora=lora))
    batch = module.objective.collate(ex[:4])
    loss0, logs0 = module.objective.loss(module, batch)
    assert abs(loss0.item() - math.log(2)) < 1e-5 and logs0["rewards/margins"] == 0.0  # policy == reference
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    with torch.no_grad():
        ref0, _ = module.reference_logprobs(batch)
    for _ in range(3):
        optimizer_step(module, batch)
    changed = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    trainable = set(module.trainable_names())
    assert changed and changed <= trainable
    if lora:
        assert all("lora_" in n for n in trainable)
    else:
        assert not any(n.startswith("reference.") for n in changed) and any(n.startswith("reference.") for n in before)
    assert torch.equal(module.reference_logprobs(batch)[0], ref0)  # the reference did not move
    loss1, logs1 = module.objective.loss(module, batch)
    assert loss1.item() < loss0.item() and logs1["rewards/margins"] > 0 and logs1["rewards/accuracies"] > 0.5


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_the_objectives_loss_is_dpo_loss_on_hand_computed_logprobs(tiny, pairs, loss_type):
    cfg = _cfg(tiny, pairs, loss_type=loss_type, label_smoothing=0.1 if loss_type == "robust" else 0.0)
    module, ex = _module(cfg)
    batch = module.objective.collate(ex[:3])
    optimizer_step(module, batch)  # move off the reference
    loss, logs = module.objective.loss(module, batch)

    def seq(model, prompt, reply):  # one unpadded sequence, summed over the reply's tokens
        ids = torch.tensor([list(prompt) + list(reply)])
        lp = torch.log_softmax(model(input_ids=ids).logits[0, len(prompt) - 1:-1].float(), -1)
        return lp.gather(-1, ids[0, len(prompt):, None]).sum()

    with torch.no_grad():
        pol = [(seq(module.policy, e.prompt, e.chosen), seq(module.policy, e.prompt, e.rejected)) for e in ex[:3]]
        with module.policy.disable_adapter():
            ref = [(seq(module.policy, e.prompt, e.chosen), seq(module.policy, e.prompt, e.rejected)) for e in ex[:3]]
    t = lambda xs, k: torch.stack([x[k] for x in xs])  # noqa: E731
    lengths = lambda k: torch.tensor([float(len(e.chosen if k == 0 else e.rejected)) for e in ex[:3]])  # noqa: E731
    want, m = dpo_loss(t(pol, 0), t(pol, 1), t(ref, 0), t(ref, 1), module.objective.cfg, lengths(0), lengths(1))
    assert abs(loss.item() - want.item()) < 1e-5
    for k in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen"):
        assert abs(logs[k] - m[k]) < 1e-4, k


def test_pairs_load_from_records_and_ties_are_dropped(tmp_path):
    folder = write_pairs(tmp_path / "p", n=6, ties=2)
    data = dt.load_preference_set(str(folder))
    assert len(data.chosen) == 4 and data.dropped_ties == 2
    ids = pd.read_parquet(folder / "context.parquet")["context_id"].tolist()
    assert data.contexts["context_id"].tolist() == ids[:4] and data.rejected[0] == "no. 0"


def test_a_best_of_n_runs_folder_gives_its_best_vs_worst_pairs(tmp_path):
    """What best-of-n and rejection-sample write (`sft_records`) is what DPO reads: pick over worst of N."""
    from rm_lab.policy.objectives.best_of_n import sft_records

    chars = make_characters(3, seed=0)
    ctx = make_contexts(chars, 2, 0.5, seed=1, prefix="bon")
    samples = pd.DataFrame({"context_id": [c for c in ctx["context_id"] for _ in range(3)],
                            "response": ["best a", "mid a", "worst a", "best b", "worst b", "mid b"],
                            "value": [0.9, 0.5, 0.1, 0.8, -0.2, 0.3], "score": [0.9, 0.5, 0.1, 0.8, -0.2, 0.3],
                            "chosen": [True, False, False, True, False, False]})
    run = tmp_path / "best-of-n"
    run.mkdir()
    for name, df in sft_records(samples, ctx, chars, "rejection_pick", "test").frames.items():
        io.write_records(df, run / f"{name}.parquet", name)
    samples.to_parquet(run / "samples.parquet")  # a best-of-n run folder holds more than records
    data = dt.load_preference_set(str(run))
    assert data.chosen == ["best a", "best b"] and data.rejected == ["worst a", "worst b"]


# ----------------------------------------------------------------------------------------------
# the run

def _args(data, policy, epochs, *extra):
    return ["train-policy", "--method", "dpo", f"data={data}", f"policy={policy}", f"epochs={epochs}", "batch_size=2",
            "lora_r=4", "lr=0.01", "beta=0.5", "max_completion_tokens=16", *extra]


EPOCHS = 6


@pytest.fixture(scope="module")
def reference_run(pairs, tiny, tmp_path_factory):
    from rm_helpers import run_cli

    runs = tmp_path_factory.mktemp("ref_runs")
    p = run_cli(*_args(pairs, tiny, EPOCHS), runs=runs)
    assert p.returncode == 0, p.stderr[-3000:]
    from rm_helpers import only_policy_run

    return only_policy_run(runs)


def test_the_cli_learns_to_rank_its_pairs(reference_run):
    run = tr.PolicyRun(reference_run)
    assert run.finished() and (run.adapter / "adapter_model.safetensors").is_file()
    hist = json.loads(run.history.read_text())
    assert [r["epoch"] for r in hist] == list(range(EPOCHS))
    for k in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
              "logps/rejected", "losses/dpo"):
        assert k in hist[-1], k
    assert hist[-1]["losses/dpo"] < hist[0]["losses/dpo"] and hist[-1]["rewards/margins"] > hist[0]["rewards/margins"]
    trained = load_file(str(run.trainable))
    assert trained and all("lora_" in k for k in trained)


def test_a_killed_dpo_run_resumes_to_the_same_weights(pairs, tiny, reference_run, tmp_path):
    from rm_helpers import kill_and_resume_policy_run

    kill_and_resume_policy_run(_args(pairs, tiny, EPOCHS), tmp_path / "runs", reference_run, signal.SIGTERM)


def test_full_weight_dpo_from_python(tiny, pairs, tmp_path):
    m = tr.train_policy(_cfg(tiny, pairs, lora=False, max_steps=2), tmp_path / "run", say=lambda s: None)
    assert m["steps"] == 2 and tr.PolicyRun(tmp_path / "run").finished()
    trained = load_file(str(tr.PolicyRun(tmp_path / "run").trainable))
    assert "lm_head.weight" in trained or "model.embed_tokens.weight" in trained  # every weight, no reference copy
    assert not any(k.startswith("reference") for k in trained)


def test_bad_input_is_one_error_line(pairs, tiny, tmp_path):
    from rm_helpers import one_error_line, run_cli

    runs = tmp_path / "runs"
    line = one_error_line(run_cli(*_args(pairs, tiny, 1, "beta=0"), runs=runs))
    assert "beta" in line and "> 0" in line
    bad = write_pairs(tmp_path / "bad")
    prefs = pd.read_parquet(bad / "preference.parquet")
    prefs.loc[2, "rejected"] = "  "
    io.write_records(prefs, bad / "preference.parquet", "preference", validate=False)
    line = one_error_line(run_cli(*_args(bad, tiny, 1), runs=runs))
    assert "preference.parquet" in line and "row" in line and "rejected" in line
    assert not (runs / "train-policy").exists() or not any((runs / "train-policy").iterdir())


def test_bad_config_from_python_is_named(tiny, pairs, tmp_path):
    with pytest.raises(ConfigError, match="TrainPolicyConfig.beta"):
        _cfg(tiny, pairs, beta=-0.1)
    with pytest.raises(ConfigError, match="TrainPolicyConfig.beta: dpo needs beta > 0"):
        _cfg(tiny, pairs, beta=0.0)
    with pytest.raises(ConfigError, match="TrainPolicyConfig.loss_type: dpo expects"):
        _cfg(tiny, pairs, loss_type="dapo")
    with pytest.raises(ConfigError, match="TrainPolicyConfig.label_smoothing"):
        _cfg(tiny, pairs, label_smoothing=0.1)  # only robust uses it
    io.write_records(make_characters(2, seed=0), tmp_path / "character.parquet", "character")
    with pytest.raises(ValueError, match="no context records"):
        dt.load_preference_set(str(tmp_path))
    with pytest.raises(ConfigError, match="data: give preference pairs"):
        dt.load_preference_set("")
