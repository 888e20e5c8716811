"""Supervised fine-tuning on chosen replies, with the loss on the completion only.

Rejection sampling distils the reward model's best of N into the policy: SFT on (context, best reply).
The prompt (the character card and the conversation so far) is the condition, not a target: its tokens
carry no loss, or the policy would spend its capacity learning to write the user's turns and the card.
The completion runs up to and including its EOS (`rm_lab.policy.logprobs.completion_mask`: SmolLM2's
pad is its EOS, so "not pad" would drop the very token that teaches the policy to stop); a reply cut by
the token cap has no EOS to learn, and gets none.

The loss is the mean negative log-likelihood per completion token over the batch (TRL's SFT default), read
from the same `sequence_logprobs` the RL objectives use, so SFT, DPO and GRPO score a reply identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch

from rm_lab.config import ConfigError


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the completion tokens (mask 1) over the whole batch."""
    m = mask.to(logprobs.dtype)
    n = m.sum()
    if n <= 0:
        return logprobs.sum() * 0.0
    return -(logprobs * m).sum() / n


def completion_ids(tokenizer, reply: str, max_tokens: int, eos_id: int) -> list[int]:
    """The reply's tokens plus EOS; a reply longer than `max_tokens` is cut and gets no EOS (it did not end)."""
    ids = list(tokenizer(reply, add_special_tokens=False)["input_ids"])
    if len(ids) >= max_tokens:
        return ids[:max_tokens]
    return ids + [eos_id]


@dataclass(frozen=True)
class Example:
    prompt: tuple[int, ...]
    completion: tuple[int, ...]


def sft_examples(tokenizer, contexts: pd.DataFrame, characters: pd.DataFrame, replies: Sequence[str],
                 max_prompt_tokens: int = 512, max_completion_tokens: int = 128) -> list[Example]:
    """(prompt ids, completion ids) per (context row, reply); an over-long prompt keeps its last tokens
    (the most recent turns and the assistant header), as generation would see them."""
    from rm_lab.policy.engines.common import encode_prompts
    from rm_lab.policy.prompts import conversations

    if len(replies) != len(contexts):
        raise ValueError(f"sft_examples: {len(replies)} replies for {len(contexts)} contexts")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("policy: its tokenizer has no EOS token, so a completion cannot be taught to end")
    prompts = encode_prompts(tokenizer, conversations(contexts, characters))  # exactly what the engines sample from
    return [Example(tuple(p[-max_prompt_tokens:]), tuple(completion_ids(tokenizer, str(r), max_completion_tokens, eos)))
            for p, r in zip(prompts, replies)]


@dataclass
class SFTObjective:
    """SFT as an objective of `rm_lab.policy.trainer.PolicyModule`: batches of packed examples."""

    eos_ids: tuple[int, ...]
    pad_id: int
    name: str = "sft"

    def collate(self, examples: Sequence[Example]):
        from rm_lab.policy.logprobs import pack

        return pack([list(e.prompt) for e in examples], [list(e.completion) for e in examples], self.pad_id,
                    self.eos_ids)

    def loss(self, module, batch) -> tuple[torch.Tensor, dict]:
        from rm_lab.policy.logprobs import sequence_logprobs

        lp, mask = sequence_logprobs(module.policy, batch)
        loss = sft_loss(lp, mask)
        return loss, {"losses/sft": loss.detach(), "charts/completion_tokens": mask.sum().detach().float()}


# ----------------------------------------------------------------------------------------------
# the SFT set and the `train-policy --method sft` run

@dataclass
class SFTSet:
    contexts: pd.DataFrame  # one row per target (a context may have several)
    characters: pd.DataFrame
    replies: list[str]
    source: str

    def digest(self) -> str:
        import hashlib

        h = hashlib.sha1()
        for cid, r in zip(self.contexts["context_id"], self.replies):
            h.update(f"{cid}\x00{r}\x01".encode())
        return h.hexdigest()


def load_sft_set(folder: str, targets: str = "label", label_name: str = "rejection_pick") -> SFTSet:
    """(context, target reply) rows from a folder of canonical records: label rows named `label_name`
    (what rejection-sample writes), or the chosen side of preference rows. No target is an error."""
    from rm_lab import io
    from rm_lab.schema import RecordError

    if not folder:
        raise ConfigError("data: give an SFT set, e.g. data=runs/rejection-sample/<id>")
    kind = "label" if targets == "label" else "preference"
    recs = io.read_record_folder(folder, kinds=("character", "context", kind))
    for need in ("character", "context", kind):
        if need not in recs:
            raise RecordError(str(folder), None, None, f"no {need} records",
                              f"{need}.parquet (an SFT set holds characters, contexts and {kind} rows)")
    rows = recs[kind]
    if kind == "label":
        rows = rows[rows["name"] == label_name]
        texts = rows["response"]
    else:
        texts = rows["chosen"]
    if len(rows) == 0:
        raise RecordError(f"{folder}/{kind}", None, "name" if kind == "label" else None, "0 targets",
                          f"at least one {kind} row{' named ' + repr(label_name) if kind == 'label' else ''} "
                          "(the replies to fine-tune on)")
    empty = [i for i, t in enumerate(texts) if not str(t).strip()]
    if empty:
        raise RecordError(f"{folder}/{kind}", empty[0] + 1, "response" if kind == "label" else "chosen", "",
                          "a non-empty reply to train on")
    ctx = recs["context"].set_index("context_id", drop=False).loc[rows["context_id"].astype(str)].reset_index(drop=True)
    return SFTSet(ctx, recs["character"], [str(t) for t in texts], str(folder))


def run_sft(cfg, run_dir, say=print, loaded: tuple | None = None) -> dict:
    """`train-policy --method sft`: SFT (LoRA or full weights) on an SFT set; resumable; saves safetensors."""
    import time

    import lightning as L

    from rm_lab import jobs
    from rm_lab.policy import trainer as tr
    from rm_lab.policy.engines.common import eos_ids

    t0 = time.time()
    run = tr.PolicyRun(run_dir)
    data = load_sft_set(cfg.data, cfg.targets, cfg.label_name)
    tok, model = loaded or tr.load_trainable_policy(cfg.policy)
    examples = sft_examples(tok, data.contexts, data.characters, data.replies, cfg.max_prompt_tokens,
                            cfg.max_completion_tokens)
    n_tokens = sum(len(e.completion) for e in examples)
    say(f"{len(examples)} SFT examples ({n_tokens} target tokens) from {data.source}")
    with jobs.deferred():
        tr.claim(run, tr.identity_of(cfg, data.digest()))
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        if cfg.lora:
            model = tr.add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
        model.train()
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in model.parameters())
        say(f"{n_train:,} of {n_all:,} parameters trainable ({'LoRA r=' + str(cfg.lora_r) if cfg.lora else 'full'})")
        objective = SFTObjective(eos_ids(tok, getattr(model, "generation_config", None)), tok.pad_token_id)
        module = tr.PolicyModule(model, objective, cfg.lr, cfg.weight_decay)
        metrics = tr.fit(module, examples, run, cfg.settings(), say)
        jobs.safe_point()
        model.eval()
        tr.save_policy(model, tok, run)
    metrics.update(n_examples=len(examples), target_tokens=n_tokens, trainable_parameters=n_train,
                   parameters=n_all, seconds=round(time.time() - t0, 2), policy=str(run.policy))
    return metrics
