"""Seeds and scheduler settings of the vLLM engines, checked without starting vLLM."""
from __future__ import annotations

import pytest

from rm_lab.policy.engines.vllm import cpu_scheduler_kwargs, prompt_seed


@pytest.mark.parametrize("seed", [0, 7, 2 ** 40])
@pytest.mark.parametrize("n", [1, 2, 8])
def test_no_two_samples_of_a_call_share_a_seed(seed, n):
    # vLLM gives the n samples of a prompt seed + 0..n-1; prompts spaced by 1 made sample j of prompt i
    # and sample j-1 of prompt i+1 draw the same random stream
    seeds = [prompt_seed(seed, i, n) + j for i in range(64) for j in range(n)]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2 ** 31 - 1 for s in seeds)
    assert prompt_seed(seed, 3, n) == prompt_seed(seed, 3, n)
    assert prompt_seed(seed, 0, n) != prompt_seed(seed + 1, 0, n)


def test_cpu_scheduler_prefills_whole_prompts():
    kw = cpu_scheduler_kwargs({"seed": 1}, max_model_len=2048)
    assert kw["enable_chunked_prefill"] is False and kw["max_num_batched_tokens"] >= 2048 and kw["seed"] == 1
    assert cpu_scheduler_kwargs({"max_num_batched_tokens": 1024}, 4096)["max_num_batched_tokens"] == 4096
    assert cpu_scheduler_kwargs({"max_num_batched_tokens": 16384}, 2048)["max_num_batched_tokens"] == 16384
    with pytest.raises(ValueError, match="enable_chunked_prefill=False"):
        cpu_scheduler_kwargs({"enable_chunked_prefill": True}, 2048)
