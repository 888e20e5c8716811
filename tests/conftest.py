import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    return Path(os.environ.get("RM_LAB_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The real public data folder; tests that need it skip with the reason when it is absent."""
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real data folder {root} is missing (set RM_LAB_DATA to the shared data folder)")
    return root


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    d = tmp_path / "runs"
    monkeypatch.setenv("RM_LAB_RUNS", str(d))
    return d


@pytest.fixture(scope="session")
def backbone(tmp_path_factory):
    """A tiny random BERT with the MiniLM tokenizer (tests/rm_helpers.py), shared by the reward-model tests."""
    from rm_helpers import make_tiny_backbone

    return make_tiny_backbone(tmp_path_factory.mktemp("tiny_bert"))
