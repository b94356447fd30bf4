"""``prepare``: raw corpus -> trained tokenizer + binarized train/dev/test + a report, in one streaming pass
per step (the corpus is never held in memory; SentencePiece keeps at most ``sample_lines`` lines per side).

Everything is written to ``<output_dir>.partial`` and swapped in only when all splits succeeded, so a failed
run never leaves a tokenizer that does not match the binarized ids, nor damages the previous output.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import groupby, islice
from operator import itemgetter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from seqsmith.config import AugmentConfig, Config, DataConfig, PretrainedConfig
from seqsmith.data.augment import augment_text, check_augment, encode_side, sampling_alpha, seeded
from seqsmith.data.binarize import SplitWriter
from seqsmith.data.corpus import (
    Example,
    ReadCounts,
    Split,
    check_files,
    corpus_files,
    read_split,
    read_train_corpus,
    split_files,
)
from seqsmith.data.tokenizer import Tokenizers, source_input, truncate, within_fields
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_write_text, fsync_path

logger = logging.getLogger(__name__)
CHUNK = 4096  # examples encoded together (SentencePiece encodes a list in C++ threads)


@dataclass
class SplitReport:
    read: int = 0  # examples found in the files (dialogue: one per turn after the first)
    kept: int = 0  # examples binarized
    filtered_overlong: int = 0  # train with overlong: filter
    truncated: int = 0  # examples with a side cut to max_source_length / max_target_length
    empty_skipped: int = 0
    augmented: int = 0  # train: extra pairs made by data.augment
    corpora: list[int] = field(default_factory=list)  # train: pairs binarized from each corpus of data.train
    source_tokens: int = 0  # binarized, including EOS
    target_tokens: int = 0  # binarized, without BOS/EOS
    unknown_source_lines: int = 0  # examples with a piece the vocabulary lacks (<unk>): no byte fallback
    unknown_target_lines: int = 0
    empty_lines: list[int] = field(default_factory=list)  # the first few skipped, for the user to look at


@dataclass
class PrepareReport:
    output_dir: str
    splits: dict[Split, SplitReport]
    source_vocab_size: int
    target_vocab_size: int
    seconds: float
    oov_slots: int = 0  # pointer-generator copy ids past the vocabulary (model.oov_slots)
    data: dict[str, Any] = field(default_factory=dict)  # the data section that made it (``check_settings``)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"


def _count_lines(path: Path) -> int:
    lines, last = 0, b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def _examples(
    data: DataConfig, split: Split, progress: bool, label: str, counts: ReadCounts | None = None
) -> Iterator[Example]:
    """A split's examples (every training corpus in turn) behind progress bars counting input lines."""
    if split == "train":
        return (example for _, example in _train_examples(data, progress, label, counts))
    return _counted(read_split(data, split, counts), split_files(data, split)[0], progress, label)


def _train_examples(
    data: DataConfig, progress: bool, label: str, counts: ReadCounts | None
) -> Iterator[tuple[int, Example]]:
    """(corpus number, example) of every training corpus, each stopped at its ``max_examples`` and all
    together at ``data.max_train_examples``."""
    left = data.max_train_examples
    for number, corpus in enumerate(data.train_sources):
        limits = [n for n in (corpus.max_examples, left) if n is not None]
        if limits and min(limits) <= 0:
            return
        examples = read_train_corpus(data, number, counts)
        if limits:
            examples = islice(examples, min(limits))
        several = len(data.train_sources) > 1
        name = f"{label} {number + 1}/{len(data.train_sources)}" if several else label
        for example in _counted(examples, corpus_files(data, corpus.path)[0], progress, name):
            left = None if left is None else left - 1
            yield number, example


def _counted(examples: Iterator[Example], first_file: Path, progress: bool, label: str) -> Iterator[Example]:
    total = _count_lines(first_file) if progress and first_file.is_file() else None  # a directory: unknown
    with tqdm(total=total, desc=label, unit=" lines", disable=not progress, leave=False) as bar:
        for example in examples:
            bar.update(example.line - bar.n)
            yield example


def _chunks(examples: Iterator[Example], size: int) -> Iterator[list[Example]]:
    while chunk := list(islice(examples, size)):
        yield chunk


Alphas = tuple[float | None, float | None]  # BPE-dropout of (source, target); None: the best segmentation


