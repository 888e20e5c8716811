"""DPO loss pinned to TRL: on identical inputs our `dpo_loss` equals `trl.DPOTrainer`'s own loss code
(trl 1.16, run unbound on a stub trainer whose model returns the given token log-probs) within 1e-5,
for every loss type offered; metrics carry TRL's names and values; bad configs are named."""
from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rm_lab.config import ConfigError
from rm_lab.policy.objectives.dpo import LOSS_TYPES, DPOConfig, best_vs_worst, dpo_loss

trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")


class _Accel:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


def _batch(n_pairs=6, width=9, seed=0):
    """Chosen rows then rejected rows, as TRL concatenates them; prompt tokens first, then a reply of
    varying length; per-token log-probs of the policy zero outside the reply (labels -100 in TRL)."""
    g = torch.Generator().manual_seed(seed)
    rows = 2 * n_pairs
    completion_mask = torch.zeros(rows, width, dtype=torch.long)
    for i in range(rows):
        start = int(torch.randint(1, 4, (1,), generator=g))
        end = int(torch.randint(start + 1, width + 1, (1,), generator=g))
        completion_mask[i, start:end] = 1
    shift = completion_mask[:, 1:]
    policy_tok = -torch.rand(rows, width - 1, generator=g) * 3 * shift
    ref = -torch.rand(rows, generator=g) * 3 * shift.sum(1)
    return completion_mask, policy_tok, ref


def _trl_loss(cfg: DPOConfig, completion_mask, policy_tok, ref):
    """TRL's `DPOTrainer._compute_loss`, the real method, on a stub trainer and a stub model."""
    rows, width = completion_mask.shape
    seq = width - 1
    outputs = SimpleNamespace(log_probs=policy_tok, entropy=torch.zeros(rows, seq),
                              mean_logits=torch.zeros(rows, seq), is_top1=torch.zeros(rows, seq, dtype=torch.bool))
    stub = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_Accel(), aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[cfg.loss_type], loss_weights=[1.0],
        beta=cfg.beta, label_smoothing=cfg.label_smoothing, use_weighting=False, args=SimpleNamespace(),
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    ref_c, ref_r = ref.chunk(2)
    inputs = {"input_ids": torch.ones(rows, width, dtype=torch.long), "attention_mask": torch.ones(rows, width),
              "completion_mask": completion_mask, "ref_chosen_logps": ref_c, "ref_rejected_logps": ref_r}
    loss = trl_dpo.DPOTrainer._compute_loss(stub, lambda **kw: outputs, inputs, return_outputs=False)
    return loss, {k: v[-1] for k, v in stub._metrics["train"].items()}


def _ours(cfg, completion_mask, policy_tok, ref):
    pol_c, pol_r = policy_tok.sum(1).chunk(2)
    ref_c, ref_r = ref.chunk(2)
    len_c, len_r = completion_mask.sum(1).float().chunk(2)
    return dpo_loss(pol_c, pol_r, ref_c, ref_r, cfg, chosen_lengths=len_c, rejected_lengths=len_r)


CONFIGS = [DPOConfig(beta=b, loss_type=t) for t in ("sigmoid", "hinge", "ipo") for b in (0.1, 0.5)] + [
    DPOConfig(beta=0.1, loss_type="robust", label_smoothing=0.0),
    DPOConfig(beta=0.3, loss_type="robust", label_smoothing=0.2)]


def test_every_loss_type_is_covered():
    assert {c.loss_type for c in CONFIGS} == set(LOSS_TYPES)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.loss_type}-b{c.beta}-ls{c.label_smoothing}")
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_and_metrics_equal_trl(cfg, seed):
    mask, tok, ref = _batch(seed=seed)
    trl_loss, trl_metrics = _trl_loss(cfg, mask, tok, ref)
    loss, metrics = _ours(cfg, mask, tok, ref)
    assert abs(loss.item() - trl_loss.item()) < 1e-5
    for k in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
              "logps/rejected"):
        assert abs(metrics[k] - trl_metrics[k]) < 1e-5, k


def test_gradient_equals_trl_and_raises_the_chosen_reply():
    cfg = DPOConfig(beta=0.2)
    mask, tok, ref = _batch(seed=3)
    tok_a = tok.clone().requires_grad_(True)
    _trl_loss(cfg, mask, tok_a, ref)[0].backward()
    tok_b = tok.clone().requires_grad_(True)
    _ours(cfg, mask, tok_b, ref)[0].backward()
    assert torch.allclose(tok_a.grad, tok_b.grad, atol=1e-6)
    n = mask.size(0) // 2
    seq_grad = tok_b.grad.sum(1)  # a descent step moves logps against the gradient
    assert (seq_grad[:n] < 0).all() and (seq_grad[n:] > 0).all()


