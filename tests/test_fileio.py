"""Atomic writes: a kill at any moment leaves the old file or the new one, never a mix or a fragment."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_directory, atomic_write_bytes, check_inside, read_lines, text_lines

WRITER = """
import sys
from pathlib import Path
from seqsmith.fileio import atomic_write_bytes
target, size = Path(sys.argv[1]), int(sys.argv[2])
version = 0
while True:
    version = version % 250 + 1
    atomic_write_bytes(target, bytes([version]) * (size + version))
"""


def whole_version(data: bytes, size: int) -> bool:
    """One version: ``size + v`` bytes, all equal to ``v``."""
    return bool(data) and data == bytes([data[0]]) * (size + data[0])


def test_a_kill_at_any_moment_leaves_one_whole_version(tmp_path: Path) -> None:
    target, size = tmp_path / "file.bin", 3_000_000
    atomic_write_bytes(target, bytes([1]) * (size + 1))
    rng = random.Random(0)
    versions = set()
    for _ in range(12):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(size)])
        time.sleep(rng.uniform(0.15, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        data = target.read_bytes()
        assert whole_version(data, size), (len(data), data[:1], data[-1:])
        versions.add(data[0])
    assert len(versions) > 3, "the writer should have been killed at many different versions"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "file.bin"]
    assert all(name.startswith(".file.bin.tmp-") for name in leftovers)  # at most the killed writer's


def test_a_failed_block_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "kept.txt"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "new-dir") as directory:
        (directory / "part").write_bytes(b"half")
        raise RuntimeError("killed half way")
    assert not (tmp_path / "new-dir").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]
    with pytest.raises(FileExistsError):
        atomic_directory(target.parent).__enter__()


def test_lines_split_on_newline_only(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_bytes("\ufeffa\u2028b\r\nc\x0cd\re\n\nf".encode())
    assert read_lines(path) == ["a\u2028b", "c\x0cd\re", "", "f"]
    assert text_lines("x\ny\n") == ["x", "y"] and text_lines("") == []
    with pytest.raises(SeqsmithError, match="not found"):
        read_lines(tmp_path / "missing.txt")


def test_links_out_of_a_directory_are_refused(tmp_path: Path) -> None:
    (tmp_path / "inside").mkdir()
    (tmp_path / "outside.txt").write_text("x")
    (tmp_path / "inside" / "link.txt").symlink_to(tmp_path / "outside.txt")
    (tmp_path / "inside" / "own.txt").write_text("y")
    check_inside(tmp_path / "inside", tmp_path / "inside" / "own.txt", "file")
    with pytest.raises(SeqsmithError, match="points outside"):
        check_inside(tmp_path / "inside", tmp_path / "inside" / "link.txt", "file")


def test_outputs_with_line_breaks_stay_one_a_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy model can copy a dialogue's newlines into its output; files of one output a line must not
    grow a line for it (the references would no longer line up)."""
    from conftest import tiny_config

    from seqsmith import api
    from seqsmith.fileio import one_line
    from seqsmith.generation.generator import Generator

    assert one_line("a\nb\r\nc") == "a b  c"
    config = tiny_config(tmp_path, train={"max_steps": 10})
    api.train(config, show_progress=False)
    monkeypatch.setattr(Generator, "generate", lambda self, texts, **options: ["x\ny"] * len(texts))
    api.evaluate_model(config.train.model_dir, "test", ["bleu"], out=tmp_path / "eval")
    lines = (tmp_path / "eval" / "hypotheses.txt").read_text(encoding="utf-8").split("\n")
    assert lines[:-1] == ["x y"] * 40 and lines[-1] == ""
