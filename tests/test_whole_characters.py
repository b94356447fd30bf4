"""Byte pieces write whole UTF-8 characters: the rule against Python's own UTF-8 encoder, and in search."""

from __future__ import annotations

import random
from functools import cache

import pytest
import torch
from toy_model import ToyModel

from seqsmith.config import GenerateConfig
from seqsmith.data.tokenizer import BYTE_SYMBOLS, CharTokenizer, TargetPieces
from seqsmith.generation.search import pad, search_all
from seqsmith.generation.sequences import decode_tensors
from seqsmith.generation.whole_characters import WholeCharacters
from seqsmith.specials import EOS_ID, SEP, SPECIALS

SYMBOLS = [*SPECIALS, SEP, *BYTE_SYMBOLS, "a", "b"]
TOKENIZER = CharTokenizer(SYMBOLS)
FIRST = TOKENIZER.first_byte_id()
assert FIRST is not None
BYTE_IDS = list(range(FIRST, FIRST + 256))
WORDS = [len(SYMBOLS) - 2, len(SYMBOLS) - 1]  # ids that are not bytes
# the edges of every length and of the ranges UTF-8 leaves out (surrogates, past U+10FFFF)
EDGES = [0x41, 0x7F, 0x80, 0x7FF, 0x800, 0xFFF, 0x1000, 0xD7FF, 0xE000, 0xFFFF, 0x10000, 0x3FFFF, 0x40000]
EDGES += [0xFFFFF, 0x100000, 0x10FFFF]


@cache
def open_prefixes() -> frozenset[bytes]:
    """Every proper prefix of a character's UTF-8 bytes, from Python's encoder over all code points."""
    found = set()
    for point in range(0x80, 0x110000):
        if not 0xD800 <= point <= 0xDFFF:
            encoded = chr(point).encode("utf-8")
            found.update(encoded[:k] for k in range(1, len(encoded)))
    return frozenset(found)


def character(rng: random.Random) -> bytes:
    point = rng.choice([*EDGES, rng.randrange(0x80), rng.randrange(0x800), rng.randrange(0x110000)])
    return chr(0xE000 if 0xD800 <= point <= 0xDFFF else point).encode("utf-8")


def histories(rng: random.Random, count: int) -> list[tuple[list[int], bytes]]:
    """Outputs that stop anywhere in a text of characters and word ids, with the bytes of the character
    left open at the end (empty when none is)."""
    made = []
    for _ in range(count):
        ids: list[int] = []
        for _ in range(rng.randint(0, 4)):
            written = [rng.choice(WORDS)] if rng.random() < 0.2 else [BYTE_IDS[b] for b in character(rng)]
            ids += written
        last = character(rng)
        tail = last[: rng.randrange(len(last))]
        made.append((ids + [BYTE_IDS[b] for b in tail], tail))
    return made


def allowed_by_utf8(tail: bytes, vocabulary: int) -> set[int]:
    """What Python's encoder says may follow: the bytes that keep the open character a prefix of one or
    complete it, or, with none open, any byte that begins a character and every other id."""
    allowed = set()
    for token in range(vocabulary):
        if token not in BYTE_IDS:
            if not tail:
                allowed.add(token)
            continue
        written = tail + bytes([BYTE_IDS.index(token)])
        whole = len(written.decode("utf-8", errors="ignore").encode("utf-8")) == len(written)
        if written in open_prefixes() or whole:
            allowed.add(token)
    return allowed


def test_every_row_may_write_exactly_what_keeps_its_bytes_valid_utf8() -> None:
    rule = WholeCharacters(FIRST, torch.device("cpu"))
    made = histories(random.Random(0), 300)
    width = max(len(ids) for ids, _ in made)
    vocabulary = len(SYMBOLS) + 3  # copy slots past the vocabulary are not bytes
    history = torch.tensor([[WORDS[0]] * (width - len(ids)) + ids for ids, _ in made])
    scores = torch.zeros(len(made), vocabulary)
    rule.mask(scores, history)
    for row, (_, tail) in enumerate(made):
        assert set(scores[row].isfinite().nonzero().flatten().tolist()) == allowed_by_utf8(tail, vocabulary)
    empty = torch.zeros(2, vocabulary)
    rule.mask(empty, torch.zeros(2, 0, dtype=torch.long))  # the first step: no character is open
    assert set(empty[0].isfinite().nonzero().flatten().tolist()) == allowed_by_utf8(b"", vocabulary)


def test_a_vocabulary_without_byte_pieces_has_no_first_byte() -> None:
    assert CharTokenizer([*SPECIALS, SEP, "a"]).first_byte_id() is None


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_search_writes_whole_characters_where_the_model_would_not(method: str) -> None:
    """A model that prefers the lead byte C3 to all else, then the continuation A9: unruled, every search
    writes C3 C3 ..., which decodes to U+FFFD; under the rule each C3 is followed by A9 (C3 A9: é)."""
    model = ToyModel(vocab_size=len(SYMBOLS), dim=8, seed=1)
    with torch.no_grad():
        model.out.bias[BYTE_IDS[0xC3]] = 100.0
        model.out.bias[BYTE_IDS[0xA9]] = 90.0
    options = GenerateConfig(
        method=method, beam_size=3, min_length=6, max_length_a=0.0, max_length_b=6, seed=1
    )
    sources = [[WORDS[0], WORDS[1], EOS_ID], [WORDS[1], EOS_ID]]
    pieces = TargetPieces(first_byte=FIRST)
    ruled = search_all(model, sources, options, pieces)
    assert [TOKENIZER.decode(found[0].tokens) for found in ruled] == ["\u00e9" * 3] * 2
    unruled = search_all(model, sources, options)
    assert [TOKENIZER.decode(found[0].tokens) for found in unruled] == ["\ufffd" * 6] * 2
    # at its length limit a row inside a character may still end: search never runs out of symbols
    cut = options.model_copy(update={"min_length": 0, "max_length_b": 1})
    assert all(found[0].tokens == [BYTE_IDS[0xC3]] for found in search_all(model, sources, cut, pieces))


@pytest.mark.parametrize("method", ["greedy", "sample"])
def test_training_time_sampling_writes_whole_characters(method: str) -> None:
    """The outputs that self-critical, minimum-risk and adversarial training score come from
    ``decode_tensors``: with the tokenizer's pieces they are valid UTF-8 too, without them U+FFFD."""
    model = ToyModel(vocab_size=len(SYMBOLS), dim=8, seed=1)
    with torch.no_grad():
        model.out.bias[BYTE_IDS[0xC3]] = 100.0
        model.out.bias[BYTE_IDS[0xA9]] = 90.0
    options = GenerateConfig(method=method, min_length=6, max_length_a=0.0, max_length_b=6)
    src, mask = pad([[WORDS[0], WORDS[1], EOS_ID], [WORDS[1], EOS_ID]], 0)

    def texts(pieces: TargetPieces | None) -> list[str]:
        seeded = torch.Generator().manual_seed(0)
        found = decode_tensors(model, src, mask, options, draws=2, generator=seeded, pieces=pieces)
        return [TOKENIZER.decode(row[: end - 1].tolist()) for row, end in zip(found.ids, found.lengths)]

    assert texts(TargetPieces(first_byte=FIRST)) == ["\u00e9" * 3] * 4
    assert all("\ufffd" in text for text in texts(None))
