"""Tensor-level decoding and scoring for objectives, checked against search and teacher forcing."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from toy_model import ToyModel, batch

from seqsmith.config import GenerateConfig, TransformerConfig
from seqsmith.generation.search import generate_ids
from seqsmith.generation.sequences import Sequences, decode_tensors, token_log_probs
from seqsmith.models.build import build_model
from seqsmith.models.interface import Seq2SeqModel

SENTENCES = [[4, 5], [5, 4, 4, 5, 4], [4], [6, 5, 4]]


def models() -> list[Seq2SeqModel]:
    torch.manual_seed(0)
    transformer = build_model(
        TransformerConfig(d_model=16, heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1), 9, 9
    )
    return [ToyModel(vocab_size=9, seed=3).eval(), transformer.eval()]


def config(**options: Any) -> GenerateConfig:
    return GenerateConfig(**{"length_penalty": "none", "max_length_a": 1.0, "max_length_b": 4, **options})


def rescored(model: Seq2SeqModel, src: torch.Tensor, mask: torch.Tensor, found: Sequences) -> torch.Tensor:
    tgt_in, tgt_out = found.teacher_forcing(model.bos_id)
    rows = found.source_rows
    return token_log_probs(model, src[rows], mask[rows], tgt_in, tgt_out, found.mask)


@pytest.mark.parametrize("model", models(), ids=["toy", "transformer"])
def test_greedy_tensors_are_the_greedy_search(model: Seq2SeqModel) -> None:
    src, mask = batch(SENTENCES)
    found = decode_tensors(model, src, mask, config(method="greedy", no_repeat_ngram=2))
    searched = generate_ids(model, src, mask, config(method="greedy", no_repeat_ngram=2))
    for row, (hypothesis,) in enumerate(searched):
        length = int(found.lengths[row])
        assert found.ids[row, :length].tolist() == [*hypothesis.tokens, model.eos_id]
        assert found.token_log_probs[row, :length].tolist() == pytest.approx(
            hypothesis.token_log_probs, abs=1e-6
        )
        assert (found.ids[row, length:] == model.pad_id).all() and (
            found.token_log_probs[row, length:] == 0
        ).all()


@pytest.mark.parametrize("model", models(), ids=["toy", "transformer"])
def test_samples_carry_the_log_probs_teacher_forcing_gives_them_with_gradients(model: Seq2SeqModel) -> None:
    src, mask = batch(SENTENCES)
    options = config(method="sample", temperature=1.5, top_k=6)
    found = decode_tensors(model, src, mask, options, draws=3, generator=torch.Generator().manual_seed(1))
    assert found.source_rows.tolist() == [r for r in range(len(SENTENCES)) for _ in range(3)]
    assert not found.ids.requires_grad and not found.token_log_probs.requires_grad
    again = rescored(model, src, mask, found)
    torch.testing.assert_close(
        again.detach().to(found.token_log_probs.dtype), found.token_log_probs, atol=1e-5, rtol=0
    )
    again.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters() if p.grad is not None)


def test_sampled_first_tokens_follow_the_tempered_distribution() -> None:
    model = ToyModel(vocab_size=9, seed=3, sharpness=0.5).eval()  # 6 tokens above 5%, none above 25%
    src, mask = batch([[4, 5, 6]])
    options = config(method="sample", temperature=0.7)
    found = decode_tensors(model, src, mask, options, draws=4000, generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(found.ids[:, 0], minlength=9).double() / 4000
    with torch.no_grad():
        first, _ = model.decode_step(torch.tensor([model.bos_id]), model.encode(src, mask), None)
    first[:, [model.pad_id, model.bos_id]] = float("-inf")  # never emitted
    expected = torch.softmax(first[0] / 0.7, dim=0)
    assert torch.allclose(frequencies, expected, atol=0.025)
