"""Atomic file writing: a kill at any moment leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_path(path: Path) -> None:
    """Make a file's content or a directory's renames durable; harmless where directories can't be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is fsynced and renamed onto ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(target)
    try:
        yield temporary
        fsync_path(temporary)
        os.replace(temporary, target)
        fsync_path(target.parent)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(target: Path) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces ``target`` only when the block succeeds."""
    with atomic_path(target) as temporary, open(temporary, "wb") as handle:
        yield handle


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_open(target) as handle:
        handle.write(data)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``target`` (which must not exist) once written."""
    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target} exists already; refusing to replace a directory non-atomically")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield temporary
        for item in temporary.rglob("*"):
            if item.is_file():
                fsync_path(item)
        os.replace(temporary, target)
        fsync_path(target.parent)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
