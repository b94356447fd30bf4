"""Binarized splits: memmap equality with the written ids, dtypes, atomic writes, damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seqsmith.data.binarize import BinarizedSplit, SplitWriter
from seqsmith.data.corpus import Example
from seqsmith.errors import SeqsmithError


def random_pairs(count: int, vocab_size: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = np.random.default_rng(seed)
    return [
        (
            rng.integers(0, vocab_size, rng.integers(1, 30)).tolist(),
            rng.integers(0, vocab_size, rng.integers(0, 30)).tolist(),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize(
    ("vocab_size", "dtype"), [(8000, np.uint16), (65534, np.uint16), (70_000, np.uint32)]
)
def test_memmap_equals_the_written_ids(tmp_path: Path, vocab_size: int, dtype: type) -> None:
    pairs = random_pairs(500, vocab_size)
    with SplitWriter(tmp_path, "train", vocab_size, keep_texts=False, buffer_tokens=64) as writer:
        for source, target in pairs:
            writer.add(source, target)
    split = BinarizedSplit(tmp_path, "train")
    assert len(split) == 500
    assert split.ids[0].dtype == dtype and isinstance(split.ids[0], np.memmap)
    assert split.source_lengths.tolist() == [len(s) for s, _ in pairs]
    assert split.target_lengths.tolist() == [len(t) for _, t in pairs]
    for i, (source, target) in enumerate(pairs):
        assert split.source(i).tolist() == source
        assert split.target(i).tolist() == target
        if i % 100 == 0:
            split.release()  # pages dropped from memory are read again from the file
    order = np.random.default_rng(1).permutation(len(pairs))
    assert [row.tolist() for row in split.rows(0, order)] == [pairs[i][0] for i in order]
    assert [row.tolist() for row in split.rows(1, order)] == [pairs[i][1] for i in order]
    expected_size = sum(len(s) for s, _ in pairs) * np.dtype(dtype).itemsize
    assert (tmp_path / "train.source.bin").stat().st_size == expected_size
    assert not list(tmp_path.glob(".*tmp*"))


def test_raw_texts_are_kept_for_dev_and_test(tmp_path: Path) -> None:
    examples = [Example("Hallo  Welt", "hi", ["hi", "hello"], 1), Example("你好\n", "ni hao", ["ni hao"], 3)]
    with SplitWriter(tmp_path, "test", 100, keep_texts=True) as writer:
        for example in examples:
            writer.add([5, 3], [6], example)
    split = BinarizedSplit(tmp_path, "test")
    assert list(split.texts()) == examples
    with SplitWriter(tmp_path, "train", 100, keep_texts=False) as writer:
        writer.add([5, 3], [6], examples[0])
    with pytest.raises(SeqsmithError, match="raw texts are kept for dev and test only"):
        list(BinarizedSplit(tmp_path, "train").texts())


def test_a_failed_write_keeps_the_previous_split(tmp_path: Path) -> None:
    with SplitWriter(tmp_path, "train", 100, keep_texts=False) as writer:
        writer.add([7, 3], [8, 9])
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with pytest.raises(RuntimeError), SplitWriter(tmp_path, "train", 100, keep_texts=False) as writer:
        writer.add([1, 2, 3], [4])
        raise RuntimeError("interrupted")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    assert BinarizedSplit(tmp_path, "train").source(0).tolist() == [7, 3]


def test_id_too_large_for_uint16_is_an_error(tmp_path: Path) -> None:
    with (
        pytest.raises(SeqsmithError, match="token id out of range"),
        SplitWriter(tmp_path, "x", 100, False) as w,
    ):
        w.add([70_000], [1])
    assert list(tmp_path.iterdir()) == []


def test_empty_split(tmp_path: Path) -> None:
    with SplitWriter(tmp_path, "dev", 100, keep_texts=True):
        pass
    split = BinarizedSplit(tmp_path, "dev")
    assert len(split) == 0 and list(split.texts()) == []


def test_missing_and_damaged_splits_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SeqsmithError, match=r"train\.json not found.*run `seqsmith prepare`"):
        BinarizedSplit(tmp_path, "train")
    with SplitWriter(tmp_path, "train", 100, keep_texts=False) as writer:
        writer.add([5, 6, 3], [7])
    bin_file = tmp_path / "train.source.bin"
    bin_file.write_bytes(bin_file.read_bytes()[:-2])
    with pytest.raises(SeqsmithError, match=r"train\.source\.bin is missing or has the wrong size"):
        BinarizedSplit(tmp_path, "train")
    (tmp_path / "train.target.idx.npy").write_bytes(b"garbage")
    with pytest.raises(SeqsmithError, match="damaged"):
        BinarizedSplit(tmp_path, "train")