def test_policy_equal_to_reference_gives_log2_and_zero_rewards():
    lp = torch.tensor([-3.0, -7.5, -1.0])
    loss, m = dpo_loss(lp, lp - 1, lp, lp - 1, DPOConfig(beta=0.1))
    assert abs(loss.item() - np.log(2)) < 1e-6
    assert m["rewards/chosen"] == 0 and m["rewards/margins"] == 0 and m["rewards/accuracies"] == 0


def test_hand_computed_sigmoid():
    loss, m = dpo_loss(torch.tensor([-1.0]), torch.tensor([-4.0]), torch.tensor([-2.0]), torch.tensor([-3.0]),
                       DPOConfig(beta=0.5))
    # delta = (-1 + 2) - (-4 + 3) = 2; -log sigmoid(1) = log(1 + e^-1)
    assert abs(loss.item() - np.log1p(np.exp(-1.0))) < 1e-6
    assert abs(m["rewards/margins"] - 1.0) < 1e-6 and m["rewards/accuracies"] == 1.0


@pytest.mark.parametrize("kw, field", [
    ({"beta": -0.1}, "beta"), ({"beta": 0.0}, "beta"), ({"loss_type": "kto"}, "loss_type"),
    ({"loss_type": "robust", "label_smoothing": 0.5}, "label_smoothing"),
    ({"loss_type": "sigmoid", "label_smoothing": 0.1}, "label_smoothing")])
def test_bad_config_is_named(kw, field):
    with pytest.raises(ConfigError, match=f"DPOConfig.{field}"):
        DPOConfig(**kw)


def test_ipo_needs_lengths_and_shapes_are_checked():
    lp = torch.zeros(2)
    with pytest.raises(ValueError, match="chosen_lengths"):
        dpo_loss(lp, lp, lp, lp, DPOConfig(loss_type="ipo"))
    with pytest.raises(ValueError, match="one length"):
        dpo_loss(lp, torch.zeros(3), lp, lp, DPOConfig())
    with pytest.raises(ValueError, match="no preference pairs"):
        e = torch.zeros(0)
        dpo_loss(e, e, e, e, DPOConfig())


def test_best_vs_worst_pairs_skip_ties():
    scores = np.array([0.1, 0.9, 0.5, 0.3, 0.3, 0.3, 2.0, -1.0, 0.0])
    assert best_vs_worst(scores, 3) == [(1, 0), (6, 7)]
    assert best_vs_worst(scores, 3, min_margin=1.0) == [(6, 7)]
    with pytest.raises(ConfigError, match="group_size"):
        best_vs_worst(scores, 1)
    with pytest.raises(ValueError, match="whole groups"):
        best_vs_worst(scores, 4)


def test_a_step_on_a_tiny_model_changes_parameters_and_lowers_the_loss():
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    policy = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, num_key_value_heads=2))
    reference = copy.deepcopy(policy).eval()
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 64, (4, 3), generator=g)
    chosen = torch.cat([prompt, torch.randint(0, 64, (4, 4), generator=g)], 1)
    rejected = torch.cat([prompt, torch.randint(0, 64, (4, 4), generator=g)], 1)

    def seq_logps(model, ids):
        logp = torch.log_softmax(model(input_ids=ids).logits[:, :-1], -1)
        return logp.gather(-1, ids[:, 1:, None]).squeeze(-1)[:, 2:].sum(1)  # the 4 reply tokens

    with torch.no_grad():
        ref_c, ref_r = seq_logps(reference, chosen), seq_logps(reference, rejected)
    cfg = DPOConfig(beta=0.5)
    opt = torch.optim.SGD(policy.parameters(), lr=1.0)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    loss0, m0 = dpo_loss(seq_logps(policy, chosen), seq_logps(policy, rejected), ref_c, ref_r, cfg)
    assert abs(loss0.item() - np.log(2)) < 1e-6  # policy == reference
    opt.zero_grad()
    loss0.backward()
    opt.step()
    changed = [n for n, p in policy.named_parameters() if not torch.equal(p, before[n])]
    assert "lm_head.weight" in changed and any("layers.0" in n for n in changed)
    with torch.no_grad():
        loss1, m1 = dpo_loss(seq_logps(policy, chosen), seq_logps(policy, rejected), ref_c, ref_r, cfg)
    assert loss1.item() < loss0.item() and m1["rewards/margins"] > 0
