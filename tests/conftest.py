"""Shared test settings: offline, quiet, real data from ../shared."""

import os
from pathlib import Path

import pytest

os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    TOKENIZERS_PARALLELISM="false",
    RAY_USAGE_STATS_ENABLED="0",
    MLFLOW_DISABLE_TELEMETRY="true",
)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
GLUE_DIR = SHARED_DATA / "glue"


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


@pytest.fixture
def tiny_recipe():
    """A trajectory recipe that trains the tiny random BERT on a few real SST-2 examples in seconds."""
    from tickets.config import TrainConfig, TrajectoryConfig

    train = TrainConfig(epochs=1, batch_size=8, learning_rate=1e-3, max_seq_length=32,
                        max_train_samples=48, max_eval_samples=32)
    return TrajectoryConfig(task="sst2", seed=0, model="tiny-random-bert", data_dir=str(GLUE_DIR),
                            rate=0.2, schedule="original", levels=2, train=train)
