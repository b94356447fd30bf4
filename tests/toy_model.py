"""A tiny deterministic Seq2SeqModel for search tests, and a teacher-forced scorer to check search against.

GRU encoder, GRU-cell decoder with dot attention over the memory; weights drawn from ``seed``. The
encoder is unidirectional, so right padding never changes what the decoder sees: outputs must not depend
on which sentences share a batch.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from seqsmith.models.interface import Memory, Reorderable, Seq2SeqModel
from seqsmith.specials import EOS_ID


@dataclasses.dataclass
class ToyState(Reorderable):
    hidden: Tensor  # (batch, dim)
    attention: Tensor  # (batch, src_len)


@dataclasses.dataclass
class BlindState(Reorderable):
    """A state without attention, for models that expose none."""

    hidden: Tensor


class ToyModel(Seq2SeqModel):
    def __init__(
        self,
        vocab_size: int = 6,
        dim: int = 8,
        seed: int = 0,
        sharpness: float = 1.0,
        dtype: torch.dtype = torch.float64,
        attention: bool = True,
    ) -> None:
        super().__init__()
        self.vocab_size, self.sharpness, self.expose_attention = vocab_size, sharpness, attention
        self.embed = nn.Embedding(vocab_size, dim)
        self.encoder = nn.GRU(dim, dim, batch_first=True)
        self.start = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, dim, bias=False)
        self.cell = nn.GRUCell(2 * dim, dim)
        self.out = nn.Linear(2 * dim, vocab_size)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
        self.to(dtype)

    @property
    def output_size(self) -> int:
        return self.vocab_size

    def encode(self, src: Tensor, src_mask: Tensor) -> Memory:
        states, _ = self.encoder(self.embed(src))
        return Memory(states * src_mask.unsqueeze(2), src_mask)

    def decode_step(
        self,
        prev_ids: Tensor,
        memory: Memory,
        state: ToyState | BlindState | None,
        need_attention: bool = False,
    ) -> tuple[Tensor, ToyState | BlindState]:
        if state is None:
            count = memory.mask.sum(1, keepdim=True).clamp(min=1)
            hidden = torch.tanh(self.start(memory.states.sum(1) / count))
        else:
            hidden = state.hidden
        energy = torch.einsum("bsd,bd->bs", memory.states, self.query(hidden))
        attention = energy.masked_fill(~memory.mask, float("-inf")).softmax(dim=1)
        context = torch.einsum("bs,bsd->bd", attention, memory.states)
        hidden = self.cell(torch.cat([self.embed(prev_ids), context], dim=1), hidden)
        log_probs = (self.sharpness * self.out(torch.cat([hidden, context], dim=1))).log_softmax(dim=1)
        return log_probs, ToyState(hidden, attention) if self.expose_attention else BlindState(hidden)

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        memory, state, steps = self.encode(src, src_mask), None, []
        for t in range(tgt_in.size(1)):
            log_probs, state = self.decode_step(tgt_in[:, t], memory, state)
            steps.append(log_probs)
        return torch.stack(steps, dim=1)


class OnRequestModel(ToyModel):
    """Exposes attention only when a step asks for it, as the Transformer does."""

    def decode_step(
        self,
        prev_ids: Tensor,
        memory: Memory,
        state: ToyState | BlindState | None,
        need_attention: bool = False,
    ) -> tuple[Tensor, ToyState | BlindState]:
        log_probs, new = super().decode_step(prev_ids, memory, state)
        return log_probs, new if need_attention else BlindState(new.hidden)


def batch(sentences: list[list[int]]) -> tuple[Tensor, Tensor]:
    """Right-padded (ids, mask) with the EOS the data appends to every source."""
    rows = [[*s, EOS_ID] for s in sentences]
    width = max(len(r) for r in rows)
    src = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    return src, src != 0


@torch.no_grad()
def teacher_forced(
    model: Seq2SeqModel, src: Tensor, src_mask: Tensor, tokens: list[int]
) -> tuple[list[float], Tensor | None]:
    """Per-token log-probs of ``tokens`` + EOS for one source row (batch of 1), and the attention."""
    model.eval()
    target = [*tokens, model.eos_id]
    tgt_in = torch.tensor([[model.bos_id, *tokens]])
    log_probs = model(src, src_mask, tgt_in)[0]
    scores = log_probs.log_softmax(-1).gather(1, torch.tensor(target).unsqueeze(1)).squeeze(1)
    attention = model.teacher_forced_attention(src, src_mask, tgt_in)
    return scores.double().tolist(), None if attention is None else attention[0][:, src_mask[0]]
