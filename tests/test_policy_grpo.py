"""GRPO pinned to TRL: a real `trl.GRPOTrainer` (trl 1.16) on a tiny random Llama gives the reference.

* advantages: TRL's `_generate_and_score_completions` on a batch whose rewards we fix equals our
  `group_advantages` for every `scale_rewards` (group, batch, none), with `frac_reward_zero_std`;
* loss: TRL's `_compute_loss`, fed our per-token log-probs, equals our `grpo_loss` (value, gradient,
  kl and clip-ratio metrics) for every `loss_type` (grpo, bnpo, dr_grpo, dapo), with and without the
  KL term and DAPO's clip-higher, within 1e-5;
* with the policy equal to the reference the KL term is 0; a step on the tiny model changes its
  parameters; DAPO's token-level loss is invariant to splitting the batch into micro-batches.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from rm_lab.config import ConfigError
from rm_lab.policy.objectives.grpo import LOSS_TYPES, SCALES, GRPOConfig, group_advantages, grpo_loss, k3_kl

trl = pytest.importorskip("trl")

G = 4
REWARDS = torch.tensor([1.0, 2.0, 3.0, 5.0,  # a spread group
                        1.5, 1.5, 1.5, 1.5,  # a zero-variance group
                        0.0, 0.0, 1.0, 0.0])  # one winner


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    """A real GRPOTrainer on a 1-layer random Llama with the MiniLM vocabulary; the reward function
    returns whatever `trainer.fixed_rewards` holds."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rm_lab.models import encoder_path

    tok = AutoTokenizer.from_pretrained(str(encoder_path()), local_files_only=True)
    tok.eos_token = tok.sep_token
    tok.padding_side = "left"
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=tok.cls_token_id))
    holder = {"rewards": REWARDS}

    def fixed(prompts, completions, **kw):
        assert len(completions) == len(holder["rewards"])
        return holder["rewards"].tolist()

    args = trl.GRPOConfig(output_dir=str(tmp_path_factory.mktemp("grpo")), per_device_train_batch_size=8,
                          num_generations=G, max_completion_length=3, use_cpu=True, report_to=[],
                          save_strategy="no", bf16=False, logging_steps=1)
    tr = trl.GRPOTrainer(model=model, reward_funcs=fixed, args=args, processing_class=tok,
                         train_dataset=Dataset.from_dict({"prompt": ["hello there", "how are you", "so"]}))
    tr.fixed_rewards = holder
    tr.current_gradient_accumulation_steps = 1
    return tr


