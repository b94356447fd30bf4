"""Time to quality: dev BLEU against wall-clock minutes, seqsmith vs JoeyNMT 2.3, on Multi30k en->de.

    python bench/time_to_quality.py                  # 60 minutes each, one after the other (2 hours)
    python bench/time_to_quality.py --minutes 3      # a quick check of the plumbing

Both train the same Transformer (3+3 layers, d_model 256, 4 heads, FFN 1024, post-norm, one shared embedding)
with the recipe of configs/multi30k_en_de.yaml (Adam, its peak lr, warm-up and dropout, label smoothing 0.1,
4096-token batches, gradient clipping 1.0; the dropout also inside attention, where JoeyNMT always applies
it), except that the schedule is inverse-square-root decay after warm-up for both (JoeyNMT has no cosine
schedule) and only the clock stops training, on the raw Multi30k text through the same 8k joint SentencePiece
model (trained once by `seqsmith prepare`), on ``--threads`` threads. Each validates on val (1,014 sentences)
with greedy search and sacrebleu BLEU (13a, on detokenized text), every ``--seqsmith-validate`` /
``--joeynmt-validate`` updates, chosen so that both validate every few minutes (JoeyNMT's updates are slower
and carry fewer real tokens: it does not bucket by length). The clock is the toolkit's own from the start of
training: seqsmith's ``elapsed`` in train_log.jsonl, JoeyNMT's log time stamps since its first line;
validation and checkpoint time count, as they do for a user. seqsmith stops itself at ``--minutes``
(train.max_minutes); JoeyNMT is stopped then.

Writes docs/benchmarks/time_to_quality.json (every validation, and the minutes each toolkit first reached
each BLEU threshold, with ``ratio_vs_joeynmt`` = JoeyNMT's minutes over seqsmith's), the curve as
docs/benchmarks/time_to_quality.png, and its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import yaml
from measure import machine, repo_path, run_measured
from peers import ensure
from tables import DOCS, invocation, write_section
from train_throughput import BASE_CONFIG, DATA, PEER_CONFIGS, Workspace, prepare_inputs

from seqsmith.config import config_from_dict
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = [10.0, 15.0, 20.0, 25.0, 30.0, 33.0, 35.0]
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
STEP = re.compile(r"Step:\s+(\d+)")
RESULT = re.compile(r"Evaluation result \(greedy\).*?bleu:\s+([\d.]+)")


def seqsmith_config(work: Workspace, minutes: float, validate: int, threads: int) -> Path:
    raw = yaml.safe_load(BASE_CONFIG.read_text(encoding="utf-8"))
    raw["data"]["output_dir"] = str(work.data)
    raw["model"]["attention_dropout"] = raw["model"]["dropout"]  # JoeyNMT drops out inside attention too
    raw["train"].update(
        model_dir=str(work.root / "runs" / "seqsmith"),
        schedule="inverse_sqrt",
        max_steps=None,
        max_minutes=minutes,
        threads=threads,
        validate_every=validate,
        checkpoint_every=validate,
        patience=None,
    )
    config_from_dict(raw, "time_to_quality seqsmith config")
    path = work.root / "configs" / "seqsmith.yaml"
    atomic_write_text(path, yaml.safe_dump(raw, sort_keys=False))
    return path


def joeynmt_config(work: Workspace, validate: int) -> Path:
    """The throughput twin, switched to raw text through seqsmith's SentencePiece model and to the recipe."""
    raw = yaml.safe_load((PEER_CONFIGS / "joeynmt_transformer.yaml").read_text(encoding="utf-8"))
    raw["model_dir"] = str(work.root / "runs" / "joeynmt")
    raw["data"].update(train=str(DATA / "train"), dev=str(DATA / "val"))
    tokenizer = {"model_file": str(work.data / "tokenizer" / "joint.model")}
    for side in ("src", "trg"):
        raw["data"][side].update(
            level="bpe",
            tokenizer_type="sentencepiece",
            tokenizer_cfg=tokenizer,
            voc_file=str(work.pieces / "vocab.joeynmt"),
        )
    base = yaml.safe_load(BASE_CONFIG.read_text(encoding="utf-8"))
    recipe, dropout = base["train"], base["model"]["dropout"]
    raw["training"].update(
        learning_rate=recipe["lr"],
        learning_rate_warmup=recipe["warmup_steps"],
        # JoeyNMT's default (1e-4) is also the scheduler's floor: it would skip the first part of warm-up
        learning_rate_min=1e-8,
        updates=10**7,
        validation_freq=validate,
        early_stopping_metric="bleu",
    )
    for part in ("encoder", "decoder"):
        raw["model"][part].update(dropout=dropout, layer_norm="post")
        raw["model"][part]["embeddings"]["dropout"] = dropout
    path = work.root / "configs" / "joeynmt.yaml"
    atomic_write_text(path, yaml.safe_dump(raw, sort_keys=False))
    return path


def seqsmith_points(model_dir: Path) -> list[dict[str, float]]:
    rows = [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text("utf-8").splitlines()]
    return [
        {"step": r["step"], "minutes": r["elapsed"] / 60, "bleu": r["bleu"]}
        for r in rows
        if r["kind"] == "valid" and "bleu" in r
    ]


def joeynmt_points(log_text: str) -> list[dict[str, float]]:
    """Each greedy validation with the last logged step before it, minutes since the log's first line."""
    points, start, step = [], None, 0
    for line in log_text.splitlines():
        stamp = STAMP.match(line)
        if not stamp:
            continue
        moment = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")
        start = start or moment
        if found := STEP.search(line):
            step = int(found.group(1))
        if found := RESULT.search(line):
            minutes = (moment - start).total_seconds() / 60
            points.append({"step": step, "minutes": minutes, "bleu": float(found.group(1))})
    return points


