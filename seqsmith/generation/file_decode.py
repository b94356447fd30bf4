"""Decode many texts into a file, resumably: the corpora of distillation and back-translation.

Outputs grow in ``OUT.partial`` a chunk at a time; after each chunk is fsynced, ``OUT.partial.json`` records
how many lines and bytes are whole. A killed run started again with the same inputs and settings truncates
the partial file to that length and continues from the next line, so no line is missing or written twice;
the finished file is renamed onto ``OUT``. Inputs or settings that differ from the recorded ones are an
error rather than a silently mixed corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from seqsmith.config import GenerateConfig
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_write_text, fsync_path, one_line
from seqsmith.generation.generator import Generator


def _digest(texts: Sequence[str], config: GenerateConfig) -> str:
    digest = hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def _resume_point(partial: Path, progress_file: Path, digest: str) -> tuple[int, int]:
    """(lines, bytes) already whole in ``partial``; (0, 0) for a fresh start."""
    if not progress_file.is_file() or not partial.is_file():
        return 0, 0
    try:
        recorded = json.loads(progress_file.read_text(encoding="utf-8"))
        lines, size, theirs = int(recorded["lines"]), int(recorded["bytes"]), str(recorded["digest"])
    except (ValueError, KeyError, TypeError):
        raise SeqsmithError(
            f"{progress_file} is unreadable; delete it and {partial} to decode from the start"
        ) from None
    if theirs != digest:
        raise SeqsmithError(
            f"{partial} was started with other inputs or generation settings; delete it and {progress_file} "
            "to start over, or rerun with the inputs and options it was started with"
        )
    if partial.stat().st_size < size:
        raise SeqsmithError(f"{partial} is shorter than {progress_file} records; delete both to start over")
    return lines, size


def decode_to_file(
    generator: Generator,
    texts: Sequence[str],
    out: Path,
    config: GenerateConfig | None = None,
    chunk: int = 1000,
    show_progress: bool = True,
) -> Path:
    """Write the best output for every text, one a line (a newline inside an output becomes a space).

    Returns ``out``; an existing complete ``out`` is kept as it is and returned (delete it to redo).
    """
    out = Path(out)
    if out.is_file():
        return out
    config = config or generator.config
    partial, progress_file = out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.json")
    digest = _digest(texts, config)
    done, size = _resume_point(partial, progress_file, digest)
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(
        total=len(texts), initial=done, unit="line", desc=f"decoding {out.name}", disable=not show_progress
    )
    with open(partial, "r+b" if done else "wb") as handle:
        handle.truncate(size)
        handle.seek(size)
        while done < len(texts):
            batch = texts[done : done + chunk]
            outputs = generator.generate_encoded(generator.encode_texts(batch), config)
            data = "".join(one_line(nbest[0].text) + "\n" for nbest in outputs).encode("utf-8")
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            done, size = done + len(batch), size + len(data)
            atomic_write_text(progress_file, json.dumps({"lines": done, "bytes": size, "digest": digest}))
            bar.update(len(batch))
    bar.close()
    os.replace(partial, out)
    fsync_path(out.parent)
    progress_file.unlink(missing_ok=True)
    return out
