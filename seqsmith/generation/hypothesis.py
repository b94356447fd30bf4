"""Hypotheses: the partial ones search extends, the finished ones it returns, and how they are ranked.

Every algorithm ranks finished hypotheses with the same ``rank_scores``, so greedy, sampled and beam
outputs are comparable. The length counts the EOS, as in fairseq, so an empty output has length 1.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from seqsmith.config import GenerateConfig
from seqsmith.models.interface import Reorderable


@dataclasses.dataclass
class Hypothesis:
    """One output: ``tokens`` without BOS/EOS; ``log_prob`` sums ``token_log_probs`` (EOS included)."""

    tokens: list[int]
    score: float  # the ranking score, after length and coverage penalties
    log_prob: float
    token_log_probs: list[float]
    attention: Tensor | None = None  # (len(tokens) + 1, src_len): one row per output token and the EOS


@dataclasses.dataclass
class History(Reorderable):
    """What the live rows produced so far; grown one column per step, reordered when beams move."""

    tokens: Tensor  # (rows, steps)
    token_log_probs: Tensor  # (rows, steps)
    attention: Tensor | None  # (rows, steps, src_len), kept only when asked for
    coverage: Tensor | None  # (rows, src_len) summed attention, kept only for the coverage penalty

    @classmethod
    def empty(
        cls,
        rows: int,
        src_len: int,
        dtype: torch.dtype,
        device: torch.device,
        attention: bool,
        coverage: bool,
    ) -> History:
        return cls(
            tokens=torch.empty(rows, 0, dtype=torch.long, device=device),
            token_log_probs=torch.empty(rows, 0, dtype=dtype, device=device),
            attention=torch.empty(rows, 0, src_len, dtype=dtype, device=device) if attention else None,
            coverage=torch.zeros(rows, src_len, dtype=dtype, device=device) if coverage else None,
        )

    def extend(self, tokens: Tensor, log_probs: Tensor, attention: Tensor | None) -> History:
        """Append one step; ``attention`` (rows, src_len) is required when attention or coverage is kept."""
        return History(
            tokens=torch.cat([self.tokens, tokens.unsqueeze(1)], dim=1),
            token_log_probs=torch.cat(
                [self.token_log_probs, log_probs.to(self.token_log_probs).unsqueeze(1)], 1
            ),
            attention=None
            if self.attention is None or attention is None
            else torch.cat([self.attention, attention.to(self.attention).unsqueeze(1)], dim=1),
            coverage=None if self.coverage is None or attention is None else self.coverage + attention,
        )


def length_penalty(lengths: Tensor, config: GenerateConfig) -> Tensor:
    """The divisor of the summed log-probability: 1, the length, or GNMT's ((5 + len) / 6) ** alpha."""
    lengths = lengths.to(torch.float64)
    if config.length_penalty == "average":
        return lengths
    if config.length_penalty == "gnmt":
        return ((5.0 + lengths) / 6.0) ** config.alpha
    return torch.ones_like(lengths)


def coverage_penalty(coverage: Tensor, mask: Tensor, beta: float) -> Tensor:
    """GNMT: beta * sum over real source positions of log(min(attention received, 1)); never positive."""
    logs = coverage.clamp(min=1e-10, max=1.0).log().masked_fill(~mask, 0.0)
    return beta * logs.sum(-1)


def rank_scores(
    log_probs: Tensor,
    lengths: Tensor | int,
    coverage: Tensor | None,
    mask: Tensor | None,
    config: GenerateConfig,
) -> Tensor:
    """Ranking score of finished hypotheses; ``lengths`` count the EOS, coverage/mask are (..., src_len)."""
    lengths = torch.as_tensor(lengths, device=log_probs.device).expand_as(log_probs)
    scores = log_probs / length_penalty(lengths, config).to(log_probs)
    if config.coverage_penalty > 0 and coverage is not None and mask is not None:
        scores = scores + coverage_penalty(coverage, mask, config.coverage_penalty).to(scores)
    return scores
