"""Transformer encoder-decoder (Vaswani et al., 2017), built for fast CPU training and decoding.

Training runs every attention through ``scaled_dot_product_attention`` (causal flag for the decoder, an
additive key-padding bias for the rest). Decoding is incremental:

- ``encode`` projects the encoder states to every decoder layer's cross-attention keys/values once and
  stores them in the memory, with the padding bias already expanded over heads;
- a step attends with two batched matmuls over (batch*heads) for its single query, measured ~2-3x faster
  than SDPA for one query on CPU, and returns cross-attention weights at no extra cost; the beams of a
  sentence share its cross-attention keys/values (``memory.repeat_rows``) and attend as one small matrix;
- the self-attention keys/values of all layers live in one preallocated buffer (layers, 2, rows, heads,
  capacity, head_dim): a step writes its column in place, and ``state.select`` gathers rows into a buffer
  taken from a small pool. Fresh tens-of-MB allocations page-fault on every step, which made beam
  reordering ~5x slower than gathering into reused memory. ``state.reorder`` (search's call, which drops
  the old state) moves rows within the one buffer when few of them move, as when rows end in greedy
  search and sampling, so that a batch holds one buffer rather than two.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqsmith.config import FIELD_SLOTS, TransformerConfig
from seqsmith.models.dropout import Dropout, dropout
from seqsmith.models.interface import Memory, Reorderable, Seq2SeqModel, check_positions, repeated
from seqsmith.specials import PAD_ID

_FLOOR = 1e-12  # the least probability a copy model gives a token

_CACHE_CHUNK = 16  # decoding steps the self-attention buffer grows by (32 held 14-16% more memory at beam 5)
_POOL_SIZE = 4  # idle buffers a pool keeps


def _xavier_blocks(linear: nn.Linear, blocks: int) -> None:
    """Xavier-initialize a fused projection as if its ``blocks`` parts were separate layers."""
    with torch.no_grad():
        for block in linear.weight.view(blocks, -1, linear.in_features):
            nn.init.xavier_uniform_(block)
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)


def attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, causal: bool, dropout_p: float) -> Tensor:
    """``scaled_dot_product_attention``; with dropout on the weights (training), written out so that the
    weights go through the byte-mask dropout: SDPA's own draws one double an element on CPU."""
    if not dropout_p:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=causal)
    scores = torch.matmul(q * q.size(-1) ** -0.5, k.transpose(-1, -2))
    if bias is not None:
        scores = scores + bias
    if causal:
        scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu_(1), float("-inf"))
    return torch.matmul(dropout(torch.softmax(scores, dim=-1), dropout_p, True), v)


