"""The three model families side by side: training tokens/s and beam-5 decoding sentences/s.

    python bench/architectures.py                 # 3 repeats, 200 training updates, 500 test sentences
    python bench/architectures.py --repeats 1 --steps 60 --sentences 100    # a smoke run

Each system is a shipped Multi30k config (`configs/multi30k_en_de_tiny.yaml`, `_conv.yaml`, `_gru.yaml`) on
their shared prepared data (`seqsmith prepare configs/multi30k_en_de.yaml` first). Training: `seqsmith train`
in its own process, 2 threads; the figure is the median of the train log's tokens/s windows after the
first 40 updates. Decoding: the same architecture with fresh weights, beam 5, every output exactly 20
tokens long (EOS masked before, forced after), so that what is timed is the cost of a step and not how
long a model's outputs happen to be; 2 threads, best of the repeats. Systems alternate within a repeat,
so a change of load hits all. Writes docs/benchmarks/architectures.json and its section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from measure import machine
from tables import BENCHMARKS_MD, figures_path, invocation, write_section

from seqsmith.config import load_config
from seqsmith.data.tokenizer import Tokenizers, encode_source
from seqsmith.fileio import atomic_write_text
from seqsmith.generation.search import search_all
from seqsmith.models.build import build_model, describe
from seqsmith.models.model_dir import TOKENIZER

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = {
    "transformer": ROOT / "configs" / "multi30k_en_de_tiny.yaml",
    "conv": ROOT / "configs" / "multi30k_en_de_conv.yaml",
    "gru": ROOT / "configs" / "multi30k_en_de_gru.yaml",
}
OUTPUT_TOKENS = 20


def train_rate(config: Path, steps: int, threads: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        never = steps * 10
        command = [
            shutil.which("seqsmith") or "seqsmith", "train", str(config),
            f"train.model_dir={directory}/model", f"train.max_steps={steps}", f"train.threads={threads}",
            "train.log_every=20", f"train.validate_every={never}", f"train.checkpoint_every={never}",
        ]  # fmt: skip
        subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
        log = Path(directory, "model", "train_log.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in log.splitlines()]
    rates = [row["tokens_per_s"] for row in rows if row.get("kind") == "train" and row["step"] > 40]
    return statistics.median(rates)


def decode_seconds(config_path: Path, sentences: int, threads: int) -> tuple[float, str]:
    torch.set_num_threads(threads)
    config = load_config(config_path)
    tokenizers = Tokenizers.load(Path(config.data.output_dir) / TOKENIZER)
    torch.manual_seed(0)
    model = build_model(config.model, tokenizers.source.vocab_size, tokenizers.target.vocab_size).eval()
    test = Path(f"{config.data.test}.{config.data.source_suffix}").read_text(encoding="utf-8").splitlines()
    sources = [encode_source(tokenizers, text, config.data.max_source_length) for text in test[:sentences]]
    search = config.generate.model_copy(
        update={"beam_size": 5, "nbest": 1, "max_length_a": 0.0, "max_length_b": OUTPUT_TOKENS,
                "min_length": OUTPUT_TOKENS, "keep_attention": False}
    )  # fmt: skip
    search_all(model, sources[:20], search)  # warm-up
    started = time.perf_counter()
    found = search_all(model, sources, search)
    seconds = time.perf_counter() - started
    assert all(len(nbest[0].tokens) == OUTPUT_TOKENS for nbest in found), "outputs of another length"
    return seconds, describe(model)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sentences", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    args = parser.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]
    train: dict[str, list[float]] = {name: [] for name in args.systems}
    decode: dict[str, list[float]] = {name: [] for name in args.systems}
    shapes: dict[str, str] = {}
    for repeat in range(args.repeats):
        for name in args.systems:
            train[name].append(train_rate(SYSTEMS[name], args.steps, args.threads))
            seconds, shapes[name] = decode_seconds(SYSTEMS[name], args.sentences, args.threads)
            decode[name].append(args.sentences / seconds)
            print(
                f"repeat {repeat + 1} {name}: {train[name][-1]:,.0f} tokens/s, {decode[name][-1]:.1f} sent/s"
            )
    results: dict[str, Any] = {
        "machine": machine(load),
        "settings": vars(args) | {"output_tokens": OUTPUT_TOKENS},
        "systems": {
            name: {
                "model": shapes[name],
                "config": str(SYSTEMS[name].relative_to(ROOT)),
                "train_tokens_per_s": train[name],
                "decode_sentences_per_s": decode[name],
            }
            for name in args.systems
        },
    }
    out = figures_path("architectures.json")
    atomic_write_text(out, json.dumps(results, indent=1) + "\n")
    rows = [
        f"| {name} | {shapes[name].split(':')[0]} | {shapes[name].split(': ')[1].split()[0]} | "
        f"{statistics.median(train[name]):,.0f} | {max(decode[name]):.1f} |"
        for name in args.systems
    ]
    body = "\n".join(
        [
            f"## The model families (`{invocation()}`)",
            "",
            f"Host: {results['machine']['processor']}, {args.threads} threads, {args.repeats} repeats "
            f"(load before {load}). Training: median target tokens/s of `seqsmith train` after 40 updates "
            f"(batches as each config says); decoding: beam 5, {args.sentences} Multi30k test "
            f"sentences, every output {OUTPUT_TOKENS} tokens, best repeat.",
            "",
            "| family | model | parameters | train tokens/s | beam-5 sentences/s |",
            "|---|---|---:|---:|---:|",
            *rows,
        ]
    )
    write_section(BENCHMARKS_MD, "architectures", body)
    print(out)


if __name__ == "__main__":
    main()
