"""`train-policy --method dpo`: DPO on preference pairs as an objective of the policy trainer.

Pairs are canonical `preference` records (chosen, rejected per context): what best-of-n and
rejection-sample write (the reward model's pick over the worst of N samples), or logged preferences.
Each batch packs the chosen replies then the rejected ones behind their shared prompt, so one forward
gives the four sequence log-probs `dpo_loss` reads (completion tokens summed, up to and including the
EOS). The reference is the starting policy: the same network with its LoRA adapter switched off, or a
frozen copy for full-weight training. Metrics carry TRL's names (`rewards/chosen`, `rewards/margins`,
`rewards/accuracies`, `logps/chosen`, ...).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch

from rm_lab.config import ConfigError
from rm_lab.policy.objectives.dpo import LOSS_TYPES, DPOConfig, dpo_loss
from rm_lab.policy.objectives.sft import completion_ids


def dpo_config(cfg) -> DPOConfig:
    """The DPO objective of a TrainPolicyConfig; its errors name the TrainPolicyConfig key."""
    if cfg.beta <= 0:
        raise ConfigError(f"TrainPolicyConfig.beta: dpo needs beta > 0 (the strength of the pull to the reference), "
                          f"got {cfg.beta:g}")
    loss_type = cfg.loss_type or "sigmoid"
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"TrainPolicyConfig.loss_type: dpo expects one of {list(LOSS_TYPES)}, got {loss_type!r}")
    try:
        return DPOConfig(beta=cfg.beta, loss_type=loss_type, label_smoothing=cfg.label_smoothing)
    except ConfigError as e:
        raise ConfigError(str(e).replace("DPOConfig.", "TrainPolicyConfig.")) from None


def check_config(cfg) -> None:
    dpo_config(cfg)


# ----------------------------------------------------------------------------------------------
# the pairs

@dataclass
class PreferenceSet:
    contexts: pd.DataFrame  # one row per pair
    characters: pd.DataFrame
    chosen: list[str]
    rejected: list[str]
    source: str
    dropped_ties: int = 0

    def digest(self) -> str:
        h = hashlib.sha1()
        for cid, c, r in zip(self.contexts["context_id"], self.chosen, self.rejected):
            h.update(f"{cid}\x00{c}\x00{r}\x01".encode())
        return h.hexdigest()


def load_preference_set(folder: str) -> PreferenceSet:
    """(context, chosen, rejected) rows from a folder of canonical records. No pair, an empty reply or a
    context the records lack is an error naming the file, row and field; a pair whose two replies are
    the same text teaches nothing and is dropped (counted)."""
    from rm_lab import io
    from rm_lab.schema import RecordError

    if not folder:
        raise ConfigError("data: give preference pairs, e.g. data=runs/best-of-n/<id> (its best vs worst of N)")
    recs = io.read_record_folder(folder, kinds=("character", "context", "preference"))
    for need in ("character", "context", "preference"):
        if need not in recs:
            raise RecordError(str(folder), None, None, f"no {need} records",
                              f"{need}.parquet (DPO pairs need characters, contexts and preference rows)")
    prefs = recs["preference"].reset_index(drop=True)
    if len(prefs) == 0:
        raise RecordError(f"{folder}/preference", None, None, "0 pairs", "at least one preference row")
    for col in ("chosen", "rejected"):
        empty = [i for i, t in enumerate(prefs[col]) if not str(t).strip()]
        if empty:
            raise RecordError(f"{folder}/preference", empty[0] + 1, col, "", "a non-empty reply")
    ctx = recs["context"].assign(context_id=recs["context"]["context_id"].astype(str))
    known = set(ctx["context_id"])
    ids = prefs["context_id"].astype(str)
    unknown = [i for i, c in enumerate(ids) if c not in known]
    if unknown:
        raise RecordError(f"{folder}/preference", unknown[0] + 1, "context_id", ids[unknown[0]],
                          f"a context_id of {folder}/context ({len(known)} contexts)")
    same = prefs["chosen"].astype(str).str.strip() == prefs["rejected"].astype(str).str.strip()
    kept = prefs[~same].reset_index(drop=True)
    if len(kept) == 0:
        raise RecordError(f"{folder}/preference", None, "rejected", f"{len(prefs)} ties",
                          "at least one pair whose chosen and rejected replies differ")
    rows = ctx.set_index("context_id", drop=False).loc[kept["context_id"].astype(str)].reset_index(drop=True)
    return PreferenceSet(rows, recs["character"], kept["chosen"].astype(str).tolist(),
                         kept["rejected"].astype(str).tolist(), str(folder), int(same.sum()))


@dataclass(frozen=True)
class PairExample:
    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]


def pair_examples(tokenizer, data: PreferenceSet, max_prompt_tokens: int = 512,
                  max_completion_tokens: int = 128) -> list[PairExample]:
    """Token ids per pair: the chat-templated prompt (its most recent tokens) and both replies (+ EOS)."""
    from rm_lab.policy.engines.common import encode_prompts
    from rm_lab.policy.prompts import conversations

    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("policy: its tokenizer has no EOS token, so a reply cannot end")
    prompts = encode_prompts(tokenizer, conversations(data.contexts, data.characters))
    return [PairExample(tuple(p[-max_prompt_tokens:]),
                        tuple(completion_ids(tokenizer, c, max_completion_tokens, eos)),
                        tuple(completion_ids(tokenizer, r, max_completion_tokens, eos)))
            for p, c, r in zip(prompts, data.chosen, data.rejected)]


# ----------------------------------------------------------------------------------------------
# the objective

@dataclass
class DPOObjective:
    """DPO as an objective of `rm_lab.policy.trainer.PolicyModule`: rows [chosen..., rejected...]."""

    cfg: DPOConfig
    eos_ids: tuple[int, ...]
    pad_id: int
    name: str = "dpo"

    def collate(self, examples: Sequence[PairExample]):
        from rm_lab.policy.logprobs import pack

        prompts = [list(e.prompt) for e in examples]
        return pack(prompts + prompts, [list(e.chosen) for e in examples] + [list(e.rejected) for e in examples],
                    self.pad_id, self.eos_ids)

    def sequence_logps(self, module, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(policy sums, reference sums, lengths) for the 2B rows; the reference without gradient."""
        from rm_lab.policy.logprobs import sequence_logprobs

        lp, mask = sequence_logprobs(module.policy, batch)
        ref, _ = module.reference_logprobs(batch)
        return lp.sum(-1), ref.sum(-1), mask.sum(-1).to(lp.dtype), mask

    def loss(self, module, batch) -> tuple[torch.Tensor, dict]:
        pol, ref, lengths, _ = self.sequence_logps(module, batch)
        pc, pr = pol.chunk(2)
        rc, rr = ref.chunk(2)
        lc, lr = lengths.chunk(2)
        loss, metrics = dpo_loss(pc, pr, rc, rr, self.cfg, chosen_lengths=lc, rejected_lengths=lr)
        metrics = dict(metrics)
        metrics["losses/dpo"] = loss.detach().item()
        metrics["charts/completion_tokens"] = float(lengths.sum())
        return loss, metrics


