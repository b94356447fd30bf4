"""Corpus readers: stream raw files into ``Example``s one at a time, checking what a user can get wrong.

Every problem is a SeqsmithError naming the file, the line and the fix. Text is kept as written except the
line ending (``\\n`` or ``\\r\\n``) and a UTF-8 byte order mark; inner whitespace is left alone (the
tokenizer decides what to normalise). Dialogue turns are stripped of the spaces around ``__eou__``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import zip_longest
from pathlib import Path
from typing import Literal

from seqsmith.config import GROUNDED_FIELDS, DataConfig, FieldConfig
from seqsmith.data.augment import augment_text, seeded
from seqsmith.data.fields import field_texts, joined
from seqsmith.data.grounded import read_cmu_dog, read_webnlg
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_write_text, iter_lines, one_line

Split = Literal["train", "dev", "test"]
END_OF_UTTERANCE = "__eou__"


@dataclass(frozen=True)
class Example:
    source: str
    target: str
    references: list[str]  # what generated text is scored against; [target] unless the data has several
    line: int  # 1-based line of the source file, for messages and for matching outputs back


@dataclass
class ReadCounts:
    """Filled while a reader streams: examples found and empty ones skipped (``data.empty_lines: skip``)."""

    read: int = 0
    empty_skipped: int = 0
    empty_lines: list[int] = field(default_factory=list)  # first few, for the report

    def skip(self, line: int) -> None:
        self.empty_skipped += 1
        if len(self.empty_lines) < 10:
            self.empty_lines.append(line)


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) pairs of a corpus file, streamed (``seqsmith.fileio.iter_lines``)."""
    with open(path, "rb") as handle:
        yield from iter_lines(handle, str(path))


def read_parallel(source_path: Path, target_path: Path) -> Iterator[Example]:
    pairs = zip_longest(read_lines(source_path), read_lines(target_path))
    for number, (source, target) in enumerate(pairs, start=1):
        if source is None or target is None:
            short, long = (source_path, target_path) if source is None else (target_path, source_path)
            raise SeqsmithError(
                f"{short} ends after line {number - 1} but {long} continues at line {number}: parallel "
                "files need one example per line on both sides; fix the shorter or longer file"
            )
        yield Example(source[1], target[1], [target[1]], number)


def read_tsv(path: Path, source_column: int, target_column: int) -> Iterator[Example]:
    needed = max(source_column, target_column) + 1
    for number, text in read_lines(path):
        if not text.strip():
            yield Example("", "", [""], number)
            continue
        columns = text.split("\t")
        if len(columns) < needed:
            raise SeqsmithError(
                f"{path}:{number}: {len(columns)} tab-separated column(s), but data.source_column="
                f"{source_column} and data.target_column={target_column} need {needed}; fix the line "
                "(columns are separated by one tab) or the column settings"
            )
        target = columns[target_column]
        yield Example(columns[source_column], target, [target], number)


def _string_field(row: dict[str, object], name: str, path: Path, number: int, key: str) -> str:
    value = row[name]
    if not isinstance(value, str):
        raise SeqsmithError(
            f"{path}:{number}: field {name!r} ({key}) is {type(value).__name__}, not a string; "
            "store the text as a JSON string"
        )
    return value


