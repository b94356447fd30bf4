"""Training or decoding of this checkout against another git revision of seqsmith, side by side.

    python bench/compare_revisions.py --base c7be403               # 5 alternating runs each, 160 updates
    python bench/compare_revisions.py --base HEAD~3 --repeats 3 --steps 100
    python bench/compare_revisions.py --base effb176 --config configs/cmu_dog_knowledge.yaml \
        --data runs/cmu_dog_concat/data --repeats 2 --steps 100      # another model, its data prepared
    python bench/compare_revisions.py --base HEAD --decode runs/dailydialog/model --beam 5 --limit 1000

A refactor of the trainer or of search should cost no speed or memory; this says whether it did. Both
revisions run in their own processes, alternating so that a change of machine load hits both, 2 threads.
Training: the model of ``--config`` (the Multi30k Transformer of configs/multi30k_en_de_tiny.yaml unless
told) on the same prepared data (``--data``, or prepared here from the config); the figure is the median
over runs of each run's median tokens/s (train_log.jsonl rows after the first 40 updates). Decoding
(``--decode MODEL_DIR``): the first ``--limit`` sources of the model's evaluate split searched with
``--beam`` as ``Generator`` does it (one untimed pass over 32 sources first); the figures are the medians of
the timed pass's seconds and of the process's peak resident memory, and whether the revisions' outputs are
identical. Prints JSON with the machine; writes nothing to docs/ (a revision comparison is a check, not a
table). Work files go to runs/bench/compare_revisions/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from measure import decoding_sources, machine, run_measured

from seqsmith.generation.generator import Generator

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "multi30k_en_de_tiny.yaml"
WORK = ROOT / "runs" / "bench" / "compare_revisions"
# ``python -c`` puts the working directory (this checkout) first on sys.path, before PYTHONPATH: the runner
# puts its revision's tree in front itself, and checks that it imported from there
RUNNER = """
import sys
sys.path.insert(0, sys.argv[1])
from seqsmith import api
assert api.__file__.startswith(sys.argv[1]), api.__file__
api.train(api.load_config(sys.argv[2], sys.argv[3:]), show_progress=False)
"""
DECODER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from seqsmith.generation import generator as g
assert g.__file__.startswith(sys.argv[1]), g.__file__
torch.set_num_threads(2)
model = g.Generator.from_pretrained(sys.argv[2])
sources = json.loads(open(sys.argv[3], encoding="utf-8").read())
config = model.settings(beam=int(sys.argv[4]), keep_attention=False)
pieces = g.target_pieces(model.tokenizers, config)
g.search_all(model.model, sources[:32], config, pieces)
started = time.perf_counter()
found = g.search_all(model.model, sources, config, pieces)
seconds = time.perf_counter() - started
with open(sys.argv[5], "w", encoding="utf-8") as out:
    json.dump({"seconds": seconds, "outputs": [nbest[0].tokens for nbest in found]}, out)
"""


def overrides(steps: int, data: Path, model_dir: Path) -> list[str]:
    return [
        f"data.output_dir={data}",
        f"train.model_dir={model_dir}",
        f"train.max_steps={steps}",
        "train.log_every=10",
        "train.validate_every=100000",
        "train.checkpoint_every=100000",
        "train.max_minutes=null",
        "train.threads=2",
        "train.validation_bleu=false",
        "train.early_stopping_metric=loss",
        "train.patience=null",
    ]


def tokens_per_second(model_dir: Path) -> float:
    rows = [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text().splitlines()]
    return statistics.median(r["tokens_per_s"] for r in rows if r["kind"] == "train" and r["step"] > 40)


