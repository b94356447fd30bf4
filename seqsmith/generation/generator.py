"""Text in, text out: tokenize, search on the model's engine, detokenize, in the input order."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from seqsmith.allocator import keep_freed_memory
from seqsmith.config import Config, GenerateConfig
from seqsmith.data.binarize import BinarizedSplit
from seqsmith.data.fields import field_texts, joined
from seqsmith.data.tokenizer import TargetPieces, Tokenizers, encode_source
from seqsmith.errors import SeqsmithError
from seqsmith.generation.engines import Engine, TorchEngine, open_engine
from seqsmith.generation.search import Hypothesis, search_all
from seqsmith.generation.unknown import replace_unknown
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.models.model_dir import TOKENIZER, LoadedModel, read_config
from seqsmith.specials import EOS_ID, field_marker

Input = str | Mapping[str, str]  # one text, or the named fields of a model trained with data.fields


@dataclass
class Output:
    """One hypothesis as text, with what search knows of it."""

    text: str
    score: float
    tokens: list[int]
    token_log_probs: list[float]
    attention: list[list[float]] | None = None


@dataclass(frozen=True)
class Encoded:
    """One input text with its encoder ids and the out-of-vocabulary words a copy model may copy."""

    text: str
    ids: list[int]
    oovs: list[str]


def copy_slots(model: Seq2SeqModel | None) -> int:
    """How many out-of-vocabulary source words a sentence may copy (pointer-generator ``oov_slots``)."""
    return int(getattr(model, "oov_slots", 0))


def target_pieces(tokenizers: Tokenizers, config: GenerateConfig) -> TargetPieces:
    """What search reads of the output pieces: their bytes, and what ``generate.whole_words`` needs, which
    compares output ids with source ids."""
    first_byte = tokenizers.target.first_byte_id()
    if not config.whole_words:
        return TargetPieces(first_byte=first_byte)
    if not tokenizers.joint:
        raise SeqsmithError(
            "generate.whole_words copies source pieces into the output, which needs one vocabulary for "
            "both (data.tokenizer.joint: true); set generate.whole_words: false for this model"
        )
    return TargetPieces(tokenizers.target.word_marks(), first_byte)


def detokenize(
    model: Seq2SeqModel | None,
    tokenizers: Tokenizers,
    config: GenerateConfig,
    text: str,
    source: Sequence[int],
    oovs: Sequence[str],
    hypothesis: Hypothesis,
) -> str:
    """The text a user reads: copied words filled in, an UNK replaced from the source or dropped."""
    tokens, texts = hypothesis.tokens, dict[int, str]()
    if config.replace_unk:
        tokens, texts = replace_unknown(model, tokenizers, text, source, hypothesis)
    return tokenizers.decode_with_oovs(tokens, oovs, texts)


def decode_split(
    model: Seq2SeqModel, split: BinarizedSplit, tokenizers: Tokenizers, config: GenerateConfig
) -> list[list[str]]:
    """Hypothesis texts (n-best lists) for every example of a binarized split, in its order."""
    sources = [split.source(i).tolist() for i in range(len(split))]
    texts = [example.source for example in split.texts()]
    slots = copy_slots(model)
    oovs = [tokenizers.source_oovs(text, slots) for text in texts] if slots else [[]] * len(split)
    results = search_all(model, sources, config, target_pieces(tokenizers, config))
    return [
        [detokenize(model, tokenizers, config, text, source, words, h) for h in nbest]
        for nbest, text, source, words in zip(results, texts, sources, oovs, strict=True)
    ]


def merged_settings(config: GenerateConfig, options: dict[str, Any]) -> GenerateConfig:
    """``config`` with ``options`` over it, checked; ``beam=5`` is short for method=beam, beam_size=5."""
    options = dict(options)
    if "beam" in options:
        beam = options.pop("beam")
        options.setdefault("method", "greedy" if beam == 1 else "beam")
        options["beam_size"] = beam
    unknown = sorted(set(options) - set(GenerateConfig.model_fields))
    if unknown:
        named = ", ".join(repr(name[:40]) for name in unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise SeqsmithError(
            f"unknown generation option(s) {named}; valid: {', '.join(GenerateConfig.model_fields)}"
        )
    try:
        return GenerateConfig.model_validate({**config.model_dump(), **options})
    except ValidationError as error:  # names the option and the rule, never echoes the value back
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()[:5]
        )
        raise SeqsmithError(f"invalid generation options: {problems}") from None


class Generator:
    """A model ready to turn texts into texts: ``Generator.from_pretrained(dir).generate([...])``.

    The search runs on an ``Engine`` (seqsmith's own over a torch, int8 or ONNX model, or CTranslate2);
    ``model`` is the engine's model, None when the engine has none (CTranslate2).
    """

    def __init__(
        self,
        engine: Engine,
        tokenizers: Tokenizers,
        full_config: Config,
        config: GenerateConfig | None = None,
    ) -> None:
        self.engine = engine
        self.model = engine.model
        self.tokenizers = tokenizers
        self.full_config = full_config
        self.data_config = full_config.data
        self.config = config or full_config.generate
        self.engine.check(self.config)
        if self.model is not None and self.model.device.type == "cpu":
            keep_freed_memory()  # every batch's search buffers would page-fault in afresh otherwise

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, config: GenerateConfig | None = None) -> Generator:
        return cls(TorchEngine(loaded.model), loaded.tokenizers, loaded.config, config)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, weights: str | Path | None = None, **options: Any
    ) -> Generator:
        """Load a model directory or an export; ``weights`` picks another weights file (e.g. averaged
        checkpoints); ``options`` override the generation settings, ``engine`` and ``quantize`` included."""
        directory = Path(directory)
        full_config = read_config(directory)
        config = merged_settings(full_config.generate, options)
        engine = open_engine(directory, config, weights)
        return cls(engine, Tokenizers.load(directory / TOKENIZER), full_config, config)

    def settings(self, **options: Any) -> GenerateConfig:
        """The generation config with overrides; ``beam=5`` is short for method=beam, beam_size=5."""
        config = merged_settings(self.config, options)
        for name in ("engine", "quantize"):
            if getattr(config, name) != getattr(self.config, name):
                now, asked = getattr(self.config, name), getattr(config, name)
                raise SeqsmithError(
                    f"generate.{name} is chosen when the model is loaded (it is {now}); load it again "
                    f"with {name}={asked}"
                )
        self.engine.check(config)
        return config

    @property
    def eos_id(self) -> int:
        return EOS_ID if self.model is None else self.model.eos_id

    def source_oovs(self, text: str) -> list[str]:
        """The source words outside the vocabulary that the model may copy (pointer-generator only)."""
        return self.tokenizers.source_oovs(text, copy_slots(self.model))

    def encode(self, text: str, oovs: list[str] | None = None) -> list[int]:
        """Encoder ids; ``oovs`` (default: ``source_oovs(text)``) get the pointer-generator's copy ids."""
        oovs = self.source_oovs(text) if oovs is None else oovs
        return encode_source(self.tokenizers, text, self.data_config, oovs)

    def pieces(self, ids: Sequence[int], oovs: Sequence[str], side: Literal["source", "target"]) -> list[str]:
        """What each id stands for, a copy id as the source word it copies (labels of attention pictures)."""
        tokenizer = self.tokenizers.source if side == "source" else self.tokenizers.target
        size = tokenizer.vocab_size
        return [tokenizer.piece(i) if i < size else oovs[i - size] for i in map(int, ids)]

    @property
    def fields(self) -> list[str]:
        """The named fields each input holds (``data.fields``); empty: one text an input."""
        return [f.name for f in self.data_config.fields]

    def source_text(self, item: Input, where: str = "input") -> str:
        """One input as the source text the model reads: the text itself, or its fields joined (a text
        for a model of several fields is taken as joined already when it holds every field's marker,
        as prepared splits do)."""
        fields = self.data_config.fields
        if isinstance(item, Mapping):
            if not fields:
                raise SeqsmithError(
                    f"{where}: this model reads one text an input (no data.fields), not an object"
                )
            return joined(field_texts(item, fields, where, strict=True), fields)
        if fields and not all(field_marker(f.name) in item for f in fields):
            names = ", ".join(f'"{name}": ...' for name in self.fields)
            raise SeqsmithError(
                f"{where}: this model reads the fields {', '.join(self.fields)}: give {{{names}}}"
            )
        return item

    def parse_input(self, line: str, where: str) -> Input:
        """An input line as given to the CLI: the text, or for a model of several fields a JSON object."""
        if not self.fields:
            return line
        try:
            item = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            item = None
        if not isinstance(item, dict):
            raise SeqsmithError(
                f"{where}: not a JSON object; this model reads one a line, with the fields "
                f"{', '.join(self.fields)}"
            )
        return item

    def encode_texts(self, texts: Sequence[Input]) -> list[Encoded]:
        """Inputs as the search reads them; the server encodes on arrival to size its batches."""
        encoded = []
        for number, item in enumerate(texts, start=1):
            text = self.source_text(item, f"input {number}")
            oovs = self.source_oovs(text)
            encoded.append(Encoded(text, self.encode(text, oovs), oovs))
        return encoded

    def generate_encoded(self, inputs: Sequence[Encoded], config: GenerateConfig) -> list[list[Output]]:
        """Search inputs already encoded with a config already checked (the server's batches)."""
        results = self.engine.search([i.ids for i in inputs], config, target_pieces(self.tokenizers, config))
        return [
            [
                Output(
                    detokenize(self.model, self.tokenizers, config, i.text, i.ids, i.oovs, h),
                    h.score,
                    h.tokens,
                    h.token_log_probs,
                    h.attention.tolist() if h.attention is not None else None,
                )
                for h in nbest
            ]
            for nbest, i in zip(results, inputs, strict=True)
        ]

    def generate_full(self, texts: Sequence[Input], **options: Any) -> list[list[Output]]:
        return self.generate_encoded(self.encode_texts(texts), self.settings(**options))

    def generate(self, texts: Sequence[Input], **options: Any) -> list[str]:
        return [nbest[0].text for nbest in self.generate_full(texts, **options)]
