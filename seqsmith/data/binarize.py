"""Binarized splits: token ids in flat memory-mapped arrays, so a corpus of any size costs almost no RAM.

Files per split in the data directory (``<split>`` is train, dev or test):

- ``<split>.source.bin`` / ``<split>.target.bin``: all ids end to end (uint16, or uint32 for vocabularies of
  65535 and more), little-endian; source ids end with EOS, target ids carry no BOS/EOS;
- ``<split>.source.idx.npy`` / ``<split>.target.idx.npy``: int64 offsets, example i is
  ``bin[idx[i]:idx[i+1]]``;
- ``<split>.jsonl`` (dev/test): ``{"line", "source", "references"}`` per example, the raw texts to score;
- ``<split>.json``: counts and dtype (train: the examples of each corpus of ``data.train``, which follow
  each other in that order), written last, so its presence means the split is complete.

Every file is written under a temporary name, fsynced and renamed, so an interrupted run leaves the previous
files intact.
"""

from __future__ import annotations

import json
import mmap
import os
import sys
import weakref
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np

from seqsmith.data.corpus import Example
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import fsync_path, temporary_name

SIDES = ("source", "target")


def id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size < 65535 else np.dtype("<u4")


class _Pending:
    """A file written under a temporary name until ``commit``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temporary = temporary_name(path)
        self.handle: IO[bytes] = open(self.temporary, "wb")  # noqa: SIM115 - closed in finish/discard

    def finish(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()

    def commit(self) -> None:
        os.replace(self.temporary, self.path)

    def discard(self) -> None:
        self.handle.close()
        self.temporary.unlink(missing_ok=True)


class _SideWriter:
    def __init__(self, directory: Path, split: str, side: str, dtype: np.dtype, buffer_tokens: int) -> None:
        self.bin = _Pending(directory / f"{split}.{side}.bin")
        self.idx_path = directory / f"{split}.{side}.idx.npy"
        self.idx: _Pending | None = None
        self.buffer = array("H" if dtype.itemsize == 2 else "I")
        self.buffer_tokens = buffer_tokens
        self.offsets = array("q", [0])

    def add(self, ids: Sequence[int]) -> None:
        try:
            self.buffer.extend(ids)
        except OverflowError:
            raise SeqsmithError(
                f"token id out of range for {self.bin.path} (ids: {list(ids)[:20]})"
            ) from None
        self.offsets.append(self.offsets[-1] + len(ids))
        if len(self.buffer) >= self.buffer_tokens:
            self.flush()

    def flush(self) -> None:
        if sys.byteorder != "little":
            self.buffer.byteswap()
        self.buffer.tofile(self.bin.handle)
        del self.buffer[:]

    def finish(self) -> None:
        self.flush()
        self.bin.finish()
        self.idx = _Pending(self.idx_path)
        np.save(self.idx.handle, np.frombuffer(self.offsets, dtype=np.int64))
        self.idx.finish()

    def commit(self) -> None:
        self.bin.commit()
        if self.idx is not None:
            self.idx.commit()

    def discard(self) -> None:
        self.bin.discard()
        if self.idx is not None:
            self.idx.discard()


class SplitWriter:
    """Streams examples into a split's files; they appear only when the ``with`` block ends without error."""

    def __init__(
        self, directory: Path, split: str, vocab_size: int, keep_texts: bool, buffer_tokens: int = 1 << 20
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.split, self.dtype = directory, split, id_dtype(vocab_size)
        self.sides = [_SideWriter(directory, split, side, self.dtype, buffer_tokens) for side in SIDES]
        self.texts = _Pending(directory / f"{split}.jsonl") if keep_texts else None
        self.count = 0
        self.corpora: list[int] | None = None  # train: examples from each corpus of data.train, in order

    def add(
        self, source_ids: Sequence[int], target_ids: Sequence[int], example: Example | None = None
    ) -> None:
        self.sides[0].add(source_ids)
        self.sides[1].add(target_ids)
        if self.texts is not None and example is not None:
            row = {"line": example.line, "source": example.source, "references": example.references}
            self.texts.handle.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
        self.count += 1

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None:
            self._commit()
        else:
            self._discard()

    def _commit(self) -> None:
        pending: list[_SideWriter | _Pending] = [*self.sides]
        if self.texts is not None:
            pending.append(self.texts)
        for item in pending:
            item.finish()
        for item in pending:
            item.commit()
        meta = {
            "examples": self.count,
            "dtype": self.dtype.str,
            "source_tokens": self.sides[0].offsets[-1],
            "target_tokens": self.sides[1].offsets[-1],
            "texts": self.texts is not None,
        }
        if self.corpora is not None:
            meta["corpora"] = self.corpora
        meta_file = _Pending(self.directory / f"{self.split}.json")
        meta_file.handle.write(json.dumps(meta, indent=2).encode("utf-8") + b"\n")
        meta_file.finish()
        meta_file.commit()
        fsync_path(self.directory)

    def _discard(self) -> None:
        for side in self.sides:
            side.discard()
        if self.texts is not None:
            self.texts.discard()


def _open_ids(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    if not path.is_file() or path.stat().st_size != count * dtype.itemsize:
        raise SeqsmithError(f"{path} is missing or has the wrong size; re-run `seqsmith prepare`")
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def _close_all(descriptors: list[int]) -> None:
    for descriptor in descriptors:
        os.close(descriptor)


class BinarizedSplit:
    """Read-only view of a binarized split: ids are memory-mapped, only offsets and lengths live in RAM.

    ``rows`` (used by ``collate``) reads with ``pread`` instead of the map: a random batch touches pages all
    over the files and the kernel maps up to 64 KiB around each touched page, so reading batches through the
    map would put most of the corpus into the process's resident memory after one batch.
    """

    def __init__(self, directory: str | Path, split: str) -> None:
        self.directory, self.split = Path(directory), split
        meta_path = self.directory / f"{split}.json"
        if not meta_path.is_file():
            raise SeqsmithError(
                f"{meta_path} not found: split {split!r} was not binarized in {self.directory}; "
                "run `seqsmith prepare` (and check data.output_dir)"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            dtype, count = np.dtype(meta["dtype"]), int(meta["examples"])
            self.offsets = [np.load(self.directory / f"{split}.{side}.idx.npy") for side in SIDES]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SeqsmithError(
                f"{meta_path} or its index files are damaged ({error}); re-run prepare"
            ) from None
        if any(len(offsets) != count + 1 for offsets in self.offsets):
            raise SeqsmithError(
                f"index files of {split} in {self.directory} do not match {meta_path}; re-run prepare"
            )
        self.ids = [
            _open_ids(self.directory / f"{split}.{side}.bin", dtype, int(offsets[-1]))
            for side, offsets in zip(SIDES, self.offsets, strict=True)
        ]
        self.has_texts = bool(meta.get("texts", False))
        self.corpora: list[int] = [int(n) for n in meta.get("corpora", [count])]
        if sum(self.corpora) != count:
            raise SeqsmithError(f"{meta_path}: its corpora do not add up to its examples; re-run prepare")
        self.source_lengths = np.diff(self.offsets[0]).astype(np.int32)
        self.target_lengths = np.diff(self.offsets[1]).astype(np.int32)
        self._files: list[int] = []
        if hasattr(os, "pread"):
            self._files = [os.open(self.directory / f"{split}.{side}.bin", os.O_RDONLY) for side in SIDES]
            weakref.finalize(self, _close_all, self._files)

    def rows(self, side: int, indices: Iterable[int]) -> list[np.ndarray]:
        """Fresh arrays of examples ``indices`` of side 0 (source) or 1 (target), read with ``pread``."""
        offsets, ids = self.offsets[side], self.ids[side]
        if not self._files:
            return [np.array(ids[offsets[i] : offsets[i + 1]]) for i in indices]
        fd, itemsize = self._files[side], ids.dtype.itemsize
        return [
            np.frombuffer(
                os.pread(fd, int(offsets[i + 1] - offsets[i]) * itemsize, int(offsets[i]) * itemsize),
                dtype=ids.dtype,
            )
            for i in indices
        ]

    def release(self) -> None:
        """Drop pages read through ``source``/``target`` from this process's resident memory (the OS page
        cache still holds them); worth calling after scanning a large split through the map."""
        for mapped in self.ids:
            mapping = getattr(mapped, "_mmap", None)  # numpy.memmap's mmap object
            if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
                mapping.madvise(mmap.MADV_DONTNEED)

    def __len__(self) -> int:
        return len(self.source_lengths)

    def source(self, i: int) -> np.ndarray:
        offsets = self.offsets[0]
        return self.ids[0][offsets[i] : offsets[i + 1]]

    def target(self, i: int) -> np.ndarray:
        offsets = self.offsets[1]
        return self.ids[1][offsets[i] : offsets[i + 1]]

    def texts(self) -> Iterator[Example]:
        """Raw source and references of each example, in order (dev/test only); target = first reference."""
        path = self.directory / f"{self.split}.jsonl"
        if not self.has_texts or not path.is_file():
            raise SeqsmithError(f"{path} not found: raw texts are kept for dev and test only; re-run prepare")
        with open(path, encoding="utf-8") as handle:
            for row in map(json.loads, handle):
                yield Example(row["source"], row["references"][0], row["references"], row["line"])
