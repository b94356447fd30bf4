"""The host's own limit: matrix-multiply throughput at a Transformer's shapes, and each system's share of it.

    python bench/roofline.py          # after train_throughput.py and decode_speed.py, on the same host
    python bench/roofline.py --quick  # fewer, shorter timings

A peer is a weak yardstick; the machine is the real one. For every matrix product with weights that a
Transformer makes (Q/K/V, attention output, cross-attention, the two feed-forward layers, the vocabulary
projection), at the row counts of a training batch and of a beam-search step, this times ``torch.matmul``
in fp32 and bf16 and ``torch._int_mm`` in int8 on ``--threads`` threads (median of ``--runs``). The host's
rate at a model's mix is the mix's FLOPs over the time those products take at the measured rates: what an
implementation that spent every cycle in them would reach.

Model FLOPs are counted from the architecture (``model_flops``): 2 x rows x in x out per product; attention
scores and softmax are left out of both sides (about 2% of the products at Multi30k's ~15-token sentences);
training counts 3x the forward products (the backward pass runs two of each). Each system's FLOP/s is its
measured throughput (target tokens/s from docs/benchmarks/train_throughput.json, sentences/s from
docs/benchmarks/decode_speed.json, both of the same run) times those FLOPs, and its share is that over the
host's rate in the system's own precision. Writes docs/benchmarks/roofline.json and its section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from measure import machine
from tables import BENCHMARKS_MD, figures_path, invocation, publish

from seqsmith.config import TransformerConfig
from seqsmith.hardware import native_bf16
from seqsmith.models.model_dir import CONFIG, read_config

ROOT = Path(__file__).resolve().parents[1]
PRECISION = {
    "seqsmith": "fp32",
    "seqsmith-bf16": "bf16",
    "seqsmith-int8": "int8",
    "ct2-float32": "fp32",
    "ct2-int8": "int8",
}


@dataclass(frozen=True)
class Shape:
    """A Transformer's sizes, and the mean sentence lengths in tokens."""

    d_model: int
    ffn_dim: int
    encoder_layers: int
    decoder_layers: int
    vocab: int
    source_length: float = 15.3  # Multi30k's training means, EOS included (en 15.3, de 14.8 joint pieces)
    target_length: float = 14.8


Product = tuple[int, int, int, float]  # rows, in, out, how many times


def encoder(shape: Shape, rows: int) -> list[Product]:
    d, f, layers = shape.d_model, shape.ffn_dim, shape.encoder_layers
    # Q/K/V, the attention output, the feed-forward pair, per layer; K/V of the decoder's cross-attention
    per_layer = [(rows, d, 3 * d, 1.0), (rows, d, d, 1.0), (rows, d, f, 1.0), (rows, f, d, 1.0)]
    return [(r, i, o, n * layers) for r, i, o, n in per_layer] + [(rows, d, 2 * d, shape.decoder_layers)]


def decoder(shape: Shape, rows: int) -> list[Product]:
    d, f, layers = shape.d_model, shape.ffn_dim, shape.decoder_layers
    # self-attention Q/K/V and output, cross-attention query and output, the feed-forward pair; the vocabulary
    per_layer = [(rows, d, 3 * d), (rows, d, d), (rows, d, d), (rows, d, d), (rows, d, f), (rows, f, d)]
    return [(r, i, o, float(layers)) for r, i, o in per_layer] + [(rows, d, shape.vocab, 1.0)]


def flops(products: list[Product]) -> float:
    return sum(2.0 * rows * into * out * times for rows, into, out, times in products)


def model_flops(shape: Shape) -> dict[str, float]:
    """FLOPs per training target token and per decoded sentence (beam hypotheses each take a step)."""
    per_source = flops(encoder(shape, 1))
    per_target = flops(decoder(shape, 1))
    ratio = shape.source_length / shape.target_length
    return {
        "train_per_target_token": 3 * (per_target + ratio * per_source),
        "decode_encoder_per_sentence": shape.source_length * per_source,
        "decode_step_per_hypothesis": per_target,
    }


