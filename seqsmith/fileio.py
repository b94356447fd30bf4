"""File I/O the whole package shares.

Atomic writing: a kill at any moment leaves either the old file or the new one, never half of one. Text
lines: every reader splits on newline only (``str.splitlines`` also splits on U+2028, form feeds and lone
carriage returns, so output lines would stop matching input lines) and names the line of broken UTF-8.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from seqsmith.errors import SeqsmithError


def fsync_path(path: Path) -> None:
    """Make a file's content or a directory's renames durable; harmless where directories can't be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_inside(root: Path, path: Path, what: str) -> None:
    """Refuse a file that resolves outside ``root`` (a symlink out of a model directory): loading a
    directory must never read what lies elsewhere."""
    if not Path(path).resolve().is_relative_to(Path(root).resolve()):
        raise SeqsmithError(
            f"{what} {path} points outside {root} (to {Path(path).resolve()}); copy the file into the "
            "directory instead of linking to it"
        )


def check_writable(path: Path) -> None:
    """Fail now, before the work, if ``path`` could not be written later (its directory is created)."""
    probe = temporary_name(Path(path))
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise SeqsmithError(f"cannot write {path}: {error.strerror}; choose another output path") from None


def explain_os_error(error: OSError) -> str:
    """One line for an OS error (full disk, read-only or missing directory) with the path and the fix."""
    hints = {
        errno.ENOSPC: "free some space there; what was written before is intact",
        errno.EDQUOT: "free some space there; what was written before is intact",
        errno.EROFS: "choose a writable directory",
        errno.EACCES: "choose a directory you may write to",
        errno.ENOENT: "check the path",
    }
    where = f" {error.filename}" if error.filename else ""
    hint = hints.get(error.errno or 0, "")
    return f"{error.strerror or error}:{where}" + (f"; {hint}" if hint else "")


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


def iter_lines(handle: BinaryIO, where: str) -> Iterator[tuple[int, str]]:
    """(line number, text) pairs of a binary stream, split on newline only, a leading BOM dropped; broken
    UTF-8 is an error naming ``where`` and the line."""
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            bad = raw[error.start : error.start + 4]
            raise SeqsmithError(
                f"{where}:{number}: not valid UTF-8 (byte {error.start} of the line, {bad!r}); "
                "re-encode it as UTF-8, e.g. `iconv -f <its encoding> -t utf-8`"
            ) from None
        yield number, text.removesuffix("\n").removesuffix("\r")


def read_lines(path: Path, role: str = "file") -> list[str]:
    """The lines of a UTF-8 text file (``iter_lines``); a missing file is an error naming ``role``."""
    path = Path(path)
    if not path.is_file():
        where = "is a directory, not a file" if path.is_dir() else "not found"
        raise SeqsmithError(f"{role} {path} {where} (working directory: {Path.cwd()})")
    with open(path, "rb") as handle:
        return [text for _, text in iter_lines(handle, f"{role} {path}")]


def text_lines(text: str) -> list[str]:
    """Lines of text written by seqsmith (JSON lines, vocabularies), split on newline only."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if need be): one process at a time, across processes of
    one machine (workers of a tuning study preparing their shared data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def one_line(text: str) -> str:
    """``text`` fit for a file of one text a line: its line breaks as spaces (a copy model can copy the
    newlines of a dialogue into its summary)."""
    return text.replace("\r", " ").replace("\n", " ")
