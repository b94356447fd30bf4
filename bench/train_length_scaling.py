"""Training throughput against sentence length: seqsmith's Transformer vs a plain PyTorch nn.Transformer.

    python bench/train_length_scaling.py                          # lengths 8-128, 8 measured steps, 3 repeats
    python bench/train_length_scaling.py --steps 2 --repeats 1    # a quick check

Both models have the train_throughput size (3+3 layers, d_model 256, 4 heads, FFN 1024, dropout 0.1, one
8,000-symbol embedding shared by source, target and output, sinusoidal positions, post-norm) and train on
the same random batches: every source and target exactly L tokens, 4096 // L sentences a batch, label
smoothing 0.1, Adam. seqsmith's step is what its trainer runs (its model's forward, its fused smoothed
cross-entropy, backward, Adam); the peer is the step most people write by hand around ``nn.Transformer``
(``F.cross_entropy(label_smoothing=0.1)``). No data loading on either side: this isolates how the model
step scales with length. Both run in this process on ``--threads`` threads and alternate within every
repeat, so a change of load hits both. Writes docs/benchmarks/train_length_scaling.json and its section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from measure import machine, repo_path
from tables import DOCS, invocation, write_section
from torch import Tensor, nn

from seqsmith.allocator import keep_freed_memory
from seqsmith.config import TransformerConfig
from seqsmith.fileio import atomic_write_text
from seqsmith.models.build import build_model
from seqsmith.models.transformer import sinusoidal_table
from seqsmith.training.losses import cross_entropy

ROOT = Path(__file__).resolve().parents[1]
VOCAB, BUDGET, PAD = 8000, 4096, 0
LENGTHS = [8, 16, 32, 64, 128]


class PlainTransformer(nn.Module):
    """nn.Transformer with shared embeddings and sinusoidal positions, as a tutorial would write it."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 256, padding_idx=PAD)
        self.core = nn.Transformer(256, 4, 3, 3, 1024, 0.1, batch_first=True)
        self.register_buffer("positions", sinusoidal_table(512, 256), persistent=False)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        def embed(ids: Tensor) -> Tensor:
            return self.embedding(ids) * math.sqrt(256) + self.positions[: ids.size(1)]

        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.size(1))
        hidden = self.core(embed(src), embed(tgt_in), tgt_mask=causal, tgt_is_causal=True)
        return F.linear(hidden, self.embedding.weight)


def seqsmith_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[Tensor, Tensor], None]:
    def step(src: Tensor, tgt: Tensor) -> None:
        scores = model(src, src != PAD, tgt[:, :-1])
        cross_entropy(scores, tgt[:, 1:], PAD, 0.1).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def plain_step(model: PlainTransformer, optimizer: torch.optim.Optimizer) -> Callable[[Tensor, Tensor], None]:
    def step(src: Tensor, tgt: Tensor) -> None:
        scores = model(src, tgt[:, :-1])
        loss = F.cross_entropy(scores.reshape(-1, VOCAB), tgt[:, 1:].reshape(-1), label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def batches(length: int, count: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """``count`` batches of 4096 // length sentences, sources L tokens, targets BOS + L tokens."""
    generator = torch.Generator().manual_seed(seed)
    rows = max(1, BUDGET // length)
    out = []
    for _ in range(count):
        src = torch.randint(4, VOCAB, (rows, length), generator=generator)
        tgt = torch.randint(4, VOCAB, (rows, length + 1), generator=generator)
        tgt[:, 0] = 2
        out.append((src, tgt))
    return out


def tokens_per_second(
    step: Callable[[Tensor, Tensor], None], data: list[tuple[Tensor, Tensor]], warmup: int
) -> float:
    for src, tgt in data[:warmup]:
        step(src, tgt)
    started = time.perf_counter()
    for src, tgt in data[warmup:]:
        step(src, tgt)
    seconds = time.perf_counter() - started
    return sum(tgt[:, 1:].numel() for _, tgt in data[warmup:]) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=LENGTHS)
    parser.add_argument("--steps", type=int, default=8, help="measured steps a length and repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # what seqsmith's trainer does on a CPU; it helps the peer's step alike
    loadavg = [round(x, 2) for x in os.getloadavg()]
    torch.manual_seed(0)
    config = TransformerConfig(
        d_model=256, heads=4, ffn_dim=1024, encoder_layers=3, decoder_layers=3, dropout=0.1, norm="post"
    )
    ours = build_model(config, VOCAB, VOCAB).train()
    plain = PlainTransformer().train()
    systems = {
        "seqsmith": seqsmith_step(ours, torch.optim.Adam(ours.parameters(), lr=1e-4)),
        "pytorch": plain_step(plain, torch.optim.Adam(plain.parameters(), lr=1e-4)),
    }
    rates: dict[int, dict[str, list[float]]] = {n: {name: [] for name in systems} for n in args.lengths}
    for repeat in range(args.repeats):
        for length in args.lengths:
            data = batches(length, args.warmup + args.steps, seed=repeat * 1000 + length)
            for name, step in systems.items():
                rates[length][name].append(tokens_per_second(step, data, args.warmup))
                print(
                    f"repeat {repeat + 1} length {length} {name}: {rates[length][name][-1]:.0f} tok/s",
                    flush=True,
                )
    results = []
    for length in args.lengths:
        row: dict[str, Any] = {"length": length, "sentences_per_batch": max(1, BUDGET // length)}
        for name in systems:
            values = rates[length][name]
            median = statistics.median(values)
            row[name] = {
                "tokens_per_s": median,
                "spread": (max(values) - min(values)) / median,
                "all": values,
            }
        row["ratio_vs_pytorch"] = row["seqsmith"]["tokens_per_s"] / row["pytorch"]["tokens_per_s"]
        results.append(row)
    report = {
        "benchmark": "train_length_scaling",
        "settings": {**vars(args), "out": repo_path(args.out), "budget_tokens": BUDGET, "vocab": VOCAB},
        "machine": machine(loadavg),
        "results": results,
    }
    atomic_write_text(
        args.out / "benchmarks" / "train_length_scaling.json", json.dumps(report, indent=2) + "\n"
    )
    lines = [
        "## Training throughput against sentence length (random ids, 4096 target tokens a batch)",
        "",
        "seqsmith's Transformer step vs a plain PyTorch `nn.Transformer` step of the same size, "
        f"{args.threads} threads, median of {args.repeats} repeats of {args.steps} steps (spread in "
        f"brackets). Produced by `{invocation()}`; what each step contains is in its docstring. Host: "
        f"{report['machine']['processor']}.",
        "",
        "| length | sentences a batch | seqsmith tokens/s | PyTorch nn.Transformer tokens/s | ratio |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        ours_rate, peer = row["seqsmith"], row["pytorch"]
        lines.append(
            f"| {row['length']} | {row['sentences_per_batch']} | {ours_rate['tokens_per_s']:,.0f} "
            f"({100 * ours_rate['spread']:.0f}%) | {peer['tokens_per_s']:,.0f} "
            f"({100 * peer['spread']:.0f}%) | {row['ratio_vs_pytorch']:.2f}x |"
        )
    write_section(args.out / "benchmarks.md", "train_length_scaling", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
