"""OpenMP's wait policy: does torch train and decode as fast with sleeping threads as with spinning ones?

    python bench/thread_policy.py                          # 3 alternating repeats, ~5 minutes
    python bench/thread_policy.py --repeats 1 --steps 30 --sentences 100   # a smoke run

GNU OpenMP threads spin for a while after each parallel region (OMP_WAIT_POLICY unset: libgomp's own
default), so that the next region starts at once; PASSIVE puts them to sleep. Spinning burns a core that
a tokenizer, a server thread or another process may need; sleeping costs a wake-up per region. Each
setting runs in fresh child processes (the policy is read when libgomp loads), alternating within each
repeat: training (``seqsmith train`` of configs/multi30k_en_de_tiny.yaml for ``--steps`` updates, target
tokens/s after the first 20) and decoding (beam 5 and greedy over the first ``--sentences`` test2016
sources, batched, after one untimed pass). Needs the prepared Multi30k data and the model of that config.
Writes docs/benchmarks/thread_policy.json and its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from measure import MULTI30K_TEST, machine
from tables import BENCHMARKS_MD, figures_path, invocation, publish

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "multi30k_en_de_tiny.yaml"
MODEL = ROOT / "runs" / "multi30k_en_de_tiny" / "model"
POLICIES = {"unset": None, "PASSIVE": "PASSIVE"}
DECODE = """
import json, sys, time
from seqsmith import api
generator = api.load(sys.argv[1])
lines = open(sys.argv[2], encoding="utf-8").read().splitlines()[: int(sys.argv[3])]
rates = {}
for method in ("beam", "greedy"):
    generator.generate(lines, method=method)
    start = time.perf_counter()
    generator.generate(lines, method=method)
    rates[method] = len(lines) / (time.perf_counter() - start)
print(json.dumps(rates))
"""


def environment(policy: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    return env | ({"OMP_WAIT_POLICY": policy} if policy else {})


def train_rate(policy: str | None, steps: int, threads: int) -> float:
    with tempfile.TemporaryDirectory() as work:
        overrides = [
            f"train.model_dir={work}/model",
            f"train.max_steps={steps}",
            "train.max_minutes=null",
            "train.validate_every=100000",
            "train.checkpoint_every=100000",
            "train.log_every=10",
            f"train.threads={threads}",
        ]
        argv = [sys.executable, "-m", "seqsmith.cli", "train", str(CONFIG), *overrides]
        subprocess.run(argv, cwd=ROOT, env=environment(policy), check=True, capture_output=True)
        rows = [json.loads(line) for line in Path(work, "model", "train_log.jsonl").read_text().splitlines()]
    rates = [row["tokens_per_s"] for row in rows if row["kind"] == "train" and row["step"] > 20]
    return statistics.median(rates)


def decode_rates(policy: str | None, sentences: int, threads: int) -> dict[str, float]:
    code = f"import torch; torch.set_num_threads({threads})\n" + DECODE
    argv = [sys.executable, "-c", code, str(MODEL), str(MULTI30K_TEST), str(sentences)]
    done = subprocess.run(argv, cwd=ROOT, env=environment(policy), check=True, capture_output=True)
    rates: dict[str, float] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return rates


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        "## OpenMP wait policy",
        "",
        f"`{settings['command']}`: configs/multi30k_en_de_tiny.yaml trained for {settings['steps']} "
        f"updates (median target tokens/s after the first 20) and its model decoding {settings['sentences']} "
        f"test2016 sentences, {settings['threads']} threads, fresh processes alternating, median of "
        f"{settings['repeats']}. Host: {report['machine']['processor']}; load "
        f"{report['machine']['loadavg_before']} -> {report['machine']['loadavg_after']}.",
        "",
        "| OMP_WAIT_POLICY | training tokens/s | beam 5 sentences/s | greedy sentences/s |",
        "|---|---:|---:|---:|",
    ]
    for name, row in report["results"].items():
        lines.append(f"| {name} | {row['train']:.0f} | {row['beam']:.1f} | {row['greedy']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--sentences", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=figures_path("thread_policy.json"))
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    loadavg = [round(x, 2) for x in os.getloadavg()]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in POLICIES}
    for repeat in range(args.repeats):
        order = list(POLICIES) if repeat % 2 == 0 else list(reversed(POLICIES))
        for name in order:
            policy = POLICIES[name]
            row = {"train": train_rate(policy, args.steps, args.threads)}
            row |= decode_rates(policy, args.sentences, args.threads)
            runs[name].append(row)
            print(f"thread_policy.py: repeat {repeat + 1}, {name}: {row}", flush=True)
    results = {
        name: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for name, rows in runs.items()
    }
    report = {
        "benchmark": "thread_policy",
        "settings": vars(args) | {"out": None, "markdown": None, "command": invocation()},
        "machine": machine(loadavg),
        "results": results,
        "runs": runs,
    }
    publish(report, args.out, args.markdown, "thread_policy", markdown(report))


if __name__ == "__main__":
    main()
