"""docs/benchmarks.md holds one section per benchmark; each script rewrites only its own, between markers.

Every script writes under ``DOCS`` (docs/ of the repository), or under ``$SEQSMITH_BENCH_DOCS`` when that is
set: ``bench/all.py --quick`` points it at a scratch directory, so a smoke run leaves the tables alone.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from seqsmith.fileio import atomic_write_text

DOCS = Path(os.environ.get("SEQSMITH_BENCH_DOCS") or Path(__file__).resolve().parents[1] / "docs")
BENCHMARKS_MD = DOCS / "benchmarks.md"
HEADER = "# Benchmarks\n\nMade by the scripts in `bench/` (bench/README.md); raw figures in `benchmarks/`.\n"


def write_section(path: Path, name: str, body: str, first: bool = False) -> None:
    """Replace the text between ``<!-- name -->`` and ``<!-- /name -->`` (when absent: appended, or put
    right after the header with ``first``)."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text = path.read_text(encoding="utf-8") if path.is_file() else HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    elif first and text.startswith(HEADER):
        text = HEADER + "\n" + block + "\n" + text[len(HEADER) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(path, text)


def invocation() -> str:
    """The command that ran this benchmark, as typed from the repository root, for the line printed beside
    its table: every flag that shapes the figures, none of ``--out`` / ``--markdown`` (where they go)."""
    words, skip = [], False
    for word in sys.argv[1:]:
        if skip:
            skip = False
        elif word in ("--out", "--markdown"):
            skip = True
        elif not word.startswith(("--out=", "--markdown=")):
            words.append(shlex.quote(word))
    script = Path(sys.argv[0]).resolve()
    root = Path(__file__).resolve().parents[1]
    shown = script.relative_to(root) if script.is_relative_to(root) else Path(script.name)
    prefix = "SEQSMITH_BENCH_DOCS=DIR " if os.environ.get("SEQSMITH_BENCH_DOCS") else ""
    return " ".join([f"{prefix}python {shown.as_posix()}", *words])


def figures_path(name: str) -> Path:
    """Where a benchmark's raw figures (JSON, plots) go."""
    return DOCS / "benchmarks" / name


def publish(report: dict[str, Any], out: Path, markdown: Path, name: str, body: str) -> None:
    """A benchmark's last words: its JSON, its section of the markdown, and the section on the console."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    write_section(markdown, name, body)
    print(body)
