"""generate.whole_words: the mask against a brute-force re-implementation, and through beam search."""

from __future__ import annotations

import random

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from toy_model import ToyModel

from seqsmith.config import GenerateConfig
from seqsmith.data.tokenizer import WordMarks
from seqsmith.generation.rules import WholeWords
from seqsmith.generation.search import generate_ids

# ids: 0-4 specials (word boundaries), then pieces as SentencePiece writes them
PIECES = ["<pad>", "<unk>", "<s>", "</s>", "<sep>", "▁Sio", "bh", "an", "▁the", "▁Sam", "'s", "x", "▁go"]
MARKS = WordMarks(
    starts=[i < 5 or p.startswith("▁") for i, p in enumerate(PIECES)],
    glues=[i >= 5 and not p.startswith("▁") and p[0].isalnum() for i, p in enumerate(PIECES)],
    capital=[p.startswith("▁") and p[1].isupper() for p in PIECES],
)


def blocked(marks: WordMarks, src: list[int], history: list[int], vocab: int) -> set[int]:
    """What whole_words forbids next, written out the slow way."""
    starts = [i for i, token in enumerate(history) if token >= len(marks.starts) or marks.starts[token]]
    if not starts:
        return set()
    word = history[starts[-1] :]
    if word[0] >= len(marks.capital) or not marks.capital[word[0]]:
        return set()
    ends = [i for i in range(len(word) - 1, len(src)) if src[i - len(word) + 1 : i + 1] == word]
    if not ends:
        return set()

    def glues(token: int) -> bool:
        return token < len(marks.glues) and marks.glues[token]

    following = [src[i + 1] if i + 1 < len(src) else None for i in ends]
    continuing = {token for token in following if token is not None and glues(token)}
    if any(token is None or not glues(token) for token in following):
        return {v for v in range(vocab) if glues(v) and v not in continuing}
    return {v for v in range(vocab) if v not in continuing}


def masked(src: list[list[int]], history: list[list[int]], marks: WordMarks, vocab: int) -> list[set[int]]:
    rule = WholeWords.from_marks(marks, torch.tensor(src))
    scores = torch.zeros(len(src), vocab)
    rule.mask(scores, torch.tensor(history, dtype=torch.long).view(len(src), -1))
    return [set(torch.nonzero(row == float("-inf")).flatten().tolist()) for row in scores]


def test_a_begun_name_is_finished_and_a_finished_one_not_glued_onto() -> None:
    src = [8, 5, 6, 7, 12, 9, 3]  # ▁the ▁Sio bh an ▁go ▁Sam </s>
    everything = set(range(len(PIECES)))
    cases = {
        (5,): everything - {6},  # "▁Sio" must go on with "bh"
        (5, 6): everything - {7},
        (5, 6, 7): {6, 7, 11},  # "Siobhan" is whole: letters may not follow, "'s" may
        (9,): {6, 7, 11},
        (8,): set(),  # lower case: not a name
        (12, 11): set(),
        (8, 9): {6, 7, 11},
    }
    for history, expected in cases.items():
        assert masked([src], [list(history)], MARKS, len(PIECES)) == [expected], history


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000))
def test_the_mask_equals_the_brute_force_rule(seed: int) -> None:
    rng = random.Random(seed)
    vocab = 9
    marks = WordMarks(
        starts=[i < 2 or rng.random() < 0.4 for i in range(vocab)],
        glues=[rng.random() < 0.7 for _ in range(vocab)],
        capital=[rng.random() < 0.7 for _ in range(vocab)],
    )
    marks.glues = [g and not s for g, s in zip(marks.glues, marks.starts, strict=True)]
    rows, width, steps = 3, rng.randint(1, 8), rng.randint(1, 6)
    src = [[rng.randrange(vocab + 2) for _ in range(width)] for _ in range(rows)]  # ids past the marks too
    history = [[rng.randrange(vocab + 2) for _ in range(steps)] for _ in range(rows)]
    expected = [blocked(marks, s, h, vocab + 2) for s, h in zip(src, history, strict=True)]
    assert masked(src, history, marks, vocab + 2) == expected


def test_every_search_obeys_it_through_beam_reordering() -> None:
    """A random model biased toward name pieces: with the rule each emitted piece is one the brute-force
    rule allows after its prefix; without it, some output breaks a name (so the check can fail)."""
    src = [8, 5, 6, 7, 12, 9, 5, 6, 3]  # ▁the ▁Sio bh an ▁go ▁Sam ▁Sio bh </s>
    broken = obeyed = 0
    for seed in range(6):
        model = ToyModel(vocab_size=len(PIECES), seed=seed).eval()
        with torch.no_grad():
            model.out.bias[[5, 6, 7, 9, 11]] += 3.0
        for method in ("greedy", "beam", "sample"):
            for rule in (True, False):
                config = GenerateConfig(
                    method=method, beam_size=4, nbest=1 if method == "greedy" else 4, seed=seed,
                    max_length_a=0, max_length_b=10, whole_words=rule,
                )  # fmt: skip
                src_ids, mask = torch.tensor([src]), torch.ones(1, len(src), dtype=torch.bool)
                for hypothesis in generate_ids(model, src_ids, mask, config, MARKS)[0]:
                    tokens = hypothesis.tokens
                    fine = all(
                        tokens[t] not in blocked(MARKS, src, tokens[:t], len(PIECES))
                        for t in range(len(tokens))
                    )
                    if rule:
                        assert fine, (method, seed, tokens)
                        obeyed += any(t in (5, 9) for t in tokens)
                    else:
                        broken += not fine
    assert broken > 0 and obeyed > 0
