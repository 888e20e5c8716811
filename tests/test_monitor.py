"""`train-rm monitor=<head>`: keep_best and early stopping watch one head's held-out loss instead of the sum,
for data where the other heads overfit first (Predictive Engagement's preference and `engaged` heads)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rm_helpers import make_tiny_backbone, one_error_line, run_cli, tiny_world
from safetensors.torch import load_file

from rm_lab import io
from rm_lab.config import ConfigError
from rm_lab.reward.train import TrainRMConfig, _claim_run_dir, train_reward_model

ROOT = Path(__file__).resolve().parent.parent
quiet = lambda _: None  # noqa: E731


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitor")
    base = dict(backbone=str(make_tiny_backbone(tmp / "tiny_bert")), hidden=32, batch_size=16, max_length=128,
                cache_dir=str(tmp / "cache"), pairwise=False, val_fraction=0.3, lr=0.05)  # a high rate overfits
    return tmp, tiny_world(seed=2, n=40), base


def _history(run: Path) -> list[dict]:
    return json.loads((run / "checkpoints/m0/history.json").read_text())


def test_a_heads_own_loss_picks_the_kept_epoch(setup):
    tmp, world, base = setup
    run = tmp / "by_continue"
    m = train_reward_model(TrainRMConfig(epochs=6, monitor="continue", **base), run, records=world, say=quiet)
    hist = _history(run)
    want = min(hist, key=lambda r: r["val/loss/continue"])["epoch"]
    assert m["members"][0]["best_epoch"] == want
    # on this world the summed loss bottoms out at another epoch, so the default would keep different weights
    assert min(hist, key=lambda r: r["val/loss"])["epoch"] != want
    kept = torch.load(run / f"checkpoints/m0/epoch{want:03d}.ckpt", weights_only=False)["state_dict"]
    final = load_file(str(run / "model.safetensors"))
    assert torch.equal(final["m0.net.heads.continue.weight"], kept["net.heads.continue.weight"])
    # every trained head's held-out loss is in the history under its stable name
    heads = json.loads((run / "rm_config.json").read_text())["heads"]
    assert all(f"val/loss/{h}" in hist[0] and f"train/loss/{h}" in hist[0] for h in heads)


def test_early_stopping_watches_the_monitored_head(setup):
    tmp, world, base = setup
    run = tmp / "stop_continue"
    train_reward_model(TrainRMConfig(epochs=20, early_stopping=1, monitor="continue", **base), run, records=world,
                       say=quiet)
    loss = [r["val/loss/continue"] for r in _history(run)]
    assert (run / "checkpoints/m0/stopped.json").exists() and len(loss) < 20
    # patience 1: every epoch but the last lowered the head's best loss, the last one did not
    assert all(loss[e] < min(loss[:e]) for e in range(1, len(loss) - 1))
    assert loss[-1] >= min(loss[:-1])
    # the summed loss would have stopped elsewhere on this world
    total = [r["val/loss"] for r in _history(run)]
    first_flat = next(e for e in range(1, len(total)) if total[e] >= min(total[:e]))
    assert first_flat != len(loss) - 1


def test_per_head_validation_loss_is_pooled_over_its_labels():
    """Split into batches with unequal label counts, the logged epoch mean (weighted by label_weight) equals
    the head's loss on the whole split: val/loss/<head> does not depend on the batching."""
    from rm_lab.reward.heads import spec_of
    from rm_lab.reward.model import binomial_nll, label_weight

    g = torch.Generator().manual_seed(0)
    pred = torch.randn(10, generator=g)
    n = torch.tensor([0, 1, 3, 0, 2, 5, 1, 0, 4, 2], dtype=torch.float32)
    k = torch.minimum(torch.round(n * torch.rand(10, generator=g)), n)
    spec = spec_of("continue")
    whole = binomial_nll(pred, k, n)
    num = den = 0.0
    for s in (slice(0, 3), slice(3, 10)):  # 4 labels, then 14
        w = label_weight(spec, {"continue_n": n[s]})
        num, den = num + w * float(binomial_nll(pred[s], k[s], n[s])), den + w
    assert abs(num / den - float(whole)) < 1e-6
    assert label_weight(spec_of("preference"), {"pair_c": torch.tensor([0, 2, 4])}) == 3


