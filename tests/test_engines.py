"""The policy interface and the `hf` engine: prompts, seeded batched sampling, EOS masks, and the
log-probs a training forward recomputes (the check every RL step depends on)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from engines_support import smollm2_folder, tiny_llama, tiny_world
from rm_lab.config import ConfigError, build
from rm_lab.policy.base import (Completion, EngineConfig, GenerationConfig, LLMPolicy, Policy, flatten,
                                repeat_rows)
from rm_lab.policy.engines import load_engine
from rm_lab.policy.engines.common import make_completion, render_prompts
from rm_lab.policy.engines.hf import HFEngine
from rm_lab.policy.logprobs import (completion_mask, pack, pack_completions, position_ids,
                                    sequence_logprobs)
from rm_lab.policy.prompts import conversations, system_prompt
from rm_lab.schema import RecordError

EOS = 2  # SmolLM2's <|im_end|>, also its pad token


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama()


@pytest.fixture(scope="module")
def world():
    return tiny_world(2)


def _engine_logprobs(completions, width):
    out = torch.zeros((len(completions), width))
    for r, c in enumerate(completions):
        out[r, :len(c.logprobs)] = torch.tensor(c.logprobs)
    return out


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("field,value", [("n", 0), ("top_p", 0.0), ("temperature", -0.1), ("max_new_tokens", 0)])
def test_generation_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=f"GenerationConfig.{field}"):
        GenerationConfig(**{field: value})


def test_generation_config_builds_from_a_mapping():
    cfg = build(GenerationConfig, {"n": 8, "temperature": 0.7, "max_new_tokens": 32})
    assert (cfg.n, cfg.temperature, cfg.max_new_tokens, cfg.top_p) == (8, 0.7, 32, 1.0)
    assert cfg.with_(seed=3).seed == 3 and cfg.seed == 0
    with pytest.raises(ConfigError, match="n"):
        build(GenerationConfig, {"n": 0})


def test_engine_config_rejects_unknown_engine():
    with pytest.raises(ConfigError, match="engine"):
        EngineConfig(engine="llama.cpp")


# --------------------------------------------------------------------------- prompts


def test_system_prompt_is_the_character_card(world):
    contexts, chars = world
    card = system_prompt(chars.iloc[0])
    for line in chars.iloc[0]["persona"]:
        assert line in card
    assert "Rules:" in card and "fewer than 80 words" in card


def test_conversation_is_card_then_history(world):
    contexts, chars = world
    convs = conversations(contexts, chars)
    assert len(convs) == len(contexts)
    for conv, (_, ctx) in zip(convs, contexts.iterrows()):
        assert conv[0]["role"] == "system"
        assert conv[1:] == [{"role": t["role"], "content": t["content"]} for t in ctx["history"]]


def test_chat_template_carries_the_card_not_the_default_system_prompt(tiny, world):
    tok, _ = tiny
    contexts, chars = world
    text = render_prompts(tok, conversations(contexts, chars))[0]
    assert "SmolLM" not in text  # the template's default system prompt would talk over the character
    assert system_prompt(chars.set_index("character_id").loc[contexts["character_id"].iat[0]]) in text
    assert text.rstrip().endswith("assistant")


def test_unknown_character_and_empty_history_name_the_row(world):
    contexts, chars = world
    bad = contexts.copy()
    bad.loc[1, "character_id"] = "nobody"
    with pytest.raises(RecordError, match="row 2.*character_id.*nobody"):
        conversations(bad, chars)
    bad = contexts.copy()
    bad.at[0, "history"] = []
    with pytest.raises(RecordError, match="row 1.*history"):
        conversations(bad, chars)


# --------------------------------------------------------------------------- masks and packing


def test_completion_mask_runs_up_to_and_including_the_first_eos():
    ids = torch.tensor([[5, 6, EOS, EOS, EOS],   # finished: pad is EOS, so "not pad" would drop the EOS
                        [5, EOS, 7, EOS, 9],     # tokens after the first EOS are out, even if not EOS
                        [5, 6, 7, 8, 9]])        # cut by the cap: all in
    assert completion_mask(ids, EOS).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert completion_mask(ids, [EOS], lengths=torch.tensor([5, 5, 3])).tolist()[2] == [1, 1, 1, 0, 0]


def test_pack_left_pads_prompts_and_positions_start_at_zero():
    b = pack([[11, 12, 13], [14]], [[5, EOS], [6, 7, 8]], pad_id=EOS, eos_ids=EOS)
    assert b.prompt_width == 3
    assert b.input_ids.tolist() == [[11, 12, 13, 5, EOS, EOS], [EOS, EOS, 14, 6, 7, 8]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert b.completion_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert position_ids(b.attention_mask).tolist() == [[0, 1, 2, 3, 4, 4], [0, 0, 0, 1, 2, 3]]


def test_make_completion_keeps_the_first_eos_and_drops_padding(tiny):
    tok, _ = tiny
    c = make_completion(tok, [28, 29, EOS, EOS, EOS], [-1.0, -2.0, -0.5, -9.0, -9.0], (EOS,), True, [1, 2])
    assert c.token_ids == (28, 29, EOS) and c.logprobs == (-1.0, -2.0, -0.5) and c.finished
    cut = make_completion(tok, [28, 29, 30], [-1.0, -2.0, -3.0], (EOS,), True)
    assert not cut.finished and cut.n_tokens == 3
    assert "<|im_end|>" not in c.text


# --------------------------------------------------------------------------- the hf engine (tiny model)


def test_hf_engine_returns_n_completions_per_conversation_in_order(tiny, world):
    tok, model = tiny
    contexts, chars = world
    eng = HFEngine(tok, model, batch_rows=3)  # 2 prompts x 4 rows do not fit one batch
    groups = eng.generate(conversations(contexts, chars), GenerationConfig(n=4, max_new_tokens=8, temperature=1.0))
    assert [len(g) for g in groups] == [4, 4]
    for g in groups:
        for c in g:
            assert isinstance(c, Completion) and 1 <= c.n_tokens <= 8 and len(c.logprobs) == c.n_tokens
            assert c.finished == (c.token_ids[-1] == EOS) and EOS not in c.token_ids[:-1]
            assert all(lp <= 0 for lp in c.logprobs)
    prompts = [g[0].prompt_token_ids for g in groups]
    assert prompts[0] != prompts[1] and all(c.prompt_token_ids == g[0].prompt_token_ids for g in groups for c in g)
    assert eng.generate([], GenerationConfig()) == []


def test_hf_engine_is_reproducible_for_a_seed(tiny, world):
    tok, model = tiny
    contexts, chars = world
    eng = HFEngine(tok, model, batch_rows=4)
    convs = conversations(contexts, chars)
    cfg = GenerationConfig(n=3, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=5)
    a, b = eng.generate(convs, cfg), eng.generate(convs, cfg)
    assert [c.token_ids for c in flatten(a)] == [c.token_ids for c in flatten(b)]
    assert [c.logprobs for c in flatten(a)] == [c.logprobs for c in flatten(b)]
    other = eng.generate(convs, cfg.with_(seed=6))
    assert [c.token_ids for c in flatten(a)] != [c.token_ids for c in flatten(other)]
    g = torch.get_rng_state()
    eng.generate(convs, cfg)
    assert torch.equal(g, torch.get_rng_state())  # the caller's RNG stream is left alone


def test_hf_greedy_does_not_depend_on_batching(tiny, world):
    """Left padding and positions in generate are right: a prompt batched with a longer one decodes
    exactly as it does alone."""
    tok, model = tiny
    contexts, chars = world
    convs = conversations(contexts, chars)
    cfg = GenerationConfig(n=1, max_new_tokens=8, temperature=0.0)
    together = HFEngine(tok, model, batch_rows=8).generate(convs, cfg)
    alone = HFEngine(tok, model, batch_rows=1).generate(convs, cfg)
    assert [c.token_ids for c in flatten(together)] == [c.token_ids for c in flatten(alone)]
    for x, y in zip(flatten(together), flatten(alone)):
        assert max(abs(p - q) for p, q in zip(x.logprobs, y.logprobs)) < 1e-4


def test_hf_logprobs_match_the_training_forward(tiny, world):
    tok, model = tiny
    contexts, chars = world
    eng = HFEngine(tok, model, batch_rows=8)
    cfg = GenerationConfig(n=4, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=1)
    comps = flatten(eng.generate(conversations(contexts, chars), cfg))
    assert {c.finished for c in comps} == {True, False}  # both kinds of rows are checked
    batch = pack_completions(comps, tok.pad_token_id, eng.eos)
    with torch.no_grad():
        lp, mask = sequence_logprobs(model, batch, temperature=cfg.temperature)
    assert mask.sum(1).tolist() == [c.n_tokens for c in comps]
    diff = ((lp - _engine_logprobs(comps, lp.shape[1])) * mask).abs().max().item()
    assert diff < 1e-3


def test_logprobs_match_with_absolute_positions_only_when_positions_skip_padding(tiny, world):
    """A model with absolute position embeddings (GPT-2) sees left padding in its positions: the
    recompute matches the engine with mask-derived positions and drifts without them."""
    tok, _ = tiny
    from transformers import GPT2Config, GPT2LMHeadModel

    from rm_lab.policy.logprobs import token_logprobs

    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=EOS, eos_token_id=EOS, pad_token_id=EOS)).eval()
    contexts, chars = world
    comps = flatten(HFEngine(tok, gpt).generate(conversations(contexts, chars),
                                                GenerationConfig(n=2, max_new_tokens=6, temperature=1.0)))
    b = pack_completions(comps, tok.pad_token_id, (EOS,))
    assert (b.attention_mask[:, :b.prompt_width] == 0).any()  # some prompt is left-padded
    C = b.input_ids.shape[1] - b.prompt_width
    engine_lp = _engine_logprobs(comps, C)
    with torch.no_grad():
        lp, mask = sequence_logprobs(gpt, b, temperature=1.0)
        naive = gpt(input_ids=b.input_ids, attention_mask=b.attention_mask).logits  # positions 0..T-1
    assert ((lp - engine_lp) * mask).abs().max().item() < 1e-3
    naive_lp = token_logprobs(naive[:, -(C + 1):-1], b.completion_ids)
    assert ((naive_lp - engine_lp) * mask).abs().max().item() > 1e-3


def test_a_lora_wrapped_policy_samples_and_recomputes_the_same_logprobs(world):
    """SFT/GRPO train a peft LoRA wrapper of the very model the engine samples from."""
    from peft import LoraConfig, get_peft_model

    tok, model = tiny_llama(seed=1)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    lora.eval()
    contexts, chars = world
    eng = HFEngine(tok, lora)
    comps = flatten(eng.generate(conversations(contexts, chars), GenerationConfig(n=2, max_new_tokens=6,
                                                                                  temperature=1.0)))
    b = pack_completions(comps, tok.pad_token_id, eng.eos)
    with torch.no_grad():
        lp, mask = sequence_logprobs(lora, b)
    assert ((lp - _engine_logprobs(comps, lp.shape[1])) * mask).abs().max().item() < 1e-3


def test_stop_at_eos_false_runs_to_the_cap(tiny, world):
    tok, model = tiny
    contexts, chars = world
    comps = flatten(HFEngine(tok, model).generate(
        conversations(contexts, chars), GenerationConfig(n=3, max_new_tokens=6, temperature=1.0, stop_at_eos=False)))
    assert all(c.n_tokens == 6 and not c.finished for c in comps)


def test_llm_policy_is_a_policy(tiny, world):
    tok, model = tiny
    contexts, chars = world
    pol = LLMPolicy(HFEngine(tok, model), GenerationConfig(n=5, max_new_tokens=6, temperature=1.0), name="tiny")
    assert isinstance(pol, Policy)
    replies = pol.respond(contexts, chars, seed=3)
    assert len(replies) == len(contexts) and all(isinstance(r, str) for r in replies)
    assert replies == pol.respond(contexts, chars, seed=3)
    groups = pol.sample(contexts, chars, n=2)
    assert [len(g) for g in groups] == [2, 2]
    reps = repeat_rows(contexts, 2)
    assert reps["context_id"].tolist() == [cid for cid in contexts["context_id"] for _ in range(2)]


def test_load_engine_from_a_model_folder(tiny, tmp_path, world):
    tok, _ = tiny
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=1, eos_token_id=EOS, pad_token_id=EOS))
    m.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    contexts, chars = world
    threads = torch.get_num_threads()
    try:
        with load_engine(EngineConfig(engine="hf", model=str(tmp_path / "lm"), batch_rows=2, threads=1)) as eng:
            assert eng.name == "hf" and eng.batch_rows == 2 and torch.get_num_threads() == 1
            groups = eng.generate(conversations(contexts, chars), GenerationConfig(n=1, max_new_tokens=3))
    finally:
        torch.set_num_threads(threads)
    assert [len(g) for g in groups] == [1, 1]


def test_a_policy_path_that_is_not_a_causal_lm_is_one_clear_error():
    from rm_lab.models import NotACausalLM, encoder_path

    with pytest.raises(NotACausalLM, match=r"is not a causal language model \(model_type 'bert'"):
        load_engine(EngineConfig(engine="hf", model=str(encoder_path())))


def test_a_broken_config_is_one_clear_error(tmp_path):
    from rm_lab.models import NotACausalLM, load_policy

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "no-such-arch"}')
    with pytest.raises(NotACausalLM, match="config.json is not a Hugging Face model config"):
        load_policy(tmp_path / "m")


# --------------------------------------------------------------------------- the hf engine on SmolLM2


@pytest.mark.models
def test_smollm2_logprobs_match_the_training_forward_and_are_reproducible(world):
    eng = load_engine(EngineConfig(engine="hf", model=str(smollm2_folder())))
    contexts, chars = world
    cfg = GenerationConfig(n=2, max_new_tokens=8, temperature=0.8, top_p=0.95, seed=2)
    convs = conversations(contexts, chars)
    groups = eng.generate(convs, cfg)
    comps = flatten(groups)
    assert all(c.text for c in comps)
    assert [c.token_ids for c in comps] == [c.token_ids for c in flatten(eng.generate(convs, cfg))]
    batch = pack_completions(comps, eng.tokenizer.pad_token_id, eng.eos)
    with torch.no_grad():
        lp, mask = sequence_logprobs(eng.model, batch, temperature=cfg.temperature)
    assert ((lp - _engine_logprobs(comps, lp.shape[1])) * mask).abs().max().item() < 1e-3
