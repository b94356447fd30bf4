"""Pointer-generator with coverage (See et al., 2017) on the recurrent encoder-decoder.

At each step a gate p_gen mixes the decoder's vocabulary distribution with the attention over the source,
scattered onto the source's token ids:  p(w) = p_gen * P_vocab(w) + (1 - p_gen) * sum_{i: x_i = w} a_i.
Copying works in one id space, so the model needs a joint vocabulary (``data.tokenizer.joint: true``);
with subword tokenizers every source word is spelled by in-vocabulary pieces, so copying pieces also
copies words the vocabulary has never seen whole.

With ``oov_slots``, the data pipeline gives the first k distinct out-of-vocabulary words of each source
the ids V..V+k-1 (in the source and, where the target repeats them, in the target): embeddings read them
as UNK, and the output distribution grows by k columns that only copying can fill (See et al.'s extended
vocabulary; for char/word tokenizers, whose rare words would otherwise be lost).

Coverage keeps c_t = sum of the earlier attention weights: it enters every attention score through a
learned vector added to the projected keys (v · tanh(W_k h_i + w_c c_i + W_q s_t) for Bahdanau), and the
coverage loss sum_i min(a_i, c_i) is returned by ``auxiliary_loss`` for the trainer to add.

``forward`` and ``decode_step`` return log-probabilities, so ``log_softmax(scores)`` is the distribution as
the interface requires; probabilities are floored at 1e-12 so that words neither generated nor in the
source get a finite score.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqsmith.config import RNNConfig
from seqsmith.models.interface import Memory
from seqsmith.models.rnn import Hidden, RNNMemory, RNNModel, RNNState, layers_first, split_hidden
from seqsmith.specials import UNK_ID

_FLOOR = 1e-12


@dataclasses.dataclass
class CopyMemory(RNNMemory):
    src: Tensor  # (batch, src_len) token ids the copy distribution lands on


@dataclasses.dataclass
class CopyState(RNNState):
    coverage: Tensor  # (batch, src_len): attention summed over the steps so far, this one included


class PointerGeneratorModel(RNNModel):
    """With ``pointer_generator: false`` and ``coverage: true``: attention with coverage, no copying."""

    def __init__(self, config: RNNConfig, source_vocab_size: int, target_vocab_size: int) -> None:
        super().__init__(config, source_vocab_size, target_vocab_size)
        hidden = config.hidden_dim
        self.gate = nn.Linear(2 * hidden + config.embed_dim, 1) if config.pointer_generator else None
        self.coverage_feature = nn.Parameter(torch.zeros(hidden)) if config.coverage else None
        self.oov_slots = config.oov_slots
        self._auxiliary: Tensor | None = None

    @property
    def output_size(self) -> int:
        return self.target_vocab_size + self.oov_slots

    def _in_vocabulary(self, ids: Tensor) -> Tensor:
        """Copy ids past the vocabulary read as UNK wherever an embedding is looked up."""
        return ids.masked_fill(ids >= self.target_vocab_size, UNK_ID) if self.oov_slots else ids

    def encode(self, src: Tensor, src_mask: Tensor) -> CopyMemory:
        base = super().encode(self._in_vocabulary(src), src_mask)
        return CopyMemory(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)}, src=src)

    def auxiliary_loss(self) -> Tensor | None:
        loss, self._auxiliary = self._auxiliary, None
        return loss

    def _copy_step(
        self, embedded: Tensor, feed: Tensor, hx: Hidden, coverage: Tensor, memory: CopyMemory
    ) -> tuple[Tensor, Tensor, Tensor, Hidden]:
        """One step -> log-probabilities (batch, vocab), the attentional vector fed to the next step,
        attention weights (batch, src_len) and the next hx."""
        keys = None
        if self.coverage_feature is not None:
            keys = memory.keys + coverage.unsqueeze(-1) * self.coverage_feature
        vector, weights, hx, query, context = self._step(embedded, feed, hx, memory, keys)
        vocab = torch.softmax(self.output(vector).float(), dim=-1)
        if self.gate is None:
            return vocab.clamp_min(_FLOOR).log(), vector, weights, hx
        p_gen = torch.sigmoid(self.gate(torch.cat([context, query, embedded], dim=-1)).float())
        generated = vocab * p_gen
        if self.oov_slots:
            generated = F.pad(generated, (0, self.oov_slots))
        mixed = generated.scatter_add(1, memory.src, weights.float() * (1.0 - p_gen))
        return mixed.clamp_min(_FLOOR).log(), vector, weights, hx

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        memory = self.encode(src, src_mask)
        embedded = self.dropout(self.target_embedding(self._in_vocabulary(tgt_in)))
        hx: Hidden = layers_first(memory.hidden, memory.cell)
        feed = self._initial_feed(memory)
        coverage = torch.zeros_like(src, dtype=memory.states.dtype)
        real = tgt_in.ne(self.pad_id).to(coverage.dtype)
        steps, overlap = [], coverage.new_zeros(())
        for t in range(tgt_in.size(1)):
            log_probs, feed, weights, hx = self._copy_step(embedded[:, t], feed, hx, coverage, memory)
            overlap = overlap + (torch.minimum(weights, coverage).sum(-1) * real[:, t]).sum()
            coverage = coverage + weights
            steps.append(log_probs)
        if self.coverage_feature is not None:
            self._auxiliary = overlap * self.config.coverage_loss_weight
        return torch.stack(steps, dim=1)

    def decode_step(
        self, prev_ids: Tensor, memory: Memory, state: Any | None, need_attention: bool = False
    ) -> tuple[Tensor, CopyState]:
        if not isinstance(memory, CopyMemory):
            raise TypeError("PointerGeneratorModel.decode_step needs the memory from its own encode")
        if state is None:
            hx, feed = layers_first(memory.hidden, memory.cell), self._initial_feed(memory)
            coverage = torch.zeros_like(memory.src, dtype=memory.states.dtype)
        else:
            hx, feed, coverage = layers_first(state.hidden, state.cell), state.feed, state.coverage
        embedded = self.dropout(self.target_embedding(self._in_vocabulary(prev_ids)))
        log_probs, feed, weights, hx = self._copy_step(embedded, feed, hx, coverage, memory)
        hidden, cell = split_hidden(hx)
        return log_probs, CopyState(hidden, cell, feed, weights, coverage + weights)
