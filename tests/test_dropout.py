"""The byte-mask dropout: the right rate, unbiased, seeded, and a gradient through the same mask."""

from __future__ import annotations

import pytest
import torch

from seqsmith.models.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_rate_and_expectation(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(1000, 999)  # an odd element count: the last int64 of random bytes is cut
    y = dropout(x, p, training=True)
    dropped = float(y.eq(0).float().mean())
    rounded = round(p * 256) / 256
    assert dropped == pytest.approx(rounded, abs=0.003)
    assert float(y.mean()) == pytest.approx(1.0, abs=0.005)
    kept = torch.unique(y)
    assert kept.numel() == 2 and kept[0] == 0
    assert float(kept[1]) == pytest.approx(1 / (1 - rounded))


def test_same_seed_same_mask_and_gradient_follows_the_mask() -> None:
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(7)
    first = dropout(x, 0.3, True)
    torch.manual_seed(7)
    second = dropout(x, 0.3, True)
    assert torch.equal(first, second)
    first.sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad.eq(0), first.eq(0) & x.ne(0))


def test_evaluation_and_zero_rate_are_identity() -> None:
    x = torch.randn(10, 10)
    module = Dropout(0.3).eval()
    assert module(x) is x
    assert dropout(x, 0.001, True) is x  # rounds to 0/256
    assert "p=0.3" in repr(module)
