"""Synthetic pairs from monolingual text: back-translation (Sennrich et al. 2016) and self-training.

A model decodes every line of a monolingual file (resumably: ``seqsmith.generation.file_decode``) and the
pairs are written as parallel files named by the model's own data suffixes: ``OUT.<source suffix>`` holds the
input lines, ``OUT.<target suffix>`` the outputs. A reverse (de->en) model on German text so writes
``OUT.de`` (real) and ``OUT.en`` (synthetic), a corpus the forward (en->de) config lists in ``data.train``,
where a tag or noise transforms (Edunov et al. 2018's noised beam) are set; a forward model on source-side
text writes self-training pairs the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_write_text, read_lines
from seqsmith.generation.file_decode import decode_to_file
from seqsmith.generation.generator import Generator


@dataclass
class SyntheticData:
    inputs: Path  # the monolingual lines, as OUT.<the model's source suffix>
    outputs: Path  # what the model made of them, line by line
    pairs: int


def monolingual_lines(path: Path) -> list[str]:
    """Every line of ``path``; an empty line is an error naming it (it would pair text with nothing)."""
    lines = read_lines(path, "monolingual file")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise SeqsmithError(
                f"{path}:{number}: empty line; a monolingual file needs text on every line: remove empty "
                "lines (e.g. `grep -v '^[[:space:]]*$'`)"
            )
    if not lines:
        raise SeqsmithError(f"{path} is empty; give a file with one sentence a line")
    return lines


def synthesize(
    generator: Generator, monolingual: Path, out: Path, show_progress: bool = True
) -> SyntheticData:
    """Decode ``monolingual`` with ``generator``'s settings into the parallel files ``out.<suffix>``; a
    killed run started again goes on from its last whole chunk."""
    data = generator.data_config
    if data.source_suffix == data.target_suffix:
        raise SeqsmithError(
            f"the model's data.source_suffix and target_suffix are both {data.source_suffix!r}, so its "
            "inputs and outputs would be one file; give the model config distinct suffixes"
        )
    lines = monolingual_lines(Path(monolingual))
    out = Path(out)
    inputs = out.with_name(f"{out.name}.{data.source_suffix}")
    outputs = decode_to_file(
        generator, lines, out.with_name(f"{out.name}.{data.target_suffix}"), show_progress=show_progress
    )
    atomic_write_text(inputs, "".join(line.replace("\r", " ") + "\n" for line in lines))
    settings = {
        "monolingual": str(monolingual),
        "pairs": len(lines),
        "generate": generator.config.model_dump(mode="json"),
    }
    atomic_write_text(out.with_name(f"{out.name}.json"), json.dumps(settings, indent=2) + "\n")
    return SyntheticData(inputs, outputs, len(lines))
