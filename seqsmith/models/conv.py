"""Convolutional encoder-decoder (Gehring et al., 2017, "Convolutional Sequence to Sequence Learning").

Token plus learned position embeddings feed stacks of convolutions with gated linear units and scaled
residual connections (x + f(x)) * sqrt(1/2). The encoder's convolutions are centred and see padding as
zeros; its output z is the attention key and (z + e), with e the input embedding, the value. Every decoder
layer is a causal convolution followed by its own attention ("multi-step attention"), whose query mixes
the layer's state with the target embedding. The paper's initialization keeps the variance of
activations at dropout p: normal weights with std sqrt((1 - p) / fan_in), times 4 before a GLU; weight
normalization optional; the encoder's gradient is scaled by 1 / (2 * decoder layers), as every decoder
layer attends to it.

Decoding is incremental: a decoder layer with kernel width k keeps its last k - 1 inputs, so a step costs
one column of every layer, not the whole prefix. ``step_attention(state, heads=True)`` gives the
attention of each decoder layer (as the "heads" of the report's pictures).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from seqsmith.config import ConvConfig
from seqsmith.models.dropout import Dropout
from seqsmith.models.interface import Memory, Reorderable, Seq2SeqModel, check_positions
from seqsmith.specials import PAD_ID

HALF = math.sqrt(0.5)


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def _linear(fan_in: int, fan_out: int, dropout: float, normalized: bool) -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out)
    nn.init.normal_(layer.weight, std=math.sqrt((1 - dropout) / fan_in))
    nn.init.zeros_(layer.bias)
    return weight_norm(layer) if normalized else layer


def _conv(channels_in: int, channels: int, kernel: int, dropout: float, normalized: bool) -> nn.Conv1d:
    """Outputs 2 * channels for the GLU; the 4 makes up for the GLU's halving of the variance."""
    layer = nn.Conv1d(channels_in, 2 * channels, kernel)
    nn.init.normal_(layer.weight, std=math.sqrt(4 * (1 - dropout) / (kernel * channels_in)))
    nn.init.zeros_(cast(Tensor, layer.bias))
    return weight_norm(layer) if normalized else layer


class _Block(nn.Module):
    """A convolution with GLU and the residual, projected where the channel count changes."""

    def __init__(self, channels_in: int, channels: int, kernel: int, config: ConvConfig) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = _conv(channels_in, channels, kernel, config.dropout, config.weight_norm)
        self.residual = (
            None if channels_in == channels else _linear(channels_in, channels, 0.0, config.weight_norm)
        )
        self.dropout = Dropout(config.dropout)

    def skip(self, x: Tensor) -> Tensor:
        return x if self.residual is None else self.residual(x)

    def convolve(self, x: Tensor, left: int, right: int) -> Tensor:
        """(batch, length, channels_in) -> GLU output (batch, length, channels); pads with zeros."""
        padded = F.pad(self.dropout(x).transpose(1, 2), (left, right))
        return F.glu(self.conv(padded), dim=1).transpose(1, 2)

    def column(self, window: Tensor) -> Tensor:
        """One output position from its (rows, kernel, channels_in) inputs."""
        weight = self.conv.weight.permute(0, 2, 1).reshape(self.conv.out_channels, -1)
        return F.glu(F.linear(window.flatten(1), weight, self.conv.bias), dim=-1)


class _Stack(nn.Module):
    """Embeddings in, the blocks of one side, embeddings out."""

    def __init__(self, config: ConvConfig, side: str) -> None:
        super().__init__()
        channels = config.per_layer(f"{side}_channels")
        kernels = config.per_layer(f"{side}_kernels")
        inputs = [channels[0], *channels[:-1]]
        self.project_in = _linear(config.embed_dim, channels[0], config.dropout, config.weight_norm)
        self.blocks = nn.ModuleList(
            _Block(i, c, k, config) for i, c, k in zip(inputs, channels, kernels, strict=True)
        )
        self.project_out = _linear(channels[-1], config.embed_dim, 0.0, config.weight_norm)

    def layers(self) -> list[_Block]:
        return [cast(_Block, block) for block in self.blocks]