def read_jsonl(
    path: Path,
    source_field: str,
    target_field: str,
    reference_fields: list[str],
    fields: Sequence[FieldConfig] = (),
) -> Iterator[Example]:
    """Rows without ``target_field`` but with ``reference_fields`` (e.g. DialogSum test) use the first one;
    with ``fields``, the source is made of those keys of each row (``seqsmith.data.fields``)."""
    for number, text in read_lines(path):
        if not text.strip():
            yield Example("", "", [""], number)
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            raise SeqsmithError(
                f"{path}:{number}: not valid JSON ({error.msg} at column {error.colno}); "
                "each line must be one JSON object"
            ) from None
        except RecursionError:
            raise SeqsmithError(
                f"{path}:{number}: JSON nested too deeply to read; each line must be one flat JSON object"
            ) from None
        if not isinstance(row, dict):
            raise SeqsmithError(f"{path}:{number}: a JSON {type(row).__name__}, expected an object {{...}}")
        if fields:
            source = joined(field_texts(row, fields, f"{path}:{number}"), fields)
        elif source_field not in row:
            raise SeqsmithError(
                f"{path}:{number}: no field {source_field!r} (fields: {', '.join(row) or 'none'}); "
                "set data.source_field to the field holding the input text"
            )
        else:
            source = _string_field(row, source_field, path, number, "data.source_field")
        references = [
            _string_field(row, name, path, number, "data.reference_fields")
            for name in reference_fields
            if name in row
        ]
        if target_field in row:
            target = _string_field(row, target_field, path, number, "data.target_field")
        elif references:
            target = references[0]
        else:
            wanted = ", ".join(repr(name) for name in [target_field, *reference_fields])
            raise SeqsmithError(
                f"{path}:{number}: none of the fields {wanted} (fields: {', '.join(row) or 'none'}); "
                "set data.target_field (or data.reference_fields) to the field holding the output text"
            )
        yield Example(source, target, references or [target], number)


def read_dialogue(path: Path, history: int, turn_separator: str) -> Iterator[Example]:
    """One dialogue a line; turn i >= 1 is answered from up to ``history`` turns before it."""
    for number, text in read_lines(path):
        turns = [turn.strip() for turn in text.split(END_OF_UTTERANCE)]
        if turns and not turns[-1]:
            turns.pop()  # the text after the final __eou__
        for i in range(1, len(turns)):
            context = turn_separator.join(turns[max(0, i - history) : i])
            yield Example(context, turns[i], [turns[i]], number)


def corpus_files(config: DataConfig, location: str) -> list[Path]:
    """The files of one corpus (two for parallel data)."""
    if config.format == "parallel":
        return [Path(f"{location}.{config.source_suffix}"), Path(f"{location}.{config.target_suffix}")]
    return [Path(location)]


def split_files(config: DataConfig, split: Split) -> list[Path]:
    """The files a split reads (every training corpus's); an empty list if the split is not configured."""
    if split == "train":
        return [path for source in config.train_sources for path in corpus_files(config, source.path)]
    location = getattr(config, split)
    return [] if location is None else corpus_files(config, location)


def check_files(config: DataConfig, split: Split) -> list[Path]:
    files = split_files(config, split)
    for path in files:
        if config.format in GROUNDED_FIELDS:
            if not path.is_dir():
                raise SeqsmithError(
                    f"data.{split}: directory {path} not found; a {config.format} split is a directory "
                    f"(working directory {Path.cwd()}): fix the path in the config"
                )
        elif not path.is_file():
            hint = (
                f" (read as <prefix>.{config.source_suffix} and <prefix>.{config.target_suffix})"
                if config.format == "parallel"
                else ""
            )
            raise SeqsmithError(
                f"data.{split}: file {path} not found{hint}; working directory is {Path.cwd()}, "
                "relative paths start there: fix the path in the config"
            )
    return files


def _empty(example: Example, files: list[Path], policy: str) -> bool:
    side = "source" if not example.source.strip() else "target" if not example.target.strip() else ""
    if side and policy == "error":
        where = files[1] if side == "target" and len(files) == 2 else files[0]
        raise SeqsmithError(
            f"{where}:{example.line}: empty {side}; remove the line or set data.empty_lines: skip"
        )
    return bool(side)


def read_split(config: DataConfig, split: Split, counts: ReadCounts | None = None) -> Iterator[Example]:
    """Stream a configured split (every training corpus in turn); empty sources or targets are skipped
    (and counted) or an error."""
    check_files(config, split)
    if split != "train":
        location = getattr(config, split)
        if location is None:
            raise SeqsmithError(f"data.{split} is not set; add the path of the {split} data to the config")
        yield from _read_corpus(config, corpus_files(config, location), counts or ReadCounts(), split)
        return
    for number in range(len(config.train_sources)):
        yield from read_train_corpus(config, number, counts)


