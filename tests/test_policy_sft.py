"""SFT (rm_lab.policy.objectives.sft, rm_lab.policy.trainer): a step changes the trainable parameters and only
those (LoRA: the base stays frozen), prompt tokens carry no loss, the EOS is a target, a killed
`train-policy` resumes to the weights of an uninterrupted run, and bad input is one error line."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from rm_lab import io
from rm_lab.policy import trainer as tr
from rm_lab.policy.objectives import sft
from rm_lab.world.characters import make_characters
from rm_lab.world.contexts import make_contexts


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from policy_helpers import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


def _examples(tok, n=4, replies=None):
    chars = make_characters(6, seed=0)
    ctx = make_contexts(chars, n, 1.0, seed=2, prefix="s")
    replies = replies or [f"Ahoy, reply number {i} to you!" for i in range(n)]
    return sft.sft_examples(tok, ctx, chars, replies), ctx, chars, replies


def _step(module, batch):
    opt = module.configure_optimizers()
    loss, _ = module.objective.loss(module, batch)
    loss.backward()
    opt.step()
    return float(loss)


def _objective(tok, model):
    from rm_lab.policy.engines.common import eos_ids

    return sft.SFTObjective(eos_ids(tok, model.generation_config), tok.pad_token_id)


def test_a_lora_step_changes_the_adapters_and_nothing_else(tiny):
    tok, model = tr.load_trainable_policy(str(tiny))
    torch.manual_seed(0)
    model = tr.add_lora(model, r=4, alpha=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    module = tr.PolicyModule(model, _objective(tok, model), lr=1e-2)
    ex, *_ = _examples(tok)
    _step(module, module.objective.collate(ex))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # lora_A starts random and lora_B at zero: after one step both move (B from its gradient, A then next step);
    # what must hold is that nothing frozen moved and that the adapters did
    assert changed and changed <= trainable
    assert any("lora_B" in n for n in changed)


def test_a_full_weight_step_changes_every_trained_weight_and_not_a_frozen_one(tiny):
    tok, model = tr.load_trainable_policy(str(tiny))
    model.model.norm.weight.requires_grad_(False)  # a frozen weight must stay as it was
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    module = tr.PolicyModule(model, _objective(tok, model), lr=1e-2)
    ex, *_ = _examples(tok)
    _step(module, module.objective.collate(ex))
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != p.requires_grad, n


def test_prompt_tokens_carry_no_loss_and_the_eos_is_a_target(tiny):
    tok, model = tr.load_trainable_policy(str(tiny))
    obj = _objective(tok, model)
    ex, *_ = _examples(tok, n=3)
    assert all(e.completion[-1] == tok.eos_token_id for e in ex)  # the reply ends with EOS: learning to stop
    batch = obj.collate(ex)
    assert batch.completion_mask.sum(1).tolist() == [len(e.completion) for e in ex]
    loss, _ = obj.loss(tr.PolicyModule(model, obj), batch)
    # by hand: each example alone, unpadded, cross-entropy on the completion positions only
    total, count = 0.0, 0
    with torch.no_grad():
        for e in ex:
            ids = torch.tensor([list(e.prompt) + list(e.completion)])
            logits = model(input_ids=ids).logits[0, :-1]
            targets = ids[0, 1:].clone()
            targets[: len(e.prompt) - 1] = -100  # the prompt: no loss
            total += torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction="sum").item()
            count += len(e.completion)
    assert loss.item() == pytest.approx(total / count, rel=1e-4)
    # and the prompt's own tokens do not matter to the loss beyond conditioning: a loss over every token differs
    assert abs(loss.item() - _all_token_loss(model, ex)) > 1e-3


def _all_token_loss(model, ex):
    with torch.no_grad():
        vals = []
        for e in ex:
            ids = torch.tensor([list(e.prompt) + list(e.completion)])
            vals.append(torch.nn.functional.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:]).item())
    return sum(vals) / len(vals)


def test_a_reply_cut_by_the_cap_gets_no_eos(tiny):
    tok, _ = tr.load_trainable_policy(str(tiny))
    ids = sft.completion_ids(tok, "one two three four five six seven eight", 3, tok.eos_token_id)
    assert len(ids) == 3 and tok.eos_token_id not in ids
    assert sft.completion_ids(tok, "hi", 8, tok.eos_token_id)[-1] == tok.eos_token_id


def test_sft_loss_is_the_mean_over_completion_tokens():
    lp = torch.tensor([[-1.0, -2.0, 0.0], [-4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert sft.sft_loss(lp, mask).item() == pytest.approx(7 / 3)
    assert sft.sft_loss(lp, torch.zeros_like(mask)).item() == 0.0


# ----------------------------------------------------------------------------------------------
# the command: a run, a kill and its resume, bad input

def write_sft_set(folder: Path, n: int = 16) -> Path:
    chars = make_characters(6, seed=0)
    ctx = make_contexts(chars, n, 1.0, seed=3, prefix="sft")
    replies = [f"Ahoy! Tale {i} of the sea?" for i in range(n)]
    labels = pd.DataFrame({"context_id": ctx["context_id"], "response": replies, "name": "rejection_pick", "value": 1.0})
    folder.mkdir(parents=True, exist_ok=True)
    for kind, df in (("character", chars), ("context", ctx), ("label", labels)):
        io.write_records(df, folder / f"{kind}.parquet", kind)
    return folder


def _args(data, policy, epochs):
    return ["train-policy", "--method", "sft", f"data={data}", f"policy={policy}", f"epochs={epochs}", "batch_size=2",
            "lora_r=4", "lr=0.01", "max_completion_tokens=16"]


EPOCHS = 6


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    return write_sft_set(tmp_path_factory.mktemp("sft_set"))


@pytest.fixture(scope="module")
def reference(sft_data, tiny, tmp_path_factory):
    from rm_helpers import run_cli

    runs = tmp_path_factory.mktemp("ref_runs")
    p = run_cli(*_args(sft_data, tiny, EPOCHS), runs=runs)
    assert p.returncode == 0, p.stderr[-3000:]
    from rm_helpers import only_policy_run

    return only_policy_run(runs)


def test_train_policy_writes_a_loadable_policy_and_only_the_adapters_moved(reference, tiny):
    run = tr.PolicyRun(reference)
    assert run.finished() and (run.adapter / "adapter_model.safetensors").is_file()
    hist = json.loads(run.history.read_text())
    assert [r["epoch"] for r in hist] == list(range(EPOCHS))
    assert hist[-1]["losses/sft"] < hist[0]["losses/sft"]  # it learned the targets
    trained = load_file(str(run.trainable))
    assert trained and all("lora_" in k for k in trained)
    from rm_lab.models import load_policy

    _, new = load_policy(str(run.policy))  # the merged policy loads as a plain causal LM
    _, old = load_policy(str(tiny))
    diff = [n for (n, a), (_, b) in zip(new.named_parameters(), old.named_parameters()) if not torch.equal(a, b)]
    assert diff and all(any(t in n for t in tr.LORA_TARGETS) for n in diff)  # only the adapted projections changed


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_a_killed_train_policy_resumes_to_the_same_weights(sig, sft_data, tiny, reference, tmp_path):
    from rm_helpers import kill_and_resume_policy_run

    kill_and_resume_policy_run(_args(sft_data, tiny, EPOCHS), tmp_path / "runs", reference, sig)


def test_bad_input_is_one_error_line(sft_data, tiny, backbone, tmp_path):
    from rm_helpers import one_error_line, run_cli

    runs = tmp_path / "runs"
    line = one_error_line(run_cli(*_args(sft_data, backbone, 1), runs=runs))  # an encoder, not a causal LM
    assert "not a causal language model" in line
    line = one_error_line(run_cli(*_args(sft_data, tmp_path / "nowhere", 1), runs=runs))
    assert "policy" in line
    line = one_error_line(run_cli(*_args(sft_data, tiny, 1), "label_name=other", runs=runs))
    assert "0 targets" in line and "'other'" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_error_line(run_cli(*_args(empty, tiny, 1), runs=runs))
    assert str(empty) in line
    line = one_error_line(run_cli("train-policy", "--method", "ppo", f"data={sft_data}", runs=runs))
    assert "method" in line and "sft" in line
    assert not (runs / "train-policy").exists() or not any((runs / "train-policy").iterdir())  # no run folder left


def test_the_reference_is_the_policy_before_training(tiny):
    """What DPO and GRPO read: with LoRA the adapter switched off, with full weights a frozen copy."""
    from rm_lab.policy.logprobs import sequence_logprobs

    tok, model = tr.load_trainable_policy(str(tiny))
    ex, *_ = _examples(tok, n=2)
    with torch.no_grad():
        base, _ = sequence_logprobs(model, _objective(tok, model).collate(ex))
    for lora in (True, False):
        tok, m = tr.load_trainable_policy(str(tiny))
        ref = None
        if lora:
            torch.manual_seed(0)
            m = tr.add_lora(m, r=4, alpha=8)
        else:
            ref = tr.frozen_copy(m)
        module = tr.PolicyModule(m, _objective(tok, m), lr=1e-2, reference=ref)
        batch = module.objective.collate(ex)
        for _ in range(2):
            _step(module, batch)
        ref_lp, _ = module.reference_logprobs(batch)
        with torch.no_grad():
            now, _ = sequence_logprobs(module.policy, batch)
        assert torch.allclose(ref_lp, base, atol=1e-5), lora  # the reference did not move
        assert not torch.allclose(now, base, atol=1e-4), lora  # the policy did
        assert set(module.trainable_names()).isdisjoint({f"reference.{n}" for n, _ in (ref or m).named_parameters()})
