"""Shared fixtures of the reward-model tests: a tiny random BERT with the MiniLM tokenizer (so
training with an unfrozen encoder takes seconds) and a tiny simulated world."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rm_lab.world.simulate import WorldConfig, simulate

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, runs: Path, **env) -> subprocess.CompletedProcess:
    """The real entry point (rm_lab.cli.main), as a user runs it."""
    e = {**os.environ, "RM_LAB_RUNS": str(runs), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", "rm_lab.cli", *args], capture_output=True, text=True, env=e,
                          cwd=ROOT, timeout=300)


def one_error_line(p: subprocess.CompletedProcess) -> str:
    """Exit status 2 and exactly one `error:` line, no traceback: what every bad input must give."""
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


def make_tiny_backbone(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rm_lab.models import encoder_path

    if (folder / "config.json").exists():
        return folder
    tok = AutoTokenizer.from_pretrained(str(encoder_path()), local_files_only=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def tiny_world(seed: int = 0, n: int = 40, spurious: bool = False):
    return simulate(WorldConfig(seed=seed, n_characters=6, n_contexts=n, n_preference_contexts=n,
                                spurious_emoji=spurious))


def signal_when(p: subprocess.Popen, ready, sig: int, wait_s: float = 300) -> tuple[str, str]:
    """Wait (up to `wait_s`) until `ready()` holds while `p` still runs, send it `sig`, and return
    its (stdout, stderr); fails if `p` ended before the signal could be sent."""
    import time

    deadline = time.time() + wait_s
    while time.time() < deadline and p.poll() is None and not ready():
        time.sleep(0.05)
    assert p.poll() is None, "training ended before the signal could be sent"
    p.send_signal(sig)
    return p.communicate(timeout=300)


def optimizer_step(module, batch):
    """One hand-driven optimisation step of a PolicyModule's objective: (loss, logs)."""
    opt = module.configure_optimizers()
    opt.zero_grad()
    loss, logs = module.objective.loss(module, batch)
    loss.backward()
    opt.step()
    return loss, logs


def only_policy_run(runs: Path) -> Path:
    """The one train-policy run folder under `runs`."""
    (run,) = (runs / "train-policy").iterdir()
    return run


def kill_and_resume_policy_run(args: list[str], runs: Path, reference: Path, sig: int = 15) -> Path:
    """Start `rm_lab <args>`, stop it with `sig` once its first checkpoint exists, resume it, and assert it
    stopped cleanly and resumed to weights bit-identical to the uninterrupted `reference` run's."""
    import torch
    from safetensors.torch import load_file
    from test_jobs import _cli

    from rm_lab.policy.trainer import PolicyRun

    p = _cli(args, runs)
    out, err = signal_when(p, lambda: any(runs.glob("train-policy/*/checkpoints/last.ckpt")), sig)
    run = only_policy_run(runs).resolve()
    assert p.returncode == 128 + sig, (p.returncode, err[-3000:])
    assert f"rm_lab train-policy --resume {run}" in err and "Traceback" not in err
    assert not PolicyRun(run).finished()
    res = _cli(["train-policy", "--resume", str(run)], runs)
    out, err = res.communicate(timeout=600)
    assert res.returncode == 0, err[-3000:]
    assert "resuming from" in out
    a, b = load_file(str(PolicyRun(reference).trainable)), load_file(str(PolicyRun(run).trainable))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical
    # the per-step log: the epoch that was cut short is replaced, not doubled
    sa, sb = (json.loads(PolicyRun(r).steps.read_text()) for r in (reference, run))
    assert [(r["epoch"], r["step"]) for r in sb] == [(r["epoch"], r["step"]) for r in sa]
    return run
