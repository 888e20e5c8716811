"""Resume after a kill: training interrupted mid-epoch restarts from the last epoch checkpoint and ends
with the same epoch count and the same weights as a run that was never interrupted."""
from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from rm_helpers import make_tiny_backbone, tiny_world
from safetensors.torch import load_file

from rm_lab.reward.train import TrainRMConfig, train_reward_model


class Kill(L.Callback):
    """Raise after `after` optimizer steps, as a crash or an OOM kill would stop a job."""

    def __init__(self, after: int):
        self.after = after

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.after:
            raise RuntimeError("killed for the test")


def test_killed_training_resumes_to_the_same_model(tmp_path):
    backbone = make_tiny_backbone(tmp_path / "tiny_bert")
    world = tiny_world(seed=1, n=40)
    cfg = TrainRMConfig(backbone=str(backbone), epochs=4, hidden=32, batch_size=16, max_length=128,
                        cache_dir=str(tmp_path / "cache"), pairwise=False, dropout=0.2)
    quiet = lambda _: None  # noqa: E731

    full = train_reward_model(cfg, tmp_path / "full", records=world, say=quiet)
    assert full["members"][0]["epochs_done"] == 4

    run = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="killed for the test"):
        # ~4 steps an epoch here (about 60 units, batches of 16): dies inside the third epoch
        train_reward_model(cfg, run, records=world, say=quiet, callbacks=[Kill(after=9)])
    ckpts = run / "checkpoints" / "m0"
    assert (ckpts / "last.ckpt").exists() and not (ckpts / "final.safetensors").exists()
    assert not (run / "model.safetensors").exists()
    done_before = torch.load(ckpts / "last.ckpt", weights_only=False)["epoch"]
    assert 0 <= done_before < 3  # stopped part-way

    resumed = train_reward_model(cfg, run, records=world, say=quiet)
    assert resumed["members"][0]["epochs_done"] == 4
    hist = json.loads((ckpts / "history.json").read_text())
    assert [r["epoch"] for r in hist] == [0, 1, 2, 3]
    assert sorted(p.name for p in ckpts.glob("epoch*.ckpt")) == [f"epoch{i:03d}.ckpt" for i in range(4)]
    a, b = load_file(str(tmp_path / "full/model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_a_reused_run_folder_with_other_settings_is_refused(tmp_path):
    """Finished members are reused only by the same config on the same data (no silent stale model)."""
    import pytest

    from rm_lab.config import ConfigError
    from rm_lab.reward.train import TrainRMConfig, _claim_run_dir

    import numpy as np

    from rm_lab.reward.inputs import ItemTexts

    class P:  # the part of Prepared the check reads
        texts = ItemTexts(["context", "reply"], ["b", "c"], None, ["[CHAR] a"], [], np.array([0, 0]))

    cfg = TrainRMConfig(epochs=2)
    _claim_run_dir(cfg, P, tmp_path)
    _claim_run_dir(TrainRMConfig(epochs=2, progress=True), P, tmp_path)  # same model: fine
    _claim_run_dir(TrainRMConfig(epochs=3), P, tmp_path)  # more epochs: trains on, not a new model
    with pytest.raises(ConfigError, match=r"differs in \['lr'\]"):
        _claim_run_dir(TrainRMConfig(epochs=2, lr=0.01), P, tmp_path)
    P.texts = ItemTexts(["context", "reply"], ["b", "other"], None, ["[CHAR] a"], [], np.array([0, 0]))
    with pytest.raises(ConfigError, match="data_sha1"):
        _claim_run_dir(cfg, P, tmp_path)


def test_keep_best_and_early_stopping(tmp_path):
    """The final weights are the epoch with the lowest held-out loss; early stopping ends a run that no
    longer improves, and a stopped member is reused, not retrained, by a second call."""
    backbone = make_tiny_backbone(tmp_path / "tiny_bert")
    world = tiny_world(seed=2, n=40)
    base = dict(backbone=str(backbone), hidden=32, batch_size=16, max_length=128, cache_dir=str(tmp_path / "cache"),
                pairwise=False, val_fraction=0.3, lr=0.05)  # a high rate overfits fast
    quiet = lambda _: None  # noqa: E731
    m = train_reward_model(TrainRMConfig(epochs=6, **base), tmp_path / "best", records=world, say=quiet)
    ckpts = tmp_path / "best" / "checkpoints" / "m0"
    hist = json.loads((ckpts / "history.json").read_text())
    want = min(hist, key=lambda r: r["val/loss"])["epoch"]
    assert m["members"][0]["best_epoch"] == want
    kept = torch.load(ckpts / f"epoch{want:03d}.ckpt", weights_only=False)["state_dict"]
    final = load_file(str(tmp_path / "best" / "model.safetensors"))
    assert torch.equal(final["m0.net.heads.preference.weight"], kept["net.heads.preference.weight"])

    off = train_reward_model(TrainRMConfig(epochs=6, keep_best=False, **base), tmp_path / "last", records=world,
                             say=quiet)
    assert "best_epoch" not in off["members"][0]

    stop = TrainRMConfig(epochs=40, early_stopping=1, **base)
    m = train_reward_model(stop, tmp_path / "stop", records=world, say=quiet)
    ckpts = tmp_path / "stop" / "checkpoints" / "m0"
    n_epochs = len(json.loads((ckpts / "history.json").read_text()))
    assert n_epochs < 40 and (ckpts / "stopped.json").exists()
    before = (ckpts / "final.safetensors").stat().st_mtime_ns
    train_reward_model(stop, tmp_path / "stop", records=world, say=quiet)  # finished: reloaded, not retrained
    assert (ckpts / "final.safetensors").stat().st_mtime_ns == before
    assert len(json.loads((ckpts / "history.json").read_text())) == n_epochs

    with pytest.raises(ValueError, match="early_stopping needs held-out contexts"):
        TrainRMConfig(early_stopping=2, val_fraction=0.0)
