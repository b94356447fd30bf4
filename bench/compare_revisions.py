"""Training throughput of this checkout against another git revision of seqsmith, side by side.

    python bench/compare_revisions.py --base c7be403               # 5 alternating runs each, 160 updates
    python bench/compare_revisions.py --base HEAD~3 --repeats 3 --steps 100
    python bench/compare_revisions.py --base effb176 --config configs/cmu_dog_knowledge.yaml \
        --data runs/cmu_dog_concat/data --repeats 2 --steps 100      # another model, its data prepared

A refactor of the trainer should cost no speed; this says whether it did. Both revisions train the model of
``--config`` (the Multi30k Transformer of configs/multi30k_en_de_tiny.yaml unless told; 2 threads) on the
same prepared data (``--data``, or prepared here from the config), each run in its own
process, the two revisions alternating so that a change of machine load hits both. The figure is the median
over runs of each run's median tokens/s (train_log.jsonl rows after the first 40 updates). Prints JSON with
the machine; writes nothing to docs/ (a revision comparison is a check, not a table). Work files go to
runs/bench/compare_revisions/.
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

from measure import machine

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="git revision to compare this checkout against")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--config", type=Path, default=CONFIG, help="the model to train")
    parser.add_argument("--data", type=Path, help="its prepared data (default: prepared here)")
    args = parser.parse_args()
    config = args.config.resolve()
    if args.data and not (args.data / "report.json").is_file():
        parser.error(f"--data {args.data} holds no prepared data; run `seqsmith prepare {args.config}` first")
    loadavg = [round(x, 2) for x in os.getloadavg()]
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    base = WORK / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=ROOT, check=True)
    try:
        data = args.data.resolve() if args.data else WORK / "data"
        if not args.data:
            prepare = ["prepare", str(config), f"data.output_dir={data}"]
            command = [sys.executable, "-m", "seqsmith.cli", *prepare]
            subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        trees = {"base": base, "this": ROOT}
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
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    result = {
        "base": args.base,
        "config": str(args.config),
        "machine": machine(loadavg),
        "tokens_per_s": runs,
        "median": medians,
        "this_over_base": medians["this"] / medians["base"],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
