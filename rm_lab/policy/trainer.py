"""One Lightning loop for the policy objectives: a trainable policy, an optional frozen reference, an objective.

SFT uses no reference; DPO and GRPO read log-probs of a frozen reference, which is either a frozen copy
(full-weight training) or the same network with its LoRA adapter switched off (`reference_logprobs`), so
LoRA needs no second copy of the weights. An objective is any object with `collate(examples) -> batch`
and `loss(module, batch) -> (loss, logs)`; logs use CleanRL-style namespaces (`losses/...`, `charts/...`).

Checkpoints hold only the trainable parameters (and the optimizer): a LoRA checkpoint is megabytes, not
the whole model, and a resume rebuilds the frozen part from the same starting policy. Data order depends
only on the seed and the epoch, the adapters are initialised from the seed, and a stop inside an epoch
resumes from the last finished epoch, so a killed run resumes to the same weights.

The run folder (`PolicyRun` owns its layout):

    <run>/identity.json            the settings and data digest its checkpoints belong to
    <run>/checkpoints/last.ckpt    trainable parameters + optimizer after the last finished epoch
    <run>/history.json             one record per finished epoch
    <run>/steps.json               one record per optimizer step (the objective's logs: a GRPO run's curve)
    <run>/trainable.safetensors    the trained parameters (LoRA: the adapter's; full: every weight)
    <run>/adapter/                 LoRA only: the peft adapter (safetensors)
    <run>/policy/                  the new policy as a Hugging Face folder (safetensors, LoRA merged):
                                   what `engine.model=<run>/policy` and every stage read; written last
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from rm_lab import io, jobs
from rm_lab.config import MAX_SEED, ConfigError, check_fields, param

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class PolicyRun:
    """The layout of one train-policy run folder (see the module docstring)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    identity = property(lambda self: self.root / "identity.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    last = property(lambda self: self.root / "checkpoints" / "last.ckpt")
    history = property(lambda self: self.root / "history.json")
    steps = property(lambda self: self.root / "steps.json")
    trainable = property(lambda self: self.root / "trainable.safetensors")
    adapter = property(lambda self: self.root / "adapter")
    policy = property(lambda self: self.root / "policy")

    def finished(self) -> bool:
        return (self.policy / "config.json").is_file()


def is_policy_run(folder: str | Path) -> bool:
    run = PolicyRun(Path(folder))
    return run.identity.is_file() or run.checkpoints.is_dir()


# ----------------------------------------------------------------------------------------------
# the policy, trainable

def load_trainable_policy(path: str | None, dtype: torch.dtype = torch.float32):
    """(tokenizer, model) of a causal LM to train (`rm_lab.models.load_policy` refuses any other kind of
    model); anything else is a ConfigError naming the path."""
    from rm_lab.models import ModelPackageMissing, load_policy

    shown = path or "packaged SmolLM2"
    try:
        tok, model = load_policy(path, dtype=dtype)
    except (OSError, ValueError, KeyError, ModelPackageMissing) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConfigError(f"policy: cannot load '{shown}' as a causal language model: {first}") from None
    if not getattr(tok, "chat_template", None):
        raise ConfigError(f"policy: '{shown}' has no chat template, so the character card cannot be its system "
                          "prompt; use an instruct (chat) model")
    return tok, model


def add_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.0, targets: Sequence[str] = LORA_TARGETS):
    """The model with LoRA adapters on `targets` (peft); only the adapters are trainable."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ConfigError(f"lora_targets: the policy has no modules named {missing} (e.g. {sorted(names)[:12]})")
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# ----------------------------------------------------------------------------------------------
# the Lightning module

class PolicyModule(L.LightningModule):
    """policy (trained) + reference (frozen, optional) + objective; checkpoints keep the trainable part only."""

    def __init__(self, policy: torch.nn.Module, objective, lr: float = 5e-4, weight_decay: float = 0.0,
                 reference: torch.nn.Module | None = None):
        super().__init__()
        self.policy, self.objective, self.lr, self.weight_decay = policy, objective, lr, weight_decay
        self.reference = reference
        if reference is not None:
            reference.eval().requires_grad_(False)
        self.strict_loading = False  # checkpoints hold the trainable parameters only

    def trainable_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def training_step(self, batch, batch_idx):
        loss, logs = self.objective.loss(self, batch)
        if not torch.isfinite(loss):
            from rm_lab.reward.model import NonFiniteLoss

            raise NonFiniteLoss(f"the {getattr(self.objective, 'name', 'policy')} loss became {loss.item()} at step "
                                f"{self.global_step}; lower lr (now {self.lr:g}) or check the data")
        ids = getattr(batch, "input_ids", None)
        n = int(ids.shape[0]) if ids is not None else 1
        self.log("losses/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=n)
        self.log_dict({k: v for k, v in logs.items()}, on_step=False, on_epoch=True, batch_size=n)
        self.step_logs = {"losses/loss": float(loss.detach()), **{k: float(v) for k, v in logs.items()}}
        return loss

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = set(self.trainable_names())
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        missing = [n for n in self.trainable_names() if n not in checkpoint["state_dict"]]
        if missing:
            raise ConfigError(f"the checkpoint does not hold this run's trainable parameters (e.g. {missing[:3]}); "
                              "resume with the same settings, or train into a new folder")

    def reference_logprobs(self, batch, temperature: float = 1.0):
        """Per-token log-probs of the frozen reference: its own copy, or the policy with LoRA switched off."""
        from rm_lab.policy.logprobs import sequence_logprobs

        with torch.no_grad():
            if self.reference is not None:
                return sequence_logprobs(self.reference, batch, temperature=temperature)
            if hasattr(self.policy, "disable_adapter"):
                with self.policy.disable_adapter():
                    return sequence_logprobs(self.policy, batch, temperature=temperature)
        raise ConfigError("this objective needs a reference policy: train with lora=true or give a reference copy")


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A full-weight run's reference: a deep copy, frozen."""
    ref = copy.deepcopy(model)
    return ref.eval().requires_grad_(False)


