"""Tokenizers: text <-> ids, the same for every model. SentencePiece (bpe/unigram), characters, words.

Every vocabulary starts with the same special ids (PAD=0, UNK=1, BOS=2, EOS=3, the dialogue turn
separator ``<sep>``=4), from ``seqsmith.specials``. What decode(encode(text)) gives back:

- SentencePiece: ``text`` exactly (no Unicode normalisation, whitespace kept) when every character is in
  the vocabulary (see ``character_coverage``); rarer characters come back as ``<unk>``.
- char: ``text`` exactly (spaces, tabs, newlines are symbols too) when every character is in the vocabulary.
- word: words joined by one space: runs of whitespace collapse and the ends are stripped.
- with ``lowercase: true`` the input is lower-cased first, so case is not restored.

``decode`` drops PAD, BOS and EOS. A directory holds ``tokenizer.json`` (kind, files, options) and the
vocabulary files beside it; loading reads JSON and SentencePiece model protos only, it never runs code.
"""

from __future__ import annotations

import io
import json
import os
import random
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import ClassVar, Literal

import sentencepiece as spm

from seqsmith.config import TokenizerConfig
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_write_bytes, atomic_write_text, check_inside, text_lines
from seqsmith.specials import BOS_ID, EOS_ID, PAD_ID, SEP, SPECIALS, UNK_ID

_DROPPED = frozenset({PAD_ID, BOS_ID, EOS_ID})
FORMAT_VERSION = 1


