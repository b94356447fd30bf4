"""The fused label-smoothed cross-entropy against torch's own, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqsmith.training.losses import cross_entropy, weight_penalty

PAD = 0


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_loss_nll_and_gradient_match_torch(smoothing: float) -> None:
    torch.manual_seed(1)
    scores = torch.randn(5, 7, 40, dtype=torch.float64, requires_grad=True)
    target = torch.randint(1, 40, (5, 7))
    target[0, 3:] = PAD
    target[4, 1:] = PAD
    parts = cross_entropy(scores, target, PAD, smoothing)
    (grad,) = torch.autograd.grad(parts.loss * 2.5, scores)

    flat, flat_target = scores.reshape(-1, 40), target.reshape(-1)
    reference = F.cross_entropy(
        flat, flat_target, ignore_index=PAD, label_smoothing=smoothing, reduction="sum"
    )
    (reference_grad,) = torch.autograd.grad(reference * 2.5, scores)
    reference_nll = F.cross_entropy(flat, flat_target, ignore_index=PAD, reduction="sum")

    assert parts.tokens == int(target.ne(PAD).sum())
    torch.testing.assert_close(parts.loss.detach(), reference.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts.nll, reference_nll.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, reference_grad, rtol=1e-12, atol=1e-12)
    assert grad[0, 3:].abs().max() == 0  # padding gets no gradient


def test_bfloat16_scores_are_scored_in_float32() -> None:
    torch.manual_seed(2)
    scores = torch.randn(3, 4, 30).to(torch.bfloat16).requires_grad_()
    target = torch.randint(1, 30, (3, 4))
    parts = cross_entropy(scores, target, PAD, 0.1)
    parts.loss.backward()
    reference = F.cross_entropy(
        scores.detach().float().reshape(-1, 30), target.reshape(-1), label_smoothing=0.1, reduction="sum"
    )
    assert parts.loss.dtype == torch.float32
    torch.testing.assert_close(parts.loss.detach(), reference)
    assert scores.grad is not None and scores.grad.dtype == torch.bfloat16


def test_weight_penalty_skips_biases() -> None:
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(-2.0)
        layer.bias.fill_(5.0)
    penalty = weight_penalty(layer, l1=0.5, l2=0.25)
    assert penalty is not None
    assert float(penalty) == pytest.approx(0.5 * 6 * 2.0 + 0.25 * 6 * 4.0)
    assert weight_penalty(layer, 0.0, 0.0) is None