def _encode(
    tokenizers: Tokenizers, pairs: list[tuple[str, str]], oov_slots: int, alphas: Alphas, seed: int
) -> tuple[list[list[int]], ...]:
    """Source and target ids; with ``oov_slots``, source words outside the vocabulary get copy ids."""
    sources, targets = [source for source, _ in pairs], [target for _, target in pairs]
    if not oov_slots:  # copy slots exist for char/word vocabularies, which never sample
        return (
            encode_side(tokenizers.source, sources, alphas[0], seed),
            encode_side(tokenizers.target, targets, alphas[1], seed + 1),
        )
    oovs = [tokenizers.source_oovs(source, oov_slots) for source in sources]
    return (
        [tokenizers.encode_with_oovs("source", s, o) for s, o in zip(sources, oovs, strict=True)],
        [tokenizers.encode_with_oovs("target", t, o) for t, o in zip(targets, oovs, strict=True)],
    )


class _Binarizer:
    """Writes one split: every example once (filtered or truncated at the limits) and, for train, the
    ``data.augment`` copies of the pairs within the limits."""

    def __init__(
        self, data: DataConfig, split: Split, tokenizers: Tokenizers, writer: SplitWriter, oov_slots: int
    ) -> None:
        self.data, self.tokenizers, self.writer, self.oov_slots = data, tokenizers, writer, oov_slots
        self.train = split == "train"
        self.report = SplitReport()

    def write(self, example: Example, source: list[int], target: list[int]) -> None:
        source = source_input(self.tokenizers, source, self.data)
        self.writer.add(source, target, example)
        report, tokenizers = self.report, self.tokenizers
        report.source_tokens += len(source)
        report.target_tokens += len(target)
        report.unknown_source_lines += tokenizers.source.unk_id in source
        report.unknown_target_lines += tokenizers.target.unk_id in target

    def fits(self, source: list[int], target: list[int]) -> bool:
        return len(source) <= self.data.max_source_length and len(target) <= self.data.max_target_length

    def corpus(self, examples: Iterator[Example], number: int) -> None:
        """Every example of one corpus (``number``: of data.train; 0 for dev and test)."""
        data, report = self.data, self.report
        corpus = data.train_sources[number] if self.train else None
        alphas: Alphas = (None, None)
        if corpus is not None and corpus.transforms:
            group = AugmentConfig(transforms=corpus.transforms)
            alphas = (sampling_alpha(group, "source"), sampling_alpha(group, "target"))
        for chunk_number, chunk in enumerate(_chunks(examples, CHUNK)):
            seed = seeded(data.seed, "corpus", number, chunk_number).getrandbits(31)
            pairs = [(example.source, example.target) for example in chunk]
            sources, targets = _encode(self.tokenizers, pairs, self.oov_slots, alphas, seed)
            sources = [within_fields(self.tokenizers, source, data) for source in sources]
            whole: list[Example] = []  # pairs within the limits: the only ones that get augmented copies
            for example, source, target in zip(chunk, sources, targets, strict=True):
                if not self.fits(source, target) and self.train and data.overlong == "filter":
                    report.filtered_overlong += 1
                    continue
                if not self.fits(source, target):
                    report.truncated += 1
                    target = truncate(target, data.max_target_length)
                else:
                    whole.append(example)
                self.write(example, source, target)
            if self.train:
                self.augment(whole, corpus.tag if corpus else None, number, chunk_number)

    def augment(self, whole: list[Example], tag: str | None, number: int, chunk_number: int) -> None:
        """The augmented copies of ``whole``; one past the length limits is left out (it is optional)."""
        data = self.data
        for group_number, group in enumerate(data.augment):
            alphas = (sampling_alpha(group, "source"), sampling_alpha(group, "target"))
            for copy in range(group.copies):
                pairs: list[tuple[str, str]] = []
                for example in whole:
                    rng = seeded(data.seed, "augment", group_number, copy, number, example.line)
                    text = example.source.removeprefix(f"{tag} ") if tag else example.source
                    text = augment_text(group.transforms, text, "source", rng)
                    pairs.append(
                        (
                            f"{tag} {text}" if tag else text,
                            augment_text(group.transforms, example.target, "target", rng),
                        )
                    )
                seed = seeded(data.seed, "augment", group_number, copy, number, chunk_number).getrandbits(31)
                sources, targets = _encode(self.tokenizers, pairs, self.oov_slots, alphas, seed)
                for example, source_ids, target_ids in zip(whole, sources, targets, strict=True):
                    if self.fits(source_ids, target_ids):
                        self.write(example, source_ids, target_ids)
                        self.report.augmented += 1