def _trl_advantages(tr, rewards: torch.Tensor, scale: str):
    tr.fixed_rewards["rewards"] = rewards
    tr.scale_rewards = scale
    prompts = ["hello there", "how are you", "so", "the end"][: len(rewards) // G]
    out = tr._generate_and_score_completions([{"prompt": p} for p in prompts for _ in range(G)])
    m = tr._metrics["train"]
    return out["advantages"], {k: m[k][-1] for k in ("reward", "reward_std", "frac_reward_zero_std")}


@pytest.mark.parametrize("scale", SCALES)
def test_advantages_equal_trl(trainer, scale):
    trl_adv, trl_m = _trl_advantages(trainer, REWARDS, scale)
    ours = group_advantages(REWARDS, G, scale)
    assert torch.allclose(ours.advantages, trl_adv, atol=1e-5)
    for k, v in trl_m.items():
        assert abs(ours.metrics[k] - v) < 1e-5, k
    # the zero-variance group is counted whatever the scaling, and its rows carry no signal
    assert ours.n_zero_std_groups == 1 and ours.n_groups == 3
    assert ours.keep.tolist() == [True] * 4 + [False] * 4 + [True] * 4
    assert (ours.advantages[4:8] == 0).all()


def test_advantages_equal_trl_on_random_rewards(trainer):
    rewards = torch.randn(8, generator=torch.Generator().manual_seed(7)) * 3
    for scale in SCALES:
        trl_adv, _ = _trl_advantages(trainer, rewards, scale)
        assert torch.allclose(group_advantages(rewards, G, scale).advantages, trl_adv, atol=1e-5), scale


def _loss_batch(seed=0, rows=8, width=6):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(rows, width)
    for i in range(rows):
        mask[i, : int(torch.randint(1, width + 1, (1,), generator=g))] = 1
    logps = -torch.rand(rows, width, generator=g) * 4
    old = logps + torch.randn(rows, width, generator=g) * 0.4  # ratios well outside [0.8, 1.28]
    ref = logps + torch.randn(rows, width, generator=g) * 0.3
    adv = torch.randn(rows, generator=g)
    return logps, old, ref, adv, mask


def _trl_loss(tr, cfg: GRPOConfig, logps, old, ref, adv, mask, max_len):
    tr.loss_type, tr.beta = cfg.loss_type, cfg.beta
    tr.epsilon_low, tr.epsilon_high = cfg.epsilon_low, cfg.clip_high
    tr.max_completion_length = max_len
    tr.args.use_bias_correction_kl = cfg.kl_bias_correction
    tr._get_per_token_logps_and_entropies = lambda *a, **k: (logps, torch.zeros_like(logps), None)
    rows, width = mask.shape
    inputs = {"prompt_ids": torch.ones(rows, 2, dtype=torch.long), "prompt_mask": torch.ones(rows, 2),
              "completion_ids": torch.ones(rows, width, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    before = {k: len(v) for k, v in tr._metrics["train"].items()}
    loss = tr._compute_loss(tr.model, inputs)
    new = {k: v[-1] for k, v in tr._metrics["train"].items() if len(v) > before.get(k, 0)}
    return loss, new


LOSS_CASES = [GRPOConfig(num_generations=G, loss_type=t, beta=b, epsilon_high=eh)
              for t in LOSS_TYPES for b in (0.0, 0.04) for eh in (None, 0.28)] + [
    GRPOConfig(num_generations=G, loss_type=t, beta=0.04, kl_bias_correction=False) for t in LOSS_TYPES]


def test_every_loss_type_is_covered():
    assert {c.loss_type for c in LOSS_CASES} == set(LOSS_TYPES)


def _case_id(c: GRPOConfig) -> str:
    return f"{c.loss_type}-beta{c.beta}-eh{c.epsilon_high}-kbc{c.kl_bias_correction:d}"


@pytest.mark.parametrize("cfg", LOSS_CASES, ids=_case_id)
def test_loss_gradient_and_metrics_equal_trl(trainer, cfg):
    logps, old, ref, adv, mask = _loss_batch(seed=LOSS_TYPES.index(cfg.loss_type))
    a = logps.clone().requires_grad_(True)
    trl_loss, trl_m = _trl_loss(trainer, cfg, a, old, ref, adv, mask, max_len=mask.size(1))
    trl_loss.backward()
    b = logps.clone().requires_grad_(True)
    loss, m = grpo_loss(b, old, ref, adv, mask, cfg)
    loss.backward()
    assert abs(loss.item() - trl_loss.item()) < 1e-5
    assert torch.allclose(a.grad, b.grad, atol=1e-6)
    keys = ["clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "clip_ratio/low_min",
            "clip_ratio/high_max"] + (["kl"] if cfg.beta else [])
    for k in keys:
        assert abs(m[k] - trl_m[k]) < 1e-5, k
    assert m["clip_ratio/region_mean"] > 0  # the batch exercises the clip


def test_dr_grpo_divides_by_the_configured_token_cap(trainer):
    cfg = GRPOConfig(num_generations=G, loss_type="dr_grpo", max_completion_length=16)
    logps, old, ref, adv, mask = _loss_batch(seed=4)
    trl_loss, _ = _trl_loss(trainer, cfg, logps, old, ref, adv, mask, max_len=16)
    assert abs(grpo_loss(logps, old, ref, adv, mask, cfg)[0].item() - trl_loss.item()) < 1e-6
    # same per-token sums, so the width-normalised default differs by exactly 16 / width
    wide = grpo_loss(logps, old, ref, adv, mask, dataclasses.replace(cfg, max_completion_length=None))[0]
    assert abs(wide.item() * mask.size(1) / 16 - trl_loss.item()) < 1e-6


def test_policy_equal_to_reference_has_zero_kl_and_no_clipping():
    logps, _, _, adv, mask = _loss_batch(seed=2)
    assert torch.equal(k3_kl(logps, logps), torch.zeros_like(logps))
    cfg = GRPOConfig(num_generations=G, beta=0.5, loss_type="dapo")
    loss, m = grpo_loss(logps, None, logps.clone(), adv, mask, cfg)
    no_kl, _ = grpo_loss(logps, None, logps.clone(), adv, mask, dataclasses.replace(cfg, beta=0.0))
    assert m["kl"] == 0.0 and m["clip_ratio/region_mean"] == 0.0
    assert loss.item() == no_kl.item()
    # on-policy, ratio 1: the loss is -sum(A * tokens) / tokens
    assert abs(loss.item() + ((adv[:, None] * mask).sum() / mask.sum()).item()) < 1e-6
    # the k3 estimate is positive wherever the two differ
    assert (k3_kl(logps, logps + 0.3) > 0).all()


def test_dapo_is_invariant_to_micro_batching():
    logps, old, ref, adv, mask = _loss_batch(seed=5, rows=8)
    cfg = GRPOConfig(num_generations=G, beta=0.04, loss_type="dapo")
    full = grpo_loss(logps, old, ref, adv, mask, cfg)[0]
    total = mask.sum()
    halves = sum(grpo_loss(logps[s], old[s], ref[s], adv[s], mask[s], cfg, num_items_in_batch=total)[0]
                 for s in (slice(0, 3), slice(3, 8)))
    assert abs(full.item() - halves.item()) < 1e-6


def test_a_step_changes_the_tiny_models_parameters(trainer):
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 200, (8, 7), generator=g)
    logits = model(input_ids=ids).logits[:, :-1]
    logps = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)[:, 2:]  # completion = last 4
    mask = torch.ones_like(logps)
    adv = group_advantages(torch.tensor([0.0, 1.0, 2.0, 3.0, 1.0, 1.0, 0.0, 0.5]), G).advantages
    loss, _ = grpo_loss(logps, None, None, adv, mask, GRPOConfig(num_generations=G))
    torch.optim.SGD(model.parameters(), lr=0.5).zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert "lm_head.weight" in changed and any("layers.0" in n for n in changed)
    with torch.no_grad():  # leave the shared trainer's model as it was
        for n, p in model.named_parameters():
            p.copy_(before[n])
            p.grad = None


@pytest.mark.parametrize("kw, field", [
    ({"num_generations": 1}, "num_generations"), ({"beta": -0.1}, "beta"), ({"epsilon": 0.0}, "epsilon"),
    ({"scale_rewards": "global"}, "scale_rewards"), ({"loss_type": "ppo"}, "loss_type"),
    ({"epsilon_high": -1.0}, "epsilon_high")])
def test_bad_config_is_named(kw, field):
    with pytest.raises(ConfigError, match=f"GRPOConfig.{field}"):
        GRPOConfig(**kw)


def test_bad_advantage_inputs_are_named():
    with pytest.raises(ConfigError, match="group size must be >= 2"):
        group_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match="whole groups of 4"):
        group_advantages(torch.ones(6), 4)
    with pytest.raises(ValueError, match="reward 2 is nan"):
        group_advantages(np.array([1.0, 2.0, np.nan, 0.0]), 2)
    with pytest.raises(ValueError, match="beta > 0 needs the reference"):
        logps, old, _, adv, mask = _loss_batch()
        grpo_loss(logps, old, None, adv, mask, GRPOConfig(num_generations=G, beta=0.1))