def padding_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """mask (batch, src_len), True at real tokens -> additive bias (batch, 1, 1, src_len): 0 or -inf."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
    return bias.view(mask.size(0), 1, 1, mask.size(1))


class _SelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, d_model // heads, dropout
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        _xavier_blocks(self.qkv, 3)
        _xavier_blocks(self.out, 1)

    def forward(self, x: Tensor, bias: Tensor | None, causal: bool) -> Tensor:
        batch, length, d_model = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attended = attend(q, k, v, bias, causal, self.dropout if self.training else 0.0)
        return self.out(attended.transpose(1, 2).reshape(batch, length, d_model))

    def step(self, x: Tensor, cache: Tensor, t: int) -> Tensor:
        """x (rows, d_model) at position t; cache (2, rows, heads, capacity, head_dim) gets column t."""
        rows, d_model = x.shape
        qkv = self.qkv(x).view(rows, 3, self.heads, self.head_dim)
        cache[:, :, :, t] = qkv[:, 1:].transpose(0, 1)
        q = (qkv[:, 0] * self.scale).reshape(rows * self.heads, 1, self.head_dim)
        keys = cache[0, :, :, : t + 1].reshape(rows * self.heads, t + 1, self.head_dim)
        values = cache[1, :, :, : t + 1].reshape(rows * self.heads, t + 1, self.head_dim)
        weights = torch.softmax(torch.bmm(q, keys.transpose(1, 2)), dim=-1)
        weights = dropout(weights, self.dropout, self.training)
        return self.out(torch.bmm(weights, values).view(rows, d_model))


class _CrossAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, d_model // heads, dropout
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)  # applied in TransformerModel.encode, all layers at once
        self.out = nn.Linear(d_model, d_model)
        _xavier_blocks(self.q, 1)
        _xavier_blocks(self.kv, 2)
        _xavier_blocks(self.out, 1)

    def forward(
        self, x: Tensor, keys: Tensor, values: Tensor, bias: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """The attended vectors and, with ``need_weights`` (copying), the weights averaged over heads
        (batch, tgt_len, src_len), written out instead of the fused kernel."""
        batch, length, d_model = x.shape
        q = self.q(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        if not need_weights:
            attended = attend(q, keys, values, bias, False, self.dropout if self.training else 0.0)
            return self.out(attended.transpose(1, 2).reshape(batch, length, d_model)), None
        weights = torch.softmax(q @ keys.transpose(-1, -2) * self.scale + bias, dim=-1)
        attended = dropout(weights, self.dropout, self.training) @ values
        return self.out(attended.transpose(1, 2).reshape(batch, length, d_model)), weights.mean(dim=1)

    def step(
        self, x: Tensor, keys: Tensor, values: Tensor, bias: Tensor, group: int
    ) -> tuple[Tensor, Tensor]:
        """x (rows, d_model), ``group`` consecutive rows to a sentence; keys/values (sentences, heads,
        src_len, head_dim); bias (sentences, heads, 1, src_len).

        Returns the output and the weights (rows, heads, src_len).
        """
        rows, d_model = x.shape
        flat = rows // group * self.heads
        q = (self.q(x) * self.scale).view(-1, group, self.heads, self.head_dim).transpose(1, 2)
        keys = keys.view(flat, -1, self.head_dim).transpose(1, 2)
        scores = torch.baddbmm(bias.view(flat, 1, -1), q.reshape(flat, group, self.head_dim), keys)
        weights = torch.softmax(scores, dim=-1)  # (sentences * heads, group, src_len)
        dropped = dropout(weights, self.dropout, self.training)
        attended = torch.bmm(dropped, values.view(flat, -1, self.head_dim))
        attended = attended.view(-1, self.heads, group, self.head_dim).transpose(1, 2).reshape(rows, d_model)
        weights = weights.view(-1, self.heads, group, weights.size(-1)).transpose(1, 2)
        return self.out(attended), weights.reshape(rows, self.heads, -1)


class _Block(nn.Module):
    """Residual wiring shared by both layer kinds: pre-norm x + f(norm(x)) or post-norm norm(x + f(x))."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.dropout = Dropout(config.dropout)
        activation: nn.Module = nn.ReLU() if config.activation == "relu" else nn.GELU()
        self.ffn = nn.Sequential(
            nn.Linear(config.d_model, config.ffn_dim), activation, nn.Linear(config.ffn_dim, config.d_model)
        )
        for layer in (self.ffn[0], self.ffn[2]):
            assert isinstance(layer, nn.Linear)
            _xavier_blocks(layer, 1)

    def _in(self, x: Tensor, norm: nn.LayerNorm) -> Tensor:
        return norm(x) if self.pre_norm else x

    def _add(self, x: Tensor, y: Tensor, norm: nn.LayerNorm) -> Tensor:
        return x + self.dropout(y) if self.pre_norm else norm(x + self.dropout(y))


class _EncoderLayer(_Block):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.attention = _SelfAttention(config.d_model, config.heads, config.attention_dropout)
        self.norm1, self.norm2 = nn.LayerNorm(config.d_model), nn.LayerNorm(config.d_model)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        x = self._add(x, self.attention(self._in(x, self.norm1), bias, False), self.norm1)
        return self._add(x, self.ffn(self._in(x, self.norm2)), self.norm2)


