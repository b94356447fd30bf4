"""How seqsmith's decoding time grows with the beam size and with the number of sentences a batch.

    python bench/decode_scaling.py --model-dir runs/multi30k_en_de_tiny/model       # 200 sentences
    python bench/decode_scaling.py --model-dir DIR --limit 50 --runs 1              # a quick check

The sentences are the first ``--limit`` sources of the model's prepared test split (its ``evaluate.split``:
test2016 for the Multi30k models), or of a text file given by ``--source``.

Beam sizes 1, 2, 4, 8, 16 at 32 sentences a batch, then 1, 8, 32, 128 sentences a batch at beam 5; the
sentences are sorted by length and cut into batches of that many, so the only change is the one studied.
Median of ``--runs`` passes after an untimed one, ``--threads`` threads, ``keep_attention: false``. Writes
docs/benchmarks/decode_scaling.json and a section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from measure import decoding_settings, decoding_sources, machine
from tables import BENCHMARKS_MD, figures_path, publish

from seqsmith.config import GenerateConfig
from seqsmith.errors import SeqsmithError
from seqsmith.generation.generator import Generator, target_pieces
from seqsmith.generation.search import generate_ids, pad

BEAMS = [1, 2, 4, 8, 16]
BATCH_SIZES = [1, 8, 32, 128]


def decode_seconds(
    generator: Generator, sources: list[list[int]], config: GenerateConfig, size: int
) -> float:
    """Wall time to decode every source, ``size`` sentences a batch, batches cut from length order."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    pieces = target_pieces(generator.tokenizers, config)
    started = time.perf_counter()
    for start in range(0, len(order), size):
        src, mask = pad([sources[i] for i in order[start : start + size]], generator.model.pad_id)
        generate_ids(generator.model, src, mask, config, pieces)
    return time.perf_counter() - started


def measure(
    generator: Generator, sources: list[list[int]], beam: int, size: int, runs: int
) -> dict[str, Any]:
    config = generator.settings(beam=beam, keep_attention=False, length_penalty="average")
    decode_seconds(generator, sources[:size], config, size)  # untimed warm-up
    seconds = [decode_seconds(generator, sources, config, size) for _ in range(runs)]
    median = statistics.median(seconds)
    return {
        "beam": beam,
        "batch_sentences": size,
        "seconds": median,
        "seconds_all": seconds,
        "sentences_per_s": len(sources) / median,
    }


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        "## Decoding time vs beam size and batch size (seqsmith, CPU)",
        "",
        f"The first {settings['sentences']} sentences of `{settings['source']}`, model "
        f"`{settings['model_dir']}`, {settings['threads']} threads, median of {settings['runs']} runs. Host: "
        f"{report['machine']['processor']}; load "
        f"{report['machine']['loadavg_before']} -> {report['machine']['loadavg_after']}. Produced by "
        f"`{settings['command']}`.",
        "",
        "| beam | sentences a batch | seconds | sentences/s | time vs the first row of its series |",
        "|---:|---:|---:|---:|---:|",
    ]
    for series in ("beam", "batch"):
        rows = report[series]
        for row in rows:
            lines.append(
                f"| {row['beam']} | {row['batch_sentences']} | {row['seconds']:.2f} | "
                f"{row['sentences_per_s']:.1f} | {row['seconds'] / rows[0]['seconds']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--source", type=Path, help="one sentence a line (default: the model's test split)")
    parser.add_argument("--limit", type=int, default=200, help="the first N sentences")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=figures_path("decode_scaling.json"))
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    try:
        generator = Generator.from_pretrained(args.model_dir)
        data = Path(generator.data_config.output_dir)
        source, texts = decoding_sources(data, generator.full_config.evaluate.split, args.source, args.limit)
    except SeqsmithError as error:
        sys.exit(f"decode_scaling: error: {error}")
    sources = [generator.encode(text) for text in texts]
    report: dict[str, Any] = {
        "benchmark": "decode_scaling",
        "settings": decoding_settings(args, source, len(sources)),
        "beam": [measure(generator, sources, beam, 32, args.runs) for beam in BEAMS],
        "batch": [measure(generator, sources, 5, size, args.runs) for size in BATCH_SIZES],
        "machine": machine(loadavg_before),
    }
    publish(report, args.out, args.markdown, "decode_scaling", markdown(report))


if __name__ == "__main__":
    main()
