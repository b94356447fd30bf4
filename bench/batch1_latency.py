"""Batch-1 latency of seqsmith's search in float32 and with each ``generate.quantize`` setting, alternating.

    python bench/batch1_latency.py --model-dir runs/multi30k_en_de_tiny/model
    python bench/batch1_latency.py --model-dir DIR --sentences 10 --passes 2     # quick

One sentence a search, the first ``--sentences`` sources of test2016, greedy and beam 5 (length penalty
"average"), on 1 and 2 threads. The settings take turns pass by pass in one process, so a host whose speed
drifts (decode_speed.py runs its systems one after another) moves them all alike; the table gives the median
over ``--passes`` passes of the mean milliseconds a sentence. Writes docs/benchmarks/batch1_latency.json
and its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from measure import MULTI30K_TEST, machine, repo_path
from tables import BENCHMARKS_MD, figures_path, invocation, publish

from seqsmith.errors import SeqsmithError
from seqsmith.fileio import read_lines
from seqsmith.generation.generator import Generator, search_all, target_pieces

SETTINGS = ("none", "int8_output", "int8")


def latencies(
    generators: dict[str, Generator], sources: list[list[int]], beam: int, passes: int
) -> dict[str, float]:
    """Median milliseconds a sentence per setting, the settings alternating pass by pass."""
    first = next(iter(generators.values()))
    method = "beam" if beam > 1 else "greedy"
    config = first.settings(beam=beam, method=method, keep_attention=False, length_penalty="average")
    pieces = target_pieces(first.tokenizers, config)
    models = {name: generator.model for name, generator in generators.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        assert model is not None
        for ids in sources[:3]:  # untimed warm-up
            search_all(model, [ids], config, pieces)
    for _ in range(passes):
        for name, model in models.items():
            assert model is not None
            started = time.perf_counter()
            for ids in sources:
                search_all(model, [ids], config, pieces)
            times[name].append((time.perf_counter() - started) / len(sources) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        "## Batch-1 latency by quantization",
        "",
        f"`{settings['command']}`: model `{settings['model_dir']}`, the first {settings['sentences']} "
        f"sentences of test2016, one a search, length penalty average; median of {settings['passes']} "
        "passes, the settings alternating pass by pass in one process. Host: "
        f"{report['machine']['processor']}. Milliseconds a sentence (in brackets: against float32).",
        "",
        "| search | threads | " + " | ".join(f"`quantize: {name}`" for name in SETTINGS) + " |",
        "|---|---:|" + "---:|" * len(SETTINGS),
    ]
    for row in report["rows"]:
        base = row["ms"]["none"]
        cells = [f"{row['ms'][name]:.1f} ({row['ms'][name] / base:.2f})" for name in SETTINGS]
        search = "greedy" if row["beam"] == 1 else f"beam {row['beam']}"
        lines.append(f"| {search} | {row['threads']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="a trained seqsmith model")
    parser.add_argument("--source", type=Path, default=MULTI30K_TEST, help="one source sentence a line")
    parser.add_argument("--sentences", type=int, default=40)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--out", type=Path, default=figures_path("batch1_latency.json"))
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    try:
        texts = read_lines(args.source, "--source file")[: args.sentences]
    except SeqsmithError as error:
        parser.error(str(error))
    loadavg = list(os.getloadavg())
    generators = {name: Generator.from_pretrained(args.model_dir, quantize=name) for name in SETTINGS}
    sources = [generators["none"].encode(text) for text in texts]
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for beam in (1, 5):
            ms = latencies(generators, sources, beam, args.passes)
            rows.append({"beam": beam, "threads": threads, "ms": ms})
    report = {
        "benchmark": "batch1_latency",
        "settings": {
            "command": invocation(),
            "model_dir": repo_path(args.model_dir),
            "sentences": len(sources),
            "passes": args.passes,
        },
        "rows": rows,
        "machine": machine(loadavg),
    }
    publish(report, args.out, args.markdown, "batch1_latency", markdown(report))


if __name__ == "__main__":
    main()
