"""`train-policy --method grpo`: online GRPO against a reward model, as an objective of the policy trainer.

Every optimizer step is one generation: the batch's prompts are sampled `group_size` times from the
*current* policy (`rm_lab.policy.rollout.LiveSampler`, the hf engine on the live weights), the replies
are scored by `rm_lab.policy.rewards.CombinedReward` (weighted reward-model heads, normalised per group
or batch, minus the ensemble's uncertainty, length and emoji penalties, plus the verifiable
steerability share), turned into group advantages (`group_advantages`), and pushed by the clipped
loss with the k3 KL to the reference (`grpo_loss`). One update per generation, as TRL's default
(`num_iterations=1`): the sampling policy is the policy, so the ratio is 1 in value and only its
gradient matters. Groups whose rewards are all equal carry no signal: they are counted
(`frac_reward_zero_std`, `zero_std_groups`) and, by default, dropped before the forward pass.

Metrics use TRL's names: `reward`, `reward_std`, `frac_reward_zero_std`, `rewards/<component>/mean|std|
frac_zero_std`, `kl`, `clip_ratio/...`, `completions/mean_length`, `completions/clipped_ratio`; and
`timing/generate_s`, `timing/reward_s` (a step's share spent sampling is in view, as nanoGPT's MFU).

Prompts are a data folder's contexts (with their characters), optionally `n_prompts` of them with the
traffic mix kept (`fresh_contexts`), optionally narrowed by the paper's variance-based selection
(`select_by_reward`: one sampling pass of the starting policy; the same seed gives the same prompts, so
a resume trains on the same set). Sampling seeds derive from the run's seed, the epoch and the batch's
prompt rows, so a killed run resumes to the same weights.
"""

from __future__ import annotations

import dataclasses

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch

from rm_lab.config import ConfigError
from rm_lab.policy.base import GenerationConfig
from rm_lab.policy.objectives.grpo import LOSS_TYPES, GRPOConfig, group_advantages, grpo_loss


def grpo_config(cfg) -> GRPOConfig:
    """The GRPO objective of a TrainPolicyConfig; its errors name the TrainPolicyConfig key."""
    loss_type = cfg.loss_type or "dapo"
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"TrainPolicyConfig.loss_type: grpo expects one of {list(LOSS_TYPES)}, got {loss_type!r}")
    if cfg.group_size < 2:
        raise ConfigError(f"TrainPolicyConfig.group_size: grpo needs group_size >= 2 (a group of one has no "
                          f"baseline), got {cfg.group_size}")
    try:
        return GRPOConfig(num_generations=cfg.group_size, epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high,
                          beta=cfg.beta, scale_rewards=cfg.scale_rewards, loss_type=loss_type,
                          max_completion_length=cfg.max_completion_tokens,
                          skip_zero_std_groups=cfg.skip_zero_std_groups)
    except ConfigError as e:
        raise ConfigError(str(e).replace("GRPOConfig.num_generations", "TrainPolicyConfig.group_size")
                          .replace("GRPOConfig.", "TrainPolicyConfig.")) from None


def reward_config(cfg, normalize: str | None = None):
    from rm_lab.policy.rewards import RewardConfig

    try:
        return RewardConfig(heads=dict(cfg.reward_heads), normalize=normalize or cfg.reward_normalize,
                            uncertainty=cfg.uncertainty_penalty, length_penalty=cfg.length_penalty,
                            length_target=cfg.length_target, emoji_penalty=cfg.emoji_penalty,
                            steer_weight=cfg.steer_weight, truncation_penalty=cfg.truncation_penalty)
    except ConfigError as e:
        raise ConfigError(str(e).replace("RewardConfig.heads", "TrainPolicyConfig.reward_heads")
                          .replace("RewardConfig.uncertainty", "TrainPolicyConfig.uncertainty_penalty")) from None


def check_config(cfg) -> None:
    """What a config alone can get wrong (paths are read by `check_inputs`, so a YAML may leave them empty)."""
    grpo_config(cfg)
    reward_config(cfg)


