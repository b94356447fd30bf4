"""Tokenizers: round trips on real-ish text, special ids, <sep>, save/load, bad files, source encoding."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqsmith.config import DataConfig, TokenizerConfig
from seqsmith.data.tokenizer import (
    BYTE_SYMBOLS,
    CharTokenizer,
    Tokenizer,
    Tokenizers,
    WordTokenizer,
    encode_source,
    encode_target,
    sample_lines,
)
from seqsmith.errors import SeqsmithError
from seqsmith.specials import BOS_ID, EOS_ID, PAD_ID, SEP, SEP_ID, SPECIALS, UNK_ID

ENGLISH = [
    "Two young, White males are outside near many bushes.",
    "A man in an orange hat starring at something.",
    '"Where\'s the dog?"  she asked -- twice!',
    "Prices rose 3.5% (about $12) in 2023; that's  odd.",
    "Hi , Tom . <sep> Hello ! How are you ?",
]
GERMAN = [
    "Zwei junge weiße Männer sind im Freien.",
    "Größe: 1,80 m — ungefähr…",
    "Ein Hund läuft über die Straße.",
]
CHINESE = ["你好，世界。", "他说：“我们明天去北京吧！”", "晚风摇树树还挺", "今天天气很好 , 不是吗？"]
SPACES = ["  leading and  double  spaces ", "tab\there", "trailing space "]
TEXTS = ENGLISH + GERMAN + CHINESE + SPACES


def corpus(seed: int = 0, size: int = 400) -> list[str]:
    """Shuffled sentences plus some recombined ones, so SentencePiece has enough to learn from."""
    rng = random.Random(seed)
    words = " ".join(TEXTS).split(" ")
    extra = [" ".join(rng.choices(words, k=rng.randint(2, 9))) for _ in range(size)]
    return TEXTS * 5 + extra


def sentencepiece(tmp_path: Path, **options: object) -> Tokenizers:
    """150 pieces, so without byte fallback (its 256 byte pieces would not fit)."""
    cfg = TokenizerConfig(kind="sentencepiece", vocab_size=150, byte_fallback=False, **options)
    return Tokenizers.train(cfg, corpus(), corpus(1))


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_round_trip_is_exact(tmp_path: Path, model_type: str) -> None:
    tokenizers = sentencepiece(tmp_path, model_type=model_type)
    tokenizer = tokenizers.source
    assert tokenizers.joint and tokenizers.target is tokenizer and tokenizer.vocab_size == 150
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text.replace(SEP, "")
        assert len(tokenizer.pieces(text)) == len(ids)
    assert [tokenizer.piece(i) for i in range(5)] == ["<pad>", "<unk>", "<s>", "</s>", SEP]


def test_sep_is_one_token_in_every_tokenizer(tmp_path: Path) -> None:
    text = "Hi , Tom . <sep> Hello ! <sep> How ?"
    tokenizers = [
        sentencepiece(tmp_path).source,
        Tokenizers.train(TokenizerConfig(kind="char"), [text], [text]).source,
        Tokenizers.train(TokenizerConfig(kind="word"), [text], [text]).source,
    ]
    for tokenizer in tokenizers:
        ids = tokenizer.encode(text)
        assert ids.count(SEP_ID) == 2, tokenizer.kind
        assert tokenizer.decode(ids).split() == text.replace(SEP, "").split()  # a reader never sees it


def test_decode_never_shows_a_special_token(tmp_path: Path) -> None:
    chars = Tokenizers.train(TokenizerConfig(kind="char", byte_fallback=False), ["ab c"], ["ab c"]).source
    ids = chars.encode("a?c")
    assert ids[1] == UNK_ID
    assert chars.decode([BOS_ID, *ids, SEP_ID, EOS_ID, PAD_ID, PAD_ID, 10_000]) == "ac"
    assert chars.decode(ids, {1: "?"}) == "a?c"
    spm = sentencepiece(tmp_path).source
    assert spm.decode([BOS_ID, *spm.encode("Hello"), EOS_ID, PAD_ID]) == "Hello"
    assert spm.decode(spm.encode("Hello ☃")) == "Hello "
    for tokenizer in (chars, spm):
        shown = tokenizer.decode(list(range(tokenizer.vocab_size)))
        assert not any(special in shown for special in [*SPECIALS, SEP])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([*"你好，世界。 abc\n\t"]), max_size=40).map("".join))
def test_char_round_trip_is_exact_for_known_characters(text: str) -> None:
    cfg = TokenizerConfig(kind="char", byte_fallback=False)
    tokenizer = CharTokenizer.train(["你好，世界。 abc\n\t"], cfg)
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert UNK_ID not in tokenizer.encode(text)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=30), st.sampled_from(["sentencepiece", "char", "word"]))
def test_byte_fallback_round_trips_any_text(text: str, kind: str) -> None:
    """Characters the training text never had (any Unicode, surrogates aside) come back exactly, except
    what a kind always changes (word: whitespace; SentencePiece: nothing); no id is UNK."""
    tokenizer = byte_tokenizers(kind)
    ids = tokenizer.encode(text)
    assert UNK_ID not in ids
    shown = text.replace(SEP, " " if kind == "word" else "")  # <sep> is one id, which decode hides
    assert tokenizer.decode(ids) == (" ".join(shown.split()) if kind == "word" else shown)


def byte_tokenizers(kind: str, cache: dict[str, Tokenizer] = {}) -> Tokenizer:  # noqa: B006
    """One tokenizer a kind with byte fallback, trained on the small corpus (cached across examples)."""
    if kind not in cache:
        size = 420 if kind == "sentencepiece" else 8000
        cfg = TokenizerConfig(kind=kind, vocab_size=size)  # type: ignore[arg-type]
        cache[kind] = Tokenizers.train(cfg, corpus(), corpus(1)).source
    return cache[kind]


def test_byte_fallback_spells_unknown_symbols_in_bytes() -> None:
    chars = byte_tokenizers("char")
    assert [chars.piece(i) for i in chars.encode("a☃")][1:] == ["<0xE2>", "<0x98>", "<0x83>"]
    words = byte_tokenizers("word")
    ids = words.encode("the zebra emu the")
    assert words.decode(ids) == "the zebra emu the"  # a space byte keeps adjacent unknown words apart
    assert [words.piece(i) for i in ids].count("<0x20>") == 1
    spm = byte_tokenizers("sentencepiece")
    assert spm.decode(spm.encode("Amanda ☃ 😀")) == "Amanda ☃ 😀"
    assert spm.unknown_surfaces("Amanda ☃") == {}
    for kind in ("char", "word", "sentencepiece"):  # what search keeps to whole characters
        tokenizer = byte_tokenizers(kind)
        first = tokenizer.first_byte_id()
        assert first is not None and [tokenizer.piece(first + b) for b in range(256)] == BYTE_SYMBOLS


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(st.characters(categories=["L"]), min_size=1, max_size=8), min_size=1, max_size=4))
def test_word_marks_spell_each_word_as_written(words: list[str]) -> None:
    """What generate.whole_words reads: per word, its first piece begins it (capitalized as the word
    is), the rest glue on, and their surfaces put together are the word's UTF-8 bytes."""
    spm = byte_tokenizers("sentencepiece")
    marks = spm.word_marks()
    assert marks is not None
    for word in words:
        normalized = spm.decode(spm.encode(word))  # SentencePiece's NFKC, which may change a letter
        if " " in normalized or not normalized.isalpha():
            continue
        ids = spm.encode(normalized)
        assert [marks.starts[i] for i in ids] == [True] + [False] * (len(ids) - 1)
        bare = spm.piece(ids[0]) == "\u2581"  # the next piece spells the word
        assert marks.capital[ids[0]] == (bare or normalized[0].isupper())
        assert all(marks.glues[i] for i in ids[1:])
        assert b"".join(marks.surfaces[i] for i in ids) == normalized.encode()