def time_product(rows: int, into: int, out: int, precision: str, runs: int, seconds: float) -> float:
    """FLOP/s of one product shape, the median of ``runs`` timings of at least ``seconds`` each."""
    if precision == "int8":
        a = torch.randint(-127, 127, (max(rows, 17), into), dtype=torch.int8)  # _int_mm wants > 16 rows
        b = torch.randint(-127, 127, (into, out), dtype=torch.int8)

        def product() -> Any:
            return torch._int_mm(a, b)
    else:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        a, b = torch.randn(rows, into, dtype=dtype), torch.randn(into, out, dtype=dtype)

        def product() -> Any:
            return a @ b

    product()
    rates = []
    for _ in range(runs):
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            product()
            count += 1
        rates.append(2.0 * a.size(0) * into * out * count / elapsed)
    return statistics.median(rates)


def mix_rate(products: list[Product], precision: str, runs: int, seconds: float) -> dict[str, Any]:
    """The host's FLOP/s over a mix of products: total FLOPs over the total time they take."""
    shapes = sorted({(rows, into, out) for rows, into, out, _ in products})
    rates = {shape: time_product(*shape, precision, runs, seconds) for shape in shapes}
    total = flops(products)
    busy = sum(2.0 * r * i * o * n / rates[(r, i, o)] for r, i, o, n in products)
    return {
        "flops_per_s": total / busy,
        "by_shape": {f"{r}x{i}x{o}": rate for (r, i, o), rate in rates.items()},
    }


def read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def decoding_shape() -> Shape | None:
    """The sizes of the model decode_speed.py decoded, when its figures and model directory are here."""
    decode = read(figures_path("decode_speed.json"))
    model_dir = ROOT / decode["settings"]["model_dir"] if decode else None
    if model_dir is None or not (model_dir / CONFIG).is_file():
        return None
    config = read_config(model_dir)
    model = config.model
    if not isinstance(model, TransformerConfig):
        return None
    layers = model.encoder_layers, model.decoder_layers
    return Shape(model.d_model, model.ffn_dim, *layers, config.data.tokenizer.vocab_size)


def shares(report: dict[str, Any], train_shape: Shape, decode_shape: Shape | None) -> dict[str, Any]:
    """Each measured system's FLOP/s and its share of the host's rate in its precision."""
    counted = model_flops(train_shape)
    out: dict[str, Any] = {}
    if train := read(figures_path("train_throughput.json")):
        for name, row in train["results"].items():
            if name.endswith("-rnn") or "-rnn-" in name:
                continue
            # auto's pick is not in the figures: its yardstick is the host's best precision
            precision = name.rsplit("-", 1)[1] if name.endswith(("-bf16", "-auto")) else "fp32"
            best = max(report["host"]["train"].values(), key=lambda rate: rate["flops_per_s"])
            achieved = row["tokens_per_s"] * counted["train_per_target_token"]
            ceiling = best if precision == "auto" else report["host"]["train"].get(precision)
            out[f"train/{name}"] = _share(achieved, ceiling, precision, train["machine"]["processor"])
    if decode_shape and (decode := read(figures_path("decode_speed.json"))):
        counted = model_flops(decode_shape)
        sentences = decode["settings"]["sentences"]
        for name, row in decode["results"].items():
            system, beam = name.split("/beam")
            steps = row["output_tokens"] / sentences * int(beam)  # hypothesis steps per sentence
            per_sentence = (
                counted["decode_encoder_per_sentence"] + steps * counted["decode_step_per_hypothesis"]
            )
            precision = PRECISION.get(system, "fp32")
            ceiling = report["host"][f"decode_beam{beam}"].get(precision)
            out[f"decode/{name}"] = _share(
                row["sentences_per_s"] * per_sentence, ceiling, precision, decode["machine"]["processor"]
            )
    return out


def _share(achieved: float, ceiling: dict[str, Any] | None, precision: str, host: str) -> dict[str, Any]:
    rate = ceiling["flops_per_s"] if ceiling else None
    return {
        "precision": precision,
        "flops_per_s": achieved,
        "share": achieved / rate if rate else None,
        "measured_on": host,
    }


