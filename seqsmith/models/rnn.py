"""GRU/LSTM encoder-decoder with attention (Luong et al., 2015 layout, any attention score).

The encoder is a (bi)directional multi-layer RNN over packed sequences, so padding never reaches a real
token; its top layer's final states, through a tanh bridge, start every decoder layer. Each decoder step
runs the RNN on [embedding; previous attentional vector] (input feeding), attends with the top hidden
state and emits tanh(W [hidden; context]). Without input feeding, ``forward`` runs the decoder RNN over
the whole target in one call and attends for all steps at once; with it, a loop is unavoidable, but
embeddings, key projections and the output projection are still computed outside the loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqsmith.config import RNNConfig
from seqsmith.errors import SeqsmithError
from seqsmith.models.attention import make_attention
from seqsmith.models.dropout import Dropout
from seqsmith.models.interface import Memory, Reorderable, Seq2SeqModel
from seqsmith.specials import PAD_ID

Hidden = Tensor | tuple[Tensor, Tensor]  # what nn.GRU / nn.LSTM take as hx: (layers, batch, dim)


@dataclasses.dataclass
class RNNMemory(Memory):
    """Encoder states plus their attention key projection and the decoder's initial state (batch first)."""

    keys: Tensor  # attention.project_keys(states)
    hidden: Tensor  # (batch, decoder_layers, hidden_dim)
    cell: Tensor | None  # LSTM only


@dataclasses.dataclass
class RNNState(Reorderable):
    hidden: Tensor  # (batch, decoder_layers, hidden_dim)
    cell: Tensor | None  # LSTM only
    feed: Tensor  # (batch, output_dim): the attentional vector fed to the next step
    attention: Tensor  # (batch, src_len): this step's attention weights


class Step(NamedTuple):
    """What one decoder step computes."""

    vector: Tensor  # (batch, output_dim) attentional vector: the output layer's input, fed to the next step
    weights: Tensor  # (batch, src_len) attention
    hx: Hidden
    query: Tensor  # (batch, hidden_dim) top decoder state
    context: Tensor  # (batch, hidden_dim) attended encoder states


def layers_first(hidden: Tensor, cell: Tensor | None) -> Hidden:
    if cell is None:
        return hidden.transpose(0, 1).contiguous()
    return hidden.transpose(0, 1).contiguous(), cell.transpose(0, 1).contiguous()


def split_hidden(hx: Hidden) -> tuple[Tensor, Tensor | None]:
    """(layers, batch, dim) hx -> batch-first hidden and cell."""
    if isinstance(hx, tuple):
        return hx[0].transpose(0, 1), hx[1].transpose(0, 1)
    return hx.transpose(0, 1), None