def test_unknown_surfaces_name_what_each_unk_stood_for(tmp_path: Path) -> None:
    spm = sentencepiece(tmp_path).source
    text = "Hello ☃ world 😀"
    surfaces = spm.unknown_surfaces(text)
    ids = spm.encode(text)
    assert sorted(surfaces.values()) == ["☃", "😀"] and all(ids[p] == UNK_ID for p in surfaces)
    assert spm.decode(ids, surfaces) == text  # filling every UNK back gives the text
    words = Tokenizers.train(TokenizerConfig(kind="word", byte_fallback=False), ["the cat"], ["x"]).source
    assert words.unknown_surfaces("the dog sat") == {1: "dog", 2: "sat"}


def test_word_tokenizer_collapses_whitespace_and_caps_the_vocabulary() -> None:
    texts = [*ENGLISH, *GERMAN, "the cat sat", "the dog  sat\ton the mat", "the end"]
    tokenizer = WordTokenizer.train(texts, TokenizerConfig(kind="word", vocab_size=16, byte_fallback=False))
    counts = Counter(word for text in texts for word in text.split() if word != SEP)
    expected = [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))][:11]
    assert tokenizer.symbols[5:] == expected and tokenizer.vocab_size == 16
    assert tokenizer.decode(tokenizer.encode("  the   sat ")) == "the sat"
    assert tokenizer.decode(tokenizer.encode("the mat")) == "the"
    rare = WordTokenizer.train(texts, TokenizerConfig(kind="word", min_freq=3, byte_fallback=False))
    assert rare.symbols[5:] == [w for w, c in sorted(counts.items(), key=lambda i: (-i[1], i[0])) if c >= 3]


