"""Attention modules against float64 recomputations written loop by loop from the papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from seqsmith.models import attention as attention_module
from seqsmith.models.attention import (
    Attention,
    BahdanauAttention,
    LuongDotAttention,
    LuongGeneralAttention,
    make_attention,
)
from seqsmith.models.transformer import _CrossAttention, _SelfAttention, attend, padding_bias

KINDS = ["bahdanau", "luong_dot", "luong_general"]


def _inputs(batch: int = 3, src_len: int = 6, dim: int = 8, steps: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(batch, src_len, dim, generator=generator)
    query = torch.randn(batch, steps, dim, generator=generator)
    mask = torch.ones(batch, src_len, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 1:] = False
    return query, keys, mask


def _naive_score(module: Attention, q: Tensor, k: Tensor) -> float:
    """One score in float64, straight from the formula."""
    if isinstance(module, BahdanauAttention):
        w_q, b_q = module.query_layer.weight.double(), module.query_layer.bias.double()
        w_k, v = module.key_layer.weight.double(), module.energy.weight.double()[0]
        return float(v @ torch.tanh(w_q @ q + b_q + w_k @ k))
    if isinstance(module, LuongGeneralAttention):
        return float(q @ (module.key_layer.weight.double() @ k))
    return float(q @ k)


@pytest.mark.parametrize("kind", KINDS)
def test_matches_float64_recomputation(kind: str) -> None:
    torch.manual_seed(1)
    module = make_attention(kind, 8, 8)
    query, keys, mask = _inputs()
    with torch.no_grad():
        context, weights = module(query, keys, module.project_keys(keys), mask)
        _check_against_loops(module, query, keys, mask, context, weights)


def _check_against_loops(
    module: Attention, query: Tensor, keys: Tensor, mask: Tensor, context: Tensor, weights: Tensor
) -> None:
    for b in range(query.size(0)):
        for t in range(query.size(1)):
            real = [s for s in range(keys.size(1)) if mask[b, s]]
            scores = [_naive_score(module, query[b, t].double(), keys[b, s].double()) for s in real]
            top = max(scores)
            exps = [math.exp(x - top) for x in scores]
            expected = torch.zeros(keys.size(1), dtype=torch.float64)
            expected[real] = torch.tensor(exps, dtype=torch.float64) / sum(exps)
            assert torch.allclose(weights[b, t].double(), expected, atol=1e-6)
            assert torch.allclose(context[b, t].double(), expected @ keys[b].double(), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_rows_sum_to_one_and_padding_gets_nothing(kind: str) -> None:
    module = make_attention(kind, 8, 8)
    query, keys, mask = _inputs()
    _, weights = module(query, keys, module.project_keys(keys), mask)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4))
    padded = weights.masked_select(~mask.unsqueeze(1).expand_as(weights))
    assert padded.numel() == 7 * 4 and torch.equal(padded, torch.zeros(7 * 4))
    assert weights[2, :, 0].eq(1).all()  # a single real token takes all the weight


@pytest.mark.parametrize("kind", KINDS)
def test_one_step_query_equals_its_slice_of_all_steps(kind: str) -> None:
    module = make_attention(kind, 8, 8)
    query, keys, mask = _inputs()
    projected = module.project_keys(keys)
    all_context, all_weights = module(query, keys, projected, mask)
    context, weights = module(query[:, 2], keys, projected, mask)
    assert context.shape == (3, 8) and weights.shape == (3, 6)
    assert torch.allclose(context, all_context[:, 2], atol=1e-6)
    assert torch.allclose(weights, all_weights[:, 2], atol=1e-6)


def test_bahdanau_chunking_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    module = BahdanauAttention(8, 5, hidden_dim=7)
    query, _, mask = _inputs()
    keys = torch.randn(3, 6, 5)
    projected = module.project_keys(keys)
    whole = module(query, keys, projected, mask)
    monkeypatch.setattr(attention_module, "_ADDITIVE_CHUNK_ELEMENTS", 3 * 6 * 7)  # one step per chunk
    chunked = module(query, keys, projected, mask)
    assert torch.allclose(whole[0], chunked[0]) and torch.allclose(whole[1], chunked[1])


def test_different_query_and_key_sizes() -> None:
    query, _, mask = _inputs()
    keys = torch.randn(3, 6, 5)
    for module in (BahdanauAttention(8, 5), LuongGeneralAttention(8, 5)):
        context, weights = module(query, keys, module.project_keys(keys), mask)
        assert context.shape == (3, 4, 5) and weights.shape == (3, 4, 6)
    with pytest.raises(ValueError, match="equal query and key sizes"):
        LuongDotAttention(8, 5)
    with pytest.raises(ValueError, match="unknown attention"):
        make_attention("cosine", 8, 8)


def _naive_multihead(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
    """q (B,H,T,dh), k/v (B,H,S,dh), allowed (B,T,S) bool -> output (B,H,T,dh), weights (B,H,T,S), float64."""
    scores = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.size(-1))
    weights = scores.masked_fill(~allowed.unsqueeze(1), float("-inf")).softmax(-1)
    return weights @ v, weights


def _split(x: Tensor, heads: int) -> Tensor:
    batch, length, dim = x.shape
    return x.view(batch, length, heads, dim // heads).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


def test_transformer_self_attention_against_float64() -> None:
    torch.manual_seed(2)
    module = _SelfAttention(16, 4, 0.0)
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    wide = module.double()
    q, k, v = (_split(part, 4) for part in wide.qkv(x.double()).chunk(3, dim=-1))
    for causal in (False, True):
        allowed = mask.unsqueeze(1).expand(3, 5, 5)
        if causal:
            allowed = torch.tril(torch.ones(5, 5, dtype=torch.bool)).expand(3, 5, 5)
        attended, _ = _naive_multihead(q, k, v, allowed)
        expected = wide.out(_merge(attended))
        got = module.float()(x, None if causal else padding_bias(mask, torch.float32), causal)
        module.double()
        assert torch.allclose(got.double(), expected, atol=1e-5)


def test_transformer_cross_attention_step_against_float64() -> None:
    torch.manual_seed(3)
    module = _CrossAttention(16, 4, 0.0)
    x, states = torch.randn(3, 16), torch.randn(3, 6, 16)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 2:] = False
    keys, values = (_split(part, 4).contiguous() for part in module.kv(states).chunk(2, dim=-1))
    bias = padding_bias(mask, torch.float32).expand(3, 4, 1, 6).contiguous()
    with torch.no_grad():
        got, weights = module.step(x, keys, values, bias, 1)
        x_beams = torch.randn(6, 16)  # two beams a sentence sharing its keys and values
        shared = module.step(x_beams, keys, values, bias, 2)
        every = (t.repeat_interleave(2, dim=0) for t in (keys, values, bias))
        copied = module.step(x_beams, *every, 1)
        wide = module.double()
        attended, expected_weights = _naive_multihead(
            _split(wide.q(x.double()).unsqueeze(1), 4), keys.double(), values.double(), mask.unsqueeze(1)
        )
        expected = wide.out(_merge(attended)).squeeze(1)
    assert torch.allclose(weights.double(), expected_weights.squeeze(2), atol=1e-6)
    assert torch.allclose(got.double(), expected, atol=1e-5)
    assert torch.equal(weights[0, :, 2:], torch.zeros(4, 4))
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(shared, copied, strict=True))


@pytest.mark.parametrize("causal", [False, True])
def test_attention_written_out_for_dropout_equals_sdpa(causal: bool) -> None:
    """The training path with dropout: at a rate that rounds to no dropout it must be SDPA exactly, and
    at 0.5 it must be SDPA on average (inverted dropout keeps the expectation)."""
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    bias = None if causal else padding_bias(mask, torch.float64)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=causal)
    torch.testing.assert_close(attend(q, k, v, bias, causal, 0.001), reference)  # written out, no drops
    torch.manual_seed(0)
    mean = torch.stack([attend(q, k, v, bias, causal, 0.5) for _ in range(4000)]).mean(0)
    torch.testing.assert_close(mean, reference, atol=0.15, rtol=0.0)  # ~6 standard errors; unscaled: ~0.5
