"""Where a Transformer decoding step's time goes: its linear layers, the vocabulary projection from a cold
cache and from a hot one, and the rest.

    python bench/decode_step.py --model-dir runs/multi30k_en_de_tiny/model
    python bench/decode_step.py --model-dir runs/multi30k_en_de_tiny/model --quick

For each row count (the beams of one sentence at beam 5, and a batch of sentences), this times
``decode_step`` over ``--steps`` positions of random sources, then the step's linear layers alone with the
model's own weights in the step's order (every decoder layer's Q/K/V, attention output, cross-attention
query and output, feed-forward pair; then the vocabulary projection), then the vocabulary projection alone,
repeated, so that its weight stays in cache. The difference between the projection in the step's order and
alone is what reading its weight from memory costs: at a few rows a step streams every weight once and does
little arithmetic on it, so its speed is the memory's, not the matrix units'. Weights/s is the bytes of the
weights read over the time. Median of ``--runs``; writes docs/benchmarks/decode_step.json and its section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from measure import machine, repo_path
from tables import BENCHMARKS_MD, figures_path, invocation, publish
from torch import nn

from seqsmith.models.model_dir import load_model_dir
from seqsmith.models.transformer import TransformerModel

BEAM = 5


def median_seconds(work: Callable[[], object], runs: int, repeats: int) -> float:
    """Median over ``runs`` of the mean time of ``repeats`` calls, after two untimed ones."""
    for _ in range(2):
        work()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(repeats):
            work()
        times.append((time.perf_counter() - started) / repeats)
    return statistics.median(times)


# one decoder layer's linear layers in a step's order (the cross-attention keys/values are made in encode)
STEP_LINEARS = (
    "self_attention.qkv",
    "self_attention.out",
    "cross_attention.q",
    "cross_attention.out",
    "ffn.0",
    "ffn.2",
)


def step_linears(model: TransformerModel) -> list[nn.Linear]:
    """The linear layers one decoding step runs, in its order, without the vocabulary projection."""
    layers = model.decoder_layers
    return [cast(nn.Linear, layer.get_submodule(name)) for layer in layers for name in STEP_LINEARS]


def measure(model: TransformerModel, sentences: int, steps: int, runs: int) -> dict[str, Any]:
    rows = sentences * BEAM
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(4, model.output_size, (sentences, 16), generator=generator)
    memory = model.encode(src, torch.ones_like(src, dtype=torch.bool)).repeat_rows(BEAM)
    prev = torch.randint(4, model.output_size, (steps, rows), generator=generator)

    def decode() -> None:
        state = None
        for t in range(steps):
            _, state = model.decode_step(prev[t], memory, state)

    linears = step_linears(model)
    inputs = {width: torch.randn(rows, width) for width in {linear.in_features for linear in linears}}
    out = torch.randn(rows, model.width)

    def layers() -> None:
        for linear in linears:
            linear(inputs[linear.in_features])

    def layers_and_projection() -> None:
        layers()
        model.output(out)

    repeats = max(1, 2000 // rows)
    step = median_seconds(decode, runs, max(1, repeats // steps)) / steps
    alone = median_seconds(layers, runs, repeats)
    in_order = median_seconds(layers_and_projection, runs, repeats)
    hot = median_seconds(lambda: F.linear(out, model.output.weight), runs, repeats)
    layer_bytes = sum(linear.weight.numel() + linear.bias.numel() for linear in linears) * 4
    projection_bytes = model.output.weight.numel() * 4
    cold = in_order - alone
    return {
        "sentences": sentences,
        "rows": rows,
        "step_ms": step * 1e3,
        "linears_ms": in_order * 1e3,
        "layer_linears_ms": alone * 1e3,
        "projection_cold_ms": cold * 1e3,
        "projection_hot_ms": hot * 1e3,
        "layer_weights_mb": layer_bytes / 1e6,
        "projection_weights_mb": projection_bytes / 1e6,
        "layer_gb_s": layer_bytes / alone / 1e9,
        "linears_gflop_s": 2 * rows * (layer_bytes + projection_bytes) / 4 / in_order / 1e9,
        "projection_cold_gb_s": projection_bytes / cold / 1e9 if cold > 0 else None,
        "projection_hot_gb_s": projection_bytes / hot / 1e9,
    }


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        "## Where a decoding step goes",
        "",
        f"`{settings['command']}`: model `{settings['model_dir']}`, beam {BEAM}, {settings['threads']} "
        f"thread(s), {settings['steps']} positions, median of {settings['runs']} runs. Host: "
        f"{report['machine']['processor']}. Linears: the step's linear layers alone with the model's "
        "weights, in its order; the vocabulary projection cold (after the layers' weights, as in a step) "
        "and hot (repeated alone); weights/s = the weights' bytes over that time; GFLOP/s = the linears' "
        "2 x rows x weights over it.",
        "",
        "| rows (sentences) | step ms | linears ms (GFLOP/s) | layers' linears ms (weights/s) "
        "| projection cold ms (weights/s) | projection hot ms (weights/s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        cold = row["projection_cold_gb_s"]
        lines.append(
            f"| {row['rows']} ({row['sentences']}) | {row['step_ms']:.2f} | {row['linears_ms']:.2f} "
            f"({row['linears_gflop_s']:.0f}) | "
            f"{row['layer_linears_ms']:.2f} ({row['layer_gb_s']:.1f} GB/s) | {row['projection_cold_ms']:.2f} "
            f"({'-' if cold is None else f'{cold:.1f} GB/s'}) | {row['projection_hot_ms']:.2f} "
            f"({row['projection_hot_gb_s']:.1f} GB/s) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="a Transformer model directory")
    parser.add_argument("--sentences", type=int, nargs="+", default=[1, 100], help="sentences a batch")
    parser.add_argument("--steps", type=int, default=16, help="positions decoded per pass")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2 runs of 4 positions: a smoke run")
    parser.add_argument("--out", type=Path, default=figures_path("decode_step.json"))
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.steps = 2, 4
    torch.set_num_threads(args.threads)
    loadavg = list(os.getloadavg())
    model = load_model_dir(args.model_dir).model.eval()
    if not isinstance(model, TransformerModel):
        parser.error(f"{args.model_dir} holds a {type(model).__name__}; this times a Transformer's step")
    with torch.inference_mode():
        rows = [measure(model, sentences, args.steps, args.runs) for sentences in args.sentences]
    report = {
        "benchmark": "decode_step",
        "settings": {
            "command": invocation(),
            "model_dir": repo_path(args.model_dir),
            "threads": args.threads,
            "steps": args.steps,
            "runs": args.runs,
        },
        "rows": rows,
        "machine": machine(loadavg),
    }
    publish(report, args.out, args.markdown, "decode_step", markdown(report))


if __name__ == "__main__":
    main()
