"""Corpus readers: every format, every bad input (message names file, line and fix), streaming."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from seqsmith.config import DataConfig
from seqsmith.data.corpus import ReadCounts, read_dialogue, read_split
from seqsmith.errors import SeqsmithError

DATA = Path(__file__).parents[2] / "shared" / "data"


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def config(**fields: Any) -> DataConfig:
    return DataConfig(**fields)


def test_parallel_keeps_inner_whitespace_and_strips_line_endings(tmp_path: Path) -> None:
    write(tmp_path / "train.src", "\ufeffa  b\r\n c \n\u4f60\u597d\u3002\u2028x\n")
    write(tmp_path / "train.tgt", "A\nC\nlast-without-newline")
    examples = list(read_split(config(train=str(tmp_path / "train")), "train"))
    assert [(e.source, e.target, e.line) for e in examples] == [
        ("a  b", "A", 1),
        (" c ", "C", 2),
        ("\u4f60\u597d\u3002\u2028x", "last-without-newline", 3),
    ]
    assert examples[0].references == ["A"]


def test_missing_file_names_key_path_and_fix(tmp_path: Path) -> None:
    write(tmp_path / "train.src", "a\n")
    with pytest.raises(SeqsmithError) as error:
        list(read_split(config(train=str(tmp_path / "train")), "train"))
    message = str(error.value)
    assert "data.train" in message and str(tmp_path / "train.tgt") in message and "fix the path" in message


def test_unequal_line_counts_name_the_line_where_one_file_ends(tmp_path: Path) -> None:
    write(tmp_path / "t.src", "a\nb\nc\n")
    write(tmp_path / "t.tgt", "A\nB\n")
    examples = read_split(config(train=str(tmp_path / "t")), "train")
    assert [e.target for e in islice(examples, 2)] == ["A", "B"]
    with pytest.raises(SeqsmithError, match=r"t\.tgt ends after line 2 but .*t\.src continues at line 3"):
        next(examples)


def test_invalid_utf8_names_file_and_line_and_reading_is_lazy(tmp_path: Path) -> None:
    write(tmp_path / "t.src", b"ok\nfine\n\xff\xfebad\n")
    write(tmp_path / "t.tgt", "A\nB\nC\n")
    examples = read_split(config(train=str(tmp_path / "t")), "train")
    assert next(examples).source == "ok"  # the bad line was not read yet: streaming
    with pytest.raises(SeqsmithError, match=r"t\.src:3: not valid UTF-8.*iconv"):
        list(examples)


def test_tsv_columns_and_too_few_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv", "id1\thello  there\thallo\nid2\tonly-two\n")
    cfg = config(format="tsv", train=str(path), source_column=1, target_column=2)
    examples = read_split(cfg, "train")
    first = next(examples)
    assert (first.source, first.target, first.line) == ("hello  there", "hallo", 1)
    with pytest.raises(SeqsmithError) as error:
        next(examples)
    assert "d.tsv:2" in str(error.value) and "data.target_column=2" in str(error.value)


def rows(path: Path, items: list[Any]) -> Path:
    return write(path, "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items))


def test_jsonl_several_references_like_dialogsum_test(tmp_path: Path) -> None:
    path = rows(
        tmp_path / "test.jsonl",
        [
            {"dialogue": "d1", "summary1": "s1", "summary2": "s2", "summary3": "s3"},
            {"dialogue": "d2", "summary": "only"},
        ],
    )
    cfg = config(
        format="jsonl",
        train=str(path),
        source_field="dialogue",
        target_field="summary",
        reference_fields=["summary1", "summary2", "summary3"],
    )
    first, second = read_split(cfg, "train")
    assert (first.source, first.target, first.references) == ("d1", "s1", ["s1", "s2", "s3"])
    assert (second.target, second.references) == ("only", ["only"])


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"source": "a", "target": ', r"x\.jsonl:2: not valid JSON"),
        ('["a", "b"]', r"x\.jsonl:2: a JSON list, expected an object"),
        ('{"source": "a", "tgt": "b"}', r"x\.jsonl:2: none of the fields 'target'.*data\.target_field"),
        ('{"src": "a", "target": "b"}', r"x\.jsonl:2: no field 'source'.*data\.source_field"),
        ('{"source": 3, "target": "b"}', r"x\.jsonl:2: field 'source' \(data\.source_field\) is int"),
    ],
)
def test_jsonl_bad_lines(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path / "x.jsonl", '{"source": "ok", "target": "fine"}\n' + line + "\n")
    with pytest.raises(SeqsmithError, match=expected):
        list(read_split(config(format="jsonl", train=str(path)), "train"))


def test_dialogue_contexts_against_a_direct_construction(tmp_path: Path) -> None:
    turns = ["Hi , Tom .", "Hello !", "How are you ?", "Fine , thanks .", "Bye ."]
    path = write(tmp_path / "d.txt", " __eou__ ".join(turns) + " __eou__\nA __eou__ B __eou__\n")
    examples = list(read_split(config(format="dialogue", train=str(path), history=2), "train"))
    expected = [(" <sep> ".join(turns[max(0, i - 2) : i]), turns[i], 1) for i in range(1, len(turns))]
    assert [(e.source, e.target, e.line) for e in examples] == [*expected, ("A", "B", 2)]
    assert examples[2].source == "Hello ! <sep> How are you ?"


def test_dialogue_separator_and_single_turn_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "d.txt", "alone __eou__\n\na __eou__ b\n")
    examples = list(read_dialogue(path, history=5, turn_separator=" || "))
    assert [(e.source, e.target, e.line) for e in examples] == [("a", "b", 3)]


def test_empty_lines_are_skipped_and_counted_or_an_error(tmp_path: Path) -> None:
    write(tmp_path / "t.src", "a\n  \nc\nd\n")
    write(tmp_path / "t.tgt", "A\nB\n\nD\n")
    counts = ReadCounts()
    kept = list(read_split(config(train=str(tmp_path / "t")), "train", counts))
    assert [e.line for e in kept] == [1, 4]
    assert (counts.read, counts.empty_skipped, counts.empty_lines) == (4, 2, [2, 3])
    strict = config(train=str(tmp_path / "t"), empty_lines="error")
    with pytest.raises(SeqsmithError, match=r"t\.src:2: empty source.*data\.empty_lines: skip"):
        list(read_split(strict, "train"))
    write(tmp_path / "t.src", "a\nb\nc\nd\n")
    with pytest.raises(SeqsmithError, match=r"t\.tgt:3: empty target"):
        list(read_split(strict, "train"))


def test_unset_split_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "t.src", "a\n")
    write(tmp_path / "t.tgt", "b\n")
    with pytest.raises(SeqsmithError, match=r"data\.test is not set"):
        list(read_split(config(train=str(tmp_path / "t")), "test"))


@pytest.mark.may_skip
@pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data (real data sets, not in a fresh clone)")
def test_real_data_counts() -> None:
    dialogsum = config(
        format="jsonl",
        train=str(DATA / "dialogsum" / "test.jsonl"),
        source_field="dialogue",
        target_field="summary",
        reference_fields=["summary1", "summary2", "summary3"],
    )
    examples = list(read_split(dialogsum, "train"))
    assert len(examples) == 500 and all(len(e.references) == 3 for e in examples)
    multi30k = config(train=str(DATA / "multi30k" / "test2016"), source_suffix="en", target_suffix="de")
    assert sum(1 for _ in read_split(multi30k, "train")) == 1000
    dialogues = config(format="dialogue", train=str(DATA / "dailydialog" / "valid.txt"))
    examples = list(read_split(dialogues, "train"))
    assert all("__eou__" not in e.source + e.target and e.target for e in examples)
    assert len({e.line for e in examples}) == 1000
