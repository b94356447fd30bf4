"""generate.whole_words: the mask against a brute-force re-implementation, and through beam search."""

from __future__ import annotations

import random

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from toy_model import ToyModel

from seqsmith.config import GenerateConfig
from seqsmith.data.tokenizer import TargetPieces, WordMarks
from seqsmith.generation.search import generate_ids
from seqsmith.generation.whole_words import WholeWords

# ids: 0-4 specials (word boundaries), then pieces as SentencePiece writes them
PIECES = ["<pad>", "<unk>", "<s>", "</s>", "<sep>", "▁Sio", "bh", "an", "▁the", "▁Sam", "'s", "x", "▁go"]
PIECES += ["b", "han"]
MARKS = WordMarks(
    starts=[i < 5 or p.startswith("▁") for i, p in enumerate(PIECES)],
    glues=[i >= 5 and not p.startswith("▁") and p[0].isalnum() for i, p in enumerate(PIECES)],
    capital=[p.startswith("▁") and p[1].isupper() for p in PIECES],
    surfaces=[b"" if i < 5 else p.lstrip("▁").encode() for i, p in enumerate(PIECES)],
)


def blocked(marks: WordMarks, src: list[int], history: list[int], vocab: int) -> set[int]:
    """What whole_words forbids next, written out the slow way: every candidate piece tried in turn."""

    def known(token: int) -> bool:
        return 0 <= token < len(marks.starts)

    def start(token: int) -> bool:
        return not known(token) or marks.starts[token]

    def glue(token: int) -> bool:
        return known(token) and marks.glues[token] and marks.surfaces[token] != b""

    def capital(token: int) -> bool:
        return known(token) and marks.capital[token]

    def text(tokens: list[int]) -> bytes:
        return b"".join(marks.surfaces[t] if known(t) else b"" for t in tokens)

    def upper(word: bytes) -> bool:
        return word.decode("utf-8", "ignore")[:1].isupper()

    begins = [i for i, token in enumerate(history) if start(token)]
    if not begins or not capital(history[begins[-1]]):
        return set()
    word = text(history[begins[-1] :])
    if not upper(word):
        return set()
    names = set()
    for j, token in enumerate(src):
        if capital(token):
            k = j + 1
            while k < len(src) and glue(src[k]):
                k += 1
            if upper(text(src[j:k])):
                names.add(text(src[j:k]))
    if any(name.startswith(word) for name in names):
        whole = word in names
        going_on = {v for v in range(vocab) if glue(v) and any(n.startswith(word + text([v])) for n in names)}
        if not going_on and not whole:
            return set()
        return {v for v in range(vocab) if v not in going_on and (glue(v) or not whole)}
    misplaced = set()
    for v in range(vocab):
        places = [(n, i) for n in names for i in range(1, len(n)) if glue(v) and n[i:].startswith(text([v]))]
        if places and all(n[i - 1 : i] != word[-1:] for n, i in places):
            misplaced.add(v)
    return misplaced


def masked(src: list[list[int]], history: list[list[int]], marks: WordMarks, vocab: int) -> list[set[int]]:
    rule = WholeWords.from_marks(marks, torch.tensor(src))
    scores = torch.zeros(len(src), vocab)
    rule.mask(scores, torch.tensor(history, dtype=torch.long).view(len(src), -1))
    return [set(torch.nonzero(row == float("-inf")).flatten().tolist()) for row in scores]


def test_a_begun_name_is_finished_and_a_finished_one_not_glued_onto() -> None:
    src = [8, 5, 6, 7, 12, 9, 3]  # ▁the ▁Sio bh an ▁go ▁Sam </s>
    everything = set(range(len(PIECES)))
    cases = {
        (5,): everything - {6, 13},  # "▁Sio" must go on with "bh" or "b"
        (5, 6): everything - {7},
        (5, 13): everything - {14},  # the same name in other pieces: "▁Sio b han"
        (5, 6, 7): {6, 7, 11, 13, 14},  # "Siobhan" is whole: letters may not follow, "'s" may
        (9,): {6, 7, 11, 13, 14},
        (8,): set(),  # lower case: not a name
        (12, 11): set(),
        (8, 9): {6, 7, 11, 13, 14},
        (9, 7): {6, 7, 13, 14},  # "Saman" begins no name; "bh", "an"... follow other letters in "Siobhan"
        (9, 11): {6, 7, 13, 14},  # "x" is in no name, so it stays allowed
        (9, 11, 6): {6, 13, 14},  # "an" may follow the "h" of "Samxbh" as it follows "h" in "Siobhan"
        (12, 7): set(),  # lower-case words may use any piece
    }
    for history, expected in cases.items():
        assert masked([src], [list(history)], MARKS, len(PIECES)) == [expected], history


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10_000))
def test_the_mask_equals_the_brute_force_rule(seed: int) -> None:
    """Random vocabularies over two letters, one upper-case: pieces share surfaces and begin one
    another often; a word-start mark may stand alone (then the next piece decides the case)."""
    rng = random.Random(seed)
    vocab = 10
    starts = [i < 2 or rng.random() < 0.4 for i in range(vocab)]
    surfaces = [
        b"" if i < 2 else bytes(rng.choices(b"aB", k=rng.randint(0 if s else 1, 2)))
        for i, s in enumerate(starts)
    ]
    marks = WordMarks(
        starts=starts,
        glues=[not s and rng.random() < 0.8 for s in starts],
        capital=[
            i >= 2 and s and text[:1] in (b"", b"B") for i, (s, text) in enumerate(zip(starts, surfaces))
        ],
        surfaces=surfaces,
    )
    rows, width, steps = 3, rng.randint(1, 9), rng.randint(1, 6)
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
                for hypothesis in generate_ids(model, src_ids, mask, config, TargetPieces(MARKS))[0]:
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
