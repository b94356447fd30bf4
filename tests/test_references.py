"""Architectures against references written apart from them, in float64: the pre-norm Transformer against
torch's own nn.TransformerEncoderLayer / nn.TransformerDecoderLayer on copied weights, and a GRU and an LSTM
decoder step against the cell equations and Bahdanau attention written out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from seqsmith.config import RNNConfig, TransformerConfig
from seqsmith.models.build import build_model
from seqsmith.models.rnn import RNNModel
from seqsmith.models.transformer import TransformerModel
from seqsmith.specials import BOS_ID, PAD_ID

VOCAB = 23


def batch(lengths: list[int], seed: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(5, VOCAB, (len(lengths), width), generator=generator)
    mask = torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return ids.masked_fill(~mask, PAD_ID), mask


def copy_block(
    theirs: nn.Module, ours: nn.Module, self_attention: nn.Module, cross: nn.Module | None
) -> None:
    """Our fused projections into torch's layer (qkv rows are [q; k; v] in both)."""
    with torch.no_grad():
        theirs.self_attn.in_proj_weight.copy_(self_attention.qkv.weight)
        theirs.self_attn.in_proj_bias.copy_(self_attention.qkv.bias)
        theirs.self_attn.out_proj.weight.copy_(self_attention.out.weight)
        theirs.self_attn.out_proj.bias.copy_(self_attention.out.bias)
        if cross is not None:
            theirs.multihead_attn.in_proj_weight.copy_(torch.cat([cross.q.weight, cross.kv.weight]))
            theirs.multihead_attn.in_proj_bias.copy_(torch.cat([cross.q.bias, cross.kv.bias]))
            theirs.multihead_attn.out_proj.weight.copy_(cross.out.weight)
            theirs.multihead_attn.out_proj.bias.copy_(cross.out.bias)
        theirs.linear1.load_state_dict(ours.ffn[0].state_dict())
        theirs.linear2.load_state_dict(ours.ffn[2].state_dict())
        norms = ["norm1", "norm2", "norm3"] if cross is not None else ["norm1", "norm2"]
        for name in norms:
            getattr(theirs, name).load_state_dict(getattr(ours, name).state_dict())


def test_pre_norm_transformer_equals_torchs_layers_on_copied_weights() -> None:
    torch.manual_seed(0)
    config = TransformerConfig(
        d_model=16, heads=4, ffn_dim=24, encoder_layers=2, decoder_layers=2, dropout=0.0, norm="pre"
    )
    model = build_model(config, VOCAB, VOCAB).double().eval()
    assert isinstance(model, TransformerModel)
    options = {"d_model": 16, "nhead": 4, "dim_feedforward": 24, "dropout": 0.0, "batch_first": True}
    encoders = [nn.TransformerEncoderLayer(norm_first=True, **options).double().eval() for _ in range(2)]
    decoders = [nn.TransformerDecoderLayer(norm_first=True, **options).double().eval() for _ in range(2)]
    for theirs, ours in zip(encoders, model.encoder_layers, strict=True):
        copy_block(theirs, ours, ours.attention, None)
    for theirs, ours in zip(decoders, model.decoder_layers, strict=True):
        copy_block(theirs, ours, ours.self_attention, ours.cross_attention)
    src, mask = batch([6, 3, 5], seed=1)
    tgt, _ = batch([4, 4, 4], seed=2)
    tgt_in = torch.cat([torch.full((3, 1), BOS_ID), tgt], dim=1)
    scale = math.sqrt(16)
    x = model.source_embedding(src) * scale + model.source_positions.table[: src.size(1)]
    for layer in encoders:
        x = layer(x, src_key_padding_mask=~mask)
    memory = model.encoder_norm(x)
    y = model.target_embedding(tgt_in) * scale + model.target_positions.table[: tgt_in.size(1)]
    causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.size(1), dtype=torch.float64)
    for layer in decoders:
        y = layer(y, memory, tgt_mask=causal, memory_key_padding_mask=~mask)
    expected = model.output(model.decoder_norm(y))
    with torch.no_grad():
        torch.testing.assert_close(model(src, mask, tgt_in), expected, atol=1e-10, rtol=1e-10)


def gru_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """Cho et al.'s GRU as torch documents it: r, z, n gates."""
    r_i, z_i, n_i = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
    r_h, z_h, n_h = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
    n = torch.tanh(n_i + r * n_h)
    return (1 - z) * n + z * h


def lstm_cell(
    x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> tuple[Tensor, Tensor]:
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_recurrent_decoder_step_equals_the_equations_written_out(cell: str) -> None:
    """A decoder step (input feeding, Bahdanau attention, tanh combination, output) from the state the
    previous step left, recomputed with the cell's gate equations instead of nn.GRU / nn.LSTM."""
    torch.manual_seed(3)
    config = RNNConfig(cell=cell, embed_dim=12, hidden_dim=16, dropout=0.0, attention="bahdanau")
    model = build_model(config, VOCAB, VOCAB).double().eval()
    assert isinstance(model, RNNModel)
    src, mask = batch([5, 2], seed=4)
    prev = torch.tensor([7, 9])
    with torch.no_grad():
        memory = model.encode(src, mask)
        _, first = model.decode_step(torch.full((2,), BOS_ID), memory, None)
        log_probs, second = model.decode_step(prev, memory, first)
        d, a = model.decoder, model.attention
        x = torch.cat([model.target_embedding(prev), first.feed], dim=-1)
        weights_in = d.weight_ih_l0, d.weight_hh_l0, d.bias_ih_l0, d.bias_hh_l0
        if cell == "gru":
            h = gru_cell(x, first.hidden[:, 0], *weights_in)
        else:
            h, _ = lstm_cell(x, first.hidden[:, 0], first.cell[:, 0], *weights_in)
        query = h @ a.query_layer.weight.T + a.query_layer.bias
        energy = torch.tanh(memory.states @ a.key_layer.weight.T + query[:, None])
        scores = (energy @ a.energy.weight.T).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        context = (weights.unsqueeze(-1) * memory.states).sum(1)
        vector = torch.tanh(torch.cat([h, context], dim=-1) @ model.combine.weight.T + model.combine.bias)
        expected = torch.log_softmax(vector @ model.output.weight.T + model.output.bias, dim=-1)
    # decode_step hands search float32 log-probabilities: compare at that precision
    torch.testing.assert_close(log_probs, expected.float(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(second.attention, weights, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(second.hidden[:, 0], h, atol=1e-12, rtol=1e-10)