def _binarize(
    data: DataConfig, split: Split, tokenizers: Tokenizers, directory: Path, progress: bool, oov_slots: int
) -> SplitReport:
    train, counts = split == "train", ReadCounts()
    if train:
        groups = [
            *data.augment,
            *(AugmentConfig(transforms=c.transforms) for c in data.train_sources if c.transforms),
        ]
        check_augment(groups, [tokenizers.source, tokenizers.target])
    vocab_size = max(tokenizers.source.vocab_size, tokenizers.target.vocab_size) + oov_slots
    with SplitWriter(directory, split, vocab_size, keep_texts=not train) as writer:
        binarizer = _Binarizer(data, split, tokenizers, writer, oov_slots)
        report = binarizer.report
        if not train:
            binarizer.corpus(_examples(data, split, progress, f"binarize {split}", counts), 0)
        else:
            report.corpora = [0] * len(data.train_sources)
            examples = _train_examples(data, progress, "binarize train", counts)
            for number, group in groupby(examples, key=itemgetter(0)):
                before = writer.count
                binarizer.corpus((example for _, example in group), number)
                report.corpora[number] = writer.count - before
            writer.corpora = report.corpora
        report.kept = writer.count - report.augmented
    report.read, report.empty_skipped, report.empty_lines = (
        counts.read,
        counts.empty_skipped,
        counts.empty_lines,
    )
    if train:
        _check_training_pairs(data, report)
    return report


def _check_training_pairs(data: DataConfig, report: SplitReport) -> None:
    """Refuse a training split without a pair (training would fail only later, with less to say why);
    warn of a corpus that gave none, since its weight or upsample factor then reads nothing."""
    if not report.kept:
        raise SeqsmithError(
            f"data.train: no training pair is left ({report.read} read, {report.empty_skipped} empty, "
            f"{report.filtered_overlong} longer than data.max_source_length={data.max_source_length} or "
            f"data.max_target_length={data.max_target_length}); raise the limits, set data.overlong: "
            "truncate, or check the files"
        )
    for source, count in zip(data.train_sources, report.corpora, strict=True):
        if not count:
            logger.warning(
                "seqsmith: prepare: the training corpus %s gave no pair (empty, filtered, or past "
                "data.max_train_examples): its weight or upsample factor reads nothing",
                source.path,
            )


