"""Training objectives on teacher-forced scores."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class LossParts:
    loss: Tensor  # summed over target tokens: what is back-propagated (with smoothing and penalties)
    nll: Tensor  # summed negative log-likelihood without smoothing: what perplexity reports
    tokens: int


def cross_entropy(scores: Tensor, target: Tensor, pad_id: int, label_smoothing: float) -> LossParts:
    """Label-smoothed cross-entropy, summed; ``log_softmax(scores)`` is the model's distribution."""
    flat_scores = scores.reshape(-1, scores.size(-1)).float()
    flat_target = target.reshape(-1)
    loss = F.cross_entropy(
        flat_scores, flat_target, ignore_index=pad_id, label_smoothing=label_smoothing, reduction="sum"
    )
    if label_smoothing:
        with torch.no_grad():
            nll = F.cross_entropy(flat_scores, flat_target, ignore_index=pad_id, reduction="sum")
    else:
        nll = loss.detach()
    return LossParts(loss, nll, int((flat_target != pad_id).sum()))


def weight_penalty(model: nn.Module, l1: float, l2: float) -> Tensor | None:
    """Explicit L1/L2 penalties on weight matrices (biases and norms are left alone)."""
    if not l1 and not l2:
        return None
    weights = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    total = torch.zeros((), device=weights[0].device)
    for weight in weights:
        if l1:
            total = total + l1 * weight.abs().sum()
        if l2:
            total = total + l2 * weight.pow(2).sum()
    return total