def first_reached(points: list[dict[str, float]], threshold: float) -> float | None:
    return next((p["minutes"] for p in points if p["bleu"] >= threshold), None)


def plot(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for name, points in curves.items():
        axes.plot([p["minutes"] for p in points], [p["bleu"] for p in points], marker="o", label=name)
    axes.set_xlabel("wall-clock minutes of training")
    axes.set_ylabel("dev BLEU (greedy)")
    axes.set_title("Multi30k en->de, same Transformer and recipe")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seqsmith-validate", type=int, default=300)
    parser.add_argument("--joeynmt-validate", type=int, default=100)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "time_to_quality")
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args()
    loadavg = [round(x, 2) for x in os.getloadavg()]
    work = Workspace(args.work)
    for stale in ("seqsmith", "joeynmt"):  # a fresh start each time: seqsmith would resume otherwise
        shutil.rmtree(work.root / "runs" / stale, ignore_errors=True)
    (work.root / "logs").mkdir(parents=True, exist_ok=True)
    prepare_inputs(work)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    budget = args.minutes * 60

    ours = seqsmith_config(work, args.minutes, args.seqsmith_validate, args.threads)
    with (work.root / "logs" / "seqsmith.log").open("w", encoding="utf-8") as log:
        argv = [sys.executable, "-m", "seqsmith.cli", "train", str(ours)]
        status, _ = run_measured(argv, env, log, timeout=budget + 900)
    if status:
        raise SeqsmithError(f"seqsmith train failed: see {work.root / 'logs' / 'seqsmith.log'}")

    peer = joeynmt_config(work, args.joeynmt_validate)
    joey_log = work.root / "logs" / "joeynmt.log"
    with joey_log.open("w", encoding="utf-8") as log:
        argv = [str(ensure("joeynmt")), "-m", "joeynmt", "train", str(peer), "--skip-test"]
        try:
            status, _ = run_measured(argv, env, log, timeout=budget)
        except SeqsmithError:
            status = 0  # stopped at the budget, as intended
    if status:
        raise SeqsmithError(f"joeynmt train failed: see {joey_log}")
    found = {
        "seqsmith": seqsmith_points(work.root / "runs" / "seqsmith"),
        "joeynmt": joeynmt_points(joey_log.read_text("utf-8")),
    }
    curves = {name: [p for p in points if p["minutes"] <= args.minutes] for name, points in found.items()}
    for name, points in curves.items():
        if not points:
            raise SeqsmithError(f"no {name} validation within {args.minutes} minutes: give it more --minutes")
    reached: dict[str, dict[str, float | None]] = {}
    for threshold in THRESHOLDS:
        ours_min, peer_min = (first_reached(curves[name], threshold) for name in ("seqsmith", "joeynmt"))
        ratio = peer_min / ours_min if ours_min and peer_min else None
        reached[f"{threshold:g}"] = {"seqsmith": ours_min, "joeynmt": peer_min, "ratio_vs_joeynmt": ratio}
    # A ratio that exists even when the peer reaches none of the thresholds within the budget.
    peer_best = max(curves["joeynmt"], key=lambda p: p["bleu"])
    ours_min = first_reached(curves["seqsmith"], peer_best["bleu"])
    at_peer_best = {
        "bleu": peer_best["bleu"],
        "seqsmith": ours_min,
        "joeynmt": peer_best["minutes"],
        "ratio_vs_joeynmt": peer_best["minutes"] / ours_min if ours_min else None,
    }
    report: dict[str, Any] = {
        "benchmark": "time_to_quality",
        "settings": {**vars(args), "work": repo_path(args.work), "out": repo_path(args.out)},
        "machine": machine(loadavg),
        "curves": curves,
        "minutes_to_bleu": reached,
        "minutes_to_joeynmt_best": at_peer_best,
        "best": {name: max(p["bleu"] for p in points) for name, points in curves.items()},
    }
    benchmarks = args.out / "benchmarks"
    atomic_write_text(benchmarks / "time_to_quality.json", json.dumps(report, indent=2) + "\n")
    plot(curves, benchmarks / "time_to_quality.png")
    lines = [
        "## Time to quality (Multi30k en->de dev, greedy BLEU against wall-clock minutes)",
        "",
        f"seqsmith and JoeyNMT 2.3, same Transformer and recipe, {args.threads} threads, {args.minutes:g} "
        f"minutes each, one after the other. Produced by `{invocation()}` (the docstring says what is equal "
        "and how time is counted).",
        "",
        "![dev BLEU against minutes](benchmarks/time_to_quality.png)",
        "",
        "| dev BLEU reached | seqsmith minutes | JoeyNMT minutes | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for threshold, row in reached.items():
        shown = [f"{row[k]:.1f}" if row[k] is not None else "not reached" for k in ("seqsmith", "joeynmt")]
        ratio = f"{row['ratio_vs_joeynmt']:.1f}x" if row["ratio_vs_joeynmt"] else "-"
        lines.append(f"| {threshold} | {shown[0]} | {shown[1]} | {ratio} |")
    if at_peer_best["seqsmith"] is not None:
        lines.append(
            f"| {at_peer_best['bleu']:.2f} (JoeyNMT's best) | {at_peer_best['seqsmith']:.1f} | "
            f"{at_peer_best['joeynmt']:.1f} | {at_peer_best['ratio_vs_joeynmt']:.1f}x |"
        )
    best = report["best"]
    lines += [
        "",
        f"Best dev BLEU within the budget: seqsmith {best['seqsmith']:.2f}, JoeyNMT {best['joeynmt']:.2f}.",
    ]
    write_section(args.out / "benchmarks.md", "time_to_quality", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