def _replace_directory(staging: Path, final: Path) -> None:
    previous = final.with_name(final.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    fsync_path(final.parent)
    shutil.rmtree(previous, ignore_errors=True)


def _check_output(final: Path) -> None:
    if final.is_file() or (final.is_dir() and any(final.iterdir()) and not (final / "report.json").is_file()):
        raise SeqsmithError(
            f"data.output_dir: {final} exists and holds something other than prepared data; "
            "choose a new or empty directory (prepare replaces the whole directory)"
        )


def _settings(data: DataConfig) -> dict[str, Any]:
    """The data section as report.json keeps it, without what does not change the files: where they go,
    and the corpora's rates (``weight``, ``upsample``), which act when training draws its batches."""
    rates = {"__all__": {"weight", "upsample"}}
    settings: dict[str, Any] = json.loads(data.model_dump_json(exclude={"output_dir": True, "train": rates}))
    return settings


def _short(value: Any, limit: int = 60) -> str:
    """The value as JSON, its middle left out when long: paths differ at their ends."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit // 3] + "..." + text[-(limit - limit // 3 - 3) :]


def _differences(prepared: Any, wanted: Any, key: str) -> list[str]:
    """``key: prepared there, wanted in the config`` for each setting with other values, down to the
    field of a section or list entry; a key only one side knows is a newer or older seqsmith's default
    and counts as the same."""
    if isinstance(prepared, dict) and isinstance(wanted, dict):
        shared = sorted(prepared.keys() & wanted.keys())
        return [line for k in shared for line in _differences(prepared[k], wanted[k], f"{key}.{k}")]
    if isinstance(prepared, list) and isinstance(wanted, list) and len(prepared) == len(wanted):
        pairs = enumerate(zip(prepared, wanted))
        return [line for i, (old, new) in pairs for line in _differences(old, new, f"{key}[{i}]")]
    return [] if prepared == wanted else [f"{key}: {_short(prepared)} there, {_short(wanted)} in the config"]


def check_settings(data: DataConfig) -> None:
    """Training reads ``data.output_dir`` only if it was prepared from this data section: a changed limit,
    tokenizer, field or augmentation would otherwise train silently on the old data."""
    directory = Path(data.output_dir)
    report = json.loads((directory / "report.json").read_text(encoding="utf-8"))
    if "data" not in report:
        logger.warning(
            "seqsmith: %s was prepared by an earlier seqsmith that kept no record of its data settings, so "
            "they are not checked against the config; `seqsmith prepare CONFIG` makes sure",
            directory,
        )
        return
    differences = _differences(report["data"], _settings(data), "data")
    if differences:
        more = len(differences) - 3
        shown = "; ".join(differences[:3]) + (f"; and {more} more" if more > 0 else "")
        raise SeqsmithError(
            f"{directory} was prepared with other data settings than the config's ({shown}); run `seqsmith "
            f"prepare CONFIG` again (it replaces {directory}) or give data.output_dir a new directory"
        )


def prepare(config: Config, progress: bool = True) -> PrepareReport:
    """Train the tokenizer on train, binarize every configured split and write ``report.json``.

    Train pairs past the length limits are filtered or truncated (``data.overlong``); dev and test are
    always truncated and never dropped, so a test set stays complete.
    """
    start = time.perf_counter()
    data = config.data
    final = Path(data.output_dir)
    _check_output(final)
    splits: list[Split] = [split for split in ("train", "dev", "test") if getattr(data, split) is not None]
    for split in splits:
        check_files(data, split)
    directory = final.with_name(final.name + ".partial")
    shutil.rmtree(directory, ignore_errors=True)
    try:
        report = _prepare_into(directory, config, splits, progress)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    report.output_dir, report.seconds = str(final), round(time.perf_counter() - start, 2)
    atomic_write_text(directory / "report.json", report.to_json())
    _replace_directory(directory, final)
    return report


def _tokenizers(config: Config, progress: bool) -> Tokenizers:
    """A pretrained model's own tokenizer, an existing one (``data.tokenizer.path``), or one trained on the
    training data."""
    data = config.data
    if isinstance(config.model, PretrainedConfig):
        from seqsmith.data.hf_tokenizer import HFTokenizers  # needs transformers: pretrained models only

        return _holding_symbols(HFTokenizers.load(Path(config.model.path)), data, f"of {config.model.path}")
    if data.tokenizer.path is not None:
        path = Path(data.tokenizer.path)
        if not (path / "tokenizer.json").is_file():
            raise SeqsmithError(
                f"data.tokenizer.path: {path} holds no tokenizer (tokenizer.json); give the tokenizer/ "
                "directory of a prepared data directory or of a model"
            )
        return _holding_symbols(Tokenizers.load(path), data, f"in {path}")
    return Tokenizers.train(
        data.tokenizer,
        (example.source for example in _examples(data, "train", progress, "tokenizer: read sources")),
        (example.target for example in _examples(data, "train", progress, "tokenizer: read targets")),
        data.symbols,
    )


def _holding_symbols(tokenizers: Tokenizers, data: DataConfig, where: str) -> Tokenizers:
    """A tokenizer made elsewhere, if it holds every symbol the data needs (tags, blanks, field markers)."""
    for symbol in data.symbols:
        try:
            tokenizers.source.symbol_id(symbol)  # SentencePiece puts a word-start piece before it: fine
        except SeqsmithError:
            raise SeqsmithError(
                f"{symbol!r} (a tag, blank token or field marker of data) is not one piece of the tokenizer "
                f"{where} (it encodes as {tokenizers.source.pieces(symbol)}); pick a token that vocabulary "
                "holds whole"
            ) from None
    return tokenizers


def _prepare_into(directory: Path, config: Config, splits: list[Split], progress: bool) -> PrepareReport:
    data = config.data
    tokenizers = _tokenizers(config, progress)
    tokenizers.save(directory / "tokenizer")
    oov_slots = getattr(config.model, "oov_slots", 0)
    reports = {split: _binarize(data, split, tokenizers, directory, progress, oov_slots) for split in splits}
    for split, report in reports.items():
        if report.unknown_source_lines or report.unknown_target_lines:
            logger.warning(
                "seqsmith: prepare: %s: %d source and %d target lines hold text outside the vocabulary "
                "(<unk>); data.tokenizer.byte_fallback: true spells it in bytes instead",
                split,
                report.unknown_source_lines,
                report.unknown_target_lines,
            )
    return PrepareReport(
        output_dir=str(directory),
        splits=reports,
        source_vocab_size=tokenizers.source.vocab_size,
        target_vocab_size=tokenizers.target.vocab_size,
        seconds=0.0,
        oov_slots=oov_slots,
        data=_settings(data),
    )
