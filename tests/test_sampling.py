"""Sampling: reproducible seeds, degenerate cases equal to greedy, and frequencies that match the model."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from toy_model import ToyModel, batch, teacher_forced

from seqsmith.config import GenerateConfig
from seqsmith.generation import generate_ids
from seqsmith.generation.sampling import fill_holes
from seqsmith.models.interface import Seq2SeqModel

SENTENCES = [[4, 5], [5, 4, 4, 5, 4], [4], [6, 5, 4]]


def config(**options: Any) -> GenerateConfig:
    defaults: dict[str, Any] = {
        "method": "sample",
        "beam_size": 5,
        "length_penalty": "none",
        "keep_attention": True,
    }
    return GenerateConfig(**{**defaults, **options})


def outputs(model: Seq2SeqModel, options: GenerateConfig) -> list[list[list[int]]]:
    return [[h.tokens for h in hyps] for hyps in generate_ids(model, *batch(SENTENCES), options)]


def test_a_seed_repeats_exactly_and_another_seed_differs() -> None:
    model = ToyModel(vocab_size=10, seed=0)
    options = config(nbest=3, seed=7, top_p=0.9, temperature=1.3)
    first = outputs(model, options)
    assert outputs(model, options) == first
    assert outputs(model, options.model_copy(update={"seed": 8})) != first


def test_top_k_one_and_a_tiny_nucleus_are_greedy() -> None:
    for seed in range(6):
        model = ToyModel(vocab_size=10, seed=seed, sharpness=0.8)
        greedy = outputs(model, config(method="greedy", no_repeat_ngram=2))
        assert outputs(model, config(seed=seed, top_k=1, temperature=2.0, no_repeat_ngram=2)) == greedy
        assert outputs(model, config(seed=seed, top_p=1e-6, no_repeat_ngram=2)) == greedy


def test_samples_carry_the_models_untempered_scores_best_first() -> None:
    model = ToyModel(vocab_size=10, seed=2)
    options = config(nbest=4, seed=1, temperature=1.7, top_k=5, length_penalty="gnmt", coverage_penalty=0.2)
    found = generate_ids(model, *batch(SENTENCES), options)
    for sentence, hyps in zip(SENTENCES, found, strict=True):
        assert len(hyps) == 4
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for hyp in hyps:
            token_lps, attention = teacher_forced(model, *batch([sentence]), hyp.tokens)
            assert hyp.token_log_probs == pytest.approx(token_lps, abs=1e-9)
            assert hyp.log_prob == pytest.approx(sum(token_lps), abs=1e-9)
            assert hyp.attention is not None and attention is not None
            torch.testing.assert_close(hyp.attention, attention)


def first_token_counts(model: Seq2SeqModel, options: GenerateConfig, copies: int) -> torch.Tensor:
    """Sample one token (min = max length = 1) ``copies * nbest`` times and count each symbol."""
    src, mask = batch([SENTENCES[3]] * copies)
    options = options.model_copy(update={"min_length": 1, "max_length_a": 0.0, "max_length_b": 1})
    counts = torch.zeros(model.output_size)
    for hyps in generate_ids(model, src, mask, options):
        assert len(hyps) == options.nbest
        for hyp in hyps:
            counts[hyp.tokens[0]] += 1
    return counts


@torch.no_grad()
def expected_distribution(model: Seq2SeqModel, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The first-step distribution after temperature, top-k and nucleus, computed in float64 by sorting."""
    src, mask = batch([SENTENCES[3]])
    log_probs = model(src, mask, torch.tensor([[model.bos_id]]))[0, 0].double()
    log_probs[[model.pad_id, model.bos_id, model.eos_id]] = float("-inf")
    probs = (log_probs / temperature).softmax(0)
    order = probs.argsort(descending=True).tolist()
    kept, mass = [], 0.0
    for rank, token in enumerate(order):
        if (top_k and rank >= top_k) or mass >= top_p or probs[token] == 0:
            break
        kept.append(token)
        mass += float(probs[token])
    truncated = torch.zeros_like(probs)
    truncated[kept] = probs[kept]
    return truncated / truncated.sum()


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (2.0, 0, 1.0), (0.7, 3, 1.0), (1.0, 0, 0.75)]
)
def test_sampled_frequencies_match_the_distribution(temperature: float, top_k: int, top_p: float) -> None:
    model = ToyModel(vocab_size=9, seed=4, sharpness=0.6)
    options = config(nbest=5, seed=11, temperature=temperature, top_k=top_k, top_p=top_p)
    counts = first_token_counts(model, options, copies=1600)
    expected = expected_distribution(model, temperature, top_k, top_p) * counts.sum().double()
    assert torch.all(counts[expected == 0] == 0)
    support = expected > 0
    assert int(support.sum()) >= 2
    chi_square = float(((counts[support] - expected[support]) ** 2 / expected[support]).sum())
    assert chi_square < 25.0  # far beyond the 0.1% point for <= 7 degrees of freedom (24.3)


@pytest.mark.parametrize("seed", range(20))
def test_rows_that_go_on_stay_in_place_unless_they_fill_an_ended_row(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    size = int(torch.randint(1, 12, (1,), generator=generator))
    ended = (torch.rand(size, generator=generator) < 0.4).tolist()
    keep = fill_holes(ended)
    assert sorted(keep) == [a for a, flag in enumerate(ended) if not flag]
    staying = [a for a in range(len(keep)) if not ended[a]]
    assert [keep[a] for a in staying] == staying
    assert sum(keep[a] != a for a in range(len(keep))) == sum(ended[: len(keep)])
