"""The files of a train-rm run folder, and the one place member weights are saved and loaded.

    <run>/model.safetensors        every member: m<k>.net.* (and m<k>.encoder.* for a trained encoder)
    <run>/rm_config.json           what RewardModel.load needs; written last, so it marks a finished model
    <run>/pairwise.safetensors     the pairwise model, when one was trained
    <run>/split.json               the held-out contexts
    <run>/train_identity.json      the settings and data digest the checkpoints belong to
    <run>/checkpoints/m<k>/        one member: last.ckpt and epochNNN.ckpt (Lightning), history.json,
                                   stopped.json (early stopping ended it), refit.json, final.safetensors
    <run>/checkpoints/pairwise/    the same for the pairwise model

Only safetensors and JSON are read as data. Lightning checkpoints are pickles: they are opened with
`torch.load(weights_only=True)` only, which refuses any object but tensors and plain values, so a
checkpoint crafted to run code is refused before anything runs. A file that is missing, truncated or
not what it should be is a `RunFolderError`: one line naming the file and how to rebuild it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # torch only where weights are touched: reading a run folder's layout stays cheap
    import torch

from rm_lab import io
from rm_lab.config import ConfigError

MODEL = "model.safetensors"
MODEL_CONFIG = "rm_config.json"
PAIRWISE = "pairwise.safetensors"
SPLIT = "split.json"
IDENTITY = "train_identity.json"
CHECKPOINTS = "checkpoints"
EMBED_CACHE = "embed_cache"
PAIRWISE_MEMBER = "pairwise"


class RunFolderError(ConfigError):
    """A train-rm run folder that cannot be read as it is (the CLI prints it as one `error:` line)."""


@dataclass(frozen=True)
class MemberFiles:
    """checkpoints/m<k>/ (or checkpoints/pairwise/): one member's checkpoints and records."""

    dir: Path

    @property
    def last(self) -> Path:
        return self.dir / "last.ckpt"

    def epoch(self, n: int) -> Path:
        return self.dir / f"epoch{n:03d}.ckpt"

    @property
    def history(self) -> Path:
        return self.dir / "history.json"

    @property
    def stopped(self) -> Path:
        return self.dir / "stopped.json"

    @property
    def refit(self) -> Path:
        return self.dir / "refit.json"

    @property
    def final(self) -> Path:
        return self.dir / "final.safetensors"


@dataclass(frozen=True)
class TrainRun:
    """The layout of one train-rm run folder (see the module docstring)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def model(self) -> Path:
        return self.root / MODEL

    @property
    def model_config(self) -> Path:
        return self.root / MODEL_CONFIG

    @property
    def pairwise(self) -> Path:
        return self.root / PAIRWISE

    @property
    def split(self) -> Path:
        return self.root / SPLIT

    @property
    def identity(self) -> Path:
        return self.root / IDENTITY

    @property
    def embed_cache(self) -> Path:
        return self.root / EMBED_CACHE

    def member(self, k: int) -> MemberFiles:
        return MemberFiles(self.root / CHECKPOINTS / f"m{k}")

    @property
    def pairwise_member(self) -> MemberFiles:
        return MemberFiles(self.root / CHECKPOINTS / PAIRWISE_MEMBER)

    def resume_hint(self) -> str:
        return f"resume it with `rm_lab train-rm --resume {self.root}` (finished members are kept) or retrain it"


def is_train_run(folder: str | Path) -> bool:
    """A folder train-rm has written into (its identity, its checkpoints or a finished model)."""
    run = TrainRun(Path(folder))
    return run.identity.is_file() or (run.root / CHECKPOINTS).is_dir() or run.model_config.is_file()


# ----------------------------------------------------------------------------------------------
# reading and writing, with errors that name the file

def _broken(path: Path, what: str, why: str, first: str = "") -> RunFolderError:
    run = _run_of(path)
    hint = run.resume_hint() if run else "write it again with the command that made it"
    return RunFolderError(f"{path}: {what} is {why}; {first}{hint}")


def _run_of(path: Path) -> TrainRun | None:
    """The run folder a file belongs to (the file may sit in checkpoints/m<k>/)."""
    for folder in [path.parent, *path.parent.parents][:3]:
        if is_train_run(folder):
            return TrainRun(folder)
    return None


def save_weights(path: str | Path, state: Mapping[str, torch.Tensor]) -> Path:
    """Tensors as one safetensors file, atomically (a kill leaves the old file or none)."""
    from safetensors.torch import save_file

    path = Path(path)
    with io.atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    return path


def load_weights(path: str | Path, what: str = "a weights file") -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise _broken(path, what, "missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise _broken(path, what, f"truncated or not a safetensors file ({e})") from None


def read_json(path: str | Path, what: str = "a JSON record", default: Any = ...) -> Any:
    """The JSON in `path`; `default` (when given) for a missing file; a clear error for a broken one."""
    path = Path(path)
    if not path.is_file():
        if default is not ...:
            return default
        raise _broken(path, what, "missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # RecursionError: nested too deeply
        raise _broken(path, what, f"not valid JSON ({e})") from None


def load_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint opened safely: tensors and plain values only, never code."""
    path = Path(path)
    if not path.is_file():
        raise _broken(path, "a training checkpoint", "missing")
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch raises several types; the message tells them apart)
        text = str(e).strip()
        if "Weights only load failed" in text:  # the safe unpickler met something other than plain data
            found = re.search(r"(Unsupported global: [^\s]+|Unsupported operand[^.]*)", text)
            run = _run_of(path)
            raise RunFolderError(
                f"{path}: refused to load a checkpoint that holds objects other than tensors and plain values"
                f"{' (' + found.group(1)[:100] + ')' if found else ''}; rm_lab never runs code from a run "
                f"folder: delete the file and {'resume' if run else 'retrain'} to rebuild it"
                + (f" (`rm_lab train-rm --resume {run.root}`)" if run else "")) from None
        first = text.splitlines()[0][:120] if text else type(e).__name__
        raise _broken(path, "a training checkpoint", f"truncated or not a checkpoint ({first})",
                      "delete it (that member then trains again from its start) and ") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise _broken(path, "a training checkpoint", "not a Lightning checkpoint (no state_dict)")
    return ckpt


