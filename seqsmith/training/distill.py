"""Sequence-level knowledge distillation (Kim & Rush, 2016): a student trained on its teacher's outputs.

The teacher decodes the sources of the student config's training split (and any monolingual source text)
with its own search settings, resumably (``seqsmith.generation.file_decode``). The pairs (source, teacher
output) become a training split in the config's own data format under the work directory, and the student
config is that config with ``data.train`` and ``data.output_dir`` pointed there; dev and test stay the real
references, so the student is validated and scored against them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqsmith.config import Config, config_from_dict
from seqsmith.data.corpus import read_split, write_split
from seqsmith.fileio import atomic_write_text, read_lines
from seqsmith.generation.file_decode import decode_to_file
from seqsmith.generation.generator import Generator


@dataclass
class DistilledData:
    config: Config  # the student config, reading the distilled training split
    pairs: int
    work: Path


def distilled_data(
    teacher: Generator,
    teacher_dir: Path,
    config: Config,
    work: Path,
    monolingual: Path | None = None,
    show_progress: bool = True,
) -> DistilledData:
    """Decode the training sources with ``teacher`` into ``work`` and return the student's config."""
    work = Path(work)
    sources = [example.source for example in read_split(config.data, "train")]
    if monolingual is not None:
        sources += [line for line in read_lines(monolingual, "monolingual source file") if line.strip()]
    outputs = decode_to_file(teacher, sources, work / "teacher_outputs.txt", show_progress=show_progress)
    targets = read_lines(outputs, "teacher outputs")
    write_split(config.data, work / "train", sources, targets)
    raw = config.model_dump(mode="json")
    raw["data"].update(train=str(work / "train"), output_dir=str(work / "data"))
    student = config_from_dict(raw, f"{work} (distilled)")
    settings: dict[str, Any] = {
        "teacher": str(teacher_dir),
        "generate": teacher.config.model_dump(mode="json"),
        "pairs": len(sources),
        "monolingual": str(monolingual) if monolingual else None,
    }
    atomic_write_text(work / "distill.json", json.dumps(settings, indent=2) + "\n")
    return DistilledData(student, len(sources), work)
