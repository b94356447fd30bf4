"""Tokenizers: text <-> ids, the same for every model. SentencePiece (bpe/unigram), characters, words.

Every vocabulary starts with the same special ids (PAD=0, UNK=1, BOS=2, EOS=3, the dialogue turn
separator ``<sep>``=4), from ``seqsmith.specials``. What decode(encode(text)) gives back:

- SentencePiece: ``text`` exactly (no Unicode normalisation, whitespace kept).
- char: ``text`` exactly (spaces, tabs, newlines are symbols too).
- word: words joined by one space: runs of whitespace collapse and the ends are stripped.
- with ``lowercase: true`` the input is lower-cased first, so case is not restored.

That holds for any text with ``byte_fallback`` (the default): a character (word, for the word tokenizer)
outside the vocabulary is spelled by its UTF-8 bytes, 256 ids named ``<0x00>``..``<0xFF>`` as in
SentencePiece. Without it (vocabularies made before it existed) such a character encodes as UNK.

``decode`` writes text a user reads: it never shows a special token (PAD, UNK, BOS, EOS, ``<sep>``) nor an
id past the vocabulary; ``texts`` puts given text in place of ids (a pointer-generator's copied words,
replaced unknowns). A directory holds ``tokenizer.json`` (kind, files, options) and the vocabulary files
beside it; loading reads JSON and SentencePiece model protos only, it never runs code.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import ClassVar, Literal

import sentencepiece as spm

from seqsmith.config import DataConfig, TokenizerConfig
from seqsmith.data.fields import cut_fields
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_write_bytes, atomic_write_text, check_inside, text_lines
from seqsmith.specials import BOS_ID, EOS_ID, PAD_ID, SEP, SEP_ID, SPECIALS, UNK_ID, field_marker

HIDDEN = frozenset({PAD_ID, UNK_ID, BOS_ID, EOS_ID, SEP_ID})
BYTE_SYMBOLS = [f"<0x{value:02X}>" for value in range(256)]
_BYTE_SET = frozenset(BYTE_SYMBOLS)
FORMAT_VERSION = 1


@dataclass
class WordMarks:
    """Per id of a subword vocabulary, what search needs to keep a copied word whole: does the piece begin
    a word, does it glue letters (or bytes) onto the word before it, may it begin a capitalized word (a
    capital letter, or the bare word-start mark, whose word the next piece spells), and the UTF-8 bytes
    it writes (without the word-start mark)."""

    starts: list[bool]
    glues: list[bool]
    capital: list[bool]
    surfaces: list[bytes]


@dataclass(frozen=True)
class TargetPieces:
    """What search reads of the output vocabulary: the word marks of ``generate.whole_words`` (None when
    it is off) and the id of the first of the 256 byte pieces (None without byte fallback), which search
    keeps to whole UTF-8 characters (generation/whole_characters.py)."""

    words: WordMarks | None = None
    first_byte: int | None = None


class Tokenizer(ABC):
    kind: ClassVar[str]
    unk_id: int | None = UNK_ID  # what an unknown piece encodes as; None: the tokenizer has no such id

    def __init__(self, lowercase: bool = False) -> None:
        self.lowercase = lowercase
        self._symbols: dict[str, tuple[int, frozenset[int]]] = {}

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    def symbol_id(self, symbol: str) -> int:
        """The id of a symbol the vocabulary holds whole (a field's marker). Not ``encode(symbol)[0]``:
        SentencePiece encodes ``<history>`` as the word-start piece, then the symbol."""
        return self.symbol_encoding(symbol)[0]

    def symbol_encoding(self, symbol: str) -> tuple[int, frozenset[int]]:
        """``symbol_id`` and the other ids of ``encode(symbol)`` (SentencePiece's word-start piece)."""
        if symbol not in self._symbols:
            ids = self.encode(symbol)
            found = [i for i in ids if self.piece(i) == symbol]
            if len(found) != 1:
                raise SeqsmithError(
                    f"{symbol} is not one symbol of the {self.kind} vocabulary; prepare the data again "
                    "with the config that declares it (seqsmith prepare CONFIG)"
                )
            self._symbols[symbol] = found[0], frozenset(ids) - {found[0]}
        return self._symbols[symbol]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    @abstractmethod
    def decode(self, ids: Iterable[int], texts: Mapping[int, str] | None = None) -> str:
        """Text a reader expects: special and out-of-vocabulary ids are dropped, and the id at position
        ``p`` is written as ``texts[p]`` where given."""

    def unknown_surfaces(self, text: str) -> dict[int, str]:
        """For each UNK id of ``encode(text)``, by position: the text it stands for (replace_unk copies
        it). Empty when the text encodes without UNK, as every text does with byte fallback."""
        return {}

    def word_marks(self) -> WordMarks | None:
        """None where an id is a whole word or a character, so that no word is spelled in pieces."""
        return None

    def first_byte_id(self) -> int | None:
        """The id of ``<0x00>``, which ``<0x01>``..``<0xFF>`` follow in order; None without byte fallback."""
        return None

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
        self._marks: WordMarks | None = None
        self._first_byte: int | None = -1  # first_byte_id(), once asked

    @classmethod
    def train(
        cls, lines: list[str], config: TokenizerConfig, symbols: Sequence[str] = ()
    ) -> SentencePieceTokenizer:
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
                user_defined_symbols=[SEP, *symbols],
                byte_fallback=config.byte_fallback,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                max_sentence_length=1 << 16,
                num_threads=min(os.cpu_count() or 1, 8),
                minloglevel=2,
            )
        except RuntimeError as error:
            needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(error))
            if needed:
                fallback = f", {len(BYTE_SYMBOLS)} of them for byte fallback" if config.byte_fallback else ""
                raise SeqsmithError(
                    f"data.tokenizer.vocab_size={config.vocab_size} is too small: the training text needs "
                    f"at least {needed.group(1)} ids{fallback}; raise it"
                    + (" or set data.tokenizer.byte_fallback: false" if config.byte_fallback else "")
                ) from None
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

    def decode(self, ids: Iterable[int], texts: Mapping[int, str] | None = None) -> str:
        """Runs of ids between the given texts decode as SentencePiece does; a run that starts a word
        after a given text keeps its space (SentencePiece drops it only at the start of a sentence)."""
        texts = texts or {}
        parts: list[str] = []
        run: list[int] = []

        def flush() -> None:
            if run:
                space = " " if parts and self.piece(run[0]).startswith("\u2581") else ""
                parts.append(space + str(self.processor.decode(run)))
                run.clear()

        size = self.vocab_size
        for position, token in enumerate(map(int, ids)):
            if position in texts:
                flush()
                parts.append(texts[position])
            elif token not in HIDDEN and 0 <= token < size:
                run.append(token)
        flush()
        return "".join(parts)

    def word_marks(self) -> WordMarks:
        """A piece that starts with U+2581 begins a word; special ids count as word boundaries."""
        if self._marks is not None:
            return self._marks
        starts, glues, capital, surfaces = [], [], [], []
        for i in range(self.vocab_size):
            piece = self.piece(i)
            special = i in HIDDEN or bool(self.processor.is_control(i))
            start = piece.startswith("\u2581") or special
            byte = bool(self.processor.is_byte(i))
            starts.append(start)
            glues.append(not start and (byte or piece[:1].isalnum()))
            capital.append(piece == "\u2581" or (start and piece.lstrip("\u2581")[:1].isupper()))
            text = b"" if special else piece.lstrip("\u2581").encode()
            surfaces.append(bytes([int(piece[3:5], 16)]) if byte else text)
        self._marks = WordMarks(starts, glues, capital, surfaces)
        return self._marks

    def first_byte_id(self) -> int | None:
        """SentencePiece puts its byte pieces in one block, in byte order."""
        if self._first_byte == -1:
            ids = [self.processor.piece_to_id(symbol) for symbol in BYTE_SYMBOLS]
            block = all(self.processor.is_byte(i) for i in ids) and ids == list(range(ids[0], ids[0] + 256))
            self._first_byte = ids[0] if block else None
        return self._first_byte

    def unknown_surfaces(self, text: str) -> dict[int, str]:
        """An unknown piece spans the text up to where the next known piece's text starts."""
        ids = self.encode(text)
        if UNK_ID not in ids:
            return {}
        prepared = self._prepare(text)
        pieces = [self.piece(i).replace("\u2581", " ") for i in ids]
        cursor = -1 if pieces[0].startswith(" ") and not prepared.startswith(" ") else 0  # dummy prefix
        surfaces: dict[int, str] = {}
        for position, (token, piece) in enumerate(zip(ids, pieces, strict=True)):
            if token != UNK_ID:
                cursor += len(piece)
                continue
            known = next((p for t, p in zip(ids[position + 1 :], pieces[position + 1 :]) if t != UNK_ID), "")
            start = max(cursor, 0)
            end = prepared.find(known, start + 1) if known else len(prepared)
            if end < 0:
                break
            surfaces[position] = prepared[start:end]
            cursor = end
        return surfaces

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
    """A fixed list of symbols (characters or words); the id of a symbol is its position.

    With byte fallback the 256 byte symbols follow the specials, and a symbol outside the list is written
    as its UTF-8 bytes (words: consecutive ones with a space byte between them, so that they stay apart).
    """

    byte_separator: ClassVar[bytes]

    def __init__(self, symbols: list[str], lowercase: bool = False) -> None:
        super().__init__(lowercase)
        if symbols[: len(SPECIALS) + 1] != [*SPECIALS, SEP]:
            raise SeqsmithError(f"a {self.kind} vocabulary must start with {[*SPECIALS, SEP]}")
        self.symbols = symbols
        self.index = {symbol: i for i, symbol in enumerate(symbols)}
        first = len(SPECIALS) + 1
        self.first_byte = first if symbols[first : first + len(BYTE_SYMBOLS)] == BYTE_SYMBOLS else None

    @abstractmethod
    def split(self, text: str) -> list[str]: ...

    @abstractmethod
    def join(self, symbols: list[str]) -> str: ...

    @classmethod
    def train(
        cls, texts: Iterable[str], config: TokenizerConfig, symbols: Sequence[str] = ()
    ) -> SymbolTokenizer:
        """Most frequent first (ties alphabetical), seen ``min_freq`` times, at most ``vocab_size`` in all;
        ``symbols`` (tags, blank tokens) are always in."""
        counts: Counter[str] = Counter()
        reserved = [*SPECIALS, SEP, *(BYTE_SYMBOLS if config.byte_fallback else []), *symbols]
        splitter = cls(reserved, config.lowercase)
        for text in texts:
            counts.update(splitter.split(splitter._prepare(text)))
        if config.vocab_size <= len(reserved):
            raise SeqsmithError(
                f"data.tokenizer.vocab_size={config.vocab_size} leaves no room for a {cls.kind} beside the "
                f"{len(reserved)} reserved ids; raise it above {len(reserved)} or set "
                "data.tokenizer.byte_fallback: false"
            )
        taken = set(reserved)
        ranked = sorted(
            (item for item in counts.items() if item[1] >= config.min_freq and item[0] not in taken),
            key=lambda item: (-item[1], item[0]),
        )
        keep = config.vocab_size - len(reserved)
        return cls([*reserved, *(symbol for symbol, _ in ranked[:keep])], config.lowercase)

    def encode(self, text: str, slots: Mapping[str, int] | None = None) -> list[int]:
        """``slots`` gives chosen symbols outside the vocabulary their own ids (pointer-generator copies)."""
        ids: list[int] = []
        index, first, after_bytes = self.index, self.first_byte, False
        for symbol in self.split(self._prepare(text)):
            token = index.get(symbol)
            if token is None and slots:
                token = slots.get(symbol)
            if token is not None or first is None:
                ids.append(UNK_ID if token is None else token)
                after_bytes = False
                continue
            raw = symbol.encode("utf-8")
            ids.extend(first + byte for byte in (self.byte_separator + raw if after_bytes else raw))
            after_bytes = bool(self.byte_separator)
        return ids

    def decode(self, ids: Iterable[int], texts: Mapping[int, str] | None = None) -> str:
        texts = texts or {}
        symbols: list[str] = []
        raw = bytearray()
        first = self.first_byte
        byte_ids = range(first, first + len(BYTE_SYMBOLS)) if first is not None else range(0)
        for position, token in enumerate(map(int, ids)):
            if position not in texts and token in byte_ids:
                raw.append(token - byte_ids.start)
                continue
            if raw:
                symbols.extend(self.from_bytes(raw.decode("utf-8", errors="replace")))
                raw.clear()
            if position in texts:
                symbols.append(texts[position])
            elif token not in HIDDEN and 0 <= token < len(self.symbols):
                symbols.append(self.symbols[token])
        if raw:
            symbols.extend(self.from_bytes(raw.decode("utf-8", errors="replace")))
        return self.join(symbols)

    def from_bytes(self, text: str) -> list[str]:
        """The symbols a run of byte ids spelled."""
        return [text]

    def first_byte_id(self) -> int | None:
        return self.first_byte

    def unknown_surfaces(self, text: str) -> dict[int, str]:
        if self.first_byte is not None:
            return {}
        symbols = self.split(self._prepare(text))
        return {i: symbol for i, symbol in enumerate(symbols) if symbol not in self.index}

    def pieces(self, text: str) -> list[str]:
        return [self.symbols[i] for i in self.encode(text)]

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
    byte_separator = b""

    def __init__(self, symbols: list[str], lowercase: bool = False) -> None:
        super().__init__(symbols, lowercase)
        # the symbols of several characters that a text spells (SEP, tags, blank tokens) are one id each
        glued = sorted((s for s in symbols[len(SPECIALS) :] if len(s) > 1 and s not in _BYTE_SET), key=len)
        self.glued = re.compile("(" + "|".join(map(re.escape, reversed(glued))) + ")")

    def split(self, text: str) -> list[str]:
        parts = self.glued.split(text)
        symbols = list(parts[0])
        for glued, part in zip(parts[1::2], parts[2::2], strict=True):
            symbols.append(glued)
            symbols.extend(part)
        return symbols

    def join(self, symbols: list[str]) -> str:
        return "".join(symbols)


