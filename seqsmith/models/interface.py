"""The one interface every model keeps, so every search, objective and export works with every model.

- ``encode(src, src_mask) -> memory``: whatever the decoder needs, reorderable with ``memory.select`` and
  expanded for beams with ``memory.repeat_rows``;
- ``decode_step(prev_ids, memory, state, need_attention) -> (log_probs, state)``: one step; ``state`` is
  ``None`` at the first step and is an incremental cache (RNN hidden state, key/value cache) that search
  reorders with ``state.reorder(indices)`` (``select`` where the old state is kept too); with
  ``need_attention`` the state also carries the step's cross-attention (a per-call argument, so
  concurrent callers of one model never race on a flag);
- ``forward(src, src_mask, tgt_in) -> scores``: teacher-forced; ``log_softmax(scores)`` is the model's
  distribution over the output vocabulary (logits for most models, log-probabilities for copy models).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import torch
from torch import Tensor, nn

from seqsmith.errors import SeqsmithError
from seqsmith.specials import BOS_ID, EOS_ID, PAD_ID

T = TypeVar("T", bound="Reorderable")
M = TypeVar("M", bound="Memory")


def repeated(rows: int, times: int, device: torch.device) -> Tensor:
    """Row indices 0, 0, ..., 1, 1, ...: each of ``rows`` rows ``times`` times in a row (beams, samples)."""
    return torch.arange(rows, device=device).repeat_interleave(times)


def check_positions(max_positions: int, length: int, what: str) -> None:
    """The one-line error of a model with a position table when a sequence outgrows it."""
    if length > max_positions:
        raise SeqsmithError(
            f"{what} of {length} tokens exceeds model.max_positions={max_positions}; "
            "shorten it (data.max_source_length / max_target_length, generate.max_length_a/b) "
            "or train a model with a larger model.max_positions"
        )


def _select(value: Any, indices: Tensor) -> Any:
    if isinstance(value, Tensor):
        return value.index_select(0, indices)
    if isinstance(value, Reorderable):
        return value.select(indices)
    if isinstance(value, (list, tuple)):
        return type(value)(_select(v, indices) for v in value)
    if isinstance(value, dict):
        return {k: _select(v, indices) for k, v in value.items()}
    return value


@dataclasses.dataclass
class Reorderable:
    """A dataclass whose tensors all have the batch (times beam) as their first dimension.

    ``select`` picks rows (to follow beams, expand for beams or drop finished sentences); non-tensor
    fields are carried over unchanged and ``None`` stays ``None``.
    """

    def select(self: T, indices: Tensor) -> T:
        changes = {f.name: _select(getattr(self, f.name), indices) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **changes)

    def reorder(self: T, indices: Tensor) -> T:
        """``select`` for a caller that drops ``self`` afterwards: a model may then move rows within the
        buffers it holds instead of gathering them into new ones (a decoding state is search's largest)."""
        return self.select(indices)


@dataclasses.dataclass
class Memory(Reorderable):
    """Encoder output: states (batch, src_len, dim) and mask (batch, src_len), True at real tokens."""

    states: Tensor
    mask: Tensor

    def repeat_rows(self: M, times: int) -> M:
        """Each row ``times`` times in a row (beams, samples); a model may share what they read alike."""
        return self.select(repeated(self.mask.size(0), times, self.mask.device))


class Seq2SeqModel(nn.Module, ABC):
    """Base class for all architectures. Subclasses set the special ids if they differ from ours."""

    pad_id: int = PAD_ID
    bos_id: int = BOS_ID  # the first decoder input
    eos_id: int = EOS_ID
    # For train.init_from (seqsmith.models.initialize): state-dict names whose rows follow a vocabulary
    # ("source" or "target"; matched by piece between two models, the "embeddings" part) and the name
    # prefixes of the "encoder" part; every other tensor is the "decoder" part.
    vocabulary_rows: ClassVar[dict[str, str]] = {
        "source_embedding.weight": "source",
        "target_embedding.weight": "target",
        "output.weight": "target",
        "output.bias": "target",
    }
    encoder_prefixes: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def encode(self, src: Tensor, src_mask: Tensor) -> Memory: ...

    @abstractmethod
    def decode_step(
        self, prev_ids: Tensor, memory: Memory, state: Any | None, need_attention: bool = False
    ) -> tuple[Tensor, Any]:
        """prev_ids (batch,) -> log-probabilities (batch, vocab) and the next state.

        The log-probabilities must be a tensor of the caller's own: search masks it in place. With
        ``need_attention`` the state must expose the step's attention through ``step_attention`` (models
        that compute it anyway may always expose it).
        """

    @abstractmethod
    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: (batch, tgt_len) inputs -> (batch, tgt_len, vocab) scores."""

    @property
    @abstractmethod
    def output_size(self) -> int:
        """Size of the distribution decode_step returns (may exceed the vocabulary for copy models)."""

    @property
    def max_output_length(self) -> int:
        """The most tokens search may emit before EOS: it bounds every search buffer, whatever the options
        ask. Models with a position table override it with their table's size."""
        return 1024

    @property
    def width(self) -> int:
        """The model dimension the noam schedule scales by (Transformers: d_model)."""
        return 512

    def save_architecture(self, directory: Path) -> None:
        """Write what rebuilds this model besides config.json (a pretrained model's own config); models
        that config.json describes whole write nothing."""

    def load_pretrained_parts(self) -> list[str]:
        """Copy in the pretrained parts the model's config names (a Marian encoder for the Transformer)
        before a fresh training; returns one note per part for the log."""
        return []

    def read_fields(self, markers: dict[str, int]) -> None:
        """The id of the token that opens each input field (``data.fields``), by name, in their order; a
        model that tells fields apart keeps them, the others read the fields as one text."""

    def auxiliary_loss(self) -> Tensor | None:
        """A loss the last ``forward`` adds to the cross-entropy, summed over target tokens (coverage);
        returned once, then cleared."""
        return None

    def shape(self) -> str:
        """The architecture in a few words, for the log line ``describe`` writes."""
        return type(self).__name__

    @property
    def device(self) -> torch.device:
        """Where inputs go: the parameters' device (models that run elsewhere, such as ONNX, override it)."""
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def step_attention(self, state: Any, heads: bool = False) -> Tensor | None:
        """Cross-attention of the last step for pictures: (batch, src_len), or with ``heads`` and a model
        that has heads (batch, heads, src_len); None if the model exposes none."""
        if heads and getattr(state, "head_attention", None) is not None:
            return cast(Tensor, state.head_attention)
        return getattr(state, "attention", None)

    @torch.no_grad()
    def teacher_forced_attention(
        self, src: Tensor, src_mask: Tensor, tgt_in: Tensor, heads: bool = False
    ) -> Tensor | None:
        """Attention (batch, tgt_len, [heads,] src_len) computed step by step: works for any model."""
        memory = self.encode(src, src_mask)
        state, rows = None, []
        for t in range(tgt_in.size(1)):
            _, state = self.decode_step(tgt_in[:, t], memory, state, need_attention=True)
            attention = self.step_attention(state, heads)
            if attention is None:
                return None
            rows.append(attention)
        return torch.stack(rows, dim=1)
