"""docs/benchmarks.md holds one section per benchmark; each script rewrites only its own, between markers."""

from __future__ import annotations

from pathlib import Path

from seqsmith.fileio import atomic_write_text

HEADER = "# Benchmarks\n\nMade by the scripts in `bench/` (bench/README.md); raw figures in `benchmarks/`.\n"


def write_section(path: Path, name: str, body: str) -> None:
    """Replace the text between ``<!-- name -->`` and ``<!-- /name -->`` (appended when absent)."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text = path.read_text(encoding="utf-8") if path.is_file() else HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(path, text)