class _Attention(nn.Module):
    """A decoder layer's attention: the query mixes its state with the target embedding."""

    def __init__(self, channels: int, embed_dim: int, normalized: bool) -> None:
        super().__init__()
        self.query = _linear(channels, embed_dim, 0.0, normalized)
        self.out = _linear(embed_dim, channels, 0.0, normalized)

    def forward(self, x: Tensor, embedded: Tensor, memory: ConvMemory) -> tuple[Tensor, Tensor]:
        """x (batch, steps, channels) -> its attended context (same shape) and weights (batch, steps, src)."""
        query = (self.query(x) + embedded) * HALF
        scores = torch.bmm(query, memory.states.transpose(1, 2)) + memory.bias
        weights = torch.softmax(scores.float(), dim=-1).to(x.dtype)
        context = torch.bmm(weights, memory.values) * memory.scale  # the paper's m * sqrt(1 / m)
        return self.out(context), weights


@dataclasses.dataclass
class ConvMemory(Memory):
    """``states`` are the attention keys z; values (z + e) * sqrt(1/2), bias (batch, 1, src_len) 0 or -inf,
    scale (batch, 1, 1) the square root of the real source length."""

    values: Tensor
    bias: Tensor
    scale: Tensor


@dataclasses.dataclass
class ConvState(Reorderable):
    windows: list[Tensor]  # per decoder layer: its last kernel - 1 inputs (rows, kernel - 1, channels_in)
    length: int
    attention: Tensor | None = None  # (rows, src_len): mean over the decoder layers
    head_attention: Tensor | None = None  # (rows, decoder_layers, src_len)