def read_train_corpus(config: DataConfig, number: int, counts: ReadCounts | None = None) -> Iterator[Example]:
    """Training corpus ``number`` as the model reads it: its tag before each source, its transforms
    applied (seeded per line)."""
    corpus = config.train_sources[number]
    files = corpus_files(config, corpus.path)
    tags = [source.tag for source in config.train_sources if source.tag is not None]
    for example in _read_corpus(config, files, counts or ReadCounts()):
        for tag in tags:
            if tag in example.source or tag in example.target:
                raise SeqsmithError(
                    f"{files[0]}:{example.line}: the text holds {tag!r}, a tag of data.train; a tag must "
                    "mark a corpus only: pick a tag the data never contains"
                )
        source, target = example.source, example.target
        if corpus.transforms:
            rng = seeded(config.seed, "corpus", number, example.line)
            source = augment_text(corpus.transforms, source, "source", rng)
            target = augment_text(corpus.transforms, target, "target", rng)
        if corpus.tag is not None:
            source = f"{corpus.tag} {source}"
        yield replace(example, source=source, target=target)


def _read_corpus(
    config: DataConfig, files: list[Path], counts: ReadCounts, split: Split = "train"
) -> Iterator[Example]:
    examples: Iterator[Example]
    if config.format == "parallel":
        examples = read_parallel(files[0], files[1])
    elif config.format == "tsv":
        examples = read_tsv(files[0], config.source_column, config.target_column)
    elif config.format == "jsonl":
        examples = read_jsonl(
            files[0], config.source_field, config.target_field, config.reference_fields, config.fields
        )
    elif config.format == "cmu_dog":
        documents = Path(config.documents or "")
        shuffle = config.seed if config.shuffle_documents else None
        rows = read_cmu_dog(files[0], documents, config.history, config.fields, shuffle)
        examples = (Example(*row, number) for number, row in enumerate(rows, start=1))
    elif config.format == "webnlg":
        rows = read_webnlg(files[0], config.fields, split == "train", config.categories)
        examples = (Example(*row, number) for number, row in enumerate(rows, start=1))
    else:
        examples = read_dialogue(files[0], config.history, config.turn_separator)
    for example in examples:
        counts.read += 1
        if _empty(example, files, config.empty_lines):
            counts.skip(example.line)
            continue
        yield example


def write_split(
    config: DataConfig, location: Path, sources: Sequence[str], targets: Sequence[str]
) -> list[Path]:
    """Write pairs as ``data.format`` reads them from ``location`` (the prefix of parallel files), each file
    atomically; returns the files. Dialogue files hold whole dialogues, which pairs cannot be written as."""
    if len(sources) != len(targets):
        raise SeqsmithError(f"{location}: {len(sources)} sources but {len(targets)} targets")
    if config.format in ("dialogue", *GROUNDED_FIELDS) or config.fields:
        raise SeqsmithError(
            f"data.format {config.format} (or data.fields) reads more than source/target pairs, which pairs "
            "cannot be written as; use a config with data.format parallel, tsv or jsonl and one source"
        )
    files = split_files(config.model_copy(update={"train": str(location)}), "train")
    if config.format == "parallel":
        atomic_write_text(files[0], "".join(one_line(s) + "\n" for s in sources))
        atomic_write_text(files[1], "".join(one_line(t) + "\n" for t in targets))
    elif config.format == "tsv":
        width = max(config.source_column, config.target_column) + 1
        rows = []
        for source, target in zip(sources, targets):
            columns = [""] * width
            columns[config.source_column] = one_line(source).replace("\t", " ")
            columns[config.target_column] = one_line(target).replace("\t", " ")
            rows.append("\t".join(columns) + "\n")
        atomic_write_text(files[0], "".join(rows))
    else:
        atomic_write_text(
            files[0],
            "".join(
                json.dumps({config.source_field: s, config.target_field: t}, ensure_ascii=False) + "\n"
                for s, t in zip(sources, targets)
            ),
        )
    return files
