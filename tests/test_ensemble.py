"""EnsembleModel: averaged probabilities, and unchanged search on top of it."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from toy_model import ToyModel, batch

from seqsmith.config import GenerateConfig
from seqsmith.errors import SeqsmithError
from seqsmith.generation import EnsembleModel, generate_ids

SENTENCES = [[4, 5], [5, 4, 4, 5, 4], [4], [6, 5, 4]]


def test_two_copies_of_one_model_decode_like_that_model() -> None:
    src, mask = batch(SENTENCES)
    for seed in range(3):
        model = ToyModel(vocab_size=10, seed=seed, sharpness=1.5)
        twins = EnsembleModel([model, model])
        for options in (
            GenerateConfig(
                beam_size=4, nbest=3, coverage_penalty=0.2, no_repeat_ngram=2, keep_attention=True
            ),
            GenerateConfig(method="greedy", beam_size=1, keep_attention=True),
            GenerateConfig(method="diverse_beam", beam_size=4, groups=2, nbest=2, keep_attention=True),
        ):
            alone, paired = generate_ids(model, src, mask, options), generate_ids(twins, src, mask, options)
            for one, two in zip(alone, paired, strict=True):
                assert [h.tokens for h in one] == [h.tokens for h in two]
                assert [h.score for h in one] == pytest.approx([h.score for h in two], abs=1e-9)
                for a, b in zip(one, two, strict=True):
                    assert a.attention is not None and b.attention is not None
                    torch.testing.assert_close(a.attention, b.attention)


def test_steps_average_probabilities_and_attention() -> None:
    first, second = ToyModel(vocab_size=10, seed=1), ToyModel(vocab_size=10, seed=2, sharpness=2.0)
    ensemble = EnsembleModel([first, second])
    src, mask = batch(SENTENCES)
    tgt_in = torch.tensor([[2, 4, 5, 6]] * len(SENTENCES))
    memories = [first.encode(src, mask), second.encode(src, mask)]
    memory, state = ensemble.encode(src, mask), None
    states: list[Any] = [None, None]
    rows = []
    for t in range(tgt_in.size(1)):
        log_probs, state = ensemble.decode_step(tgt_in[:, t], memory, state)
        steps = [m.decode_step(tgt_in[:, t], mem, s) for m, mem, s in zip((first, second), memories, states)]
        states = [s for _, s in steps]
        mean = (steps[0][0].exp() + steps[1][0].exp()) / 2
        torch.testing.assert_close(log_probs, mean.log())
        torch.testing.assert_close(state.attention, (states[0].attention + states[1].attention) / 2)
        rows.append(log_probs)
    torch.testing.assert_close(ensemble(src, mask, tgt_in), torch.stack(rows, dim=1))


def test_reordered_ensemble_states_follow_their_rows() -> None:
    first, second = ToyModel(vocab_size=10, seed=1), ToyModel(vocab_size=10, seed=2)
    ensemble = EnsembleModel([first, second])
    src, mask = batch(SENTENCES)
    options = GenerateConfig(beam_size=3, nbest=2, fixed_length=True)
    together = generate_ids(ensemble, src, mask, options)
    for sentence, hyps in zip(SENTENCES, together, strict=True):
        alone = generate_ids(ensemble, *batch([sentence]), options)[0]
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]
        assert all(len(h.tokens) == len(sentence) for h in hyps)


def test_incompatible_members_are_refused() -> None:
    with pytest.raises(SeqsmithError, match="at least one"):
        EnsembleModel([])
    with pytest.raises(SeqsmithError, match="same target vocabulary"):
        EnsembleModel([ToyModel(vocab_size=8), ToyModel(vocab_size=9)])
    other = ToyModel(vocab_size=8)
    other.eos_id = 5
    with pytest.raises(SeqsmithError, match="PAD/BOS/EOS"):
        EnsembleModel([ToyModel(vocab_size=8), other])