class ConvModel(Seq2SeqModel):
    def __init__(self, config: ConvConfig, source_vocab_size: int, target_vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.target_vocab_size = target_vocab_size
        embed, p, normalized = config.embed_dim, config.dropout, config.weight_norm
        self.source_embedding = nn.Embedding(source_vocab_size, embed, padding_idx=PAD_ID)
        self.target_embedding = (
            self.source_embedding
            if config.share_embeddings
            else nn.Embedding(target_vocab_size, embed, padding_idx=PAD_ID)
        )
        self.source_positions = nn.Embedding(config.max_positions, embed)
        self.target_positions = nn.Embedding(config.max_positions, embed)
        for table in dict.fromkeys(
            [self.source_embedding, self.target_embedding, self.source_positions, self.target_positions]
        ):
            nn.init.normal_(table.weight, std=0.1)
        with torch.no_grad():
            self.source_embedding.weight[PAD_ID].zero_()
            self.target_embedding.weight[PAD_ID].zero_()
        self.encoder = _Stack(config, "encoder")
        self.decoder = _Stack(config, "decoder")
        self.attention = nn.ModuleList(
            _Attention(channels, embed, normalized) for channels in config.per_layer("decoder_channels")
        )
        self.output = nn.Linear(embed, target_vocab_size)
        nn.init.normal_(self.output.weight, std=math.sqrt((1 - p) / embed))
        nn.init.zeros_(self.output.bias)
        if config.tie_output:
            self.output.weight = self.target_embedding.weight
        self.dropout = Dropout(p)

    encoder_prefixes = ("encoder.", "source_positions.")

    def shape(self) -> str:
        config = self.config

        def listed(key: str) -> str:
            values = config.per_layer(key)
            return str(values[0]) if len(set(values)) == 1 else "/".join(map(str, values))

        return (
            f"conv layers={config.encoder_layers}+{config.decoder_layers} embed={config.embed_dim} "
            f"channels={listed('encoder_channels')}+{listed('decoder_channels')} "
            f"kernels={listed('encoder_kernels')}+{listed('decoder_kernels')}"
            + (" weight-norm" if config.weight_norm else "")
        )

    @property
    def output_size(self) -> int:
        return self.target_vocab_size

    @property
    def width(self) -> int:
        return self.config.embed_dim

    @property
    def max_output_length(self) -> int:
        return self.config.max_positions - 1

    def encode(self, src: Tensor, src_mask: Tensor) -> ConvMemory:
        batch, length = src.shape
        check_positions(self.config.max_positions, length, "a source")
        positions = torch.arange(length, device=src.device)
        embedded = self.dropout(self.source_embedding(src) + self.source_positions(positions))
        padding = ~src_mask.unsqueeze(-1)
        x = self.encoder.project_in(embedded)
        for block in self.encoder.layers():
            residual = block.skip(x)
            x = block.convolve(x.masked_fill(padding, 0.0), (block.kernel - 1) // 2, block.kernel // 2)
            x = (x + residual) * HALF
        keys = self.encoder.project_out(x).masked_fill(padding, 0.0)
        if self.training:
            keys = _ScaleGradient.apply(keys, 1.0 / (2 * self.config.decoder_layers))
        values = (keys + embedded) * HALF
        bias = torch.zeros(batch, 1, length, dtype=keys.dtype, device=src.device)
        bias.masked_fill_(~src_mask.unsqueeze(1), float("-inf"))
        scale = src_mask.sum(dim=1).clamp(min=1).to(keys.dtype).sqrt().view(batch, 1, 1)
        return ConvMemory(keys, src_mask, values, bias, scale)

    def _target_embedding(self, ids: Tensor, start: int) -> Tensor:
        positions = torch.arange(start, start + ids.size(1), device=ids.device)
        return self.dropout(self.target_embedding(ids) + self.target_positions(positions))

    def _attend(self, layer: int, x: Tensor, embedded: Tensor, memory: ConvMemory) -> tuple[Tensor, Tensor]:
        context, weights = self.attention[layer](x, embedded, memory)
        return (x + context) * HALF, weights

    def _output(self, x: Tensor) -> Tensor:
        return self.output(self.dropout(self.decoder.project_out(x)))

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        memory = self.encode(src, src_mask)
        check_positions(self.config.max_positions, tgt_in.size(1), "a target")
        embedded = self._target_embedding(tgt_in, 0)
        x = self.decoder.project_in(embedded)
        for i, block in enumerate(self.decoder.layers()):
            residual = block.skip(x)
            x, _ = self._attend(i, block.convolve(x, block.kernel - 1, 0), embedded, memory)
            x = (x + residual) * HALF
        return self._output(x)

    @torch.no_grad()
    def decode_step(
        self, prev_ids: Tensor, memory: Memory, state: Any | None, need_attention: bool = False
    ) -> tuple[Tensor, ConvState]:
        """The state always carries the attention: every layer computes it anyway."""
        if not isinstance(memory, ConvMemory):
            raise TypeError("ConvModel.decode_step needs the memory returned by ConvModel.encode")
        t = 0 if state is None else state.length
        check_positions(self.config.max_positions, t + 1, "an output")
        blocks = self.decoder.layers()
        embedded = self._target_embedding(prev_ids.unsqueeze(1), t)
        x = self.decoder.project_in(embedded)
        windows = (
            [x.new_zeros(x.size(0), b.kernel - 1, b.conv.in_channels) for b in blocks]
            if state is None
            else state.windows
        )
        kept, attention = [], []
        for i, block in enumerate(blocks):
            window = torch.cat([windows[i], x], dim=1)
            kept.append(window[:, 1:])
            residual = block.skip(x)
            x, weights = self._attend(i, block.column(window).unsqueeze(1), embedded, memory)
            x = (x + residual) * HALF
            attention.append(weights.squeeze(1))
        log_probs = F.log_softmax(self._output(x).squeeze(1).float(), dim=-1)
        layers = torch.stack(attention, dim=1)
        return log_probs, ConvState(kept, t + 1, layers.mean(dim=1), layers)
