"""Byte pieces only ever write whole UTF-8 characters.

With byte fallback a tokenizer spells what its vocabulary lacks (a rare letter, an unseen name, most
Chinese characters of a small vocabulary) as UTF-8 bytes, one piece a byte. A model that has seen such a
character a few times may emit its first byte and then something else, and the text decodes with U+FFFD
where the character should be. The rule lets a row write only what keeps its bytes a valid UTF-8 prefix
(RFC 3629): a continuation byte only inside a character, nothing else until the character is complete (EOS
neither), and never the bytes UTF-8 has no use for (C0, C1, F5-FF).

Where a row stands is read from its last three output ids, so the rule keeps no state of its own and
follows any reordering of rows: a character is at most four bytes, so an open one began at most three ids
back. Each id is put in one of nine classes (not a byte or a byte that opens nothing, a continuation
byte, and the seven kinds of lead byte), and a table over the 9^3 class triples, filled once from the
UTF-8 automaton, gives the row's state. A step costs a handful of tensor operations whatever the vocabulary.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

_CLOSED = 0
# open states: (lowest, highest) value the next byte may take; the narrower ranges after E0, ED, F0 and F4
# leave out overlong forms, surrogates and code points past U+10FFFF
_NEXT = {1: (0x80, 0xBF), 2: (0x80, 0xBF), 3: (0x80, 0xBF), 4: (0xA0, 0xBF), 5: (0x80, 0x9F)}
_NEXT |= {6: (0x90, 0xBF), 7: (0x80, 0x8F)}
_STATES = 8
# (lead bytes, the state each opens): 1, 2, 3 continuation bytes to come, 4-7 the narrow cases
_LEADS = [(range(0xC2, 0xE0), 1), (range(0xE1, 0xED), 2), (range(0xEE, 0xF0), 2), (range(0xF1, 0xF4), 3)]
_LEADS += [(range(0xE0, 0xE1), 4), (range(0xED, 0xEE), 5), (range(0xF0, 0xF1), 6), (range(0xF4, 0xF5), 7)]
_AFTER_CONTINUATION = [_CLOSED, _CLOSED, 1, 2, 1, 1, 2, 2]  # state -> state after a continuation byte
# an id's class: 0 not a byte or a byte that opens nothing, 1 a continuation byte, 1 + s a lead opening s
_CONTINUATION = 1
_CLASSES = 1 + _STATES


def _byte_class(byte: int) -> int:
    if 0x80 <= byte <= 0xBF:
        return _CONTINUATION
    return next((1 + state for leads, state in _LEADS if byte in leads), 0)


def _state(classes: tuple[int, int, int]) -> int:
    """The automaton from a closed state over the classes; a continuation byte with no open character
    (the tail of one that began before the three ids) leaves the state closed."""
    state = _CLOSED
    for kind in classes:
        state = _AFTER_CONTINUATION[state] if kind == _CONTINUATION else max(kind - 1, _CLOSED)
    return state


_BYTE_CLASSES = [_byte_class(byte) for byte in range(256)]
_TRIPLE_STATES = [_state((a, b, c)) for a, b, c in itertools.product(range(_CLASSES), repeat=3)]


class WholeCharacters:
    """The rule for an output vocabulary whose byte pieces are the 256 ids from ``first`` on."""

    def __init__(self, first: int, device: torch.device) -> None:
        self.first = first
        classes = torch.zeros(first + 257, dtype=torch.long)  # the last entry stands for every id past
        classes[first : first + 256] = torch.tensor(_BYTE_CLASSES)
        self.classes = classes.to(device)
        self.states = torch.tensor(_TRIPLE_STATES, device=device)
        self.place = torch.tensor([_CLASSES**2, _CLASSES, 1], device=device)
        self.low = torch.tensor([_NEXT.get(s, (0, 0))[0] for s in range(_STATES)], device=device)
        self.high = torch.tensor([_NEXT.get(s, (0, 0))[1] for s in range(_STATES)], device=device)
        self.values = torch.arange(0x80, 0xC0, device=device)

    def mask(self, scores: Tensor, history: Tensor) -> Tensor | None:
        """-inf, in place, at every id row r may not write next (``history``: (rows, steps)). Returns the
        rows inside a character (only those may be left with no allowed id), None if there are none."""
        first, minus = self.first, float("-inf")
        scores[:, first + 0xC0 : first + 0xC2] = minus
        scores[:, first + 0xF5 : first + 0x100] = minus
        last = history[:, -3:]
        if last.size(1) == 0:
            scores[:, first + 0x80 : first + 0xC0] = minus
            return None
        kinds = self.classes[last.clamp(max=self.classes.numel() - 1)]
        state = self.states[(kinds * self.place[-last.size(1) :]).sum(1)]
        inside = state != _CLOSED
        scores[:, first + 0x80 : first + 0xC0].masked_fill_(~inside.unsqueeze(1), minus)
        if not bool(inside.any()):
            return None
        rows = inside.nonzero().squeeze(1)
        open_state = state[rows].unsqueeze(1)
        allowed = (self.values >= self.low[open_state]) & (self.values <= self.high[open_state])
        kept = scores[rows, first + 0x80 : first + 0xC0].masked_fill(~allowed, minus)
        scores[rows] = minus
        scores[rows, first + 0x80 : first + 0xC0] = kept
        return rows
