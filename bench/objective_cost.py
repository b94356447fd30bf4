"""What an update costs under each training objective, against maximum likelihood on the same batches.

    python bench/objective_cost.py --model-dir runs/multi30k_en_de_tiny/model   # a trained Multi30k model
    python bench/objective_cost.py --model-dir DIR --updates 3 --repeats 1      # a smoke test

A trained model, because sampled outputs of a random one run to the length limit. Each objective starts
from a fresh copy of the model and runs ``--warmup`` untimed and ``--updates`` timed Adam updates on the
same fixed batches of the model's prepared training split (``--batch-tokens`` target tokens each, the
trainer's budget); the repeats rotate the order of the objectives. Figures: median seconds per update and
the ratio to MLE of the same repeat. The adversarial objective alternates two kinds of update (the
generator's and the discriminator's): each is timed on its own. Writes docs/benchmarks/objective_cost.json
and its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from measure import machine, repo_path
from tables import BENCHMARKS_MD, figures_path, invocation, write_section

from seqsmith.config import TrainConfig
from seqsmith.data.batching import collate
from seqsmith.data.binarize import BinarizedSplit
from seqsmith.fileio import atomic_write_text
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.models.model_dir import load_model_dir
from seqsmith.training.adversarial import DISCRIMINATOR
from seqsmith.training.objective import MAIN, Unit, build_objective

ROOT = Path(__file__).resolve().parents[1]
ADVERSARIAL = {"kind": "adversarial", "pretrain_discriminator": 0}
# name -> (objective settings, the unit an update trains)
OBJECTIVES: dict[str, tuple[dict[str, Any], str]] = {
    "mle": ({"kind": "mle"}, MAIN),
    "self_critical, 1 sample, greedy baseline": ({"kind": "self_critical", "reward": {"bleu": 1.0}}, MAIN),
    "self_critical, 4 samples, mean baseline": (
        {"kind": "self_critical", "reward": {"bleu": 1.0}, "samples": 4, "baseline": "mean"},
        MAIN,
    ),
    "minimum_risk, 8 samples": ({"kind": "minimum_risk", "reward": {"bleu": 1.0}, "candidates": 8}, MAIN),
    "minimum_risk, beam 4": (
        {"kind": "minimum_risk", "reward": {"bleu": 1.0}, "candidates": 4, "search": "beam"},
        MAIN,
    ),
    "adversarial, generator update (1 sample)": (ADVERSARIAL, MAIN),
    "adversarial, discriminator update (cnn)": (ADVERSARIAL, DISCRIMINATOR),
}


def fixed_batches(data_dir: Path, batch_tokens: int, count: int, seed: int = 1) -> list[Any]:
    """``count`` batches of random training pairs, each within ``batch_tokens`` target tokens."""
    split = BinarizedSplit(data_dir, "train")
    order = np.random.default_rng(seed).permutation(len(split.target_lengths))
    batches, start = [], 0
    for _ in range(count):
        chosen: list[int] = []
        longest = 0
        while start < len(order):
            length = int(split.target_lengths[order[start]]) + 1  # with EOS
            if chosen and (len(chosen) + 1) * max(longest, length) > batch_tokens:
                break
            chosen.append(int(order[start]))
            longest, start = max(longest, length), start + 1
        batches.append(collate(split, np.array(chosen)))
    return batches


def seconds_per_update(
    model: Seq2SeqModel, loaded: Any, settings: dict[str, Any], trained: str, batches: list[Any], warmup: int
) -> float:
    """Mean seconds of an update of the ``trained`` unit, after ``warmup`` untimed ones."""
    train = TrainConfig(max_steps=1, lr=1e-5, objective=settings)
    objective = build_objective(train)
    fresh = copy.deepcopy(model)
    objective.start(fresh, loaded.tokenizers, torch.device("cpu"))
    units = {}
    for name, module in {MAIN: fresh, **objective.extra_units(fresh)}.items():
        module.train()
        units[name] = Unit(module, torch.optim.Adam(module.parameters(), lr=1e-5), module)
    times = []
    for index, batch in enumerate(batches):
        start = time.perf_counter()
        units[trained].optimizer.zero_grad(set_to_none=True)
        loss = objective.loss(units, batch, trained)
        (loss.value / objective.count(batch, trained)).backward()
        units[trained].optimizer.step()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--batch-tokens", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=figures_path("objective_cost.json"))
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    loaded = load_model_dir(args.model_dir)
    data_dir = Path(loaded.config.data.output_dir)
    batches = fixed_batches(data_dir, args.batch_tokens, args.warmup + args.updates)
    names = list(OBJECTIVES)
    runs: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        torch.manual_seed(repeat)
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            settings, trained = OBJECTIVES[name]
            runs[name].append(
                seconds_per_update(loaded.model, loaded, settings, trained, batches, args.warmup)
            )
            print(f"repeat {repeat + 1}: {name}: {runs[name][-1]:.3f} s per update", flush=True)
    ratios = {
        name: statistics.median(a / b for a, b in zip(runs[name], runs["mle"], strict=True)) for name in names
    }
    report: dict[str, Any] = {
        "benchmark": "objective_cost",
        "settings": {
            "command": invocation(),
            "model_dir": repo_path(args.model_dir),
            "batch_tokens": args.batch_tokens,
            "warmup": args.warmup,
            "updates": args.updates,
            "repeats": args.repeats,
            "threads": args.threads,
            "sentences_per_batch": statistics.mean(len(b) for b in batches),
        },
        "machine": machine(loadavg_before),
        "seconds_per_update": runs,
        "ratio_to_mle": ratios,
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    lines = [
        "## Cost of an update by training objective",
        "",
        f"`{report['settings']['model_dir']}`, {args.batch_tokens}-token batches (about "
        f"{report['settings']['sentences_per_batch']:.0f} sentences), {args.updates} timed Adam updates "
        f"after {args.warmup} untimed, median of {args.repeats} repeats, {args.threads} threads. Host: "
        f"{report['machine']['processor']}. Produced by `{report['settings']['command']}`.",
        "",
        "| objective | s per update | x MLE |",
        "|---|---:|---:|",
        *(f"| {name} | {statistics.median(runs[name]):.3f} | {ratios[name]:.1f} |" for name in names),
    ]
    write_section(args.markdown, "objective_cost", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
