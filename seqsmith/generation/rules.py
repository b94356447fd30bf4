"""Rules every search obeys at every step: length limits, forbidden symbols, n-gram blocking and, when
asked, whole copied names.

They are applied to the model's log-probabilities before any choice is made (masked entries become -inf),
so all algorithms agree on what an allowed output is.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from seqsmith.config import GenerateConfig
from seqsmith.data.tokenizer import WordMarks
from seqsmith.models.interface import Seq2SeqModel


@dataclasses.dataclass
class WholeWords:
    """A capitalized source word (a name) that an output has begun is finished as the source spells it,
    and one the source ends is not glued onto (``generate.whole_words``; See et al.'s copy model writes
    such words piece by piece, and one wrong piece garbles a name).

    The output's current word is the pieces since its last word start; where it equals the beginning of
    a capitalized source word, only that word's next piece may follow, or, where the source word ends
    there, anything but a piece that glues letters on. Per row: ``src`` (rows, src_len) the source ids,
    compared with output ids (a joint vocabulary); the marks (vocabulary,) come from the tokenizer, and
    ids past them (copy slots) count as whole words.
    """

    src: Tensor
    starts: Tensor
    glues: Tensor
    capital: Tensor

    @classmethod
    def from_marks(cls, marks: WordMarks, src: Tensor) -> WholeWords:
        def table(values: list[bool]) -> Tensor:
            return torch.tensor(values, dtype=torch.bool, device=src.device)

        return cls(src, table(marks.starts), table(marks.glues), table(marks.capital))

    def select(self, rows: Tensor) -> WholeWords:
        return dataclasses.replace(self, src=self.src.index_select(0, rows))

    @staticmethod
    def _look_up(table: Tensor, ids: Tensor, past: bool) -> Tensor:
        inside = table[ids.clamp(min=0, max=table.numel() - 1)]
        return torch.where((ids >= 0) & (ids < table.numel()), inside, past)

    def mask(self, scores: Tensor, history: Tensor) -> None:
        """-inf, in place, at every piece row r may not write next (``history``: (rows, steps))."""
        rows, steps = history.shape
        if steps == 0:
            return
        position = torch.arange(steps, device=history.device)
        starts = self._look_up(self.starts, history, True)
        last_start = torch.where(starts, position, -1).amax(dim=1)
        length = steps - last_start  # pieces of the current word, its first included
        first = history.gather(1, last_start.clamp(min=0).unsqueeze(1)).squeeze(1)
        live = (last_start >= 0) & self._look_up(self.capital, first, False)
        if not bool(live.any()):
            return
        src, width = self.src, self.src.size(1)
        match = live.unsqueeze(1).expand(rows, width).clone()  # the word equals the source up to i
        for k in range(int(length[live].max())):
            shifted = F.pad(src, (k, 0), value=-1)[:, :width]  # shifted[:, i] = src[:, i - k]
            match &= (k >= length).unsqueeze(1) | (shifted == history[:, steps - 1 - k].unsqueeze(1))
        following = F.pad(src[:, 1:], (0, 1), value=-1)
        continues = match & self._look_up(self.glues, following, False)
        allowed = (
            torch.zeros_like(scores).scatter_add_(
                1, following.clamp(min=0, max=scores.size(1) - 1), continues.to(scores.dtype)
            )
            > 0
        )
        glues = F.pad(self.glues, (0, max(scores.size(1) - self.glues.numel(), 0)))[: scores.size(1)]
        may_end = (match & ~continues).any(dim=1, keepdim=True)
        blocked = torch.where(may_end, glues.unsqueeze(0) & ~allowed, ~allowed)
        scores.masked_fill_(blocked & match.any(dim=1, keepdim=True), float("-inf"))


@dataclasses.dataclass
class LengthLimits:
    """Per row: EOS is masked before ``min_len`` output tokens and forced after ``max_len`` of them.

    The plain ints summarise the rows so that steps far from any limit skip the masking without a
    device sync; they are recomputed whenever rows are dropped (a point where search syncs anyway).
    """

    min_len: Tensor  # (rows,) long
    max_len: Tensor  # (rows,) long
    highest_min: int = 0
    lowest_max: int = 0
    longest: int = 0
    words: WholeWords | None = None  # the rows' sources, with generate.whole_words

    def __post_init__(self) -> None:
        if self.min_len.numel():
            self.highest_min = int(self.min_len.max())
            self.lowest_max = int(self.max_len.min())
            self.longest = int(self.max_len.max())

    @classmethod
    def from_source(
        cls,
        src: Tensor,
        src_mask: Tensor,
        config: GenerateConfig,
        model: Seq2SeqModel,
        marks: WordMarks | None = None,
    ) -> LengthLimits:
        """Source length = real tokens other than BOS/EOS; max length = a * that + b (never below min), and
        never past ``model.max_output_length``: the one bound on search memory, whatever the options.
        With ``config.whole_words`` and the tokenizer's ``marks``, the rows also keep copied names whole."""
        real = src_mask & (src != model.eos_id) & (src != model.bos_id)
        src_len = real.sum(1).clamp(max=model.max_output_length)
        words = WholeWords.from_marks(marks, src) if config.whole_words and marks is not None else None
        if config.fixed_length:
            return cls(src_len, src_len.clone(), words=words)
        max_len = (config.max_length_a * src_len.double()).floor().clamp(max=model.max_output_length).long()
        min_len = torch.full_like(src_len, min(config.min_length, model.max_output_length))
        max_len = (max_len + min(config.max_length_b, model.max_output_length)).clamp(
            max=model.max_output_length
        )
        return cls(min_len, torch.maximum(max_len, min_len), words=words)

    def select(self, rows: Tensor) -> LengthLimits:
        return LengthLimits(
            self.min_len.index_select(0, rows),
            self.max_len.index_select(0, rows),
            words=self.words.select(rows) if self.words is not None else None,
        )