def checked_resume_path(member: MemberFiles) -> str | None:
    """last.ckpt, verified to load safely and whole, for `trainer.fit(ckpt_path=...)`; None when absent."""
    if not member.last.exists():
        return None
    load_checkpoint(member.last)
    return str(member.last)


# ----------------------------------------------------------------------------------------------
# member weights: final.safetensors per member, model.safetensors for the whole model

def member_state(net: torch.nn.Module, encoder: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    state = {f"net.{n}": v for n, v in net.state_dict().items()}
    if encoder is not None:
        state.update({f"encoder.{n}": v for n, v in encoder.state_dict().items()})
    return state


def _part(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {n[len(prefix):]: v for n, v in state.items() if n.startswith(prefix)}


def _load_into(module: torch.nn.Module, state: dict, path: Path, what: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise _broken(path, what, f"not the weights this model expects ({' '.join(first[:2])[:160]})") from None


def save_member(member: MemberFiles, net: torch.nn.Module, encoder: torch.nn.Module | None = None) -> Path:
    return save_weights(member.final, member_state(net, encoder))


def load_member(member: MemberFiles, net: torch.nn.Module, encoder: torch.nn.Module | None = None) -> None:
    state = load_weights(member.final, "a member's final weights")
    _load_into(net, _part(state, "net."), member.final, "a member's final weights")
    if encoder is not None:
        _load_into(encoder, _part(state, "encoder."), member.final, "a member's final weights")


def save_model(run: TrainRun, members: list[tuple[torch.nn.Module, torch.nn.Module | None]]) -> Path:
    state: dict[str, torch.Tensor] = {}
    for k, (net, encoder) in enumerate(members):
        state.update({f"m{k}.{n}": v for n, v in member_state(net, encoder).items()})
    return save_weights(run.model, state)


class ModelWeights:
    """model.safetensors, read once; each member's parts load into modules built from rm_config.json."""

    def __init__(self, run: TrainRun):
        self.path = run.model
        self.state = load_weights(run.model, "the model weights")

    def load_member(self, k: int, net: torch.nn.Module, encoder: torch.nn.Module | None = None) -> None:
        _load_into(net, _part(self.state, f"m{k}.net."), self.path, f"the model weights (member {k})")
        if encoder is not None:
            _load_into(encoder, _part(self.state, f"m{k}.encoder."), self.path, f"the model weights (member {k})")


def save_pairwise(run: TrainRun, net: torch.nn.Module) -> Path:
    return save_weights(run.pairwise, net.state_dict())


def load_pairwise(run: TrainRun, net: torch.nn.Module) -> None:
    _load_into(net, load_weights(run.pairwise, "the pairwise model weights"), run.pairwise,
               "the pairwise model weights")


# ----------------------------------------------------------------------------------------------
# the model config and the per-member records

def write_model_config(run: TrainRun, cfg: dict) -> None:
    """Written after every weight file: its presence means the model is complete."""
    io.write_json(run.model_config, cfg)


def read_model_config(run: TrainRun) -> dict:
    raw = read_json(run.model_config, "the model config")
    if not isinstance(raw, dict):
        raise _broken(run.model_config, "the model config", f"not a JSON object (got {type(raw).__name__})")
    return raw


def begin_training(run: TrainRun) -> None:
    """While members train, the folder holds no finished model (a stopped run never looks complete)."""
    run.model_config.unlink(missing_ok=True)


def read_history(member: MemberFiles) -> list[dict]:
    rows = read_json(member.history, "a member's training history", default=[])
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "epoch" in r for r in rows):
        raise _broken(member.history, "a member's training history", "not a list of per-epoch records")
    return rows


def write_history(member: MemberFiles, rows: list[dict]) -> None:
    io.write_json(member.history, rows)


def best_epoch(member: MemberFiles, monitor: str) -> int | None:
    """The epoch with the lowest held-out `monitor` (None without held-out metrics)."""
    rows = [r for r in read_history(member) if r.get(monitor) is not None]
    return min(rows, key=lambda r: (r[monitor], r["epoch"]))["epoch"] if rows else None


def finished(member: MemberFiles, epochs: int) -> bool:
    """A member is done when it ran every epoch or early stopping ended it (stopped.json)."""
    return len(read_history(member)) >= epochs or member.stopped.exists()


def mark_stopped_early(member: MemberFiles, epoch: int) -> None:
    io.write_json(member.stopped, {"epoch": epoch})


def write_refit(member: MemberFiles, refit: list[dict]) -> None:
    io.write_json(member.refit, refit)


def read_refit(member: MemberFiles) -> list[dict] | None:
    return read_json(member.refit, "a member's head refit record", default=None)