class _DecoderLayer(_Block):
    """Self-attention, cross-attention over the source and, with ``model.knowledge_field``, a second
    cross-attention over the knowledge encoder's states, then the feed-forward block."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.self_attention = _SelfAttention(config.d_model, config.heads, config.attention_dropout)
        self.cross_attention = _CrossAttention(config.d_model, config.heads, config.attention_dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(config.d_model) for _ in range(3))
        if config.knowledge_field is not None:
            self.knowledge_attention = _CrossAttention(config.d_model, config.heads, config.attention_dropout)
            self.norm_knowledge = nn.LayerNorm(config.d_model)

    def forward(
        self, x: Tensor, memory: TransformerMemory, layer: int, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """The layer's output and, with ``need_weights``, its cross-attention averaged over heads."""
        x = self._add(x, self.self_attention(self._in(x, self.norm1), None, True), self.norm1)
        keys, values = memory.cross_keys[layer], memory.cross_values[layer]
        attended, weights = self.cross_attention(
            self._in(x, self.norm2), keys, values, memory.bias, need_weights
        )
        x = self._add(x, attended, self.norm2)
        if memory.knowledge_bias is not None:
            keys, values = memory.knowledge_keys[layer], memory.knowledge_values[layer]
            attended, _ = self.knowledge_attention(
                self._in(x, self.norm_knowledge), keys, values, memory.knowledge_bias
            )
            x = self._add(x, attended, self.norm_knowledge)
        return self._add(x, self.ffn(self._in(x, self.norm3)), self.norm3), weights

    def step(
        self, x: Tensor, cache: Tensor, t: int, memory: TransformerMemory, layer: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The layer's output, its cross-attention weights and its knowledge attention's (or None)."""
        x = self._add(x, self.self_attention.step(self._in(x, self.norm1), cache, t), self.norm1)
        attended, weights = self.cross_attention.step(
            self._in(x, self.norm2),
            memory.cross_keys[layer],
            memory.cross_values[layer],
            memory.bias,
            memory.group,
        )
        x = self._add(x, attended, self.norm2)
        knowing = None
        if memory.knowledge_bias is not None:
            attended, knowing = self.knowledge_attention.step(
                self._in(x, self.norm_knowledge),
                memory.knowledge_keys[layer],
                memory.knowledge_values[layer],
                memory.knowledge_bias,
                memory.group,
            )
            x = self._add(x, attended, self.norm_knowledge)
        return self._add(x, self.ffn(self._in(x, self.norm3)), self.norm3), weights, knowing


def _packed(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each row's states at ``mask`` moved to the front in their order, cut to the longest row: an encoder
    of one field then costs that field's length, not the whole source's, and computes the same (it sees
    no other token either way). Returns the states, their mask and their source positions."""
    length = int(mask.sum(dim=1).max())
    at = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :length]
    return x.gather(1, at.unsqueeze(-1).expand(-1, -1, x.size(-1))), mask.gather(1, at), at


def sinusoidal_table(length: int, dim: int) -> Tensor:
    """(length, dim) table: sines in the first half of the features, cosines in the second.

    Frequencies are 10000^(-2i/dim) as in Vaswani et al. and Marian, so an exported model computes the same
    positions in transformers, Marian and CTranslate2, which rebuild the table instead of loading it.
    """
    half = dim // 2
    frequencies = torch.exp(torch.arange(half, dtype=torch.float64) * -(math.log(10000.0) / half))
    angles = torch.arange(length, dtype=torch.float64).unsqueeze(1) * frequencies.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(table, (0, dim - 2 * half)).float()


class _Cache:
    """One self-attention buffer; returns to its pool when no state holds it any more."""

    def __init__(self, pool: _CachePool, tensor: Tensor) -> None:
        self.pool, self.tensor = pool, tensor
        self.holders = 0  # live states on this buffer: one alone may reorder its rows in place

    def __del__(self) -> None:
        self.pool.give_back(self.tensor)


