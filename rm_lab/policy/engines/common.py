"""What every engine shares: prompt rendering with the chat template and building `Completion`s."""

from __future__ import annotations

from typing import Sequence

from rm_lab.policy.base import Completion, Conversation


def eos_ids(tokenizer, model_generation_config=None) -> tuple[int, ...]:
    """The token ids that end a reply: the tokenizer's EOS and the model's generation EOS ids."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    gen_eos = getattr(model_generation_config, "eos_token_id", None) if model_generation_config else None
    for e in ([gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])):
        if int(e) not in ids:
            ids.append(int(e))
    return tuple(ids)


def render_prompts(tokenizer, conversations: Sequence[Conversation]) -> list[str]:
    """Each conversation through the tokenizer's chat template, ending with the assistant's turn."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the policy's tokenizer has no chat template; a chat policy needs one "
                         "(an instruct model, or set tokenizer.chat_template)")
    return [tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True)
            for c in conversations]


def encode_prompts(tokenizer, conversations: Sequence[Conversation]) -> list[list[int]]:
    texts = render_prompts(tokenizer, conversations)
    return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def make_completion(tokenizer, gen_ids: Sequence[int], logprobs: Sequence[float] | None,
                    eos: Sequence[int], stop_at_eos: bool, prompt_ids: Sequence[int] = ()) -> Completion:
    """Trim generated ids at the first EOS (kept) when stopping at EOS; the rest is padding."""
    gen_ids = [int(t) for t in gen_ids]
    finished = False
    if stop_at_eos:
        for i, t in enumerate(gen_ids):
            if t in eos:
                gen_ids, finished = gen_ids[:i + 1], True
                break
    lps = tuple(float(x) for x in logprobs[:len(gen_ids)]) if logprobs is not None else ()
    text = tokenizer.decode(gen_ids, skip_special_tokens=True).strip()
    return Completion(text=text, token_ids=tuple(gen_ids), logprobs=lps, finished=finished,
                      prompt_token_ids=tuple(int(t) for t in prompt_ids))
