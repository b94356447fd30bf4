"""An ensemble that is itself a Seq2SeqModel, so every search algorithm decodes it unchanged.

Members' distributions are averaged as probabilities (logsumexp of log-probs minus log n), which is what
"ensemble" means in fairseq and Marian; averaging log-probs instead would be a product of experts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from seqsmith.errors import SeqsmithError
from seqsmith.models.interface import Memory, Reorderable, Seq2SeqModel, repeated


@dataclasses.dataclass
class EnsembleMemory(Memory):
    """The first member's states and mask (for callers that look at them) plus every member's memory."""

    members: list[Memory]

    def repeat_rows(self, times: int) -> EnsembleMemory:
        rows = repeated(self.mask.size(0), times, self.mask.device)
        states, mask = self.states.index_select(0, rows), self.mask.index_select(0, rows)
        return EnsembleMemory(states, mask, [member.repeat_rows(times) for member in self.members])


@dataclasses.dataclass
class EnsembleState(Reorderable):
    members: list[Any]
    attention: Tensor | None  # the members' mean attention, when they all expose one of the same shape

    def reorder(self, indices: Tensor) -> EnsembleState:
        attention = None if self.attention is None else self.attention.index_select(0, indices)
        return EnsembleState([member.reorder(indices) for member in self.members], attention)


class EnsembleModel(Seq2SeqModel):
    def __init__(self, models: Sequence[Seq2SeqModel]) -> None:
        super().__init__()
        if not models:
            raise SeqsmithError("an ensemble needs at least one model")
        first = models[0]
        for i, model in enumerate(models[1:], start=1):
            if model.output_size != first.output_size:
                raise SeqsmithError(
                    f"ensemble member {i} predicts {model.output_size} symbols but member 0 predicts "
                    f"{first.output_size}; ensemble only models trained with the same target vocabulary"
                )
            if (model.pad_id, model.bos_id, model.eos_id) != (first.pad_id, first.bos_id, first.eos_id):
                raise SeqsmithError(
                    f"ensemble member {i} uses different PAD/BOS/EOS ids than member 0; "
                    "ensemble only models that share one tokenizer"
                )
        self.members = nn.ModuleList(models)
        self.pad_id, self.bos_id, self.eos_id = first.pad_id, first.bos_id, first.eos_id
        self._log_n = math.log(len(models))

    def _models(self) -> list[Seq2SeqModel]:
        return [model for model in self.members if isinstance(model, Seq2SeqModel)]

    @property
    def output_size(self) -> int:
        return self._models()[0].output_size

    @property
    def max_output_length(self) -> int:
        return min(model.max_output_length for model in self._models())

    def encode(self, src: Tensor, src_mask: Tensor) -> EnsembleMemory:
        memories = [model.encode(src, src_mask) for model in self._models()]
        return EnsembleMemory(states=memories[0].states, mask=memories[0].mask, members=memories)

    def decode_step(
        self, prev_ids: Tensor, memory: Memory, state: Any | None, need_attention: bool = False
    ) -> tuple[Tensor, EnsembleState]:
        if not isinstance(memory, EnsembleMemory):
            raise SeqsmithError("EnsembleModel.decode_step needs the memory its own encode returned")
        models = self._models()
        previous = state.members if isinstance(state, EnsembleState) else [None] * len(models)
        steps = [
            model.decode_step(prev_ids, member, old, need_attention)
            for model, member, old in zip(models, memory.members, previous, strict=True)
        ]
        log_probs = torch.logsumexp(torch.stack([lp for lp, _ in steps]), dim=0) - self._log_n
        states = [new for _, new in steps]
        attentions = [model.step_attention(new) for model, new in zip(models, states, strict=True)]
        attention = None
        if all(a is not None for a in attentions):
            shown = [a for a in attentions if a is not None]
            if len({a.shape for a in shown}) == 1:
                attention = torch.stack(shown).mean(dim=0)
        return log_probs, EnsembleState(states, attention)

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """Log-probabilities of the averaged distribution (they are their own log_softmax)."""
        outputs = [model(src, src_mask, tgt_in).log_softmax(dim=-1) for model in self._models()]
        return torch.logsumexp(torch.stack(outputs), dim=0) - self._log_n