def test_lowercase_is_applied_before_encoding() -> None:
    cfg = TokenizerConfig(kind="word", lowercase=True)
    tokenizer = Tokenizers.train(cfg, ["Hello World"], ["HELLO"]).source
    assert tokenizer.decode(tokenizer.encode("HeLLo WORLD")) == "hello world"
    assert UNK_ID not in tokenizer.encode("WORLD")


@pytest.mark.parametrize("kind", ["sentencepiece", "char", "word"])
@pytest.mark.parametrize("joint", [True, False])
def test_save_and_load_give_the_same_ids(tmp_path: Path, kind: str, joint: bool) -> None:
    cfg = TokenizerConfig(kind=kind, vocab_size=120, joint=joint, byte_fallback=False)
    sources, targets = corpus()[:200], [t.upper() for t in corpus(2)[:200]]
    tokenizers = Tokenizers.train(cfg, sources, targets)
    tokenizers.save(tmp_path / "tok")
    loaded = Tokenizers.load(tmp_path / "tok")
    assert loaded.joint == joint and (loaded.source is loaded.target) == joint
    description = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert description["kind"] == kind
    for text in TEXTS:
        assert loaded.source.encode(text) == tokenizers.source.encode(text)
        assert loaded.target.encode(text.upper()) == tokenizers.target.encode(text.upper())
    if not joint:  # the target side saw upper case only
        assert UNK_ID in loaded.target.encode("the") and UNK_ID not in loaded.source.encode("the")
    assert not list((tmp_path / "tok").glob(".*tmp*"))


def test_load_reports_missing_and_damaged_files(tmp_path: Path) -> None:
    with pytest.raises(SeqsmithError, match="holds no tokenizer; run `seqsmith prepare`"):
        Tokenizers.load(tmp_path)
    Tokenizers.train(TokenizerConfig(kind="char"), ["ab"], ["ab"]).save(tmp_path)
    description = json.loads((tmp_path / "tokenizer.json").read_text())
    (tmp_path / "tokenizer.json").write_text(json.dumps({**description, "kind": "pickle"}))
    with pytest.raises(SeqsmithError, match="unknown tokenizer kind 'pickle'"):
        Tokenizers.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(SeqsmithError, match=r"tokenizer\.json is damaged"):
        Tokenizers.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps(description))
    (tmp_path / "joint.vocab").write_text("oops\n")
    with pytest.raises(SeqsmithError, match=r"joint\.vocab: not a readable char vocabulary"):
        Tokenizers.load(tmp_path)


