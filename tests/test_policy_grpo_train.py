"""GRPO training (rm_lab.policy.objectives.grpo_train) on a tiny random Llama and a tiny reward model:
a step samples from the live policy and changes the trainable parameters and only those; with the policy
equal to the reference the KL term is 0; the objective's loss equals the `grpo_loss` reference path
recomputed by hand; zero-variance groups are counted and skipped; `train-policy --method grpo` runs from
the CLI and from Python, a killed run resumes to the same weights, and bad input is one error line."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from rm_helpers import optimizer_step
import torch
from safetensors.torch import load_file

from rm_lab import io
from rm_lab.config import ConfigError
from rm_lab.policy import trainer as tr
from rm_lab.policy.objectives import grpo_train as gt
from rm_lab.policy.objectives.grpo import group_advantages, grpo_loss
from rm_lab.policy.rewards import RewardScores
from rm_lab.world.characters import make_characters
from rm_lab.world.contexts import make_contexts

G = 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from policy_helpers import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def rm(backbone, tmp_path_factory):
    from policy_helpers import make_tiny_rm

    return make_tiny_rm(tmp_path_factory.mktemp("rm") / "run", backbone)


def write_prompt_set(folder: Path, n: int = 8) -> Path:
    chars = make_characters(6, seed=0)
    ctx = make_contexts(chars, n, 0.5, seed=3, prefix="grpo")
    folder.mkdir(parents=True, exist_ok=True)
    io.write_records(chars, folder / "character.parquet", "character")
    io.write_records(ctx, folder / "context.parquet", "context")
    return folder


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return write_prompt_set(tmp_path_factory.mktemp("prompts"))


def _cfg(tiny, prompts, rm, **kw):
    base = dict(method="grpo", policy=str(tiny), data=str(prompts), reward_model=str(rm), group_size=G,
                batch_size=2, max_completion_tokens=6, epochs=1, lora_r=4, lr=0.05, beta=0.04, seed=1)
    return tr.TrainPolicyConfig(**{**base, **kw})


def _module(cfg, reward=None):
    tok, model = tr.load_trainable_policy(cfg.policy)
    ps = gt.load_prompt_set(cfg.data, cfg.n_prompts, cfg.seed)
    reward = reward or gt.load_reward(cfg)
    torch.manual_seed(0)
    model, ref = tr.trainable_with_reference(cfg, model, needs_reference=cfg.beta > 0, say=lambda m: None)
    obj = gt.build_objective(cfg, tok, model, ps, reward)
    return tr.PolicyModule(model, obj, cfg.lr, reference=ref), tok


@pytest.mark.parametrize("lora", [True, False])
def test_a_step_samples_and_changes_the_trainable_parameters_only(tiny, prompts, rm, lora):
    cfg = _cfg(tiny, prompts, rm, lora=lora)
    module, _ = _module(cfg)
    if not lora:
        module.policy.model.norm.weight.requires_grad_(False)  # a frozen weight must stay as it was
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    loss, logs = optimizer_step(module, [0, 1])
    assert logs["groups"] == 2 and logs["completions/mean_length"] > 0
    changed = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    trainable = set(module.trainable_names())
    assert changed and changed <= trainable
    if lora:
        assert all("lora_" in n for n in trainable) and any("lora_B" in n for n in changed)
    else:
        assert "policy.model.norm.weight" not in changed and not any(n.startswith("reference.") for n in changed)


@pytest.mark.parametrize("lora", [True, False])
def test_with_the_policy_equal_to_the_reference_the_kl_is_zero(tiny, prompts, rm, lora):
    cfg = _cfg(tiny, prompts, rm, lora=lora, beta=0.5)
    module, _ = _module(cfg)
    _, logs = module.objective.loss(module, [2, 3])  # before any step: LoRA's B is 0, the copy is the policy
    assert logs["kl"] == 0.0 and logs["clip_ratio/region_mean"] == 0.0
    optimizer_step(module, [2, 3])
    optimizer_step(module, [2, 3])
    _, logs = module.objective.loss(module, [2, 3])
    assert logs["kl"] > 0  # once the policy moved, the same estimator sees it


def test_the_objectives_loss_is_the_grpo_loss_reference_path(tiny, prompts, rm):
    """Sample, score and recompute every log-prob by hand, one unpadded reply at a time, then `grpo_loss`."""
    from rm_lab.policy.logprobs import token_logprobs

    cfg = _cfg(tiny, prompts, rm, beta=0.1, loss_type="grpo", temperature=0.7)
    module, _ = _module(cfg)
    optimizer_step(module, [4, 5])  # move off the reference so the KL term is exercised
    obj = module.objective
    rows = [0, 3]
    loss, logs = obj.loss(module, rows)
    ro = obj.rollout(module, rows)  # the same step's seed: the same replies
    rewards = obj.reward.score(ro.contexts, ro.texts, obj.prompts.characters).total
    adv = group_advantages(rewards, G, cfg.scale_rewards)
    keep = adv.keep.nonzero().flatten().tolist()
    width = max(len(ro.completions[i].token_ids) for i in keep)

    def per_token(model, c):
        ids = torch.tensor([list(c.prompt_token_ids) + list(c.token_ids)])
        lp = token_logprobs(model(input_ids=ids).logits[:, len(c.prompt_token_ids) - 1:-1], ids[:, len(c.prompt_token_ids):],
                            cfg.temperature)[0]
        return torch.nn.functional.pad(lp, (0, width - len(lp)))

    with torch.no_grad():
        lp = torch.stack([per_token(module.policy, ro.completions[i]) for i in keep])
        with module.policy.disable_adapter():
            ref = torch.stack([per_token(module.policy, ro.completions[i]) for i in keep])
    mask = torch.tensor([[1.0] * len(ro.completions[i].token_ids) + [0.0] * (width - len(ro.completions[i].token_ids))
                         for i in keep])
    want, m = grpo_loss(lp, None, ref, adv.advantages[keep], mask, gt.grpo_config(cfg))
    assert abs(loss.item() - want.item()) < 1e-5
    assert abs(logs["kl"] - m["kl"]) < 1e-5 and logs["kl"] > 0
    assert logs["rewards/preference/mean"] == pytest.approx(
        float(np.mean(obj.reward.model.score(ro.contexts, ro.texts, obj.prompts.characters)[obj.reward.keys["preference"]])),
        abs=1e-6)


class _FixedReward:
    """Rewards by reply position: group 0 tied, group 1 spread (or everything tied)."""

    def __init__(self, totals):
        self.totals = np.asarray(totals, float)
        self.cfg = type("C", (), {"heads": {}})()

    def score(self, contexts, replies, characters, finished=None):
        return RewardScores(self.totals[: len(replies)], {}, {"reward": float(self.totals.mean())})


def test_zero_std_groups_are_counted_and_skipped(tiny, prompts, rm, monkeypatch):
    from rm_lab.policy import logprobs

    cfg = _cfg(tiny, prompts, rm, beta=0.0, reward_heads={}, length_penalty=1.0, reward_model="")
    module, _ = _module(cfg, reward=_FixedReward([1.0, 1.0, 0.0, 2.0]))
    seen = []
    real = logprobs.sequence_logprobs
    monkeypatch.setattr(logprobs, "sequence_logprobs", lambda m, b, **kw: seen.append(b.input_ids.shape[0]) or
                        real(m, b, **kw))
    loss, logs = module.objective.loss(module, [0, 1])
    assert logs["zero_std_groups"] == 1 and seen == [G]  # only the spread group went through the forward
    module.objective.reward = _FixedReward([1.0] * 4)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    loss, logs = optimizer_step(module, [0, 1])
    assert logs["zero_std_groups"] == 2 and seen == [G] and loss.item() == 0.0  # no forward, no gradient
    assert all(torch.equal(p, before[n]) for n, p in module.named_parameters())


def test_prompt_selection_keeps_the_share_asked_for(tiny, prompts, rm):
    cfg = _cfg(tiny, prompts, rm, prompt_selection="variance", prompt_keep=0.5)
    tok, model = tr.load_trainable_policy(cfg.policy)
    ps = gt.load_prompt_set(cfg.data)
    kept, table = gt.select_prompts(cfg, tok, model, ps, say=lambda m: None)
    assert len(kept.contexts) == 4 and table["selected"].sum() == 4
    chosen = table[table["selected"]]["std"].min()
    assert chosen >= table[~table["selected"]]["std"].max()  # the most varied prompts were kept


# ----------------------------------------------------------------------------------------------
# the run: from Python and from the CLI, a kill and its resume, bad input

def test_train_policy_from_python_logs_trls_metrics(tiny, prompts, rm, tmp_path):
    cfg = _cfg(tiny, prompts, rm, epochs=2, max_steps=3, n_prompts=6)
    m = tr.train_policy(cfg, tmp_path / "run", say=lambda s: None)
    run = tr.PolicyRun(tmp_path / "run")
    assert run.finished() and m["steps"] == 3 and m["n_prompts"] == 6
    hist = json.loads(run.history.read_text())
    for key in ("reward", "reward_std", "frac_reward_zero_std", "rewards/preference/mean", "rewards/preference/std",
                "rewards/preference/frac_zero_std", "kl", "clip_ratio/region_mean", "completions/mean_length",
                "losses/grpo", "timing/generate_s"):
        assert key in hist[-1], key
    # one record per optimizer step, in order, with the step's own reward components: the run's curve
    steps = json.loads(run.steps.read_text())
    assert [r["step"] for r in steps] == [1, 2, 3] and all("rewards/preference/mean" in r for r in steps)
    assert {r["epoch"] for r in steps} <= {0, 1}
    from rm_lab.models import load_policy

    load_policy(str(run.policy))


def _args(data, policy, rm, epochs, *extra):
    return ["train-policy", "--method", "grpo", f"data={data}", f"policy={policy}", f"reward_model={rm}",
            f"epochs={epochs}", f"group_size={G}", "batch_size=2", "lora_r=4", "lr=0.05", "max_completion_tokens=6",
            "beta=0.04", *extra]


EPOCHS = 6


@pytest.fixture(scope="module")
def reference_run(prompts, tiny, rm, tmp_path_factory):
    from rm_helpers import run_cli

    runs = tmp_path_factory.mktemp("ref_runs")
    p = run_cli(*_args(prompts, tiny, rm, EPOCHS), runs=runs)
    assert p.returncode == 0, p.stderr[-3000:]
    from rm_helpers import only_policy_run

    return only_policy_run(runs)


def test_the_cli_trains_the_adapters_and_writes_the_policy(reference_run):
    run = tr.PolicyRun(reference_run)
    assert run.finished() and (run.adapter / "adapter_model.safetensors").is_file()
    hist = json.loads(run.history.read_text())
    assert [r["epoch"] for r in hist] == list(range(EPOCHS)) and hist[-1]["step"] == EPOCHS * 4
    steps = json.loads(run.steps.read_text())
    assert len(steps) == EPOCHS * 4 and [r["epoch"] for r in steps] == [e for e in range(EPOCHS) for _ in range(4)]
    assert hist[-1]["kl"] > 0 and hist[0]["groups"] == 2
    trained = load_file(str(run.trainable))
    assert trained and all("lora_" in k for k in trained)


def test_a_killed_grpo_run_resumes_to_the_same_weights(prompts, tiny, rm, reference_run, tmp_path):
    from rm_helpers import kill_and_resume_policy_run

    kill_and_resume_policy_run(_args(prompts, tiny, rm, EPOCHS), tmp_path / "runs", reference_run, signal.SIGTERM)


def test_bad_input_is_one_error_line(prompts, tiny, rm, tmp_path):
    from rm_helpers import one_error_line, run_cli

    runs = tmp_path / "runs"
    line = one_error_line(run_cli(*_args(prompts, tiny, rm, 1, "reward_heads={nosuch: 1.0}"), runs=runs))
    assert "'nosuch'" in line and str(rm) in line and "preference" in line
    line = one_error_line(run_cli(*_args(prompts, tiny, rm, 1, "group_size=1"), runs=runs))
    assert "group_size" in line and "2" in line
    empty = tmp_path / "empty_prompts"
    empty.mkdir()
    io.write_records(make_characters(2, seed=0), empty / "character.parquet", "character")
    ctx = make_contexts(make_characters(2, seed=0), 2, 0.5, seed=0).iloc[:0]
    io.write_records(ctx, empty / "context.parquet", "context", validate=False)
    line = one_error_line(run_cli(*_args(empty, tiny, rm, 1), runs=runs))
    assert "context" in line and "0 rows" in line
    assert not (runs / "train-policy").exists() or not any((runs / "train-policy").iterdir())  # no run folder left


def test_bad_config_from_python_is_named(tiny, prompts, rm, tmp_path):
    with pytest.raises(ConfigError, match="TrainPolicyConfig.group_size"):
        _cfg(tiny, prompts, rm, group_size=1)
    with pytest.raises(ConfigError, match="TrainPolicyConfig.beta"):
        _cfg(tiny, prompts, rm, beta=-0.1)
    with pytest.raises(ConfigError, match="TrainPolicyConfig.loss_type: grpo expects one of .*dapo"):
        _cfg(tiny, prompts, rm, loss_type="sigmoid")
    with pytest.raises(ConfigError, match="TrainPolicyConfig.reward_model"):
        gt.load_reward(_cfg(tiny, prompts, "", reward_model=""))
    with pytest.raises(ConfigError, match="'nosuch' is not a head"):
        gt.load_reward(_cfg(tiny, prompts, rm, reward_heads={"nosuch": 1.0}))
    with pytest.raises(ConfigError, match="uncertainty"):
        gt.load_reward(_cfg(tiny, prompts, rm, uncertainty_penalty=1.0))  # the tiny model is no ensemble
    io.write_records(make_characters(2, seed=0), tmp_path / "character.parquet", "character")
    with pytest.raises(ValueError, match="no context records"):
        gt.load_prompt_set(str(tmp_path))
    with pytest.raises(ConfigError, match="model: .*no_rm"):
        gt.load_reward(_cfg(tiny, prompts, tmp_path / "no_rm"))