class WordTokenizer(SymbolTokenizer):
    kind = "word"
    byte_separator = b" "

    def from_bytes(self, text: str) -> list[str]:
        return text.split()

    def split(self, text: str) -> list[str]:
        return text.replace(SEP, f" {SEP} ").split()  # tags and blank tokens come between spaces

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


def _train_one(config: TokenizerConfig, sides: list[Iterable[str]], symbols: Sequence[str]) -> Tokenizer:
    if config.kind == "sentencepiece":
        lines = [line for side in sides for line in sample_lines(side, config.sample_lines)]
        return SentencePieceTokenizer.train(lines, config, symbols)
    symbol_class = CharTokenizer if config.kind == "char" else WordTokenizer
    return symbol_class.train((text for side in sides for text in side), config, symbols)


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
        """``encode`` with the symbols in ``oovs`` as ids ``vocab_size + position``."""
        tokenizer = self.source if side == "source" else self.target
        if not oovs or not isinstance(tokenizer, SymbolTokenizer):
            return tokenizer.encode(text)
        return tokenizer.encode(text, {symbol: tokenizer.vocab_size + i for i, symbol in enumerate(oovs)})

    def decode_with_oovs(
        self, ids: Sequence[int], oovs: Sequence[str], texts: Mapping[int, str] | None = None
    ) -> str:
        """Target text with ids past the vocabulary read from the source's ``oovs``."""
        size = self.target.vocab_size
        copied = {p: oovs[i - size] for p, i in enumerate(map(int, ids)) if 0 <= i - size < len(oovs)}
        return self.target.decode(ids, {**copied, **(texts or {})})

    def vocabulary(self) -> tuple[str, bool, bool, list[str], list[str]]:
        """What ids mean: the kind, joint and lowercase settings and every piece of both sides."""
        sides = [[side.piece(i) for i in range(side.vocab_size)] for side in (self.source, self.target)]
        return self.source.kind, self.joint, self.source.lowercase, sides[0], sides[1]

    def finish_source(self, ids: list[int]) -> list[int]:
        """The encoder input around source tokens: here they end with EOS."""
        return [*ids, EOS_ID]

    @classmethod
    def train(
        cls,
        config: TokenizerConfig,
        sources: Iterable[str],
        targets: Iterable[str],
        symbols: Sequence[str] = (),
    ) -> Tokenizers:
        """Streams each side once; SentencePiece sees at most ``config.sample_lines`` lines per side.
        ``symbols`` become one id each on both sides."""
        if config.joint:
            shared = _train_one(config, [sources, targets], symbols)
            return cls(shared, shared, True)
        return cls(_train_one(config, [sources], symbols), _train_one(config, [targets], symbols), False)

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