# ----------------------------------------------------------------------------------------------
# the run

def run_dpo(cfg, run_dir, say=print, loaded: tuple | None = None) -> dict:
    """`train-policy --method dpo`: DPO (LoRA or full weights) on preference pairs; resumable; safetensors."""
    import time

    import lightning as L

    from rm_lab import jobs
    from rm_lab.policy import trainer as tr
    from rm_lab.policy.engines.common import eos_ids

    t0 = time.time()
    dcfg = dpo_config(cfg)
    run = tr.PolicyRun(run_dir)
    data = load_preference_set(cfg.data)
    tok, model = loaded or tr.load_trainable_policy(cfg.policy)
    examples = pair_examples(tok, data, cfg.max_prompt_tokens, cfg.max_completion_tokens)
    say(f"{len(examples)} preference pairs from {data.source}"
        + (f" ({data.dropped_ties} ties dropped)" if data.dropped_ties else "")
        + f"; dpo {dcfg.loss_type}, beta {dcfg.beta:g}")
    with jobs.deferred():
        tr.claim(run, tr.identity_of(cfg, data.digest()))
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        model, reference = tr.trainable_with_reference(cfg, model, needs_reference=True, say=say)
        objective = DPOObjective(dcfg, eos_ids(tok, getattr(model, "generation_config", None)), tok.pad_token_id)
        module = tr.PolicyModule(model, objective, cfg.lr, cfg.weight_decay, reference=reference)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        metrics = tr.fit(module, examples, run, cfg.settings(), say)
        jobs.safe_point()
        model.eval()
        tr.save_policy(model, tok, run)
    metrics.update(n_pairs=len(examples), dropped_ties=data.dropped_ties, trainable_parameters=n_train,
                   seconds=round(time.time() - t0, 2), policy=str(run.policy))
    return metrics
