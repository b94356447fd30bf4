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
from itertools import islice
from pathlib import Path
from typing import cast

from tqdm import tqdm

from seqsmith.config import Config, DataConfig, PretrainedConfig
from seqsmith.data.binarize import SplitWriter
from seqsmith.data.corpus import Example, ReadCounts, Split, check_files, read_split, split_files
from seqsmith.data.tokenizer import SentencePieceTokenizer, Tokenizers, truncate
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
    sampled_copies: int = 0  # train: extra pairs with sampled segmentations (data.tokenizer.sampling_copies)
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
    """A split's examples behind a progress bar counting input lines; train stops at max_train_examples."""
    examples = read_split(data, split, counts)
    if split == "train" and data.max_train_examples is not None:
        examples = islice(examples, data.max_train_examples)
    total = _count_lines(split_files(data, split)[0]) if progress else None
    with tqdm(total=total, desc=label, unit=" lines", disable=not progress, leave=False) as bar:
        for example in examples:
            bar.update(example.line - bar.n)
            yield example


def _chunks(examples: Iterator[Example], size: int) -> Iterator[list[Example]]:
    while chunk := list(islice(examples, size)):
        yield chunk


def _encode(tokenizers: Tokenizers, chunk: list[Example], oov_slots: int) -> tuple[list[list[int]], ...]:
    """Source and target ids; with ``oov_slots``, source words outside the vocabulary get copy ids."""
    if not oov_slots:
        sources = tokenizers.source.encode_batch([example.source for example in chunk])
        return sources, tokenizers.target.encode_batch([example.target for example in chunk])
    oovs = [tokenizers.source_oovs(example.source, oov_slots) for example in chunk]
    return (
        [tokenizers.encode_with_oovs("source", e.source, o) for e, o in zip(chunk, oovs, strict=True)],
        [tokenizers.encode_with_oovs("target", e.target, o) for e, o in zip(chunk, oovs, strict=True)],
    )


def _sampled(
    tokenizers: Tokenizers, chunk: list[Example], alpha: float, seed: int
) -> tuple[list[list[int]], ...]:
    """Source and target ids of one sampled segmentation (BPE-dropout) of every pair in ``chunk``."""
    source, target = (
        cast(SentencePieceTokenizer, tokenizers.source),
        cast(SentencePieceTokenizer, tokenizers.target),
    )
    return (
        source.sample_batch([example.source for example in chunk], alpha, seed),
        target.sample_batch([example.target for example in chunk], alpha, seed + 1),
    )


def _binarize(
    data: DataConfig, split: Split, tokenizers: Tokenizers, directory: Path, progress: bool, oov_slots: int
) -> SplitReport:
    report, counts = SplitReport(), ReadCounts()
    train = split == "train"
    drop_overlong = train and data.overlong == "filter"
    copies = data.tokenizer.sampling_copies if train else 0
    if copies and not all(
        isinstance(t, SentencePieceTokenizer) for t in (tokenizers.source, tokenizers.target)
    ):
        raise SeqsmithError(
            "data.tokenizer.sampling_copies needs a SentencePiece tokenizer; a pretrained model's own "
            "tokenizer cannot sample: set data.tokenizer.sampling_copies: 0"
        )
    vocab_size = max(tokenizers.source.vocab_size, tokenizers.target.vocab_size) + oov_slots
    examples = _examples(data, split, progress, f"binarize {split}", counts)

    def write(writer: SplitWriter, example: Example, source: list[int], target: list[int]) -> None:
        source = tokenizers.finish_source(source)
        writer.add(source, target, example)
        report.source_tokens += len(source)
        report.target_tokens += len(target)
        report.unknown_source_lines += tokenizers.source.unk_id in source
        report.unknown_target_lines += tokenizers.target.unk_id in target

    with SplitWriter(directory, split, vocab_size, keep_texts=not train) as writer:
        for number, chunk in enumerate(_chunks(examples, CHUNK)):
            sources, targets = _encode(tokenizers, chunk, oov_slots)
            whole: list[Example] = []  # pairs within the limits: the only ones that get sampled copies
            for example, source, target in zip(chunk, sources, targets, strict=True):
                overlong = len(source) > data.max_source_length or len(target) > data.max_target_length
                if overlong and drop_overlong:
                    report.filtered_overlong += 1
                    continue
                if overlong:
                    report.truncated += 1
                    source = truncate(source, data.max_source_length, data.truncate_source_from)
                    target = truncate(target, data.max_target_length)
                else:
                    whole.append(example)
                write(writer, example, source, target)
            for copy in range(copies):  # a sampled copy past the limits is left out: it is optional
                seed = 2 * (number * copies + copy)
                sampled = _sampled(tokenizers, whole, data.tokenizer.sampling_alpha, seed)
                for example, source, target in zip(whole, *sampled, strict=True):
                    if len(source) <= data.max_source_length and len(target) <= data.max_target_length:
                        write(writer, example, source, target)
                        report.sampled_copies += 1
        report.kept = writer.count - report.sampled_copies
    report.read, report.empty_skipped, report.empty_lines = (
        counts.read,
        counts.empty_skipped,
        counts.empty_lines,
    )
    return report


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
    """A pretrained model's own tokenizer, or one trained on the training data."""
    data = config.data
    if isinstance(config.model, PretrainedConfig):
        from seqsmith.data.hf_tokenizer import HFTokenizers  # needs transformers: pretrained models only

        return HFTokenizers.load(Path(config.model.path))
    return Tokenizers.train(
        data.tokenizer,
        (example.source for example in _examples(data, "train", progress, "tokenizer: read sources")),
        (example.target for example in _examples(data, "train", progress, "tokenizer: read targets")),
    )


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
    )
