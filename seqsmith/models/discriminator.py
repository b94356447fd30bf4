"""A classifier of (source, output) token sequences as human-written or generated: the adversary of the
``adversarial`` training objective (seqsmith.training.adversarial).

Source and output are read by two encoders of one kind: ``cnn`` (convolutions of several widths, each
max-pooled over the positions it covers, as SeqGAN's discriminator) or ``gru`` (a bidirectional GRU,
mean-pooled over the real tokens). The two summaries ``s`` and ``o`` meet as ``[s; o; s * o]`` in a small
MLP that gives one logit: log-odds that the output was written by a human for that source. Ids past the
vocabulary (a pointer-generator's copy slots) read as UNK.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqsmith.config import DiscriminatorConfig
from seqsmith.specials import PAD_ID, UNK_ID


class _Reader(nn.Module):
    """One sequence -> a fixed-size summary."""

    def __init__(self, config: DiscriminatorConfig, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size, self.kind = vocab_size, config.arch
        self.embed = nn.Embedding(vocab_size, config.embed_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(config.dropout)
        if config.arch == "gru":
            self.gru = nn.GRU(config.embed_dim, config.hidden_dim, batch_first=True, bidirectional=True)
            self.width = 2 * config.hidden_dim
        else:
            self.kernel_sizes = list(config.kernel_sizes)
            self.convs = nn.ModuleList(
                nn.Conv1d(config.embed_dim, config.hidden_dim, k) for k in self.kernel_sizes
            )
            self.width = config.hidden_dim * len(self.kernel_sizes)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        ids = ids.masked_fill(ids >= self.vocab_size, UNK_ID).masked_fill(~mask, PAD_ID)
        lengths = mask.sum(1)
        x = self.dropout(self.embed(ids))
        if self.kind == "gru":  # packed, so that the backward direction starts at the last real token
            packed = nn.utils.rnn.pack_padded_sequence(
                x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
            )
            states = nn.utils.rnn.pad_packed_sequence(
                self.gru(packed)[0], batch_first=True, total_length=x.size(1)
            )[0]
            states = states * mask.unsqueeze(2)
            return states.sum(1) / lengths.clamp(min=1).unsqueeze(1).to(states.dtype)
        longest = max(self.kernel_sizes)
        if x.size(1) < longest:  # a window needs as many positions as it is wide
            x = nn.functional.pad(x, (0, 0, 0, longest - x.size(1)))
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs, strict=True):
            windows = torch.relu(conv(x.transpose(1, 2)))  # (batch, hidden, positions)
            # a window counts if it starts at a real token; a sequence shorter than k keeps its first window
            starts = torch.arange(windows.size(2), device=ids.device)
            valid = starts.unsqueeze(0) < (lengths - k + 1).clamp(min=1).unsqueeze(1)
            pooled.append(windows.masked_fill(~valid.unsqueeze(1), float("-inf")).amax(2))
        return torch.cat(pooled, dim=1)


class Discriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig, source_vocab_size: int, target_vocab_size: int) -> None:
        super().__init__()
        self.source = _Reader(config, source_vocab_size)
        self.output = _Reader(config, target_vocab_size)
        width = self.source.width
        self.classify = nn.Sequential(
            nn.Linear(3 * width, width), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(width, 1)
        )

    def forward(self, src: Tensor, src_mask: Tensor, output: Tensor, output_mask: Tensor) -> Tensor:
        """(batch,) logits that each output is human-written for its source."""
        s, o = self.source(src, src_mask), self.output(output, output_mask)
        return self.classify(torch.cat([s, o, s * o], dim=1)).squeeze(1)