def test_monitor_is_part_of_the_run_identity(tmp_path):
    import numpy as np

    from rm_lab.reward.inputs import ItemTexts

    class P:  # the part of Prepared the check reads
        texts = ItemTexts(["context", "reply"], ["b", "c"], None, ["[CHAR] a"], [], np.array([0, 0]))

    _claim_run_dir(TrainRMConfig(), P, tmp_path)
    ident = json.loads((tmp_path / "train_identity.json").read_text())
    assert "monitor" not in ident  # the default: folders written before the key existed still resume
    _claim_run_dir(TrainRMConfig(monitor="loss"), P, tmp_path)
    with pytest.raises(ConfigError, match=r"differs in \['monitor'\]"):
        _claim_run_dir(TrainRMConfig(monitor="continue"), P, tmp_path)


def test_config_time_checks():
    with pytest.raises(ValueError, match="expected 'loss' or a head name"):
        TrainRMConfig(monitor="val/loss")
    with pytest.raises(ValueError, match="not among the heads trained"):
        TrainRMConfig(monitor="engaging", heads=["preference", "continue"])
    with pytest.raises(ValueError, match="val_fraction > 0"):
        TrainRMConfig(monitor="continue", val_fraction=0.0)
    TrainRMConfig(monitor="continue@convai2", heads=["continue"])  # a per-source head of a listed head
    TrainRMConfig(val_fraction=0.0)  # the default stays valid without held-out data




def test_an_unknown_head_is_one_error_line(tmp_path):
    data = tmp_path / "records"
    data.mkdir()
    world = tiny_world(seed=2, n=12)
    for kind in ("character", "context", "interaction"):
        io.write_records(world[kind], data / f"{kind}.parquet", kind)
    line = one_error_line(run_cli("train-rm", f"data={data}", "monitor=engaging", runs=tmp_path / "runs"))
    assert "monitor='engaging'" in line and "no trained head" in line and "'continue'" in line
    line = one_error_line(run_cli("train-rm", "monitor=no such", runs=tmp_path / "runs"))
    assert "monitor from override 'monitor=no such'" in line and "expected 'loss' or a head name" in line


def test_the_default_monitor_watches_graded_heads_when_the_data_has_them(setup):
    """monitor=auto (the default): the NLL per graded rating (val/loss/graded) when a graded head trains, else the
    summed loss. On Predictive Engagement the summed loss kept epoch 2-4 (Spearman 0.345), the rating's 0.488."""
    import numpy as np
    import pandas as pd

    from rm_lab.reward.model import GRADED_LOSS
    from rm_lab.schema import Records

    tmp, world, base = setup
    assert TrainRMConfig().monitor == "auto"
    run = tmp / "auto_world"
    m = train_reward_model(TrainRMConfig(epochs=3, **base), run, records=world, say=quiet)
    hist = _history(run)
    assert GRADED_LOSS not in hist[0]  # no graded head: the summed loss, as before
    assert m["members"][0]["best_epoch"] == min(hist, key=lambda r: (r["val/loss"], r["epoch"]))["epoch"]

    it = world["interaction"]
    grade = pd.DataFrame({"context_id": it["context_id"], "response": it["response"], "name": "grade",
                          "value": (1 + np.arange(len(it)) % 3).astype(float)})
    graded = Records({**world.frames, "label": grade,
                      "head": pd.DataFrame([{"name": "grade", "kind": "ordinal", "levels": 3}])})
    said = []
    run = tmp / "auto_graded"
    m = train_reward_model(TrainRMConfig(epochs=4, **base), run, records=graded, say=said.append)
    hist = _history(run)
    for r in hist:  # one graded head: its own held-out loss
        assert r[GRADED_LOSS] == pytest.approx(r["val/loss/grade"], rel=1e-5)
    want = min(hist, key=lambda r: (r[GRADED_LOSS], r["epoch"]))["epoch"]
    assert m["members"][0]["best_epoch"] == want
    assert any("graded-rating loss" in s for s in said)