def shape_text(shape: dict[str, Any] | None) -> str:
    if not shape:
        return "none measured"
    layers = f"{shape['encoder_layers']}+{shape['decoder_layers']}"
    return f"{layers} d {shape['d_model']} FFN {shape['ffn_dim']}, {shape['vocab']} pieces"


def markdown(report: dict[str, Any]) -> str:
    host, settings = report["host"], report["settings"]
    lines = [
        "## The host's limit (roofline)",
        "",
        f"`{settings['command']}`: matrix-multiply GFLOP/s of this host at a Transformer's mix of products "
        f"(training: {shape_text(settings['train_shape'])}, a batch of the train_throughput model; decoding: "
        f"{shape_text(settings['decode_shape'])}, decode_speed's model, a step of 500 sentences), "
        f"{settings['threads']} threads; each system's model GFLOP/s (FLOPs counted from the architecture, "
        "bench/roofline.py) as a share of it in its own precision (auto: the best). "
        f"Host: {report['machine']['processor']}.",
        "",
        "| mix | " + " | ".join(report["precisions"]) + " |",
        "|---|" + "---:|" * len(report["precisions"]),
    ]
    for mix, rates in host.items():
        cells = [f"{rates[p]['flops_per_s'] / 1e9:.1f}" if p in rates else "-" for p in report["precisions"]]
        lines.append(f"| {mix} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| system | precision | model GFLOP/s | share of the host's rate | measured on |",
        "|---|---|---:|---:|---|",
    ]
    for name, row in report["systems"].items():
        share = f"{100 * row['share']:.0f}%" if row["share"] else "-"
        gflops = row["flops_per_s"] / 1e9
        lines.append(f"| {name} | {row['precision']} | {gflops:.1f} | {share} | {row['measured_on']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.3, help="of each timing")
    parser.add_argument("--quick", action="store_true", help="2 runs of 0.05 s: a smoke test")
    parser.add_argument("--train-rows", type=int, default=3740, help="target tokens of a training batch")
    parser.add_argument("--decode-sentences", type=int, default=500, help="sentences in a decoding batch")
    parser.add_argument("--out", type=Path, default=figures_path("roofline.json"))
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    runs, seconds = (2, 0.05) if args.quick else (args.runs, args.seconds)
    torch.set_num_threads(args.threads)
    loadavg = [round(x, 2) for x in os.getloadavg()]
    # the 3+3 d 256 model of bench/train_throughput.py and configs/multi30k_en_de.yaml, 8000 joint pieces
    shape = Shape(d_model=256, ffn_dim=1024, encoder_layers=3, decoder_layers=3, vocab=8000)
    decode_shape = decoding_shape()
    precisions = ["fp32", *(["bf16"] if native_bf16(torch.device("cpu")) else []), "int8"]
    source_rows = round(args.train_rows * shape.source_length / shape.target_length)
    mixes = {"train": encoder(shape, source_rows) + decoder(shape, args.train_rows)}
    if decode_shape:
        for beam in (1, 5):
            mixes[f"decode_beam{beam}"] = decoder(decode_shape, args.decode_sentences * beam)
    host = {
        mix: {
            p: mix_rate(products, p, runs, seconds)
            for p in precisions
            if not (mix == "train" and p == "int8")
        }
        for mix, products in mixes.items()
    }
    report: dict[str, Any] = {
        "benchmark": "roofline",
        "settings": {
            "command": invocation(),
            "threads": args.threads,
            "runs": runs,
            "seconds": seconds,
            "train_shape": shape.__dict__,
            "decode_shape": decode_shape and decode_shape.__dict__,
        },
        "precisions": precisions,
        "model_flops": {"train": model_flops(shape), "decode": decode_shape and model_flops(decode_shape)},
        "host": host,
        "machine": machine(loadavg),
    }
    report["systems"] = shares(report, shape, decode_shape)
    publish(report, args.out, args.markdown, "roofline", markdown(report))


if __name__ == "__main__":
    main()
