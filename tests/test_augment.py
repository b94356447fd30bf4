"""Augmentation transforms, WordNet synonyms and the augmented copies prepare writes."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from seqsmith.config import DataConfig, TransformConfig, config_from_dict
from seqsmith.data.augment import STOPWORDS, augment_text, transform_words
from seqsmith.data.binarize import BinarizedSplit
from seqsmith.data.prepare import prepare
from seqsmith.data.tokenizer import Tokenizers
from seqsmith.data.wordnet import WordNet, load_wordnet, wordnet_dir
from seqsmith.errors import SeqsmithError

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "near",
    "a",
    "quiet",
    "river",
    "bank",
]


def transform(kind: str, **options: object) -> TransformConfig:
    return TransformConfig.pick({"kind": kind, **options})


def is_subsequence(short: list[str], long: list[str]) -> bool:
    remaining = iter(long)
    return all(word in remaining for word in short)


@pytest.mark.parametrize("seed", range(30))
def test_noise_transforms_keep_their_promises(seed: int) -> None:
    rng = random.Random(seed)
    dropped = transform_words(transform("drop", p=0.3), WORDS, rng)
    assert dropped and is_subsequence(dropped, WORDS) and len(dropped) <= len(WORDS)
    blanked = transform_words(transform("blank", p=0.3, token="<b>"), WORDS, rng)
    assert len(blanked) == len(WORDS)
    assert all(b in (w, "<b>") for b, w in zip(blanked, WORDS, strict=True))
    numbered = [str(i) for i in range(len(WORDS))]
    shuffled = transform_words(transform("shuffle", k=3), numbered, rng)
    assert sorted(shuffled, key=int) == numbered
    assert max(abs(int(word) - place) for place, word in enumerate(shuffled)) <= 3
    swapped = transform_words(transform("swap", alpha=0.2), WORDS, rng)
    assert Counter(swapped) == Counter(WORDS)


def test_rates_are_what_they_say_over_many_draws() -> None:
    rng = random.Random(0)
    kept = sum(len(transform_words(transform("drop", p=0.25), WORDS, rng)) for _ in range(2000))
    assert kept / (2000 * len(WORDS)) == pytest.approx(0.75, abs=0.01)
    numbered = [str(i) for i in range(40)]
    moved = [transform_words(transform("shuffle", k=2), numbered, rng) != numbered for _ in range(50)]
    assert all(moved)  # 40 words within 2 places: some always move


def test_side_decides_which_text_changes() -> None:
    rng = random.Random(1)
    swap = [transform("swap", alpha=0.5, side="target")]
    assert augment_text(swap, " ".join(WORDS), "source", rng) == " ".join(WORDS)
    assert augment_text(swap, " ".join(WORDS), "target", rng) != " ".join(WORDS)


def fake_wordnet(directory: Path) -> Path:
    """Three synsets in WordNet's own line format, with an exception list."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data.noun").write_text(
        "  1 This software and database is being provided\n"
        "00000001 06 n 03 car 0 auto 0 automobile 0 000 | a motor vehicle\n"
        "00000002 06 n 02 mouse 0 computer_mouse 0 000 | a hand-operated device\n"
    )
    (directory / "data.verb").write_text("00000003 30 v 02 walk 0 stroll 0 000 | move on foot\n")
    (directory / "data.adj").write_text("")
    (directory / "data.adv").write_text("")
    (directory / "noun.exc").write_text("mice mouse\n")
    return directory


def test_synonyms_come_from_the_synsets_and_inflections_find_their_base(tmp_path: Path) -> None:
    wordnet = WordNet(fake_wordnet(tmp_path / "wn"))
    assert wordnet.synonyms("car") == ["auto", "automobile"]
    assert wordnet.synonyms("Cars") == ["auto", "automobile", "car"]  # "cars" -> "car" by the suffix rule
    assert wordnet.synonyms("mice") == ["computer mouse", "mouse"]  # through noun.exc
    assert wordnet.synonyms("walking") == ["stroll", "walk"]
    assert wordnet.synonyms("the") == []


def test_synonym_and_insert_use_only_wordnet_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORDNET_DIR", str(fake_wordnet(tmp_path / "wn")))
    load_wordnet.cache_clear()
    try:
        rng = random.Random(0)
        replaced = transform_words(transform("synonym", alpha=0.5), ["the", "Car", "is", "fast"], rng)
        assert (
            replaced[0] == "the" and replaced[1] in ("Auto", "Automobile") and replaced[2:] == ["is", "fast"]
        )
        inserted = transform_words(transform("insert", alpha=0.3), ["a", "car", "here"], rng)
        assert len(inserted) == 4 and Counter(inserted) - Counter(["a", "car", "here"]) in (
            Counter(["auto"]),
            Counter(["automobile"]),
        )
        assert transform_words(transform("synonym"), ["the", "of"], rng) == [
            "the",
            "of",
        ]  # nothing to replace
    finally:
        load_wordnet.cache_clear()


