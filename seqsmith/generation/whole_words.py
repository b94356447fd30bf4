"""``generate.whole_words``: a copied name is written as the source spells it, letter for letter.

See et al.'s copy model writes a name piece by piece, and one wrong piece garbles it ("Fatoumployees",
"Cmitri"). The rule compares text, not ids, because SentencePiece may split one name two ways (before a
colon and before a space, say). Names are the capitalized words of the source (a piece that begins a word,
plus the letter pieces glued to it, beginning with a capital letter). While the output writes a
capitalized word W:

- if W begins some name, only pieces that keep it a beginning of a name may follow, and where W is a whole
  name also anything that ends the word (never more letters glued on);
- otherwise (a capitalized word of its own, or a wrong first piece), a piece found inside a name may follow
  only the letter it follows there: no "mitri" after "C" when the source says "Dmitri".

Lower-case words are never constrained. Matching is on UTF-8 bytes, so byte-fallback pieces take part.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from seqsmith.data.tokenizer import WordMarks


@dataclasses.dataclass
class _Vocabulary:
    starts: Tensor  # (vocab,) bool
    glues: Tensor
    capital: Tensor
    surfaces: list[bytes]
    glue_ids: dict[bytes, list[int]]  # the glue pieces that write these bytes (a letter and its byte)
    longest: int  # bytes of the longest glue piece


@dataclasses.dataclass
class _Names:
    """One source sentence's names and, per glue piece found inside one, the bytes it follows there."""

    words: frozenset[bytes]
    inner: dict[int, frozenset[bytes]]


def _look_up(table: Tensor, ids: Tensor, past: bool) -> Tensor:
    """``table[ids]``, with ``past`` for ids beyond the table (copy slots) and below zero (padding)."""
    inside = table[ids.clamp(min=0, max=table.numel() - 1)]
    return torch.where((ids >= 0) & (ids < table.numel()), inside, past)


def _capitalized(word: bytes) -> bool:
    return word.decode("utf-8", "ignore")[:1].isupper()


def _names(vocabulary: _Vocabulary, src: list[int]) -> _Names:
    size = len(vocabulary.surfaces)
    words, current = set(), None
    for token in [*src, -1]:
        inside = 0 <= token < size
        if current is not None and inside and vocabulary.glues[token]:
            current += vocabulary.surfaces[token]
            continue
        if current is not None and _capitalized(current):
            words.add(current)
        current = vocabulary.surfaces[token] if inside and vocabulary.capital[token] else None
    inner: dict[int, set[bytes]] = {}
    for word in words:
        for i in range(1, len(word)):
            for length in range(1, min(vocabulary.longest, len(word) - i) + 1):
                for piece in vocabulary.glue_ids.get(word[i : i + length], []):
                    inner.setdefault(piece, set()).add(word[i - 1 : i])
    return _Names(frozenset(words), {piece: frozenset(before) for piece, before in inner.items()})


@dataclasses.dataclass
class WholeWords:
    """The rule for a batch of search rows; ``select`` follows the rows as search drops some."""

    vocabulary: _Vocabulary
    names: list[_Names]  # per row

    @classmethod
    def from_marks(cls, marks: WordMarks, src: Tensor) -> WholeWords:
        def table(values: list[bool]) -> Tensor:
            return torch.tensor(values, dtype=torch.bool, device=src.device)

        glue_ids: dict[bytes, list[int]] = {}
        for i, (surface, glues) in enumerate(zip(marks.surfaces, marks.glues, strict=True)):
            if glues and surface:
                glue_ids.setdefault(surface, []).append(i)
        vocabulary = _Vocabulary(
            table(marks.starts),
            table(marks.glues),
            table(marks.capital),
            marks.surfaces,
            glue_ids,
            max(map(len, glue_ids), default=0),
        )
        by_sentence: dict[tuple[int, ...], _Names] = {}  # beams repeat their sentence's row
        rows = []
        for ids in src.tolist():
            names = by_sentence.get(tuple(ids))
            if names is None:
                names = by_sentence[tuple(ids)] = _names(vocabulary, ids)
            rows.append(names)
        return cls(vocabulary, rows)

    def select(self, rows: Tensor) -> WholeWords:
        return dataclasses.replace(self, names=[self.names[i] for i in rows.tolist()])

    def mask(self, scores: Tensor, history: Tensor) -> None:
        """-inf, in place, at every piece row r may not write next (``history``: (rows, steps))."""
        steps = history.size(1)
        if steps == 0:
            return
        vocabulary = self.vocabulary
        position = torch.arange(steps, device=history.device)
        last_start = torch.where(_look_up(vocabulary.starts, history, True), position, -1).amax(dim=1)
        first = history.gather(1, last_start.clamp(min=0).unsqueeze(1)).squeeze(1)
        live = (last_start >= 0) & _look_up(vocabulary.capital, first, False)
        if not bool(live.any()):
            return
        indices = live.nonzero().flatten()
        blocked = torch.zeros(len(indices), scores.size(1), dtype=torch.bool, device=scores.device)
        glues = torch.zeros(scores.size(1), dtype=torch.bool, device=scores.device)
        glues[: vocabulary.glues.numel()] = vocabulary.glues[: scores.size(1)]
        surfaces, size = vocabulary.surfaces, len(vocabulary.surfaces)
        for k, (row, begin, tokens) in enumerate(
            zip(indices.tolist(), last_start[indices].tolist(), history[indices].tolist(), strict=True)
        ):
            word = b"".join(surfaces[t] if t < size else b"" for t in tokens[begin:])
            if _capitalized(word):
                self._block(blocked[k], glues, word, self.names[row])
        scores[indices] = scores[indices].masked_fill(blocked, float("-inf"))

    def _block(self, blocked: Tensor, glues: Tensor, word: bytes, names: _Names) -> None:
        vocabulary = self.vocabulary
        begun = [name[len(word) :] for name in names.words if name.startswith(word)]
        if begun:
            going_on = [
                piece
                for rest in begun
                for length in range(1, min(vocabulary.longest, len(rest)) + 1)
                for piece in vocabulary.glue_ids.get(rest[:length], [])
            ]
            whole = b"" in begun
            if not going_on and not whole:
                return  # no piece writes the name on: nothing to keep
            blocked.copy_(glues if whole else torch.ones_like(blocked))
            blocked[going_on] = False
            return
        last = word[-1:]
        misplaced = [piece for piece, before in names.inner.items() if last not in before]
        blocked[[p for p in misplaced if p < blocked.numel()]] = True
