"""Rules every search obeys at every step: length limits, forbidden symbols, n-gram blocking, whole UTF-8
characters from byte pieces and, when asked, whole copied names.

They are applied to the model's log-probabilities before any choice is made (masked entries become -inf),
so all algorithms agree on what an allowed output is.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from seqsmith.config import GenerateConfig
from seqsmith.data.tokenizer import TargetPieces
from seqsmith.generation.whole_characters import WholeCharacters
from seqsmith.generation.whole_words import WholeWords
from seqsmith.models.interface import Seq2SeqModel


def length_bounds(src_len: Tensor, config: GenerateConfig, longest: int) -> tuple[Tensor, Tensor]:
    """(min, max) output tokens per row from the real source lengths: max = a * length + b, never below
    min and never past ``longest``; with ``config.fixed_length`` both are the source length."""
    src_len = src_len.clamp(max=longest)
    if config.fixed_length:
        return src_len, src_len.clone()
    max_len = (config.max_length_a * src_len.double()).floor().clamp(max=longest).long()
    min_len = torch.full_like(src_len, min(config.min_length, longest))
    max_len = (max_len + min(config.max_length_b, longest)).clamp(max=longest)
    return min_len, torch.maximum(max_len, min_len)


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
    characters: WholeCharacters | None = None  # with byte fallback: the same for every row

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
        pieces: TargetPieces | None = None,
    ) -> LengthLimits:
        """Source length = real tokens other than BOS/EOS; max length = a * that + b (never below min), and
        never past ``config.max_length`` nor ``model.max_output_length``: the one bound on search memory.
        With the tokenizer's ``pieces``, byte pieces write whole characters and, with
        ``config.whole_words``, the rows keep copied names whole."""
        longest = min(model.max_output_length, config.max_length)
        real = src_mask & (src != model.eos_id) & (src != model.bos_id)
        pieces = pieces or TargetPieces()
        marks = pieces.words
        words = WholeWords.from_marks(marks, src) if config.whole_words and marks is not None else None
        first = pieces.first_byte
        characters = None if first is None else WholeCharacters(first, src.device)
        return cls(*length_bounds(real.sum(1), config, longest), words=words, characters=characters)

    def select(self, rows: Tensor) -> LengthLimits:
        return LengthLimits(
            self.min_len.index_select(0, rows),
            self.max_len.index_select(0, rows),
            words=self.words.select(rows) if self.words is not None else None,
            characters=self.characters,
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
    always, EOS outside the length limits, tokens that repeat an n-gram, bytes that would not make whole
    characters. Returns ``scores``.

    In place because the scores are (rows, vocabulary): a copy per step cost as much as the masking.
    ``history`` (rows, step) holds the tokens emitted so far. If the rules leave a row with no allowed
    symbol at all, that row may end (EOS), so every live row always has a way forward.
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
    inside = None if limits.characters is None else limits.characters.mask(scores, history)
    if blocking or limits.words is not None:
        stuck = scores.amax(dim=1) == float("-inf")
        scores[:, eos] = torch.where(stuck, eos_scores, scores[:, eos])
    elif inside is not None:  # only rows inside a character may have lost every symbol
        stuck = scores[inside].amax(dim=1) == float("-inf")
        scores[inside, eos] = torch.where(stuck, eos_scores[inside], scores[inside, eos])
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