class _CachePool:
    """Self-attention buffers (layers, 2, rows, heads, capacity, head_dim) of one decoding run."""

    def __init__(self, layers: int, heads: int, head_dim: int, like: Tensor) -> None:
        self.layers, self.heads, self.head_dim = layers, heads, head_dim
        self.dtype, self.device = like.dtype, like.device
        self.capacity = _CACHE_CHUNK
        self.free: list[Tensor] = []

    def take(self, rows: int, length: int) -> _Cache:
        """A buffer for at least ``rows`` rows with room to append at position ``length``."""
        if length >= self.capacity:
            self.capacity = (length // _CACHE_CHUNK + 1) * _CACHE_CHUNK
            self.free.clear()
        for i, tensor in enumerate(self.free):
            if tensor.size(2) >= rows:
                return _Cache(self, self.free.pop(i))
        shape = (self.layers, 2, rows, self.heads, self.capacity, self.head_dim)
        return _Cache(self, torch.empty(shape, dtype=self.dtype, device=self.device))

    def give_back(self, tensor: Tensor) -> None:
        if tensor.size(4) == self.capacity and len(self.free) < _POOL_SIZE:
            self.free.append(tensor)


@dataclasses.dataclass
class TransformerMemory(Memory):
    """Encoder output plus what every decoding step reuses, all computed once in ``encode``.

    The beams of a sentence share its cross-attention keys and values (``group`` consecutive rows to one
    sentence): a step reads them once per sentence rather than once per beam, and attends with a small
    matrix product instead of one matrix-vector product a beam.
    """

    cross_keys: list[Tensor]  # per decoder layer: (sentences, heads, src_len, head_dim)
    cross_values: list[Tensor]
    bias: Tensor  # (sentences, heads, 1, src_len) additive padding bias: 0 or -inf
    group: int = 1  # rows of states/mask (and of the decoder) per sentence
    # model.knowledge_field: the knowledge encoder's keys and values per layer, and the bias that keeps
    # the second cross-attention on the knowledge field's tokens (the first one leaves them out)
    knowledge_keys: list[Tensor] = dataclasses.field(default_factory=list)
    knowledge_values: list[Tensor] = dataclasses.field(default_factory=list)
    knowledge_bias: Tensor | None = None
    # model.knowledge_field: (sentences, len) the source position of each of the main encoder's and of the
    # knowledge encoder's states (each encoder reads its own tokens only, packed: see ``_packed``); ``states``
    # are then the main encoder's (batch, main_len, d_model), ``mask`` stays the source's
    main_positions: Tensor | None = None
    knowledge_positions: Tensor | None = None
    source_ids: Tensor | None = None  # model.copy_source: (rows, src_len), the ids copying lands on

    def in_source(self, weights: Tensor, positions: Tensor | None) -> Tensor:
        """Attention weights (rows, heads, len) over one encoder's packed states at the source's positions
        (rows, heads, src_len), where search's coverage and the pictures read them; other positions get 0.
        ``positions`` None: the states are the source's own."""
        if positions is None:
            return weights
        at = positions.repeat_interleave(self.group, 0).unsqueeze(1).expand_as(weights)
        spread = weights.new_zeros(*weights.shape[:2], self.mask.size(1))
        return spread.scatter_add_(2, at, weights)  # a padding slot adds its 0 weight

    def _rows(self, rows: Tensor) -> dict[str, Any]:
        """What has a row per decoder row (states, mask, source ids), at ``rows``."""
        ids = self.source_ids
        return {
            "states": self.states.index_select(0, rows),
            "mask": self.mask.index_select(0, rows),
            "source_ids": None if ids is None else ids.index_select(0, rows),
        }

    def repeat_rows(self, times: int) -> TransformerMemory:
        rows = repeated(self.mask.size(0), times, self.mask.device)
        return dataclasses.replace(self, **self._rows(rows), group=self.group * times)

    def select(self, indices: Tensor) -> TransformerMemory:
        group = self.group
        if group == 1:
            return super().select(indices)
        firsts = indices[::group]
        whole = indices.numel() % group == 0 and bool(
            (
                indices.view(-1, group) == firsts.unsqueeze(1) + torch.arange(group, device=indices.device)
            ).all()
            & (firsts % group == 0).all()
        )
        if not whole:  # rows leave one by one (sampling): every row gets its own copy again
            every = repeated(self.bias.size(0), group, indices.device)
            return self._shared(every, {}, 1).select(indices)
        return self._shared(firsts // group, self._rows(indices), group)

    def _shared(self, sentences: Tensor, rows: dict[str, Any], group: int) -> TransformerMemory:
        """The memory with the per-sentence tensors at ``sentences`` and the per-row ones given in ``rows``
        (none given: kept as they are)."""

        def pick(tensors: list[Tensor]) -> list[Tensor]:
            return [t.index_select(0, sentences) for t in tensors]

        def pick_one(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else tensor.index_select(0, sentences)

        return dataclasses.replace(
            self,
            **rows,
            cross_keys=pick(self.cross_keys),
            cross_values=pick(self.cross_values),
            bias=self.bias.index_select(0, sentences),
            group=group,
            knowledge_keys=pick(self.knowledge_keys),
            knowledge_values=pick(self.knowledge_values),
            knowledge_bias=pick_one(self.knowledge_bias),
            main_positions=pick_one(self.main_positions),
            knowledge_positions=pick_one(self.knowledge_positions),
        )


@dataclasses.dataclass
class TransformerState(Reorderable):
    """Decoding state after ``length`` steps.

    ``cache`` may be shared with the state one step older: a step appends in place when its input state
    has not been extended yet (``extendable``) and copies the cache otherwise, so any state can be
    decoded from again. ``attention``/``head_attention`` are set when the step was asked for attention.
    """

    cache: _Cache
    length: int
    attention: Tensor | None = None  # (batch, src_len), last decoder layer, averaged over heads
    # (batch, heads, src_len), for pictures: with model.knowledge_field the knowledge field's columns hold
    # the knowledge attention (search's ``attention`` is the main cross-attention's alone)
    head_attention: Tensor | None = None
    extendable: bool = True

    def __post_init__(self) -> None:
        self.cache.holders += 1

    def __del__(self) -> None:
        self.cache.holders -= 1

    def reorder(self, indices: Tensor) -> TransformerState:
        """In place when this state alone holds its buffer and at most half its rows change (rows ending
        in greedy search and sampling): the moved rows go out to a small buffer and back, in place of a
        gather of every row into a second full buffer. Beam search moves most rows at every step, where
        one gather copies less than out and back: moving them in place, block by block, lowered beam
        search's peak memory by 14% and cost 5% of its time (DailyDialog model, 2026-12-07: that version is
        commit 45bd1c1, measured with ``bench/compare_revisions.py --base 2407d43 --decode``)."""
        buffer = self.cache.tensor
        if self.cache.holders > 1 or indices.numel() > buffer.size(2):
            return self.select(indices)
        moved = (indices != torch.arange(indices.numel(), device=indices.device)).nonzero().squeeze(1)
        if 2 * moved.numel() > indices.numel():
            return self.select(indices)
        if moved.numel():
            with torch.no_grad():
                written = buffer[:, :, :, :, : self.length]
                written.index_copy_(2, moved, written.index_select(2, indices.index_select(0, moved)))
        self.extendable = False
        return TransformerState(self.cache, self.length, *self._attention_at(indices))

    def select(self, indices: Tensor) -> TransformerState:
        with torch.no_grad():
            cache = self.cache.pool.take(indices.numel(), self.length)
            source = self.cache.tensor[:, :, :, :, : self.length]
            target = cache.tensor[:, :, : indices.numel(), :, : self.length]
            torch.index_select(source, 2, indices, out=target)
        return TransformerState(cache, self.length, *self._attention_at(indices))

    def _attention_at(self, indices: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """The step's attention and per-head attention of rows ``indices`` (``None`` stays ``None``)."""
        heads = self.head_attention
        attention = None if self.attention is None else self.attention.index_select(0, indices)
        return attention, None if heads is None else heads.index_select(0, indices)


class _Positions(nn.Module):
    """Position vectors added to scaled embeddings: a fixed sinusoidal table or a learned one."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.table: Tensor
        size = (config.max_positions, config.d_model)
        if config.positions == "learned":
            self.table = nn.Parameter(torch.randn(size) * config.d_model**-0.5)
        else:
            self.register_buffer("table", sinusoidal_table(*size), persistent=False)


class TransformerModel(Seq2SeqModel):
    field_markers: Tensor

    def __init__(self, config: TransformerConfig, source_vocab_size: int, target_vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.target_vocab_size = target_vocab_size
        d_model = config.d_model
        self.embed_scale = math.sqrt(d_model)
        self.source_embedding = nn.Embedding(source_vocab_size, d_model, padding_idx=PAD_ID)
        self.target_embedding = (
            self.source_embedding
            if config.share_embeddings
            else nn.Embedding(target_vocab_size, d_model, padding_idx=PAD_ID)
        )
        self.output = nn.Linear(d_model, target_vocab_size, bias=False)
        for embedding in dict.fromkeys([self.source_embedding, self.target_embedding]):
            nn.init.normal_(embedding.weight, std=d_model**-0.5)
        nn.init.normal_(self.output.weight, std=d_model**-0.5)
        with torch.no_grad():
            self.source_embedding.weight[PAD_ID].zero_()
            self.target_embedding.weight[PAD_ID].zero_()
        if config.tie_output:
            self.output.weight = self.target_embedding.weight
        self.source_positions = _Positions(config)
        self.target_positions = _Positions(config)
        if config.segment_embeddings:  # row 0: tokens before the first field (a corpus tag)
            self.segment_embedding = nn.Embedding(FIELD_SLOTS + 1, d_model)
            nn.init.normal_(self.segment_embedding.weight, std=d_model**-0.5)
        # the ids that open each field, set from the tokenizer at every build (read_fields); -1: unused
        self.register_buffer("field_markers", torch.full((FIELD_SLOTS,), -1), persistent=False)
        self.knowledge_slot = 0  # the knowledge field's segment (read_fields)
        if config.knowledge_field is not None:
            self.knowledge_layers = nn.ModuleList(
                _EncoderLayer(config) for _ in range(config.knowledge_layers)
            )
            self.knowledge_norm = nn.LayerNorm(d_model) if config.norm == "pre" else nn.Identity()
        if config.copy_source:  # p_gen from the decoder's output and the input token's embedding
            self.copy_gate = nn.Linear(2 * d_model, 1)
        self.dropout = Dropout(config.dropout)
        self.encoder_layers = nn.ModuleList(_EncoderLayer(config) for _ in range(config.encoder_layers))
        self.decoder_layers = nn.ModuleList(_DecoderLayer(config) for _ in range(config.decoder_layers))
        pre = config.norm == "pre"
        self.encoder_norm = nn.LayerNorm(d_model) if pre else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d_model) if pre else nn.Identity()

    encoder_prefixes = (
        "encoder_layers.",
        "encoder_norm.",
        "source_positions.",
        "segment_embedding.",
        "knowledge_layers.",
        "knowledge_norm.",
    )

    def shape(self) -> str:
        config = self.config
        return (
            f"transformer d_model={config.d_model} heads={config.heads} "
            f"layers={config.encoder_layers}+{config.decoder_layers} ffn={config.ffn_dim} "
            f"{config.norm}-norm {config.positions} positions {config.activation}"
            + (" segment embeddings" if config.segment_embeddings else "")
            + (" copy" if config.copy_source else "")
            + (
                f" knowledge encoder ({config.knowledge_field}, {config.knowledge_layers} layers)"
                if config.knowledge_field is not None
                else ""
            )
        )

    @property
    def output_size(self) -> int:
        return self.target_vocab_size

    @property
    def width(self) -> int:
        return self.config.d_model

    @property
    def max_output_length(self) -> int:
        return self.config.max_positions - 1  # the step that emits EOS reads position max_positions - 1

    def load_pretrained_parts(self) -> list[str]:
        source = self.config.init_encoder_from
        if source is None:
            return []
        from seqsmith.models.marian import init_encoder_from_hf  # needs transformers

        init_encoder_from_hf(self, source, self.config.init_encoder_embeddings)
        embeddings = " and its token embeddings" if self.config.init_encoder_embeddings else ""
        return [f"encoder{embeddings} from the Marian model {source}"]

    def read_fields(self, markers: dict[str, int]) -> None:
        self.field_markers[: len(markers)] = torch.tensor(list(markers.values()))
        if self.config.knowledge_field is not None:
            self.knowledge_slot = list(markers).index(self.config.knowledge_field) + 1

    def segments(self, src: Tensor) -> Tensor:
        """The field of each source token (1 = the first field, 0 = before any marker): the count of
        markers so far, as each field's marker comes once, in order (``seqsmith.data.fields``)."""
        opened = (src.unsqueeze(-1) == self.field_markers).any(-1)
        return opened.long().cumsum(dim=1).clamp(max=FIELD_SLOTS)

    def encode(self, src: Tensor, src_mask: Tensor) -> TransformerMemory:
        length = src.size(1)
        check_positions(self.config.max_positions, length, "a source")
        x = self.source_embedding(src) * self.embed_scale + self.source_positions.table[:length]
        segments = self.segments(src) if self.config.segment_embeddings or self.knowledge_slot else None
        if self.config.segment_embeddings:
            x = x + self.segment_embedding(segments)
        x = self.dropout(x)
        if not self.knowledge_slot:
            return self._memory(x, src_mask, src_mask, src)
        # each encoder reads its own field's tokens, packed (the marker keeps neither empty)
        knowledge_mask = src_mask & (segments == self.knowledge_slot)
        main_x, main_mask, main_positions = _packed(x, src_mask & ~knowledge_mask)
        memory = self._memory(main_x, main_mask, src_mask, src)
        memory.main_positions = main_positions
        knowledge_x, knowledge_mask, memory.knowledge_positions = _packed(x, knowledge_mask)
        knowing, memory.knowledge_bias = self._encoder(
            knowledge_x, knowledge_mask, self.knowledge_layers, self.knowledge_norm
        )
        crosses = [cast(_DecoderLayer, layer).knowledge_attention for layer in self.decoder_layers]
        memory.knowledge_keys, memory.knowledge_values = self._keys_values(knowing, crosses)
        return memory

    def _memory(self, x: Tensor, mask: Tensor, src_mask: Tensor, src: Tensor) -> TransformerMemory:
        """The main encoder over ``x`` (the whole source, or the main fields' tokens packed) and the
        memory of its states; ``src_mask`` and ``src`` stay the source's, where search and copying read."""
        states, bias = self._encoder(x, mask, self.encoder_layers, self.encoder_norm)
        crosses = [cast(_DecoderLayer, layer).cross_attention for layer in self.decoder_layers]
        keys, values = self._keys_values(states, crosses)
        memory = TransformerMemory(states, src_mask, keys, values, bias)
        if self.config.copy_source:
            memory.source_ids = src
        return memory

    def _encoder(
        self, x: Tensor, mask: Tensor, layers: nn.ModuleList, norm: nn.Module
    ) -> tuple[Tensor, Tensor]:
        """States of ``layers`` over the tokens of ``mask``, and the cross-attention bias to them."""
        bias = padding_bias(mask, x.dtype)
        for layer in layers:
            x = layer(x, bias)
        batch, length = mask.shape
        return norm(x), bias.expand(batch, self.config.heads, 1, length).contiguous()

    def _keys_values(
        self, states: Tensor, crosses: list[_CrossAttention]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Every decoder layer's cross-attention keys and values, (batch, heads, src_len, head_dim) each.

        Each layer's projection is written into one buffer as it comes: the largest thing ``encode`` makes
        then exists once (concatenating the layers' projections and then permuting held it three times)."""
        batch, length, _ = states.shape
        heads, head_dim = self.config.heads, self.config.d_model // self.config.heads
        kv = states.new_empty(len(crosses), 2, batch, heads, length, head_dim)
        for i, cross in enumerate(crosses):  # cross.kv: also int8 (quantized) layers
            kv[i].copy_(cross.kv(states).view(batch, length, 2, heads, head_dim).permute(2, 0, 3, 1, 4))
        return list(kv[:, 0].unbind(0)), list(kv[:, 1].unbind(0))

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        memory = self.encode(src, src_mask)
        length = tgt_in.size(1)
        check_positions(self.config.max_positions, length, "a target")
        embedded = self.target_embedding(tgt_in) * self.embed_scale + self.target_positions.table[:length]
        x, weights = self.dropout(embedded), None
        last = len(self.decoder_layers) - 1
        for i, layer in enumerate(self.decoder_layers):
            x, weights = layer(x, memory, i, self.config.copy_source and i == last)
        out = self.decoder_norm(x)
        logits = self.output(out)
        if weights is None:
            return logits
        return self._copied(logits, out, embedded, weights, memory)

    def _copied(
        self, logits: Tensor, out: Tensor, embedded: Tensor, weights: Tensor, memory: TransformerMemory
    ) -> Tensor:
        """Log-probabilities p_gen * softmax(logits) + (1 - p_gen) * the attention on each source id, floored
        at 1e-12 (a token neither generated nor in the source keeps a finite score). Shapes: (..., vocab)
        logits, (..., d_model) out and embedded, (..., src_len) weights; rows or (batch, tgt_len)."""
        p_gen = torch.sigmoid(self.copy_gate(torch.cat([out, embedded], dim=-1)).float())
        mixed = torch.softmax(logits.float(), dim=-1) * p_gen
        ids = memory.source_ids
        assert ids is not None
        if mixed.dim() == 3:
            ids = ids.unsqueeze(1).expand(-1, mixed.size(1), -1)
        mixed = mixed.scatter_add(-1, ids, weights.float() * (1.0 - p_gen))
        return mixed.clamp_min(_FLOOR).log()

    @torch.no_grad()
    def decode_step(
        self, prev_ids: Tensor, memory: Memory, state: Any | None, need_attention: bool = False
    ) -> tuple[Tensor, TransformerState]:
        """One step without autograd (search never needs gradients; train through ``forward``)."""
        if not isinstance(memory, TransformerMemory):
            raise TypeError("TransformerModel.decode_step needs the memory of TransformerModel.encode")
        rows, t = prev_ids.size(0), 0 if state is None else state.length
        check_positions(self.config.max_positions, t + 1, "an output")
        if state is None:
            heads, head_dim = self.config.heads, self.config.d_model // self.config.heads
            cache = _CachePool(len(self.decoder_layers), heads, head_dim, memory.states).take(rows, 0)
        elif state.extendable and t < state.cache.tensor.size(4):
            cache = state.cache
        else:
            cache = state.cache.pool.take(rows, t)
            cache.tensor[:, :, :rows, :, :t] = state.cache.tensor[:, :, :rows, :, :t]
        if state is not None:
            state.extendable = False
        embedded = self.target_embedding(prev_ids) * self.embed_scale + self.target_positions.table[t]
        x = self.dropout(embedded)
        buffer, weights, knowing = cache.tensor, None, None
        for i, layer in enumerate(self.decoder_layers):
            x, weights, knowing = cast(_DecoderLayer, layer).step(x, buffer[i, :, :rows], t, memory, i)
        out = self.decoder_norm(x)
        logits = self.output(out).float()
        if self.config.copy_source and weights is not None:
            log_probs = self._copied(logits, out, embedded, weights.mean(dim=1), memory)
        else:
            log_probs = torch.log_softmax(logits, dim=-1, out=logits)  # in place: -40% time, same values
        if not need_attention or weights is None:
            return log_probs, TransformerState(cache, t + 1)
        weights = memory.in_source(weights, memory.main_positions)
        pictured = weights
        if knowing is not None:  # each field under the attention that reads it
            pictured = weights + memory.in_source(knowing, memory.knowledge_positions)
        return log_probs, TransformerState(cache, t + 1, weights.mean(dim=1), pictured)