def trainable_with_reference(cfg, model, needs_reference: bool, say: Callable[[str], None] = print):
    """(policy to train, reference or None): LoRA adapters (the reference is the adapter switched off,
    so no copy), or full weights with a frozen copy when the objective reads a reference."""
    reference = None
    if cfg.lora:
        model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    elif needs_reference:
        reference = frozen_copy(model)
    model.train()
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    say(f"{n_train:,} of {n_all:,} parameters trainable ({'LoRA r=' + str(cfg.lora_r) if cfg.lora else 'full'}"
        f"{'; reference: the adapter switched off' if cfg.lora and needs_reference else ''}"
        f"{'; reference: a frozen copy' if reference is not None else ''})")
    return model, reference


class _History(L.Callback):
    """history.json per finished epoch and steps.json per batch; a resumed epoch replaces its partial steps."""

    def __init__(self, path: Path, steps: Path | None = None):
        self.path, self.steps_path = path, steps
        self.steps: list[dict] = []

    def on_train_epoch_start(self, trainer, pl_module):
        if self.steps_path is not None:
            rows = json.loads(self.steps_path.read_text()) if self.steps_path.is_file() else []
            self.steps = [r for r in rows if r["epoch"] < trainer.current_epoch]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        logs = getattr(pl_module, "step_logs", None)
        if self.steps_path is None or logs is None:
            return
        self.steps.append({"epoch": trainer.current_epoch, "batch": batch_idx, "step": trainer.global_step, **logs})
        io.write_json(self.steps_path, self.steps)

    def on_train_epoch_end(self, trainer, pl_module):
        rows = json.loads(self.path.read_text()) if self.path.is_file() else []
        rows = [r for r in rows if r["epoch"] < trainer.current_epoch]
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        io.write_json(self.path, rows + [row])


# ----------------------------------------------------------------------------------------------
# fitting and saving

@dataclass
class FitSettings:
    epochs: int = 1
    batch_size: int = 8
    accumulate: int = 1
    seed: int = 0
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = "32-true"
    progress: bool = False
    max_steps: int = -1  # -1: epochs decide


