"""Tensor-level decoding and scoring, the pieces training objectives share (self-critical RL, minimum-risk
training, distillation).

Search (``generate_ids``) returns ranked Python hypotheses under inference mode, which cannot feed a
backward pass. Here ``decode_tensors`` samples (or greedily picks) outputs for a batch and returns them as
tensors (ids, lengths, the model's log-probability of every token) without gradients, under the same
rules as search (length limits, forbidden symbols, n-gram blocking, whole characters from byte pieces,
temperature / top-k / top-p);
``token_log_probs`` scores given targets by teacher forcing *with* gradients, which is what a
policy-gradient or risk loss back-propagates through.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seqsmith.config import GenerateConfig
from seqsmith.data.tokenizer import TargetPieces
from seqsmith.errors import SeqsmithError
from seqsmith.generation.rules import LengthLimits, constrain
from seqsmith.generation.sampling import draw
from seqsmith.models.interface import Seq2SeqModel, repeated


@dataclass
class Sequences:
    """Outputs for a batch of sources, ``draws`` consecutive rows a source."""

    ids: Tensor  # (rows, steps) long: the tokens, EOS included, the model's pad id after it
    lengths: Tensor  # (rows,) long: tokens up to and including EOS
    token_log_probs: Tensor  # (rows, steps): the model's log-probability of each token, 0 after the end
    source_rows: Tensor  # (rows,) long: the source row each output belongs to

    @property
    def log_probs(self) -> Tensor:
        return self.token_log_probs.sum(dim=1)

    @property
    def mask(self) -> Tensor:
        """(rows, steps) True at real tokens."""
        return torch.arange(self.ids.size(1), device=self.ids.device) < self.lengths.unsqueeze(1)

    def teacher_forcing(self, bos_id: int) -> tuple[Tensor, Tensor]:
        """(decoder inputs: BOS + the tokens before the last, targets: the tokens) for ``token_log_probs``."""
        start = torch.full_like(self.ids[:, :1], bos_id)
        return torch.cat([start, self.ids[:, :-1]], dim=1), self.ids


@torch.no_grad()
def decode_tensors(
    model: Seq2SeqModel,
    src: Tensor,
    src_mask: Tensor,
    config: GenerateConfig,
    draws: int = 1,
    generator: torch.Generator | None = None,
    pieces: TargetPieces | None = None,
) -> Sequences:
    """Greedy (``config.method == "greedy"``) or sampled outputs, ``draws`` per source, as tensors;
    ``pieces`` (the tokenizer's) keep byte pieces to whole characters, as in search.

    The model keeps its mode: in training mode its dropout is on while it decodes, so a caller that wants
    the outputs of the plain model puts it in eval mode first.
    """
    if config.method not in ("greedy", "sample"):
        raise SeqsmithError(
            f"decode_tensors samples or decodes greedily: method {config.method!r} is neither"
        )
    greedy = config.method == "greedy"
    limits = LengthLimits.from_source(src, src_mask, config, model, pieces)
    memory = model.encode(src, src_mask)
    source_rows = repeated(src.size(0), draws, src.device)
    if draws > 1:
        memory, limits = memory.repeat_rows(draws), limits.select(source_rows)
    rows, steps = source_rows.numel(), limits.longest + 1
    dtype = torch.promote_types(memory.states.dtype, torch.float32)
    ids = torch.full((rows, steps), model.pad_id, dtype=torch.long, device=src.device)
    log_probs = torch.zeros(rows, steps, dtype=dtype, device=src.device)
    lengths = torch.full((rows,), steps, dtype=torch.long, device=src.device)
    ended = torch.zeros(rows, dtype=torch.bool, device=src.device)
    prev, state = torch.full((rows,), model.bos_id, dtype=torch.long, device=src.device), None
    for step in range(steps):
        step_log_probs, state = model.decode_step(prev, memory, state)
        scores = constrain(
            step_log_probs.to(dtype), step, limits, ids[:, :step], model, config.no_repeat_ngram
        )
        tokens = scores.argmax(dim=1) if greedy else draw(scores, config, generator)
        ids[:, step] = tokens.masked_fill(ended, model.pad_id)
        log_probs[:, step] = scores.gather(1, tokens.unsqueeze(1)).squeeze(1).masked_fill(ended, 0.0)
        ending = tokens.eq(model.eos_id) & ~ended
        lengths = torch.where(ending, step + 1, lengths)
        ended |= ending
        if bool(ended.all()):
            break
        prev = tokens
    width = int(lengths.max())
    return Sequences(ids[:, :width], lengths, log_probs[:, :width], source_rows)


def token_log_probs(
    model: Seq2SeqModel, src: Tensor, src_mask: Tensor, tgt_in: Tensor, tgt_out: Tensor, mask: Tensor
) -> Tensor:
    """(rows, steps) log-probabilities of ``tgt_out`` under teacher forcing, 0 where ``mask`` is False;
    with gradients. Sum over steps for a sequence's log-probability."""
    scores = model(src, src_mask, tgt_in)
    target = tgt_out.masked_fill(~mask, 0)  # a pad id past the vocabulary (HF's virtual one) cannot be read
    chosen = torch.log_softmax(scores.float(), dim=-1).gather(2, target.unsqueeze(2)).squeeze(2)
    return chosen.masked_fill(~mask, 0.0)
