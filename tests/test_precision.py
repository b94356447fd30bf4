"""train.precision: what auto picks and why, that its probe leaves no trace, and that resume keeps it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import losses, tiny_config, train_log

from seqsmith import api, hardware
from seqsmith.config import config_from_dict
from seqsmith.data.batching import Batch
from seqsmith.models.build import build_model
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.training import precision, trainer
from seqsmith.training.precision import Choice, auto_precision


def model_and_batch() -> tuple[Seq2SeqModel, Batch]:
    config = config_from_dict(
        {
            "data": {"train": "x"},
            "model": {"arch": "transformer", "d_model": 32, "heads": 2, "ffn_dim": 64, "dropout": 0.3},
        }
    )
    model = build_model(config.model, 20, 20)
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(4, 20, (3, 7), generator=generator)
    tgt = torch.randint(4, 20, (3, 6), generator=generator)
    ones = torch.ones(3, 7, dtype=torch.bool)
    return model, Batch(src, ones, tgt, tgt, torch.arange(3))


def test_missing_hardware_needs_no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    model, batch = model_and_batch()
    monkeypatch.setattr(precision, "_probe", lambda *_: pytest.fail("probed"))
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    choice = auto_precision(model, batch)
    assert not choice.bf16 and "no native bfloat16" in choice.reason


@pytest.mark.parametrize(
    ("fp32", "bf16", "picked"), [(1.0, 0.5, True), (1.0, 0.95, False), (1.0, 2.4, False)]
)
def test_auto_takes_bf16_only_when_the_probe_finds_it_clearly_faster(
    monkeypatch: pytest.MonkeyPatch, fp32: float, bf16: float, picked: bool
) -> None:
    model, batch = model_and_batch()
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr(precision, "_probe", lambda *_: (fp32, bf16))
    choice = auto_precision(model, batch)
    assert choice.bf16 is picked and f"{bf16:.3f} s in bf16" in choice.reason


def test_the_probe_leaves_weights_gradients_and_random_state_alone() -> None:
    model, batch = model_and_batch()
    model.train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    state = torch.random.get_rng_state()
    fp32, bf16 = precision._probe(model, batch)
    assert fp32 > 0 and bf16 > 0
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_old_configs_bf16_key_reads_as_precision() -> None:
    assert config_from_dict({"data": {"train": "x"}, "train": {"bf16": True}}).train.precision == "bf16"
    assert config_from_dict({"data": {"train": "x"}, "train": {"bf16": False}}).train.precision == "fp32"
    assert config_from_dict({"data": {"train": "x"}}).train.precision == "auto"


def test_auto_keeps_its_first_choice_when_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe picks bf16 once; the resumed run must train on in bf16 without probing, exactly as a run that
    was told bf16 from the start (which never probes)."""
    monkeypatch.setattr(trainer, "auto_precision", lambda *_: pytest.fail("a fixed precision probed"))
    told = tiny_config(tmp_path / "told", train={"max_steps": 30, "precision": "bf16"})
    api.prepare(told, show_progress=False)
    api.train(told, show_progress=False)
    monkeypatch.setattr(trainer, "auto_precision", lambda *_: Choice(True, "auto: a test's probe"))
    auto = tiny_config(tmp_path / "auto", train={"max_steps": 15, "precision": "auto"})
    api.prepare(auto, show_progress=False)
    api.train(auto, show_progress=False)
    monkeypatch.setattr(trainer, "auto_precision", lambda *_: pytest.fail("probed again on resume"))
    resumed = tiny_config(tmp_path / "auto", train={"max_steps": 30, "precision": "auto"})
    api.train(resumed, show_progress=False)
    assert losses(Path(resumed.train.model_dir)) == losses(Path(told.train.model_dir))
    assert len(train_log(Path(resumed.train.model_dir))) == 30