def test_sentencepiece_vocabulary_too_small_for_bytes_says_how_small() -> None:
    cfg = TokenizerConfig(kind="sentencepiece", vocab_size=100)
    with pytest.raises(SeqsmithError, match=r"vocab_size=100 is too small: .* at least 2\d\d ids, 256 .*"):
        Tokenizers.train(cfg, ["a few words"] * 3, ["ein paar Wörter"] * 3)
    with pytest.raises(SeqsmithError, match=r"no room for a char beside the 261 reserved ids"):
        Tokenizers.train(TokenizerConfig(kind="char", vocab_size=200), ["ab"], ["ab"])


def test_sentencepiece_vocabulary_too_large_names_the_key() -> None:
    cfg = TokenizerConfig(kind="sentencepiece", vocab_size=5000)
    with pytest.raises(SeqsmithError, match=r"data\.tokenizer\.vocab_size=5000"):
        Tokenizers.train(cfg, ["a few words"] * 3, ["ein paar Wörter"] * 3)


def test_sample_lines_caps_and_samples_uniformly() -> None:
    assert sample_lines(iter(["a", "b"]), 5) == ["a", "b"]
    sample = sample_lines((str(i) for i in range(10_000)), 1000)
    assert len(sample) == len(set(sample)) == 1000
    assert sample == sample_lines([str(i) for i in range(10_000)], 1000)  # fixed seed
    late = sum(int(x) >= 5000 for x in sample)
    assert 400 < late < 600  # a reservoir, not the first lines


def test_encode_source_and_target_truncate_and_add_eos() -> None:
    tokenizers = Tokenizers.train(TokenizerConfig(kind="word"), ["a b c d e"], ["a b c d e"])
    ids = tokenizers.source.encode("a b c d e")

    def limits(length: int, **options: Any) -> DataConfig:
        return DataConfig(train="unused", max_source_length=length, **options)

    assert encode_source(tokenizers, "a b c d e", limits(10)) == [*ids, EOS_ID]
    assert encode_source(tokenizers, "a b c d e", limits(3)) == [*ids[:3], EOS_ID]
    assert encode_source(tokenizers, "a b c d e", limits(3, truncate_source_from="left")) == [
        *ids[-3:],
        EOS_ID,
    ]
    reverse = limits(3, reverse_source=True)  # cut first, then turned around; EOS stays last
    assert encode_source(tokenizers, "a b c d e", reverse) == [ids[2], ids[1], ids[0], EOS_ID]
    assert encode_target(tokenizers, "a b c d e", 2) == ids[:2]
    assert BOS_ID not in encode_target(tokenizers, "a b", 9)


def test_copy_ids_for_out_of_vocabulary_source_words(tmp_path: Path) -> None:
    cfg = TokenizerConfig(kind="word", byte_fallback=False)
    tokenizers = Tokenizers.train(cfg, ["the cat sat"], ["the cat sat"])
    size = tokenizers.source.vocab_size
    cat, the = tokenizers.source.encode("cat the")
    text = "the zebra saw a zebra and an emu"
    oovs = tokenizers.source_oovs(text, slots=3)
    assert oovs == ["zebra", "saw", "a"]  # distinct, in order, at most 3
    assert tokenizers.encode_with_oovs("source", text, oovs) == [
        the, size, size + 1, size + 2, size, UNK_ID, UNK_ID, UNK_ID,
    ]  # fmt: skip
    assert tokenizers.encode_with_oovs("target", "a cat saw emu", oovs) == [size + 2, cat, size + 1, UNK_ID]
    assert tokenizers.decode_with_oovs([the, size + 1, size, size + 7, EOS_ID], oovs) == "the saw zebra"
    short = DataConfig(train="unused", max_source_length=3)
    assert encode_source(tokenizers, text, short, oovs=oovs) == [the, size, size + 1, EOS_ID]
    assert sentencepiece(tmp_path).source_oovs("zebra xylophone", 3) == []  # pieces spell every word