def constrain(
    scores: Tensor,
    step: int,
    limits: LengthLimits,
    history: Tensor,
    model: Seq2SeqModel,
    no_repeat_ngram: int,
) -> Tensor:
    """Mask, in place, what row r may not emit as its output token number ``step`` (0-based): PAD and BOS
    always, EOS outside the length limits, tokens that repeat an n-gram. Returns ``scores``.

    In place because the scores are (rows, vocabulary): a copy per step cost as much as the masking.
    ``history`` (rows, step) holds the tokens emitted so far. If n-gram blocking leaves a row with no
    allowed symbol at all, that row may end (EOS), so every live row always has a way forward.
    """
    eos = model.eos_id
    eos_scores = scores[:, eos].clone()
    scores[:, [model.pad_id, model.bos_id]] = float("-inf")
    if step < limits.highest_min:
        scores[:, eos] = eos_scores.masked_fill(step < limits.min_len, float("-inf"))
    if step >= limits.lowest_max:
        kept = scores[:, eos].clone()
        scores.masked_fill_((step >= limits.max_len).unsqueeze(1), float("-inf"))
        scores[:, eos] = kept
    blocking = bool(no_repeat_ngram) and step >= no_repeat_ngram - 1
    if blocking:
        block_ngrams(scores, history, no_repeat_ngram)
    if limits.words is not None:
        limits.words.mask(scores, history)
    if blocking or limits.words is not None:
        stuck = scores.amax(dim=1) == float("-inf")
        scores[:, eos] = torch.where(stuck, eos_scores, scores[:, eos])
    return scores


def block_ngrams(scores: Tensor, history: Tensor, n: int) -> Tensor:
    """-inf, in place, at every token that would complete an n-gram already in the row's history."""
    if n == 1:
        return scores.scatter_(1, history, float("-inf"))
    if history.size(1) < n:
        return scores
    windows = history.unfold(1, n, 1)  # (rows, positions, n)
    prefix = history[:, history.size(1) - n + 1 :]
    seen = (windows[:, :, :-1] == prefix.unsqueeze(1)).all(dim=2)
    hits = torch.zeros_like(scores).scatter_add_(1, windows[:, :, -1], seen.to(scores))
    return scores.masked_fill_(hits > 0, float("-inf"))
