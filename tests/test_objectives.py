"""Objectives as plug-ins: MLE keeps the numbers of the trainer it came from, and a new objective with two
units, defined in this file alone, trains, checkpoints and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from conftest import run_training, tiny_config, train_log
from pydantic import Field
from torch import nn

from seqsmith import api
from seqsmith.config import MLEObjectiveConfig, ObjectiveConfig, save_config
from seqsmith.data.batching import Batch
from seqsmith.errors import SeqsmithError
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.training.mle import MLE
from seqsmith.training.objective import MAIN, Loss, Objective, Units, model_of

PINNED = json.loads((Path(__file__).parent / "data" / "mle_first_50_losses.json").read_text())


@pytest.mark.parametrize(
    ("case", "arch", "model", "train"),
    [
        ("transformer", "transformer", {}, {"l1": 1e-5, "l2": 1e-4}),
        ("pointer_coverage", "rnn", {"pointer_generator": True, "coverage": True}, {"accumulate": 2}),
    ],
)
def test_mle_logs_the_losses_of_the_trainer_before_objectives(
    tmp_path: Path, case: str, arch: str, model: dict[str, Any], train: dict[str, Any]
) -> None:
    """The 50 losses were logged by the trainer with the loss written into its step (commit c7be403); the
    tolerance leaves room for another CPU's rounding (1 vs 2 threads differ by 1e-7 here), not for a
    changed loss (label smoothing, L1/L2 or the coverage loss each move these figures by far more)."""
    config = tiny_config(
        tmp_path,
        arch=arch,
        model=model,
        train={"max_steps": 50, "validate_every": 1000, "checkpoint_every": 1000, **train},
    )
    api.train(config, show_progress=False)
    logged = [row["loss"] for row in train_log(Path(config.train.model_dir))]
    assert logged == pytest.approx(PINNED[case], rel=1e-5)


class ProbeConfig(ObjectiveConfig):
    kind: Literal["length_probe"] = "length_probe"
    keep: float = Field(0.75, gt=0.0, le=1.0)


class LengthProbe(Objective):
    """Odd updates train the model by MLE; even ones train a linear probe that reads the target length off
    the mean encoder state (no gradient reaches the model). It draws from torch's RNG (which sentences the
    probe sees) and keeps a running error as state, so a resume that lost either would log other figures."""

    config_class = ProbeConfig

    def __init__(self, config: ObjectiveConfig, train: Any) -> None:
        super().__init__(config, train)
        self.mle = MLE(MLEObjectiveConfig(), train)
        self.running = torch.zeros((), dtype=torch.float64)

    def extra_units(self, model: Seq2SeqModel) -> dict[str, nn.Module]:
        return {"probe": nn.Linear(model.width, 1)}

    def unit_for(self, step: int) -> str:
        return "probe" if step % 2 == 0 else MAIN

    def count(self, batch: Batch, trained: str) -> int:
        return len(batch) if trained == "probe" else batch.num_target_tokens

    def loss(self, units: Units, batch: Batch, trained: str) -> Loss:
        if trained == MAIN:
            return self.mle.loss(units, batch, trained)
        assert isinstance(self.config, ProbeConfig)
        with torch.no_grad():
            memory = model_of(units).encode(batch.src, batch.src_mask)
            mask = batch.src_mask.unsqueeze(-1).to(memory.states.dtype)
            features = (memory.states * mask).sum(1) / mask.sum(1)
        predicted = units["probe"].wrapped(features).squeeze(-1)
        target = (batch.tgt_out != model_of(units).pad_id).sum(1).to(predicted.dtype)
        seen = (torch.rand(len(batch)) < self.config.keep).to(predicted.dtype)
        error = ((predicted - target) ** 2 * seen).sum()
        self.running = 0.9 * self.running + 0.1 * float(error.detach()) / len(batch)
        return Loss(error, {"probe": error, "running": self.running * len(batch)})

    def state_dict(self) -> dict[str, Any]:
        return {"running": self.running}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.running = state["running"]


def probe_config(tmp_path: Path, steps: int) -> Any:
    return tiny_config(
        tmp_path,
        train={
            "objective": {"kind": "length_probe"},
            "max_steps": steps,
            "max_epochs": 100,
            "validate_every": 20,
            "lr": 1e-2,
        },
    )


def test_a_new_objective_trains_two_units(tmp_path: Path) -> None:
    config = probe_config(tmp_path, 60)
    api.train(config, show_progress=False)
    model_dir = Path(config.train.model_dir)
    rows = train_log(model_dir)
    probe = [row["probe"] for row in rows if "probe" in row]
    mle = [row["loss"] for row in rows if "loss" in row]
    assert [row["step"] for row in rows if "probe" in row] == list(range(2, 61, 2))
    assert sum(probe[-5:]) < sum(probe[:5]) / 2, "the probe should learn the lengths"
    assert mle[-1] < mle[0]
    checkpoint = sorted((model_dir / "checkpoints").glob("step-*"))[-1]
    assert (checkpoint / "probe.safetensors").is_file()
    state = torch.load(checkpoint / "training_state.pt", weights_only=True)
    assert set(state["optimizers"]) == {"model", "probe"}
    assert float(state["objective"]["running"]) == pytest.approx(rows[-1]["running"])
    with pytest.raises(SeqsmithError, match="other train.objective|another train.objective"):
        api.train(tiny_config(tmp_path, train={"max_steps": 70}), show_progress=False)


def test_two_unit_training_resumes_exactly_after_sigkill(tmp_path: Path) -> None:
    reference = probe_config(tmp_path / "a", 80)
    api.train(reference, show_progress=False)
    expected = train_log(Path(reference.train.model_dir))

    resumed = probe_config(tmp_path / "b", 80)
    api.prepare(resumed, show_progress=False)
    config_path = tmp_path / "b" / "config.json"
    save_config(resumed, config_path)
    prelude = "import test_objectives  # registers length_probe"
    run_training(config_path, kill_after_checkpoint=True, prelude=prelude)
    assert max(row["step"] for row in train_log(Path(resumed.train.model_dir))) < 80
    run_training(config_path, kill_after_checkpoint=False, prelude=prelude)
    got = train_log(Path(resumed.train.model_dir))
    drop = ("elapsed", "tokens_per_s")
    assert [{k: v for k, v in row.items() if k not in drop} for row in got] == [
        {k: v for k, v in row.items() if k not in drop} for row in expected
    ]


def test_unknown_objective_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(SeqsmithError, match="unknown objective kind 'nope'.*length_probe.*mle"):
        tiny_config(tmp_path, train={"objective": {"kind": "nope"}})
    with pytest.raises(SeqsmithError, match=r"train.objective.keep"):
        tiny_config(tmp_path, train={"objective": {"kind": "length_probe", "keep": 2.0}})
