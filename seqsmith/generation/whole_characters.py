"""Byte pieces only ever write whole UTF-8 characters.

With byte fallback a tokenizer spells what its vocabulary lacks (a rare letter, an unseen name, most
Chinese characters of a small vocabulary) as UTF-8 bytes, one piece a byte. A model that has seen such a
character a few times may emit its first byte and then something else, and the text decodes with U+FFFD
where the character should be. The rule lets a row write only what keeps its bytes a valid UTF-8 prefix
(RFC 3629): a continuation byte only where a character is open, nothing else until it is complete (EOS
neither), and never the bytes UTF-8 has no use for (C0, C1, F5-FF). Where a character may go is read from
the last three output ids, so the rule keeps no state of its own and follows any reordering of rows.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

_CONTINUATION = range(0x80, 0xC0)
_UNUSED = [0xC0, 0xC1, *range(0xF5, 0x100)]
# the byte after these leads is narrower than 80-BF: no overlong forms, surrogates or values past U+10FFFF
_SECOND = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}


def _following(lead: int) -> int:
    """Continuation bytes a character that starts with ``lead`` needs (0: not a lead of one)."""
    return 1 if 0xC2 <= lead <= 0xDF else 2 if 0xE0 <= lead <= 0xEF else 3 if 0xF0 <= lead <= 0xF4 else 0


@dataclasses.dataclass
class WholeCharacters:
    """The rule for one output vocabulary; tables indexed by byte value + 1 (0: not a byte piece)."""

    byte_of: Tensor  # (highest byte id + 1,) long: the byte an id writes, -1 for other ids
    continuation_ids: Tensor  # (64,) ids of bytes 80-BF, in byte order
    unused_ids: Tensor  # ids of the bytes no UTF-8 text holds
    following: Tensor  # (257,) continuation bytes a lead needs
    second_low: Tensor  # (257,) the range of the byte right after a lead
    second_high: Tensor

    @classmethod
    def from_byte_ids(cls, byte_ids: tuple[int, ...], device: torch.device) -> WholeCharacters | None:
        if not byte_ids:
            return None
        byte_of = torch.full((max(byte_ids) + 1,), -1, dtype=torch.long)
        byte_of[list(byte_ids)] = torch.arange(256)
        low = [0x80] * 257
        high = [0xBF] * 257
        for lead, (first, last) in _SECOND.items():
            low[lead + 1], high[lead + 1] = first, last
        ids = torch.tensor(byte_ids)
        return cls(
            byte_of.to(device),
            ids[list(_CONTINUATION)].to(device),
            ids[_UNUSED].to(device),
            torch.tensor([0] + [_following(b) for b in range(256)], device=device),
            torch.tensor(low, device=device),
            torch.tensor(high, device=device),
        )

    def mask(self, scores: Tensor, history: Tensor) -> None:
        """-inf, in place, at every id row r may not write next (``history``: (rows, steps))."""
        scores[:, self.unused_ids] = float("-inf")
        last = history[:, -3:]
        inside = (last >= 0) & (last < self.byte_of.numel())
        values = torch.where(inside, self.byte_of[last.clamp(0, self.byte_of.numel() - 1)], -1)
        open_bytes = torch.zeros(history.size(0), dtype=torch.long, device=history.device)
        low = torch.full_like(open_bytes, 0x80)
        high = torch.full_like(open_bytes, 0xBF)
        only_continuations = torch.ones_like(open_bytes, dtype=torch.bool)  # after the byte looked at
        for back in range(1, last.size(1) + 1):  # the nearest byte that is not a continuation decides
            value = values[:, -back] + 1
            needs = self.following[value] - (back - 1)
            opened = only_continuations & (needs > 0)
            open_bytes = torch.where(opened, needs, open_bytes)
            if back == 1:
                low = torch.where(opened, self.second_low[value], low)
                high = torch.where(opened, self.second_high[value], high)
            only_continuations &= (value > 0x80) & (value <= 0xC0)
        closed = (open_bytes == 0).unsqueeze(1)
        continuations = self.continuation_ids
        scores[:, continuations] = scores[:, continuations].masked_fill(closed, float("-inf"))
        if not bool((open_bytes > 0).any()):
            return
        rows = (open_bytes > 0).nonzero().squeeze(1)
        value = torch.arange(0x80, 0xC0, device=scores.device)
        allowed = (value >= low[rows].unsqueeze(1)) & (value <= high[rows].unsqueeze(1))
        kept = scores[rows][:, continuations].masked_fill(~allowed, float("-inf"))
        only = torch.full(
            (rows.numel(), scores.size(1)), float("-inf"), dtype=scores.dtype, device=scores.device
        )
        only[:, continuations] = kept
        scores[rows] = only
