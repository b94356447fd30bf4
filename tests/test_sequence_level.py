"""Self-critical and minimum-risk training against a float64 recomputation, one sentence at a time.

The objectives score references and candidates in one padded teacher-forced forward and build their losses
from tensors; the references here rebuild each loss from its formula with per-sentence forward passes,
search's own outputs (``generate_ids``) and sacrebleu's sentence BLEU called directly, so a padding, row
order or masking mistake in the joint forward shows up as a different value or gradient.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_config, train_log
from sacrebleu.metrics import BLEU

from seqsmith import api
from seqsmith.config import GenerateConfig, TrainConfig
from seqsmith.data.batching import Batch, collate
from seqsmith.data.binarize import BinarizedSplit
from seqsmith.errors import SeqsmithError
from seqsmith.generation.search import generate_ids
from seqsmith.generation.sequences import decode_tensors
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.models.model_dir import LoadedModel, load_model_dir
from seqsmith.training.objective import MAIN, Unit, build_objective
from seqsmith.training.sequence_level import SequenceLevel

SENTENCE_BLEU = BLEU(effective_order=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, Path]:
    """A briefly trained reversal model without dropout, so that train and eval mode score alike."""
    root = tmp_path_factory.mktemp("mle")
    config = tiny_config(root, model={"dropout": 0.0})
    api.train(config, show_progress=False)
    loaded = load_model_dir(Path(config.train.model_dir))
    loaded.model.double()
    return loaded, root


def first_batch(root: Path, size: int = 6) -> Batch:
    return collate(BinarizedSplit(root / "data", "train"), np.arange(size))


def objective_for(loaded: LoadedModel, **settings: Any) -> SequenceLevel:
    train = TrainConfig(max_steps=1, label_smoothing=0.1, objective=settings)
    objective = build_objective(train)
    assert isinstance(objective, SequenceLevel)
    objective.start(loaded.model, loaded.tokenizers, torch.device("cpu"))
    return objective


def text(loaded: LoadedModel, ids: list[int]) -> str:
    """Tokens to text, without EOS or padding."""
    kept = [i for i in ids if i not in (loaded.model.eos_id, loaded.model.pad_id)]
    return loaded.tokenizers.target.decode(kept)


def bleu(hypothesis: str, reference: str) -> float:
    return SENTENCE_BLEU.sentence_score(hypothesis, [reference]).score / 100


def sentence_log_prob(model: Seq2SeqModel, batch: Batch, row: int, tokens: list[int]) -> torch.Tensor:
    """log p(tokens | source ``row``), tokens ending in EOS, from an unpadded forward in float64."""
    length = int(batch.src_mask[row].sum())
    src, mask = batch.src[row : row + 1, :length], batch.src_mask[row : row + 1, :length]
    tgt_in = torch.tensor([[model.bos_id, *tokens[:-1]]])
    log_probs = torch.log_softmax(model(src, mask, tgt_in).double(), dim=-1)[0]
    return log_probs[torch.arange(len(tokens)), torch.tensor(tokens)].sum()


def smoothed_nll(model: Seq2SeqModel, batch: Batch, row: int, eps: float) -> torch.Tensor:
    """The label-smoothed cross-entropy of reference ``row``, summed over its tokens."""
    length = int(batch.src_mask[row].sum())
    target = [int(t) for t in batch.tgt_out[row] if int(t) != model.pad_id]
    tgt_in = torch.tensor([[model.bos_id, *target[:-1]]])
    log_probs = torch.log_softmax(
        model(batch.src[row : row + 1, :length], batch.src_mask[row : row + 1, :length], tgt_in).double(),
        dim=-1,
    )[0]
    nll = -log_probs[torch.arange(len(target)), torch.tensor(target)].sum()
    return (1 - eps) * nll - eps * log_probs.mean(dim=-1).sum()


def reference_tokens(model: Seq2SeqModel, batch: Batch, row: int) -> list[int]:
    return [int(t) for t in batch.tgt_out[row] if int(t) != model.pad_id]


def objective_loss_and_grads(
    objective: SequenceLevel, model: Seq2SeqModel, batch: Batch, seed: int
) -> tuple[float, dict[str, torch.Tensor], dict[str, float]]:
    unit = Unit(model, torch.optim.SGD(model.parameters(), lr=0.1), model)
    model.zero_grad()
    torch.manual_seed(seed)
    loss = objective.loss({MAIN: unit}, batch, MAIN)
    loss.value.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.value.item(), grads, {k: float(v) for k, v in loss.figures.items()}


def expected_grads(model: Seq2SeqModel, value: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    value.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("baseline, samples", [("greedy", 2), ("mean", 3)])
def test_self_critical_loss_and_gradient_match_the_formula(
    trained: tuple[LoadedModel, Path], baseline: str, samples: int
) -> None:
    loaded, root = trained
    model, batch, gamma = loaded.model, first_batch(root), 0.7
    objective = objective_for(
        loaded, kind="self_critical", samples=samples, baseline=baseline, gamma=gamma, reward={"bleu": 1.0}
    )
    value, grads, figures = objective_loss_and_grads(objective, model, batch, seed=5)

    torch.manual_seed(5)  # the same draws, replayed
    model.eval()
    drawn = decode_tensors(model, batch.src, batch.src_mask, objective.sampling(), samples)
    greedy = generate_ids(model, batch.src, batch.src_mask, GenerateConfig(method="greedy"))
    model.train()
    rows = [r[:n] for r, n in zip(drawn.ids.tolist(), drawn.lengths.tolist(), strict=True)]
    total = torch.zeros((), dtype=torch.float64)
    rewards, baselines = [], []
    for source in range(len(batch)):
        reference = text(loaded, reference_tokens(model, batch, source))
        mine = rows[source * samples : (source + 1) * samples]
        scores = [bleu(text(loaded, row), reference) for row in mine]
        for j, row in enumerate(mine):
            if baseline == "greedy":
                base = bleu(text(loaded, greedy[source][0].tokens), reference)
            else:
                base = (sum(scores) - scores[j]) / (samples - 1)
            advantage = scores[j] - base
            total = total - gamma * advantage * sentence_log_prob(model, batch, source, row) / samples
            baselines.append(base)
        rewards += scores
        total = total + (1 - gamma) * smoothed_nll(model, batch, source, 0.1)
    assert value == pytest.approx(total.item(), rel=1e-6, abs=1e-9)
    for name, grad in expected_grads(model, total).items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-9)
    assert figures["reward"] == pytest.approx(sum(rewards) / samples, abs=1e-5)
    assert figures["baseline"] == pytest.approx(sum(baselines) / samples, abs=1e-5)
    assert figures["sample_length"] == pytest.approx(float(drawn.lengths.double().mean()) * len(batch))


@pytest.mark.parametrize(("search", "log_prob"), [("sample", "sum"), ("beam", "sum"), ("beam", "mean")])
def test_minimum_risk_matches_the_expected_risk_over_distinct_candidates(
    trained: tuple[LoadedModel, Path], search: str, log_prob: str
) -> None:
    loaded, root = trained
    model, batch, k, alpha, gamma = loaded.model, first_batch(root), 4, 0.5, 0.8
    objective = objective_for(
        loaded,
        kind="minimum_risk",
        candidates=k,
        search=search,
        alpha=alpha,
        gamma=gamma,
        reward={"bleu": 1.0},
        log_prob=log_prob,
    )
    value, grads, figures = objective_loss_and_grads(objective, model, batch, seed=11)

    torch.manual_seed(11)
    model.eval()
    if search == "sample":
        drawn = decode_tensors(model, batch.src, batch.src_mask, objective.sampling(), k)
        found = [r[:n] for r, n in zip(drawn.ids.tolist(), drawn.lengths.tolist(), strict=True)]
    else:
        config = GenerateConfig(method="beam", beam_size=k, nbest=k, max_length_a=1.2, max_length_b=10)
        beams = generate_ids(model, batch.src, batch.src_mask, config)
        found = []
        for hypotheses in beams:
            outputs = [[*h.tokens, model.eos_id] for h in hypotheses]
            found += outputs + [[]] * (k - len(outputs))
    model.train()
    total, counted = torch.zeros((), dtype=torch.float64), 0
    for source in range(len(batch)):
        ref_tokens = reference_tokens(model, batch, source)
        reference = text(loaded, ref_tokens)
        distinct: list[list[int]] = []
        for row in found[source * k : (source + 1) * k]:
            if row and row != ref_tokens and row not in distinct:
                distinct.append(row)
        distinct.append(ref_tokens)  # add_reference
        counted += len(distinct)
        log_probs = torch.stack([sentence_log_prob(model, batch, source, row) for row in distinct])
        if log_prob == "mean":
            log_probs = log_probs / torch.tensor([len(row) for row in distinct], dtype=torch.float64)
        weights = torch.softmax(alpha * log_probs, dim=0)
        costs = torch.tensor(
            [1 - bleu(text(loaded, row), reference) for row in distinct], dtype=torch.float64
        )
        total = (
            total + gamma * (weights * costs).sum() + (1 - gamma) * smoothed_nll(model, batch, source, 0.1)
        )
    assert figures["candidates"] == counted
    assert value == pytest.approx(total.item(), rel=1e-6)
    for name, grad in expected_grads(model, total).items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-9)


def test_self_critical_raises_its_reward_in_training(
    trained: tuple[LoadedModel, Path], tmp_path: Path
) -> None:
    """distinct-1 from a model that repeats words: the policy gradient must remove repeats."""
    _, root = trained
    rl = tiny_config(
        tmp_path,
        model={"dropout": 0.0},
        train={
            "init_from": str(root / "model"),
            "objective": {
                "kind": "self_critical",
                "reward": {"distinct1": 1.0},
                "gamma": 1.0,
                "samples": 4,
                "baseline": "mean",
            },
            "lr": 3e-3,
            "max_steps": 80,
            "validate_every": 80,
            "log_every": 1,
        },
    )
    api.train(rl, show_progress=False)
    rows = train_log(Path(rl.train.model_dir))
    rewards = [row["reward"] for row in rows]
    assert {"reward", "baseline", "advantage", "entropy", "sample_length", "loss"} <= set(rows[0])
    assert np.mean(rewards[-10:]) > np.mean(rewards[:10]) + 0.05, (rewards[:10], rewards[-10:])


def test_a_flat_reward_is_reported_in_the_log(trained: tuple[LoadedModel, Path], tmp_path: Path) -> None:
    """Samples at a near-zero temperature are (nearly always) the greedy output: no advantage, and the log
    says so."""
    _, root = trained
    config = tiny_config(
        tmp_path,
        train={
            "init_from": str(root / "model"),
            "objective": {"kind": "self_critical", "temperature": 0.001, "reward": {"bleu": 1.0}},
            "max_steps": 6,
            "warmup_steps": 2,
            "validate_every": 6,
            "log_every": 2,
        },
    )
    api.train(config, show_progress=False)
    advice = train_log(Path(config.train.model_dir), "advice")
    assert [row["condition"] for row in advice] == ["flat_reward"]  # once, though it persists
    assert "temperature" in advice[0]["message"]
    assert all(row["flat"] > 0.9 for row in train_log(Path(config.train.model_dir)))


@pytest.mark.parametrize(
    "objective, message",
    [
        ({"kind": "self_critical", "baseline": "mean"}, "samples >= 2"),
        ({"kind": "self_critical", "reward": {"rouge": 1.0}}, r"train.objective.reward.rouge"),
        ({"kind": "minimum_risk", "reward": {"bleu": 0.0}}, "positive weight"),
        ({"kind": "minimum_risk", "candidates": 1}, "train.objective.candidates"),
        ({"kind": "self_critical", "gamma": 1.5}, "train.objective.gamma"),
    ],
)
def test_objective_options_are_checked_with_the_config(
    tmp_path: Path, objective: dict[str, Any], message: str
) -> None:
    with pytest.raises(SeqsmithError, match=message):
        tiny_config(tmp_path, train={"objective": objective})


def test_an_unknown_bleu_tokenizer_fails_before_training(trained: tuple[LoadedModel, Path]) -> None:
    loaded, _ = trained
    with pytest.raises(SeqsmithError, match="tokeniz"):
        objective_for(loaded, kind="minimum_risk", bleu_tokenize="nope")