def test_missing_wordnet_and_languages_without_one_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SeqsmithError, match="no WordNet for language 'de'"):
        load_wordnet("de")
    monkeypatch.setenv("WORDNET_DIR", str(tmp_path / "nowhere"))
    load_wordnet.cache_clear()
    try:
        with pytest.raises(SeqsmithError, match="install it \\(apt-get install wordnet-base\\)"):
            load_wordnet("en")
    finally:
        load_wordnet.cache_clear()


@pytest.mark.skipif(
    not (wordnet_dir() / "data.noun").is_file(),
    reason="needs the Debian package wordnet-base (.ci/run installs it)",
)
def test_the_installed_wordnet_knows_common_synonyms() -> None:
    wordnet = load_wordnet("en")
    assert "automobile" in wordnet.synonyms("car") and "domestic dog" in wordnet.synonyms("dogs")
    assert "glad" in wordnet.synonyms("happy") and not any(word in STOPWORDS for word in ["car", "dog"])


def pairs_config(tmp_path: Path, **data: object) -> DataConfig:
    lines = [
        (" ".join(WORDS[i % 5 : i % 5 + 6]), f"ziel {i} " + " ".join(WORDS[i % 7 : i % 7 + 4]))
        for i in range(50)
    ]
    (tmp_path / "train.src").write_text("".join(s + "\n" for s, _ in lines))
    (tmp_path / "train.tgt").write_text("".join(t + "\n" for _, t in lines))
    raw = {
        "train": str(tmp_path / "train"),
        "tokenizer": {"kind": "word", "byte_fallback": False},
        "output_dir": str(tmp_path / "out"),
        **data,
    }
    return config_from_dict({"data": raw}).data


def test_augmented_copies_are_seeded_transforms_of_their_pair(tmp_path: Path) -> None:
    augment = [{"copies": 2, "transforms": [{"kind": "drop", "p": 0.3}, {"kind": "blank", "side": "target"}]}]
    data = pairs_config(tmp_path, augment=augment)
    report = prepare(config_from_dict({"data": data.model_dump(mode="json")}), progress=False)
    train = report.splits["train"]
    assert (train.kept, train.augmented) == (50, 100)
    split, tokenizers = (
        BinarizedSplit(tmp_path / "out", "train"),
        Tokenizers.load(tmp_path / "out" / "tokenizer"),
    )
    assert tokenizers.target.pieces("<blank>") == ["<blank>"]  # the blank token is one symbol
    originals = [
        (tokenizers.source.decode(split.source(i)), tokenizers.target.decode(split.target(i)))
        for i in range(50)
    ]
    changed = 0
    for i in range(50, 150):
        source, target = (
            tokenizers.source.decode(split.source(i)),
            tokenizers.target.pieces(tokenizers.target.decode(split.target(i))),
        )
        real_source, real_target = originals[(i - 50) % 50]
        assert is_subsequence(source.split(), real_source.split())  # drop only removes source words
        assert len(target) == len(real_target.split())  # blank keeps the target's length
        changed += source != real_source
    assert changed > 50
    first = (tmp_path / "out" / "train.source.bin").read_bytes()
    again = data.model_copy(update={"output_dir": str(tmp_path / "again")})
    prepare(config_from_dict({"data": again.model_dump(mode="json")}), progress=False)
    assert (tmp_path / "again" / "train.source.bin").read_bytes() == first


def test_unknown_transforms_and_bad_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(SeqsmithError, match="unknown transform kind 'dropout'; known: blank, bpe_dropout"):
        pairs_config(tmp_path, augment=[{"transforms": [{"kind": "dropout"}]}])
    with pytest.raises(SeqsmithError, match="augment.0.transforms"):
        pairs_config(tmp_path, augment=[{"transforms": []}])
    with pytest.raises(SeqsmithError, match="p"):
        pairs_config(tmp_path, augment=[{"transforms": [{"kind": "drop", "p": 1.5}]}])
    with pytest.raises(SeqsmithError, match="special symbols"):
        pairs_config(tmp_path, augment=[{"transforms": [{"kind": "blank", "token": "<unk>"}]}])
