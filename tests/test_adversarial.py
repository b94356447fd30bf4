"""Adversarial training: the discriminator against float64 recomputations and padding, the schedule of
the two units, learning, and exact resume of both units and the running baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_config, train_log

from seqsmith import api
from seqsmith.config import AdversarialObjectiveConfig, DiscriminatorConfig, TrainConfig
from seqsmith.data.batching import collate
from seqsmith.data.binarize import BinarizedSplit
from seqsmith.errors import SeqsmithError
from seqsmith.generation.sequences import decode_tensors
from seqsmith.models.discriminator import Discriminator
from seqsmith.models.model_dir import load_model_dir
from seqsmith.specials import UNK_ID
from seqsmith.training.adversarial import DISCRIMINATOR, Adversarial
from seqsmith.training.objective import MAIN, Unit, build_objective


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly trained reversal model (the root of its tiny config)."""
    root = tmp_path_factory.mktemp("generator")
    api.train(tiny_config(root), show_progress=False)
    return root


@pytest.mark.parametrize("arch", ["cnn", "gru"])
def test_padding_and_batch_company_do_not_change_a_verdict(arch: str) -> None:
    torch.manual_seed(0)
    discriminator = Discriminator(DiscriminatorConfig(arch=arch, embed_dim=8, hidden_dim=6), 12, 12).eval()
    src = torch.tensor([[5, 6, 7, 3], [8, 3, 0, 0]])
    out = torch.tensor([[9, 3, 0], [5, 6, 3]])
    together = discriminator(src, src != 0, out, out != 0)
    for row in range(2):
        s, o = src[row][src[row] != 0], out[row][out[row] != 0]
        alone = discriminator(
            s[None],
            torch.ones_like(s[None], dtype=torch.bool),
            o[None],
            torch.ones_like(o[None], dtype=torch.bool),
        )
        padded = torch.cat([s, torch.zeros(5, dtype=torch.long)])[None]
        more = discriminator(padded, padded != 0, o[None], torch.ones_like(o[None], dtype=torch.bool))
        torch.testing.assert_close(together[row : row + 1], alone)
        torch.testing.assert_close(more, alone)
    copy_ids = out.masked_fill(out == 9, 14)  # a copy slot past the 12-piece vocabulary reads as UNK
    unk = out.masked_fill(out == 9, UNK_ID)
    torch.testing.assert_close(
        discriminator(src, src != 0, copy_ids, out != 0), discriminator(src, src != 0, unk, out != 0)
    )


def test_the_cnn_pools_each_width_over_the_windows_it_covers() -> None:
    """A float64 recomputation of one verdict: windows by hand, max over those that start at a real token."""
    torch.manual_seed(1)
    config = DiscriminatorConfig(arch="cnn", embed_dim=4, hidden_dim=3, kernel_sizes=[1, 3], dropout=0.0)
    discriminator = Discriminator(config, 10, 10).double().eval()
    src, out = torch.tensor([[4, 5, 6, 7, 3]]), torch.tensor([[8, 3]])  # the output is shorter than width 3

    def summary(reader: Any, ids: torch.Tensor) -> torch.Tensor:
        x = reader.embed.weight[ids[0]]  # (length, embed)
        x = torch.cat([x, torch.zeros(max(0, 3 - len(x)), x.size(1), dtype=x.dtype)])
        parts = []
        for k, conv in zip([1, 3], reader.convs, strict=True):
            starts = max(1, len(ids[0]) - k + 1)
            windows = [conv.weight.flatten(1) @ x[i : i + k].T.flatten() + conv.bias for i in range(starts)]
            parts.append(torch.relu(torch.stack(windows)).amax(0))
        return torch.cat(parts)

    s, o = summary(discriminator.source, src), summary(discriminator.output, out)
    expected = discriminator.classify(torch.cat([s, o, s * o])[None]).squeeze()
    got = discriminator(src, src != 0, out, out != 0).squeeze()
    torch.testing.assert_close(got, expected)


def test_the_units_take_turns_after_the_pretraining() -> None:
    config = AdversarialObjectiveConfig(pretrain_discriminator=3, discriminator_steps=2, generator_steps=1)
    objective = Adversarial(config, TrainConfig(max_steps=1))
    turns = "".join("G" if objective.unit_for(step) == MAIN else "D" for step in range(1, 13))
    assert turns == "DDD" + "DDG" * 3


@pytest.mark.parametrize(
    ("figures", "conditions"),
    [
        ({"discriminator_accuracy": 0.5}, set()),  # pretraining: a fresh discriminator starts at chance
        ({"discriminator_accuracy": 0.48, "reward": 0.49}, {"chance_discriminator"}),
        ({"discriminator_accuracy": 0.62, "reward": 0.45}, set()),
        ({"discriminator_accuracy": 0.99, "reward": 0.01}, {"pinned_discriminator"}),
        ({"discriminator_accuracy": 0.01}, {"pinned_discriminator"}),
    ],
)
def test_a_discriminator_at_chance_or_pinned_is_reported(
    figures: dict[str, float], conditions: set[str]
) -> None:
    objective = Adversarial(AdversarialObjectiveConfig(), TrainConfig(max_steps=1))
    assert set(objective.advice(figures)) == conditions