def fit(module: PolicyModule, examples: Sequence, run: PolicyRun, s: FitSettings,
        say: Callable[[str], None] = print) -> dict:
    """Train `module` on `examples` (batched by the objective's collate), resuming from last.ckpt."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from rm_lab.reward import store
    from rm_lab.reward.train import EpochSampler

    loader = DataLoader(list(examples), batch_size=s.batch_size, sampler=EpochSampler(len(examples), s.seed, True),
                        collate_fn=module.objective.collate)
    ckpt = ModelCheckpoint(dirpath=str(run.checkpoints), filename="epoch{epoch:03d}", auto_insert_metric_name=False,
                           save_top_k=1, save_last=True, every_n_epochs=1)  # top_k=0 would save last only at the end
    trainer = L.Trainer(max_epochs=s.epochs, accelerator=s.accelerator, devices=s.devices, strategy=s.strategy,
                        precision=s.precision, accumulate_grad_batches=s.accumulate, max_steps=s.max_steps,
                        logger=False,
                        enable_progress_bar=s.progress, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[ckpt, _History(run.history, run.steps), jobs.lightning_callback()],
                        default_root_dir=str(run.root), log_every_n_steps=1)
    resume = None
    if run.last.exists():
        store.load_checkpoint(run.last)  # refuses anything but tensors and plain values, before Lightning reads it
        resume = str(run.last)
        say(f"resuming from {run.last}")
    jobs.lightning_fit(trainer, module, train_dataloaders=loader, ckpt_path=resume, weights_only=True)
    jobs.safe_point()
    out = {k: float(v) for k, v in trainer.callback_metrics.items()}
    out.update(epochs_done=trainer.current_epoch, steps=trainer.global_step)
    return out


def save_policy(model: torch.nn.Module, tokenizer, run: PolicyRun) -> Path:
    """trainable.safetensors, the adapter (LoRA), then the merged Hugging Face folder `policy/` (atomically)."""
    from rm_lab.reward import store

    store.save_weights(run.trainable, trainable_state(model))
    lora = hasattr(model, "merge_and_unload")
    if lora:
        _atomic_folder(run.adapter, lambda tmp: model.save_pretrained(str(tmp), safe_serialization=True))
        model = model.merge_and_unload()

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))

    _atomic_folder(run.policy, write)
    return run.policy


def _atomic_folder(target: Path, write: Callable[[Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)
        write(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def claim(run: PolicyRun, identity: dict) -> None:
    """Checkpoints are resumed only by the settings and data they were trained with, never silently reused."""
    ident = json.loads(json.dumps(identity, default=str))
    if run.identity.exists():
        from rm_lab.reward import store

        old = store.read_json(run.identity, "the run's training identity")
        diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
        if diff:
            raise ConfigError(f"{run.root} holds a policy trained with other settings or data (differs in {diff}); "
                              "resume it with the same config, or train into a new folder")
    else:
        run.root.mkdir(parents=True, exist_ok=True)
        io.write_json(run.identity, ident)


# ----------------------------------------------------------------------------------------------
# the `train-policy` stage

# method -> "module:function(cfg, run_dir, say, loaded) -> metrics"
METHODS: dict[str, str] = {"sft": "rm_lab.policy.objectives.sft:run_sft",
                           "dpo": "rm_lab.policy.objectives.dpo_train:run_dpo",
                           "grpo": "rm_lab.policy.objectives.grpo_train:run_grpo"}


@dataclass
class TrainPolicyConfig:
    """A new policy generation from a starting policy (the `train-policy` command's config)."""

    method: str = param("sft", doc="the objective", choices=lambda: sorted(METHODS))
    policy: str | None = param(None, doc="starting policy: a Hugging Face causal-LM folder (e.g. a train-policy run's "
                                         "policy/) or .gguf file; null: the packaged SmolLM2")
    data: str = param("", doc="sft: an SFT set (a rejection-sample run folder, or any folder of context, character "
                              "and label/preference records); dpo: preference pairs (a best-of-n or rejection-sample "
                              "run folder: its best vs worst of N, or logged preference records); grpo: the prompts "
                              "(a folder of context and character records)")
    targets: str = param("label", doc="sft: which replies are the targets: label rows named label_name, or the "
                                      "chosen side of preference rows", choices=("label", "preference"))
    label_name: str = param("rejection_pick", doc="sft: the name of the label rows that hold the targets", min_len=1)
    lora: bool = param(True, doc="train LoRA adapters (peft) on lora_targets; false: every weight")
    lora_r: int = param(16, doc="LoRA rank", ge=1, le=4096)
    lora_alpha: int = param(32, doc="LoRA scale numerator (scale = alpha / r)", ge=1, le=65536)
    lora_dropout: float = param(0.0, doc="dropout on the LoRA input", ge=0, lt=1)
    lora_targets: list[str] = param(list(LORA_TARGETS), doc="module names that get adapters", min_len=1)
    lr: float = param(5e-4, doc="AdamW learning rate (LoRA: 5e-4 to 1e-3 moves SmolLM2 within minutes)", gt=0, le=1)
    weight_decay: float = param(0.0, doc="AdamW weight decay", ge=0)
    epochs: int = param(2, doc="passes over the SFT set, the pairs (dpo) or the prompts (grpo)", ge=1, le=10_000)
    max_steps: int | None = param(None, doc="stop after this many optimizer steps (grpo: one step = one generation "
                                            "batch); null: epochs decide", ge=1)
    batch_size: int = param(8, doc="examples per step (dpo: pairs; grpo: prompts, each sampled group_size times)",
                            ge=1, le=65536)
    accumulate: int = param(1, doc="gradient accumulation steps", ge=1, le=65536)
    max_prompt_tokens: int = param(512, doc="prompt tokens kept (the most recent)", ge=8, le=131072)
    max_completion_tokens: int = param(128, doc="target tokens kept; a longer target is cut and gets no EOS "
                                                "(grpo: the token cap of each sampled reply)", ge=1, le=131072)
    # -- dpo and grpo
    beta: float = param(0.1, doc="dpo: strength of the pull to the reference (> 0; ipo: its tau); grpo: weight of "
                                 "the k3 KL penalty to the reference (0: no reference forward)", ge=0)
    loss_type: str | None = param(None, doc="dpo: sigmoid | hinge | ipo | robust (null: sigmoid); grpo: grpo | bnpo "
                                            "| dr_grpo | dapo (null: dapo)")
    label_smoothing: float = param(0.0, doc="dpo robust: the assumed share of flipped preference labels", ge=0, lt=0.5)
    # -- grpo: sampling
    group_size: int = param(8, doc="grpo: replies sampled per prompt from the current policy (>= 2: the group is "
                                   "the baseline)", ge=2, le=4096)
    temperature: float = param(0.8, doc="grpo: sampling temperature (log-probs are read at the same temperature)",
                               gt=0, le=5)
    top_p: float = param(1.0, doc="grpo: nucleus sampling mass", gt=0, le=1)
    generation_batch_rows: int = param(128, doc="grpo: sequences per generate call", ge=1, le=65536)
    # -- grpo: the objective
    epsilon: float = param(0.2, doc="grpo: clip range below 1 of the importance ratio", gt=0, lt=1)
    epsilon_high: float | None = param(None, doc="grpo: clip range above 1 (DAPO's clip-higher: 0.28); null: epsilon",
                                       gt=0)
    scale_rewards: str = param("group", doc="grpo: divide advantages by the group's reward std, the batch's, or not "
                                            "at all (Dr. GRPO)", choices=("group", "batch", "none"))
    skip_zero_std_groups: bool = param(True, doc="grpo: groups whose rewards are all equal are counted and skipped "
                                                 "(no forward pass)")
    # -- grpo: the reward (rm_lab.policy.rewards)
    reward_model: str = param("", doc="grpo: a train-rm run folder whose heads reward_heads names")
    reward_heads: dict[str, float] = param({"preference": 1.0}, doc="grpo: reward-model head (or output) -> weight "
                                                                     "(negative weights penalise)")
    reward_normalize: str = param("group", doc="grpo: normalise each head per group, per batch, or not",
                                  choices=("group", "batch", "none"))
    uncertainty_penalty: float = param(0.0, doc="grpo: subtract this many ensemble standard deviations (needs an "
                                                "ensemble reward model)", ge=0)
    length_penalty: float = param(0.0, doc="grpo: per unit of (words - length_target) / length_target", ge=0)
    length_target: int = param(60, doc="grpo: reply length in words beyond which the length penalty starts", ge=1)
    emoji_penalty: float = param(0.0, doc="grpo: per emoji in the reply", ge=0)
    steer_weight: float = param(0.0, doc="grpo: weight of the share of the character's verifiable instructions "
                                         "followed (a verifiable reward)", ge=0)
    truncation_penalty: float = param(0.0, doc="grpo: subtracted from a reply cut by max_completion_tokens (DAPO's "
                                               "overlong punishment)", ge=0)
    # -- grpo: the prompts (rm_lab.policy.prompt_selection)
    n_prompts: int | None = param(None, doc="grpo: train on this many contexts of data (the traffic mix kept); "
                                            "null: all", ge=1)
    prompt_selection: str = param("all", doc="grpo: keep prompts where the starting policy's rewards are low, vary "
                                             "most, either, or all (one extra sampling pass unless all)",
                                  choices=("all", "low", "variance", "low_or_variance"))
    prompt_keep: float = param(0.5, doc="grpo: share of the prompts prompt_selection keeps", gt=0, le=1)
    seed: int = param(0, doc="seed of the adapters' initialisation and the data order", ge=0, le=MAX_SEED)
    accelerator: str = param("cpu", doc="Lightning accelerator", choices=("cpu", "gpu", "cuda", "auto"))
    devices: int = param(1, doc="Lightning devices", ge=1, le=4096)
    strategy: str = param("auto", doc="Lightning strategy (ddp, fsdp on more machines)",
                          choices=("auto", "ddp", "fsdp", "ddp_spawn"))
    precision: str = param("32-true", doc="Lightning precision", choices=("32-true", "bf16-mixed", "16-mixed"))
    progress: bool = param(False, doc="show Lightning's progress bar")

    def __post_init__(self):
        check_fields(self)
        if self.method == "dpo":
            from rm_lab.policy.objectives.dpo_train import check_config
            check_config(self)
        elif self.method == "grpo":
            from rm_lab.policy.objectives.grpo_train import check_config
            check_config(self)

    def settings(self) -> FitSettings:
        return FitSettings(self.epochs, self.batch_size, self.accumulate, self.seed, self.accelerator, self.devices,
                           self.strategy, self.precision, self.progress,
                           -1 if self.max_steps is None else self.max_steps)


# settings that change where or how fast a run goes, not what it learns (epochs and max_steps may grow on resume)
NOT_IDENTITY = ("progress", "accelerator", "devices", "strategy", "epochs", "max_steps")


def identity_of(cfg: TrainPolicyConfig, data_digest: str) -> dict:
    import dataclasses

    ident = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IDENTITY}
    ident["data_sha1"] = data_digest
    return ident


def with_absolute_paths(cfg: TrainPolicyConfig) -> TrainPolicyConfig:
    """Relative folders made absolute, so `--resume` from another working folder reads the same files."""
    import dataclasses

    ab = lambda v: str(Path(v).expanduser().absolute()) if v else v  # noqa: E731
    return dataclasses.replace(cfg, policy=ab(cfg.policy), data=ab(cfg.data), reward_model=ab(cfg.reward_model))


def train_policy(cfg: TrainPolicyConfig, run_dir: str | Path, say: Callable[[str], None] = print,
                 loaded: tuple | None = None) -> dict:
    """Dispatch to the method's trainer; inside a `rm_lab.jobs.Job`, SIGINT/SIGTERM stop at a safe point.
    `loaded`: the (tokenizer, model) of `cfg.policy` when the caller has checked and loaded it already."""
    from rm_lab.config import _resolve

    return _resolve(METHODS[cfg.method])(cfg, Path(run_dir), say, loaded)