def train_runs(args: argparse.Namespace, trees: dict[str, Path]) -> dict[str, Any]:
    """Tokens/s of every training run of each revision, their medians and ratio."""
    config = args.config.resolve()
    data = args.data.resolve() if args.data else WORK / "data"
    if not args.data:
        prepare = ["prepare", str(config), f"data.output_dir={data}"]
        subprocess.run(
            [sys.executable, "-m", "seqsmith.cli", *prepare], cwd=ROOT, check=True, stdout=subprocess.DEVNULL
        )
    runs: dict[str, list[float]] = {name: [] for name in trees}
    for repeat in range(args.repeats):
        for name, tree in trees.items():
            model_dir = WORK / f"model-{name}"
            shutil.rmtree(model_dir, ignore_errors=True)
            env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
            command = [sys.executable, "-c", RUNNER, str(tree), str(config)]
            command += overrides(args.steps, data, model_dir)
            subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
            runs[name].append(tokens_per_second(model_dir))
            print(f"{name} run {repeat + 1}: {runs[name][-1]:.0f} tokens/s", file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {
        "config": str(args.config),
        "tokens_per_s": runs,
        "median": medians,
        "this_over_base": medians["this"] / medians["base"],
    }


def decode_runs(args: argparse.Namespace, trees: dict[str, Path]) -> dict[str, Any]:
    """Seconds and peak MB of every decoding run of each revision, their medians and ratios, and whether
    the revisions' outputs agree."""
    generator = Generator.from_pretrained(args.decode)
    data = Path(generator.data_config.output_dir)
    _, texts = decoding_sources(data, generator.full_config.evaluate.split, None, args.limit)
    request = WORK / "sources.json"
    request.write_text(json.dumps([generator.encode(text) for text in texts]), encoding="utf-8")
    runs: dict[str, dict[str, list[float]]] = {name: {"seconds": [], "peak_mb": []} for name in trees}
    outputs: dict[str, list[list[int]]] = {}
    for repeat in range(args.repeats):
        for name, tree in trees.items():
            result = WORK / f"decoded-{name}.json"
            command = [sys.executable, "-c", DECODER, str(tree), str(args.decode.resolve()), str(request)]
            command += [str(args.beam), str(result)]
            env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
            status, peak = run_measured(command, env, None, timeout=3600, cwd=ROOT)
            if status:
                sys.exit(f"compare_revisions: error: the {name} revision's decoding exited with {status}")
            decoded = json.loads(result.read_text(encoding="utf-8"))
            runs[name]["seconds"].append(decoded["seconds"])
            runs[name]["peak_mb"].append(peak)
            outputs[name] = decoded["outputs"]
            print(f"{name} run {repeat + 1}: {decoded['seconds']:.2f} s, {peak:.0f} MB", file=sys.stderr)
    medians = {
        name: {key: statistics.median(values) for key, values in figures.items()}
        for name, figures in runs.items()
    }
    ratios = {f"this_over_base_{key}": medians["this"][key] / medians["base"][key] for key in medians["this"]}
    return {
        "model_dir": str(args.decode),
        "beam": args.beam,
        "sentences": len(texts),
        "runs": runs,
        "identical_outputs": outputs["this"] == outputs["base"],
        "median": medians,
        **ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="git revision to compare this checkout against")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--config", type=Path, default=CONFIG, help="the model to train")
    parser.add_argument("--data", type=Path, help="its prepared data (default: prepared here)")
    parser.add_argument("--decode", type=Path, help="compare decoding with this model instead of training")
    parser.add_argument("--beam", type=int, default=5, help="with --decode: the beam (1: greedy)")
    parser.add_argument("--limit", type=int, default=1000, help="with --decode: the first N sources")
    args = parser.parse_args()
    if args.data and not (args.data / "report.json").is_file():
        parser.error(f"--data {args.data} holds no prepared data; run `seqsmith prepare {args.config}` first")
    if args.decode and not (args.decode / "config.json").is_file():
        parser.error(f"--decode {args.decode} is not a model directory (no config.json)")
    loadavg = [round(x, 2) for x in os.getloadavg()]
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    base = WORK / "base"
    add = ["git", "worktree", "add", "--detach", str(base), args.base]
    subprocess.run(add, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)  # stdout carries the JSON alone
    trees = {"base": base, "this": ROOT}
    try:
        figures = decode_runs(args, trees) if args.decode else train_runs(args, trees)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    print(json.dumps({"base": args.base, "machine": machine(loadavg), **figures}, indent=1))


if __name__ == "__main__":
    main()
