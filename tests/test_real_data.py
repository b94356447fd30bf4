"""Short trainings on the real data sets with a quality floor (``-m slow``; they skip without ../shared).

Each trains a shipped config, cut to a few minutes on two cores, and scores the held-out split greedily:
the bounds sit well away from what the runs reached on an AMD EPYC with 2 cores (noted beside each), so
they catch a training, decoding or scoring that broke, not a slower machine. About 11 minutes together.
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
    # config, overrides, metric, bound (a floor; for perplexity a ceiling), what the run reached here
    "multi30k": (
        "multi30k_en_de_tiny.yaml",
        ["train.max_steps=1000", "train.warmup_steps=400", "train.max_minutes=null", "train.patience=null"],
        "bleu",
        4.0,  # test2016 greedy BLEU 7.49 after these 1,000 updates (2.8 min)
    ),
    "couplet": (
        "couplet.yaml",
        [
            "data.max_train_examples=60000",
            "model.d_model=128",
            "model.ffn_dim=512",
            "train.batch_tokens=2048",
            "train.max_steps=1000",
            "train.max_epochs=null",
            "train.max_minutes=null",
        ],
        "perplexity",
        400.0,  # dev perplexity 199.6 after 1,000 updates (4.2 min); chrF is near 0 for any short run
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
        15.0,  # test greedy ROUGE-L 21.97 after 300 updates (3.8 min)
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_short_real_training_reaches_its_bound(tmp_path: Path, name: str, monkeypatch: Any) -> None:
    config_file, overrides, metric, bound = CASES[name]
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
    names = [] if metric == "perplexity" else [metric]  # evaluate always reports perplexity
    scores = api.evaluate_model(
        config.train.model_dir, split=split, metrics=names or ["chrf"], method="greedy"
    )
    value = scores[metric]["score"]
    assert value <= bound if metric == "perplexity" else value >= bound, f"{name}: {metric} {value:.2f}"
    if config.generate.fixed_length:
        assert scores["same_length"]["score"] == 100.0