class Tokenizer(ABC):
    kind: ClassVar[str]

    def __init__(self, lowercase: bool = False) -> None:
        self.lowercase = lowercase

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text a reader expects; PAD, BOS and EOS are dropped."""

    @abstractmethod
    def pieces(self, text: str) -> list[str]:
        """The tokens of ``text`` as strings, one per id of ``encode(text)`` (for pictures and debugging)."""

    @abstractmethod
    def piece(self, token_id: int) -> str: ...

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def save(self, directory: Path, name: str) -> str:
        """Write the vocabulary as ``directory/name.*``; returns the file name ``load`` needs."""

    def _prepare(self, text: str) -> str:
        return text.lower() if self.lowercase else text


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, lowercase: bool = False) -> None:
        super().__init__(lowercase)
        self.model_proto = model_proto
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, lines: list[str], config: TokenizerConfig) -> SentencePieceTokenizer:
        if not lines:
            raise SeqsmithError(
                "no training text to build the SentencePiece vocabulary from; check data.train"
            )
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_writer=model,
                model_type=config.model_type,
                vocab_size=config.vocab_size,
                character_coverage=config.character_coverage,
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                pad_piece=SPECIALS[PAD_ID],
                unk_piece=SPECIALS[UNK_ID],
                bos_piece=SPECIALS[BOS_ID],
                eos_piece=SPECIALS[EOS_ID],
                unk_surface="<unk>",
                user_defined_symbols=[SEP],
                byte_fallback=False,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                max_sentence_length=1 << 16,
                num_threads=min(os.cpu_count() or 1, 8),
                minloglevel=2,
            )
        except RuntimeError as error:
            raise SeqsmithError(
                f"SentencePiece could not train with data.tokenizer.vocab_size={config.vocab_size}: "
                f"{error}. Lower data.tokenizer.vocab_size (small corpora need small vocabularies)"
            ) from None
        return cls(model.getvalue(), config.lowercase)

    def encode(self, text: str) -> list[int]:
        return list(self.processor.encode(self._prepare(text)))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return list(self.processor.encode([self._prepare(text) for text in texts]))

    def sample_batch(self, texts: Sequence[str], alpha: float, seed: int) -> list[list[int]]:
        """One sampled segmentation a text: BPE-dropout for bpe models, a lattice sample for unigram.

        One thread: SentencePiece's threads draw in a varying order, and a seeded prepare must give the
        same ids on every run."""
        spm.set_random_generator_seed(seed)
        prepared = [self._prepare(text) for text in texts]
        return list(
            self.processor.encode(prepared, enable_sampling=True, alpha=alpha, nbest_size=-1, num_threads=1)
        )

    def decode(self, ids: Iterable[int]) -> str:
        return str(self.processor.decode([int(i) for i in ids if i not in _DROPPED]))

    def pieces(self, text: str) -> list[str]:
        return list(self.processor.encode(self._prepare(text), out_type=str))

    def piece(self, token_id: int) -> str:
        return str(self.processor.id_to_piece(token_id))

    @property
    def vocab_size(self) -> int:
        return int(self.processor.get_piece_size())

    def save(self, directory: Path, name: str) -> str:
        atomic_write_bytes(directory / f"{name}.model", self.model_proto)
        rows = (f"{self.piece(i)}\t{self.processor.get_score(i):g}\n" for i in range(self.vocab_size))
        atomic_write_text(directory / f"{name}.vocab", "".join(rows))
        return f"{name}.model"

    @classmethod
    def load(cls, path: Path, lowercase: bool) -> SentencePieceTokenizer:
        try:
            return cls(path.read_bytes(), lowercase)
        except (RuntimeError, OSError) as error:
            raise SeqsmithError(
                f"{path}: not a readable SentencePiece model ({error}); re-run prepare"
            ) from None


class SymbolTokenizer(Tokenizer):
    """A fixed list of symbols (characters or words); the id of a symbol is its position."""

    def __init__(self, symbols: list[str], lowercase: bool = False) -> None:
        super().__init__(lowercase)
        if symbols[: len(SPECIALS) + 1] != [*SPECIALS, SEP]:
            raise SeqsmithError(f"a {self.kind} vocabulary must start with {[*SPECIALS, SEP]}")
        self.symbols = symbols
        self.index = {symbol: i for i, symbol in enumerate(symbols)}

    @abstractmethod
    def split(self, text: str) -> list[str]: ...

    @abstractmethod
    def join(self, symbols: list[str]) -> str: ...

    @classmethod
    def train(cls, texts: Iterable[str], config: TokenizerConfig) -> SymbolTokenizer:
        """Most frequent first (ties alphabetical), seen ``min_freq`` times, at most ``vocab_size`` in all."""
        counts: Counter[str] = Counter()
        splitter = cls([*SPECIALS, SEP], config.lowercase)
        for text in texts:
            counts.update(splitter.split(splitter._prepare(text)))
        reserved = {*SPECIALS, SEP}
        ranked = sorted(
            (item for item in counts.items() if item[1] >= config.min_freq and item[0] not in reserved),
            key=lambda item: (-item[1], item[0]),
        )
        keep = max(config.vocab_size - len(reserved), 0)
        return cls([*SPECIALS, SEP, *(symbol for symbol, _ in ranked[:keep])], config.lowercase)

    def encode(self, text: str) -> list[int]:
        index = self.index
        return [index.get(symbol, UNK_ID) for symbol in self.split(self._prepare(text))]

    def decode(self, ids: Iterable[int]) -> str:
        return self.join([self.symbols[i] for i in ids if i not in _DROPPED])

    def pieces(self, text: str) -> list[str]:
        return [
            symbol if symbol in self.index else SPECIALS[UNK_ID] for symbol in self.split(self._prepare(text))
        ]

    def piece(self, token_id: int) -> str:
        return self.symbols[token_id]

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def save(self, directory: Path, name: str) -> str:
        """One JSON string per line (line i is id i), so spaces and newlines survive as symbols."""
        text = "".join(json.dumps(symbol, ensure_ascii=False) + "\n" for symbol in self.symbols)
        atomic_write_text(directory / f"{name}.vocab", text)
        return f"{name}.vocab"

    @classmethod
    def load(cls, path: Path, lowercase: bool) -> SymbolTokenizer:
        try:
            lines = text_lines(path.read_text(encoding="utf-8"))
            symbols = [json.loads(line) for line in lines]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SeqsmithError(
                f"{path}: not a readable {cls.kind} vocabulary ({error}); re-run prepare"
            ) from None
        if not all(isinstance(symbol, str) for symbol in symbols):
            raise SeqsmithError(f"{path}: every line must be a JSON string; re-run prepare")
        return cls(symbols, lowercase)


class CharTokenizer(SymbolTokenizer):
    kind = "char"

    def split(self, text: str) -> list[str]:
        if SEP not in text:
            return list(text)
        parts = text.split(SEP)
        symbols = list(parts[0])
        for part in parts[1:]:
            symbols.append(SEP)
            symbols.extend(part)
        return symbols

    def join(self, symbols: list[str]) -> str:
        return "".join(symbols)


class WordTokenizer(SymbolTokenizer):
    kind = "word"

    def split(self, text: str) -> list[str]:
        return text.replace(SEP, f" {SEP} ").split()

    def join(self, symbols: list[str]) -> str:
        return " ".join(symbols)


KINDS: dict[str, type[SentencePieceTokenizer] | type[SymbolTokenizer]] = {
    "sentencepiece": SentencePieceTokenizer,
    "char": CharTokenizer,
    "word": WordTokenizer,
}


def sample_lines(texts: Iterable[str], limit: int, seed: int = 0) -> list[str]:
    """All lines if there are at most ``limit``, else a uniform sample (reservoir), in a fixed order."""
    stream = iter(texts)
    sample = list(islice(stream, limit))
    rng = random.Random(seed)
    for seen, text in enumerate(stream, start=limit + 1):
        slot = rng.randrange(seen)
        if slot < limit:
            sample[slot] = text
    return sample


def _train_one(config: TokenizerConfig, sides: list[Iterable[str]]) -> Tokenizer:
    if config.kind == "sentencepiece":
        lines = [line for side in sides for line in sample_lines(side, config.sample_lines)]
        return SentencePieceTokenizer.train(lines, config)
    symbol_class = CharTokenizer if config.kind == "char" else WordTokenizer
    return symbol_class.train((text for side in sides for text in side), config)


@dataclass
class Tokenizers:
    """The source and the target tokenizer; the same object when the vocabulary is joint."""

    source: Tokenizer
    target: Tokenizer
    joint: bool

    def source_oovs(self, text: str, slots: int) -> list[str]:
        """The first ``slots`` distinct source symbols outside a char/word vocabulary, in order of
        appearance: the words a pointer-generator may copy through its extended vocabulary. SentencePiece
        spells every word with pieces, so it has none."""
        tokenizer = self.source
        found: list[str] = []
        if not isinstance(tokenizer, SymbolTokenizer):
            return found
        for symbol in tokenizer.split(tokenizer._prepare(text)):
            if len(found) == slots:
                break
            if symbol not in tokenizer.index and symbol not in found:
                found.append(symbol)
        return found

    def encode_with_oovs(self, side: Literal["source", "target"], text: str, oovs: list[str]) -> list[int]:
        """``encode`` with the symbols in ``oovs`` as ids ``vocab_size + position`` instead of UNK."""
        tokenizer = self.source if side == "source" else self.target
        ids = tokenizer.encode(text)
        if not oovs or not isinstance(tokenizer, SymbolTokenizer):
            return ids
        slots = {symbol: tokenizer.vocab_size + i for i, symbol in enumerate(oovs)}
        symbols = tokenizer.split(tokenizer._prepare(text))
        return [
            slots.get(symbol, UNK_ID) if i == UNK_ID else i for i, symbol in zip(ids, symbols, strict=True)
        ]

    def decode_with_oovs(self, ids: Iterable[int], oovs: Sequence[str]) -> str:
        """Target text with ids past the vocabulary read from the source's ``oovs``."""
        tokenizer = self.target
        if not oovs or not isinstance(tokenizer, SymbolTokenizer):
            return tokenizer.decode(ids)
        size = tokenizer.vocab_size
        symbols = [
            tokenizer.symbols[i] if i < size else oovs[i - size] if i - size < len(oovs) else SPECIALS[UNK_ID]
            for i in map(int, ids)
            if i not in _DROPPED
        ]
        return tokenizer.join(symbols)

    def vocabulary(self) -> tuple[str, bool, bool, list[str], list[str]]:
        """What ids mean: the kind, joint and lowercase settings and every piece of both sides."""
        sides = [[side.piece(i) for i in range(side.vocab_size)] for side in (self.source, self.target)]
        return self.source.kind, self.joint, self.source.lowercase, sides[0], sides[1]

    def finish_source(self, ids: list[int]) -> list[int]:
        """The encoder input around source tokens: here they end with EOS."""
        return [*ids, EOS_ID]

    @classmethod
    def train(cls, config: TokenizerConfig, sources: Iterable[str], targets: Iterable[str]) -> Tokenizers:
        """Streams each side once; SentencePiece sees at most ``config.sample_lines`` lines per side."""
        if config.joint:
            shared = _train_one(config, [sources, targets])
            return cls(shared, shared, True)
        return cls(_train_one(config, [sources]), _train_one(config, [targets]), False)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.joint:
            source_file = target_file = self.source.save(directory, "joint")
        else:
            source_file = self.source.save(directory, "source")
            target_file = self.target.save(directory, "target")
        description = {
            "format_version": FORMAT_VERSION,
            "kind": self.source.kind,
            "joint": self.joint,
            "lowercase": self.source.lowercase,
            "source": source_file,
            "target": target_file,
            "source_vocab_size": self.source.vocab_size,
            "target_vocab_size": self.target.vocab_size,
        }
        atomic_write_text(directory / "tokenizer.json", json.dumps(description, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Tokenizers:
        path = Path(directory) / "tokenizer.json"
        if not path.is_file():
            raise SeqsmithError(
                f"{path} not found: {directory} holds no tokenizer; run `seqsmith prepare` first"
            )
        try:
            description = json.loads(path.read_text(encoding="utf-8"))
            kind = description["kind"]
            joint = bool(description["joint"])
            lowercase = bool(description["lowercase"])
            files = [Path(directory) / Path(description[side]).name for side in ("source", "target")]
            for file in files:
                check_inside(directory, file, "tokenizer file")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
            raise SeqsmithError(f"{path} is damaged ({error!r}); re-run `seqsmith prepare`") from None
        if kind == "hf":
            from seqsmith.data.hf_tokenizer import HFTokenizers  # needs transformers: pretrained models only

            return HFTokenizers.load(directory)
        if kind not in KINDS:
            raise SeqsmithError(
                f"{path}: unknown tokenizer kind {kind!r}; expected one of {', '.join(KINDS)}"
            )
        source = KINDS[kind].load(files[0], lowercase)
        target = source if joint else KINDS[kind].load(files[1], lowercase)
        return cls(source, target, joint)


def truncate(ids: list[int], max_length: int, side: Literal["right", "left"] = "right") -> list[int]:
    """Keep ``max_length`` ids; ``left`` drops the start (keeps the latest dialogue turns)."""
    if len(ids) <= max_length:
        return ids
    return ids[-max_length:] if side == "left" else ids[:max_length]


def encode_source(
    tokenizers: Tokenizers,
    text: str,
    max_length: int,
    truncate_from: Literal["right", "left"] = "right",
    oovs: list[str] | None = None,
) -> list[int]:
    """Encoder input, the same in binarization and generation: tokens (at most ``max_length``) + EOS
    (or whatever a pretrained model's tokenizer puts around them)."""
    ids = tokenizers.encode_with_oovs("source", text, oovs) if oovs else tokenizers.source.encode(text)
    return tokenizers.finish_source(truncate(ids, max_length, truncate_from))


def encode_target(tokenizers: Tokenizers, text: str, max_length: int) -> list[int]:
    """Target tokens without BOS/EOS (a batch adds them), cut to ``max_length``."""
    return truncate(tokenizers.target.encode(text), max_length)
