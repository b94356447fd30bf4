"""Augmentation: extra training pairs made from the real ones by seeded transforms (``data.augment``).

Each ``AugmentConfig`` adds ``copies`` versions of every training pair; a version runs the group's transforms
in order over the words (whitespace-separated) of the sides they name, then encodes the pair, with a sampled
segmentation where a ``bpe_dropout`` transform says so. Every random choice comes from a generator seeded by
(``data.seed``, group, copy, corpus, line), so ``prepare`` writes the same bytes on every run and a pair's
versions do not depend on which other pairs were read. Noise (Lample et al. 2018): drop, blank, shuffle;
EDA (Wei & Zou 2019): swap, synonym, insert, and drop as its random deletion. Back-translation noise
(Edunov et al. 2018) is the same drop, blank and shuffle (``noise_transforms``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import cast

from seqsmith.config import (
    AugmentConfig,
    BlankTransform,
    BPEDropoutTransform,
    DropTransform,
    InsertTransform,
    ShuffleTransform,
    SwapTransform,
    SynonymTransform,
    TransformConfig,
)
from seqsmith.data.tokenizer import SentencePieceTokenizer, Tokenizer
from seqsmith.data.wordnet import load_wordnet
from seqsmith.errors import SeqsmithError

# function words EDA leaves alone: their WordNet "synonyms" ("a" -> "angstrom") are other senses
_STOPWORD_TEXT = """a an the and or but nor so yet if then else of at by for with about against between into
through during before after above below to from up down in out on off over under again further once here there
when where why how all any both each few more most other some such no not only own same than too very can will
just should now i me my myself we our ours you your yours he him his she her hers it its they them their
theirs what which who whom this that these those am is are was were be been being have has had having do does
did doing would could ought"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def _count(alpha: float, words: Sequence[str]) -> int:
    return max(1, int(alpha * len(words)))


def transform_words(config: TransformConfig, words: list[str], rng: random.Random) -> list[str]:
    """``words`` after one transform (a new list; bpe_dropout leaves the words alone)."""
    if isinstance(config, DropTransform):
        kept = [word for word in words if rng.random() >= config.p]
        return kept or ([rng.choice(words)] if words else [])  # never an empty side
    if isinstance(config, BlankTransform):
        return [config.token if rng.random() < config.p else word for word in words]
    if isinstance(config, ShuffleTransform):
        keys = [i + rng.uniform(0, config.k + 1) for i in range(len(words))]
        return [word for _, word in sorted(zip(keys, words, strict=True), key=lambda pair: pair[0])]
    if isinstance(config, SwapTransform):
        words = list(words)
        if len(words) > 1:
            for _ in range(_count(config.alpha, words)):
                i, j = rng.randrange(len(words)), rng.randrange(len(words))
                words[i], words[j] = words[j], words[i]
        return words
    if isinstance(config, SynonymTransform | InsertTransform):
        return _with_synonyms(config, words, rng)
    return list(words)


def _with_synonyms(
    config: SynonymTransform | InsertTransform, words: list[str], rng: random.Random
) -> list[str]:
    wordnet = load_wordnet(config.language)
    places = [i for i, word in enumerate(words) if word.lower() not in STOPWORDS and wordnet.synonyms(word)]
    rng.shuffle(places)
    words = list(words)
    for place in places[: _count(config.alpha, words)]:
        synonym = rng.choice(wordnet.synonyms(words[place]))
        if words[place][:1].isupper():
            synonym = synonym[:1].upper() + synonym[1:]
        if isinstance(config, SynonymTransform):
            words[place] = synonym
        else:
            words.insert(rng.randrange(len(words) + 1), synonym)
    return words


def _applies(config: TransformConfig, side: str) -> bool:
    return config.side in (side, "both")


def augment_text(transforms: Sequence[TransformConfig], text: str, side: str, rng: random.Random) -> str:
    """``text`` of ``side`` after every transform that applies to that side."""
    words = text.split()
    for config in transforms:
        if _applies(config, side):
            words = transform_words(config, words, rng)
    return " ".join(words)


def sampling_alpha(group: AugmentConfig, side: str) -> float | None:
    """The BPE-dropout alpha with which ``side`` is segmented in this group's copies; None: the best
    segmentation."""
    alphas = [t.alpha for t in group.transforms if isinstance(t, BPEDropoutTransform) and _applies(t, side)]
    return alphas[-1] if alphas else None


def encode_side(tokenizer: Tokenizer, texts: list[str], alpha: float | None, seed: int) -> list[list[int]]:
    if alpha is None:
        return tokenizer.encode_batch(texts)
    return cast(SentencePieceTokenizer, tokenizer).sample_batch(texts, alpha, seed)


def check_augment(groups: Sequence[AugmentConfig], tokenizers: Sequence[Tokenizer]) -> None:
    """Refuse what cannot run before any file is written: BPE-dropout of a tokenizer that cannot sample,
    synonyms of a language without WordNet (or with WordNet missing)."""
    for number, group in enumerate(groups):
        for config in group.transforms:
            where = f"data.augment[{number}]: {config.kind}"
            if isinstance(config, BPEDropoutTransform) and not all(
                isinstance(t, SentencePieceTokenizer) for t in tokenizers
            ):
                raise SeqsmithError(
                    f"{where} samples SentencePiece segmentations, and this tokenizer "
                    f"({tokenizers[0].kind}) has one split only; use it with data.tokenizer.kind: "
                    "sentencepiece or remove it"
                )
            if isinstance(config, SynonymTransform | InsertTransform):
                try:
                    load_wordnet(config.language)
                except SeqsmithError as error:
                    raise SeqsmithError(f"{where}: {error}") from None


def seeded(*parts: int | str) -> random.Random:
    """A generator that depends on ``parts`` only (a string seed is hashed with SHA-512 by ``random``)."""
    return random.Random(":".join(map(str, parts)))


def noise_transforms(p_drop: float = 0.1, p_blank: float = 0.1, k: int = 3) -> list[TransformConfig]:
    """Edunov et al.'s (2018) noise on back-translated sources: drop and blank words, shuffle within k."""
    return [
        DropTransform(p=p_drop, side="both"),
        BlankTransform(p=p_blank, side="both"),
        ShuffleTransform(k=k, side="both"),
    ]