def within_fields(tokenizers: Tokenizers, ids: list[int], data: DataConfig) -> list[int]:
    """Source tokens with each field held to its own length (``data.fields``; none: unchanged)."""
    if not data.fields:
        return ids
    encodings = [(tokenizers.source.symbol_encoding(field_marker(f.name)), f) for f in data.fields]
    before = frozenset().union(*(others for (_, others), _ in encodings))
    return cut_fields(ids, {marker: f for (marker, _), f in encodings}, before)


def source_input(tokenizers: Tokenizers, ids: list[int], data: DataConfig) -> list[int]:
    """Encoder input from source tokens, the same in binarization and generation: each field within its
    length (``data.fields``), at most ``max_source_length`` of them, reversed with ``reverse_source``, +
    EOS (or whatever a pretrained model's tokenizer puts around them)."""
    ids = truncate(within_fields(tokenizers, ids, data), data.max_source_length, data.truncate_source_from)
    return tokenizers.finish_source(ids[::-1] if data.reverse_source else ids)


def encode_source(
    tokenizers: Tokenizers, text: str, data: DataConfig, oovs: list[str] | None = None
) -> list[int]:
    """``source_input`` of ``text``."""
    ids = tokenizers.encode_with_oovs("source", text, oovs) if oovs else tokenizers.source.encode(text)
    return source_input(tokenizers, ids, data)


def encode_target(tokenizers: Tokenizers, text: str, max_length: int) -> list[int]:
    """Target tokens without BOS/EOS (a batch adds them), cut to ``max_length``."""
    return truncate(tokenizers.target.encode(text), max_length)