def test_the_discriminator_loss_is_the_cross_entropy_of_references_and_samples(generator: Path) -> None:
    loaded = load_model_dir(generator / "model")
    train = TrainConfig(max_steps=1, objective={"kind": "adversarial", "samples": 2})
    objective = build_objective(train)
    assert isinstance(objective, Adversarial)
    objective.start(loaded.model, loaded.tokenizers, torch.device("cpu"))
    discriminator = objective.extra_units(loaded.model)[DISCRIMINATOR].double().eval()
    units = {
        MAIN: Unit(loaded.model, torch.optim.SGD(loaded.model.parameters(), lr=0.1), loaded.model),
        DISCRIMINATOR: Unit(
            discriminator, torch.optim.SGD(discriminator.parameters(), lr=0.1), discriminator
        ),
    }
    batch = collate(BinarizedSplit(generator / "data", "train"), np.arange(5))
    torch.manual_seed(3)
    loss = objective.loss(units, batch, DISCRIMINATOR)
    torch.manual_seed(3)
    loaded.model.eval()
    samples = decode_tensors(loaded.model, batch.src, batch.src_mask, objective.sampling(), 2)
    expected, correct = torch.zeros((), dtype=torch.float64), 0.0
    for row in range(5):
        length = int(batch.src_mask[row].sum())
        src = batch.src[row : row + 1, :length]
        reference = batch.tgt_out[row][batch.tgt_out[row] != 0][None]
        real = discriminator(src, src != -1, reference, reference != -1)
        expected = expected - torch.nn.functional.logsigmoid(real).squeeze()
        correct += float(real > 0) / 2
        for j in (2 * row, 2 * row + 1):
            ids = samples.ids[j : j + 1, : int(samples.lengths[j])]
            fake = discriminator(src, src != -1, ids, ids != -1)
            expected = expected - torch.nn.functional.logsigmoid(-fake).squeeze() / 2
            correct += float(fake < 0) / 4
    assert loss.value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.figures["discriminator_accuracy"].item() == pytest.approx(correct)


def adversarial_config(root: Path, generator: Path, steps: int, **objective: Any) -> Any:
    return tiny_config(
        root,
        train={
            "init_from": str(generator / "model"),
            "objective": {"kind": "adversarial", "pretrain_discriminator": 20, "samples": 2, **objective},
            "schedule": "constant",
            "lr": 3e-3,
            "max_steps": steps,
            "validate_every": 100,
            "checkpoint_every": 10,
            "log_every": 1,
        },
    )


def test_the_discriminator_learns_and_both_units_train(generator: Path, tmp_path: Path) -> None:
    config = adversarial_config(tmp_path, generator, 40)
    api.train(config, show_progress=False)
    model_dir = Path(config.train.model_dir)
    rows = train_log(model_dir)
    accuracy = [row["discriminator_accuracy"] for row in rows if "discriminator_accuracy" in row]
    assert np.mean(accuracy[-5:]) > max(0.6, np.mean(accuracy[:5]) + 0.1), accuracy
    generator_rows = [row for row in rows if "reward" in row]
    assert [row["step"] for row in generator_rows] == list(range(22, 41, 2))
    assert {"baseline", "advantage", "entropy", "sample_length", "loss"} <= set(generator_rows[0])
    checkpoint = sorted((model_dir / "checkpoints").glob("step-*"))[-1]
    assert (checkpoint / "discriminator.safetensors").is_file()


def test_adversarial_training_resumes_exactly(generator: Path, tmp_path: Path) -> None:
    straight = adversarial_config(tmp_path / "a", generator, 30)
    api.train(straight, show_progress=False)
    halves = adversarial_config(tmp_path / "b", generator, 25)
    api.train(halves, show_progress=False)
    api.train(adversarial_config(tmp_path / "b", generator, 30), show_progress=False)
    drop = ("elapsed", "tokens_per_s")
    rows = [train_log(Path(c.train.model_dir)) for c in (straight, halves)]
    a, b = ([{k: v for k, v in row.items() if k not in drop} for row in r] for r in rows)
    assert a == b and any("reward" in row for row in a[25:])


@pytest.mark.parametrize(
    "objective, message",
    [
        ({"baseline": "mean"}, "samples >= 2"),
        ({"discriminator": {"kernel_sizes": []}}, "kernel width"),
        ({"discriminator": {"arch": "lstm"}}, "train.objective.discriminator.arch"),
        ({"generator_steps": 0}, "train.objective.generator_steps"),
    ],
)
def test_adversarial_options_are_checked_with_the_config(
    tmp_path: Path, objective: dict[str, Any], message: str
) -> None:
    with pytest.raises(SeqsmithError, match=message):
        tiny_config(tmp_path, train={"objective": {"kind": "adversarial", **objective}})