def check_reward_model(cfg) -> None:
    if cfg.reward_heads and not cfg.reward_model:
        raise ConfigError(f"TrainPolicyConfig.reward_model: reward_heads {sorted(cfg.reward_heads)} need a reward "
                          "model: give reward_model=runs/train-rm/<id> (or reward_heads={} with a length, emoji "
                          "or steer reward)")


# ----------------------------------------------------------------------------------------------
# the prompts and the reward

@dataclass
class PromptSet:
    contexts: pd.DataFrame
    characters: pd.DataFrame
    source: str

    def digest(self) -> str:
        h = hashlib.sha1()
        for cid in self.contexts["context_id"].astype(str):
            h.update(f"{cid}\x01".encode())
        return h.hexdigest()


def load_prompt_set(folder: str, n: int | None = None, seed: int = 0) -> PromptSet:
    """The contexts (and their characters) of a records folder, `n` of them with the traffic mix kept.
    No contexts is an error: GRPO has nothing to sample from."""
    from rm_lab import io
    from rm_lab.policy.prompt_selection import fresh_contexts
    from rm_lab.policy.prompts import conversations
    from rm_lab.schema import RecordError

    if not folder:
        raise ConfigError("data: give the prompts, a folder of context and character records "
                          "(e.g. data=runs/simulate/<id>)")
    recs = io.read_record_folder(folder, kinds=("character", "context"))
    for need in ("character", "context"):
        if need not in recs:
            raise RecordError(str(folder), None, None, f"no {need} records",
                              f"{need}.parquet (GRPO prompts are contexts and the characters that answer them)")
    ctx = recs["context"]
    if len(ctx) == 0:
        raise RecordError(f"{folder}/context", None, None, "0 contexts",
                          "at least one context to sample replies for (an empty prompt set)")
    ctx = fresh_contexts(ctx, n, seed=seed, source=f"{folder}/context")
    try:
        conversations(ctx, recs["character"])  # an unknown character or an empty history, named by row
    except RecordError as e:
        raise RecordError(f"{folder}/context", e.row, e.field, e.value, e.expected) from None
    return PromptSet(ctx.reset_index(drop=True), recs["character"], str(folder))


def load_reward(cfg, normalize: str | None = None):
    """`CombinedReward` of the config over its reward model; a head the model lacks is a ConfigError
    naming the head, the model folder and the heads it has."""
    from rm_lab.policy.rewards import CombinedReward

    check_reward_model(cfg)
    rcfg = reward_config(cfg, normalize)
    model = None
    if rcfg.heads:
        from rm_lab.reward.model import RewardModel

        model = RewardModel.load(cfg.reward_model)
    try:
        return CombinedReward(rcfg, model, where=f"reward model {cfg.reward_model}")
    except ConfigError as e:
        raise ConfigError(str(e).replace("RewardConfig.uncertainty", "TrainPolicyConfig.uncertainty_penalty")) \
            from None


