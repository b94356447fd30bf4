"""What keeping byte pieces to whole UTF-8 characters costs and changes in decoding.

    python bench/search_rules.py --model-dir runs/webnlg/model --data runs/webnlg_unseen/data
    python bench/search_rules.py --model-dir DIR --limit 50 --runs 1                 # a quick check

Decodes the first ``--limit`` sources of a prepared split (the model's ``evaluate.split`` of its own data
or of ``--data``) greedy and with beam 5, each once with the tokenizer's pieces as ``Generator`` passes
them (the rule of generation/whole_characters.py on) and once without (``search_all`` with no pieces),
alternating, ``--runs`` timed passes each after an untimed one, in one process on ``--threads`` threads.
Reports the median seconds of each, their ratio, how many outputs the rule changed and how many outputs
hold U+FFFD with and without it. Writes docs/benchmarks/search_rules.json and a section of
docs/benchmarks.md.
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

from seqsmith.data.tokenizer import TargetPieces
from seqsmith.errors import SeqsmithError
from seqsmith.generation.generator import Generator, search_all, target_pieces

SEARCHES = {"greedy": 1, "beam 5": 5}


def timed(
    generator: Generator, sources: list[list[int]], beam: int, pieces: TargetPieces | None
) -> tuple[float, list[str]]:
    config = generator.settings(beam=beam, keep_attention=False)
    started = time.perf_counter()
    found = search_all(generator.model, sources, config, pieces)
    seconds = time.perf_counter() - started
    return seconds, [generator.tokenizers.target.decode(nbest[0].tokens) for nbest in found]


def measure(generator: Generator, sources: list[list[int]], beam: int, runs: int) -> dict[str, Any]:
    pieces = target_pieces(generator.tokenizers, generator.settings(beam=beam))
    sides: dict[str, TargetPieces | None] = {"rule": pieces, "none": None}
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    outputs: dict[str, list[str]] = {}
    for given in sides.values():
        timed(generator, sources[:32], beam, given)  # untimed warm-up
    for _ in range(runs):
        for side, given in sides.items():
            elapsed, outputs[side] = timed(generator, sources, beam, given)
            seconds[side].append(elapsed)
    median = {side: statistics.median(values) for side, values in seconds.items()}
    return {
        "beam": beam,
        "seconds": median,
        "seconds_all": seconds,
        "time_ratio": median["rule"] / median["none"],
        "changed": sum(a != b for a, b in zip(outputs["rule"], outputs["none"], strict=True)),
        "with_fffd": {side: sum("\ufffd" in text for text in texts) for side, texts in outputs.items()},
    }


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        "## Whole characters from byte pieces: cost and effect in decoding",
        "",
        f"The first {settings['sentences']} sources of `{settings['source']}`, model "
        f"`{settings['model_dir']}`, {settings['threads']} threads, "
        f"median of {settings['runs']} runs, the rule on and off alternating in one process. Host: "
        f"{report['machine']['processor']}; load {report['machine']['loadavg_before']} -> "
        f"{report['machine']['loadavg_after']}. Produced by `{settings['command']}`.",
        "",
        "| search | seconds, rule on | seconds, rule off | time on / off | outputs changed | "
        "outputs with U+FFFD, on / off |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in zip(SEARCHES, report["rows"], strict=True):
        lines.append(
            f"| {name} | {row['seconds']['rule']:.2f} | {row['seconds']['none']:.2f} | "
            f"{row['time_ratio']:.3f} | {row['changed']} | {row['with_fffd']['rule']} / "
            f"{row['with_fffd']['none']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--data", type=Path, help="another prepared data directory (default: the model's)")
    parser.add_argument("--limit", type=int, default=400, help="the first N sources")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=figures_path("search_rules.json"))
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    try:
        generator = Generator.from_pretrained(args.model_dir)
        data = args.data or Path(generator.data_config.output_dir)
        source, texts = decoding_sources(data, generator.full_config.evaluate.split, None, args.limit)
    except SeqsmithError as error:
        sys.exit(f"search_rules: error: {error}")
    if generator.tokenizers.target.first_byte_id() is None:
        sys.exit(f"search_rules: error: {args.model_dir}'s vocabulary has no byte pieces: nothing to measure")
    sources = [generator.encode(text) for text in texts]
    report: dict[str, Any] = {
        "benchmark": "search_rules",
        "settings": decoding_settings(args, source, len(sources)),
        "rows": [measure(generator, sources, beam, args.runs) for beam in SEARCHES.values()],
        "machine": machine(loadavg_before),
    }
    publish(report, args.out, args.markdown, "search_rules", markdown(report))


if __name__ == "__main__":
    main()