class RNNModel(Seq2SeqModel):
    def __init__(self, config: RNNConfig, source_vocab_size: int, target_vocab_size: int) -> None:
        super().__init__()
        if config.bidirectional and config.hidden_dim % 2:
            raise SeqsmithError(
                f"model.hidden_dim={config.hidden_dim} must be even with model.bidirectional: true "
                "(each direction gets half); pick an even size"
            )
        self.config = config
        self.target_vocab_size = target_vocab_size
        hidden, layers = config.hidden_dim, config.decoder_layers
        rnn_class = nn.GRU if config.cell == "gru" else nn.LSTM
        self.source_embedding = nn.Embedding(source_vocab_size, config.embed_dim, padding_idx=PAD_ID)
        self.target_embedding = (
            self.source_embedding
            if config.share_embeddings
            else nn.Embedding(target_vocab_size, config.embed_dim, padding_idx=PAD_ID)
        )
        directions = 2 if config.bidirectional else 1
        self.encoder = rnn_class(
            config.embed_dim,
            hidden // directions,
            config.encoder_layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.encoder_layers > 1 else 0.0,
        )
        self.bridge_hidden = nn.Linear(hidden, layers * hidden)
        self.bridge_cell = nn.Linear(hidden, layers * hidden) if config.cell == "lstm" else None
        self.output_dim = config.embed_dim if config.tie_output else hidden
        feed_dim = self.output_dim if config.input_feeding else 0
        self.decoder = rnn_class(
            config.embed_dim + feed_dim,
            hidden,
            layers,
            batch_first=True,
            dropout=config.dropout if layers > 1 else 0.0,
        )
        self.attention = make_attention(config.attention, hidden, hidden)
        self.combine = nn.Linear(2 * hidden, self.output_dim)
        self.output = nn.Linear(self.output_dim, target_vocab_size)
        if config.tie_output:
            self.output.weight = self.target_embedding.weight
        self.dropout = Dropout(config.dropout)

    encoder_prefixes = ("encoder.",)

    def shape(self) -> str:
        config = self.config
        direction = "bidirectional " if config.bidirectional else ""
        feeding = ", input feeding" if config.input_feeding else ""
        feeding += ", pointer-generator" if config.pointer_generator else ""
        feeding += ", coverage" if config.coverage else ""
        return (
            f"{config.cell} {direction}layers={config.encoder_layers}+{config.decoder_layers} "
            f"embed={config.embed_dim} hidden={config.hidden_dim} attention={config.attention}{feeding}"
        )

    @property
    def output_size(self) -> int:
        return self.target_vocab_size

    def encode(self, src: Tensor, src_mask: Tensor) -> RNNMemory:
        lengths = src_mask.sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(
            self.dropout(self.source_embedding(src)), lengths, batch_first=True, enforce_sorted=False
        )
        outputs, final = self.encoder(packed)
        states, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.size(1))
        states = self.dropout(states)
        final_hidden, final_cell = (final[0], final[1]) if isinstance(final, tuple) else (final, None)
        hidden = self._bridge(self.bridge_hidden, final_hidden)
        cell = None
        if self.bridge_cell is not None and final_cell is not None:
            cell = self._bridge(self.bridge_cell, final_cell)
        return RNNMemory(states, src_mask, self.attention.project_keys(states), hidden, cell)

    def _bridge(self, layer: nn.Linear, final: Tensor) -> Tensor:
        """Top encoder layer's final states (both directions) -> (batch, decoder_layers, hidden_dim)."""
        directions = 2 if self.config.bidirectional else 1
        top = torch.cat(list(final[-directions:]), dim=-1)
        return torch.tanh(layer(top)).view(top.size(0), self.config.decoder_layers, -1)

    def _attend(
        self, outputs: Tensor, memory: RNNMemory, keys: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Top decoder states -> dropped-out attentional vectors, attention weights and contexts (any step
        count); ``keys`` replaces the memory's projected keys (coverage adds to them)."""
        keys = memory.keys if keys is None else keys
        context, weights = self.attention(outputs, memory.states, keys, memory.mask)
        vector = torch.tanh(self.combine(torch.cat([outputs, context], dim=-1)))
        return self.dropout(vector), weights, context

    def _step(
        self, embedded: Tensor, feed: Tensor, hx: Hidden, memory: RNNMemory, keys: Tensor | None = None
    ) -> Step:
        """One decoder step, shared by ``forward``, ``decode_step`` and the pointer-generator so that all
        compute the same thing."""
        inputs = torch.cat([embedded, feed], dim=-1) if self.config.input_feeding else embedded
        output, hx = self.decoder(inputs.unsqueeze(1), hx)
        query = output.squeeze(1)
        vector, weights, context = self._attend(query, memory, keys)
        return Step(vector, weights, hx, query, context)

    def _initial_feed(self, memory: RNNMemory) -> Tensor:
        return memory.states.new_zeros(memory.states.size(0), self.output_dim)

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        memory = self.encode(src, src_mask)
        embedded = self.dropout(self.target_embedding(tgt_in))
        hx = layers_first(memory.hidden, memory.cell)
        if not self.config.input_feeding:
            outputs, _ = self.decoder(embedded, hx)
            vectors, _, _ = self._attend(outputs, memory)
            return self.output(vectors)
        feed = self._initial_feed(memory)
        steps = []
        for t in range(tgt_in.size(1)):
            feed, _, hx, _, _ = self._step(embedded[:, t], feed, hx, memory)
            steps.append(feed)
        return self.output(torch.stack(steps, dim=1))

    def decode_step(
        self, prev_ids: Tensor, memory: Memory, state: Any | None, need_attention: bool = False
    ) -> tuple[Tensor, RNNState]:
        """The state always carries the attention: the step computes it anyway."""
        if not isinstance(memory, RNNMemory):
            raise TypeError("RNNModel.decode_step needs the memory returned by RNNModel.encode")
        if state is None:
            hx, feed = layers_first(memory.hidden, memory.cell), self._initial_feed(memory)
        else:
            hx, feed = layers_first(state.hidden, state.cell), state.feed
        vector, weights, hx, _, _ = self._step(
            self.dropout(self.target_embedding(prev_ids)), feed, hx, memory
        )
        log_probs = F.log_softmax(self.output(vector).float(), dim=-1)
        hidden, cell = split_hidden(hx)
        return log_probs, RNNState(hidden, cell, vector, weights)