def reward_digest(cfg) -> str:
    """What the reward model's identity adds to a run's: its config and weights (size and bytes' sha1)."""
    if not cfg.reward_model:
        return ""
    h = hashlib.sha1()
    for f in sorted(Path(cfg.reward_model).glob("*.json")) + sorted(Path(cfg.reward_model).glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(hashlib.sha1(f.read_bytes()).digest())
    return h.hexdigest()


def check_inputs(cfg) -> None:
    """What the CLI refuses before a run folder exists: the prompts and the reward (heads checked)."""
    load_prompt_set(cfg.data, cfg.n_prompts, cfg.seed)
    load_reward(cfg)


# ----------------------------------------------------------------------------------------------
# the objective

@dataclass
class GRPOObjective:
    """GRPO as an objective of `rm_lab.policy.trainer.PolicyModule`: a batch is prompt rows; `loss`
    samples their groups from the live policy, scores them and returns the clipped loss."""

    cfg: GRPOConfig
    generation: GenerationConfig  # n = the group size
    reward: Callable  # CombinedReward (.score -> RewardScores)
    prompts: PromptSet
    sampler: object  # rm_lab.policy.rollout.LiveSampler on the trained module's policy
    eos_ids: tuple[int, ...]
    pad_id: int
    seed: int = 0
    name: str = "grpo"
    steps: list[dict] = field(default_factory=list)  # per step: start time, generate_s, reward_s (benchmarks)

    def collate(self, rows: Sequence[int]) -> list[int]:
        return sorted(int(r) for r in rows)

    def rollout(self, module, rows: Sequence[int]):
        from rm_lab.policy.rollout import step_seed

        ctx = self.prompts.contexts.iloc[list(rows)].reset_index(drop=True)
        gen = self.generation.with_(seed=step_seed(self.seed, module.current_epoch, *rows) % (2 ** 62))
        return self.sampler.sample(ctx, self.prompts.characters, gen)

    def loss(self, module, batch: list[int]) -> tuple[torch.Tensor, dict]:
        from rm_lab.policy.logprobs import sequence_logprobs

        t0 = time.perf_counter()
        ro = self.rollout(module, batch)
        t1 = time.perf_counter()
        scores = self.reward.score(ro.contexts, ro.texts, self.prompts.characters, finished=ro.finished().numpy())
        t2 = time.perf_counter()
        adv = group_advantages(scores.total, ro.group_size, self.cfg.scale_rewards)
        keep = adv.keep if self.cfg.skip_zero_std_groups else torch.ones_like(adv.keep)
        lengths, finished = ro.lengths(), ro.finished()
        logs = {k: float(v) for k, v in scores.metrics.items()}
        logs.update({"zero_std_groups": float(adv.n_zero_std_groups), "groups": float(adv.n_groups),
                     "completions/mean_length": float(lengths.mean()),
                     "completions/min_length": float(lengths.min()), "completions/max_length": float(lengths.max()),
                     "completions/clipped_ratio": float((~finished).float().mean()),
                     "timing/generate_s": t1 - t0, "timing/reward_s": t2 - t1})
        self.steps.append({"start": t0, "generate_s": t1 - t0, "reward_s": t2 - t1})
        if not bool(keep.any()):  # every group tied: nothing to learn, and no forward pass to pay for
            zero = sum(p.sum() for p in module.policy.parameters() if p.requires_grad) * 0.0
            logs.update({"kl": 0.0, "clip_ratio/region_mean": 0.0, "losses/grpo": 0.0})
            return zero, logs
        rows = keep.nonzero().flatten().tolist()
        packed = ro.packed(self.pad_id, self.eos_ids, rows)
        temperature = self.generation.temperature
        logps, mask = sequence_logprobs(module.policy, packed, temperature=temperature)
        ref = module.reference_logprobs(packed, temperature=temperature)[0] if self.cfg.beta else None
        loss, m = grpo_loss(logps, None, ref, adv.advantages[keep], mask.to(logps.dtype), self.cfg)
        m.pop("completions/mean_length", None)  # that of all replies is logged above, not of the kept ones
        logs.update({k: float(v) for k, v in m.items()})
        logs["losses/grpo"] = float(loss.detach())
        return loss, logs


def build_objective(cfg, tok, model, prompts: PromptSet, reward) -> GRPOObjective:
    """The objective of a TrainPolicyConfig over the (already adapted) policy `model`."""
    from rm_lab.policy.engines.common import eos_ids
    from rm_lab.policy.rollout import LiveSampler

    gen = GenerationConfig(n=cfg.group_size, temperature=cfg.temperature, top_p=cfg.top_p,
                           max_new_tokens=cfg.max_completion_tokens, seed=0, stop_at_eos=True)
    sampler = LiveSampler(tok, model, batch_rows=cfg.generation_batch_rows)
    return GRPOObjective(grpo_config(cfg), gen, reward, prompts, sampler,
                         eos_ids(tok, getattr(model, "generation_config", None)), int(tok.pad_token_id), cfg.seed)


def select_prompts(cfg, tok, model, prompts: PromptSet, say=print) -> tuple[PromptSet, pd.DataFrame | None]:
    """The paper's variance-based selection with the starting policy (`prompt_selection` != all): one
    sampling pass of group_size replies per prompt, scored on the raw (unnormalised) reward."""
    from rm_lab.policy.prompt_selection import PromptSelectionConfig, select_by_reward
    from rm_lab.policy.rollout import LiveSampler, step_seed

    if cfg.prompt_selection == "all":
        return prompts, None
    # prompts are ranked on the reward model's map; the truncation term needs each reply's EOS, which the
    # selection pass does not keep, and it is a property of the reply, not of the prompt
    raw = load_reward(dataclasses.replace(cfg, truncation_penalty=0.0), normalize="none")
    sampler = LiveSampler(tok, model, batch_rows=cfg.generation_batch_rows)
    gen = GenerationConfig(n=cfg.group_size, temperature=cfg.temperature, top_p=cfg.top_p,
                           max_new_tokens=cfg.max_completion_tokens, seed=step_seed(cfg.seed, "select") % (2 ** 62))

    def sample(ctx, chars, n):
        ro = sampler.sample(ctx.reset_index(drop=True), chars, gen.with_(n=n))
        return [ro.texts[i * n:(i + 1) * n] for i in range(len(ctx))]

    sel = PromptSelectionConfig(rule=cfg.prompt_selection, keep=cfg.prompt_keep, n_samples=cfg.group_size)
    kept, table = select_by_reward(prompts.contexts, prompts.characters, sample, raw, sel)
    if kept.empty:
        raise ConfigError(f"prompt_selection: no prompt of {prompts.source} kept by rule {cfg.prompt_selection!r} "
                          f"(every prompt's {cfg.group_size} samples got the same reward)")
    say(f"prompt selection ({cfg.prompt_selection}, keep {cfg.prompt_keep:g}): {len(kept)} of "
        f"{len(prompts.contexts)} prompts")
    return PromptSet(kept, prompts.characters, prompts.source), table


# ----------------------------------------------------------------------------------------------
# the run

def run_grpo(cfg, run_dir, say=print, loaded: tuple | None = None) -> dict:
    """`train-policy --method grpo`: online GRPO (LoRA or full weights) against a reward model; resumable."""
    import lightning as L

    from rm_lab import io, jobs
    from rm_lab.policy import trainer as tr

    t0 = time.time()
    run = tr.PolicyRun(run_dir)
    prompts = load_prompt_set(cfg.data, cfg.n_prompts, cfg.seed)
    reward = load_reward(cfg)
    tok, model = loaded or tr.load_trainable_policy(cfg.policy)
    with jobs.deferred():
        tr.claim(run, tr.identity_of(cfg, hashlib.sha1((prompts.digest() + reward_digest(cfg)).encode()).hexdigest()))
        prompts, table = select_prompts(cfg, tok, model, prompts, say)
        if table is not None:
            io.write_json(run.root / "prompt_selection.json", table.to_dict(orient="records"))
        say(f"{len(prompts.contexts)} prompts from {prompts.source} x {cfg.group_size} samples, "
            f"{cfg.batch_size} prompts a step; reward {sorted(reward.cfg.heads) or ''} "
            f"{'(' + cfg.reward_model + ')' if cfg.reward_model else ''}")
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        model, reference = tr.trainable_with_reference(cfg, model, needs_reference=cfg.beta > 0, say=say)
        objective = build_objective(cfg, tok, model, prompts, reward)
        module = tr.PolicyModule(model, objective, cfg.lr, cfg.weight_decay, reference=reference)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        metrics = tr.fit(module, list(range(len(prompts.contexts))), run, cfg.settings(), say)
        jobs.safe_point()
        model.eval()
        tr.save_policy(model, tok, run)
    gen_s = sum(s["generate_s"] for s in objective.steps)
    metrics.update(n_prompts=len(prompts.contexts), group_size=cfg.group_size, trainable_parameters=n_train,
                   seconds=round(time.time() - t0, 2), seconds_generating=round(gen_s, 2),
                   policy=str(run.policy))
    return metrics

