"""Attention for recurrent decoders: Bahdanau (additive) and Luong (dot, general), with source masking.

Keys are projected once per source with ``project_keys`` (the part of the score that does not depend on
the decoder), so a decoding step only pays for the query side. Queries may be one step (batch, dim) or
all steps at once (batch, steps, dim) when the decoder does not need the previous step's output.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

# Bahdanau scores broadcast to (batch, steps, src_len, dim): keep each slice under this many elements.
_ADDITIVE_CHUNK_ELEMENTS = 1 << 24


class Attention(nn.Module, ABC):
    """Scores queries against source keys; returns the context (weighted keys) and the weights."""

    def __init__(self, query_dim: int, key_dim: int) -> None:
        super().__init__()
        self.query_dim = query_dim
        self.key_dim = key_dim

    def project_keys(self, keys: Tensor) -> Tensor:
        """keys (batch, src_len, key_dim) -> whatever ``scores`` needs; computed once per source."""
        return keys

    @abstractmethod
    def scores(self, query: Tensor, projected: Tensor) -> Tensor:
        """query (batch, steps, query_dim) -> unnormalized scores (batch, steps, src_len)."""

    def forward(self, query: Tensor, keys: Tensor, projected: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Returns context (batch, [steps,] key_dim) and weights (batch, [steps,] src_len), zero on padding.

        ``mask`` (batch, src_len) is True at real tokens; every row needs at least one.
        """
        single = query.dim() == 2
        queries = query.unsqueeze(1) if single else query
        scores = self.scores(queries, projected).masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        context = torch.bmm(weights, keys)
        if single:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights


class BahdanauAttention(Attention):
    """score(q, k) = v · tanh(W_q q + W_k k) (Bahdanau et al., 2015); W_k k is precomputed."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__(query_dim, key_dim)
        hidden_dim = hidden_dim or query_dim
        self.key_layer = nn.Linear(key_dim, hidden_dim, bias=False)
        self.query_layer = nn.Linear(query_dim, hidden_dim)
        self.energy = nn.Linear(hidden_dim, 1, bias=False)

    def project_keys(self, keys: Tensor) -> Tensor:
        return self.key_layer(keys)

    def scores(self, query: Tensor, projected: Tensor) -> Tensor:
        queries = self.query_layer(query)
        batch, hidden = queries.size(0), queries.size(2)
        chunk = max(1, _ADDITIVE_CHUNK_ELEMENTS // max(1, batch * projected.size(1) * hidden))
        parts = [
            self.energy(torch.tanh(part.unsqueeze(2) + projected.unsqueeze(1))).squeeze(-1)
            for part in queries.split(chunk, dim=1)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class LuongDotAttention(Attention):
    """score(q, k) = q · k (Luong et al., 2015); needs query_dim == key_dim."""

    def __init__(self, query_dim: int, key_dim: int) -> None:
        if query_dim != key_dim:
            raise ValueError(f"dot attention needs equal query and key sizes, got {query_dim} and {key_dim}")
        super().__init__(query_dim, key_dim)

    def scores(self, query: Tensor, projected: Tensor) -> Tensor:
        return torch.bmm(query, projected.transpose(1, 2))


class LuongGeneralAttention(Attention):
    """score(q, k) = q · W k (Luong et al., 2015); W k is precomputed, so a step costs one bmm."""

    def __init__(self, query_dim: int, key_dim: int) -> None:
        super().__init__(query_dim, key_dim)
        self.key_layer = nn.Linear(key_dim, query_dim, bias=False)

    def project_keys(self, keys: Tensor) -> Tensor:
        return self.key_layer(keys)

    def scores(self, query: Tensor, projected: Tensor) -> Tensor:
        return torch.bmm(query, projected.transpose(1, 2))


def make_attention(kind: str, query_dim: int, key_dim: int) -> Attention:
    """The attention named by ``RNNConfig.attention``."""
    if kind == "bahdanau":
        return BahdanauAttention(query_dim, key_dim)
    if kind == "luong_dot":
        return LuongDotAttention(query_dim, key_dim)
    if kind == "luong_general":
        return LuongGeneralAttention(query_dim, key_dim)
    raise ValueError(f"unknown attention {kind!r}; choose bahdanau, luong_dot or luong_general")
