"""Peak memory of the data pipeline on the couplet corpus: prepare, then iterate one epoch of batches.

    python bench/data_memory.py     # 1k, 100k and all 734k pairs; writes docs/benchmarks/data_memory.json

Each step runs in its own subprocess and its peak RSS is the child's ``ru_maxrss`` (from ``os.wait4``), so
steps do not hide each other's peaks. ``baseline`` is a child that only imports torch and the batching module;
the 1k slice shows the fixed cost of the code path (libtorch pages touched by the first batch). What grows
with the corpus is only the per-example index (offsets, lengths, the sampler's sort and batch arrays, ~60
bytes an example): batches are read with pread, so no token ids stay resident. Run from the repository root,
beside ../shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from seqsmith.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"1k": 1_000, "100k": 100_000, "all": None}  # 1k: the fixed cost of the code path


def child_prepare(config_path: str) -> dict[str, Any]:
    from seqsmith.config import load_config
    from seqsmith.data.prepare import prepare

    report = prepare(load_config(config_path), progress=False)
    return {"examples": report.splits["train"].kept, "vocab_size": report.source_vocab_size}


def child_iterate(directory: str, batch_tokens: str) -> dict[str, Any]:
    from seqsmith.data.batching import TokenBatchSampler, iterate
    from seqsmith.data.binarize import BinarizedSplit

    split = BinarizedSplit(directory, "train")
    sampler = TokenBatchSampler(split.source_lengths, split.target_lengths, int(batch_tokens), seed=1)
    batches = examples = 0
    for batch in iterate(split, sampler, epoch=0):
        batches, examples = batches + 1, examples + len(batch)
    return {
        "examples": examples,
        "batches": batches,
        "padding_efficiency": round(sampler.padding_efficiency(0), 4),
    }


def child_baseline() -> dict[str, Any]:
    import seqsmith.data.batching  # noqa: F401 - the import is what is measured

    return {}


def run_child(*arguments: str) -> dict[str, Any]:
    """Run this file as a child; returns its JSON result plus seconds and peak RSS (MB)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", *arguments], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"child {' '.join(arguments)} failed with exit code {process.returncode}")
    result: dict[str, Any] = json.loads(output)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    result["peak_rss_mb"] = round(usage.ru_maxrss * scale / 2**20, 1)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "seqsmith-bench-data")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks" / "data_memory.json")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, *rest = args.child
        children: dict[str, Callable[..., dict[str, Any]]] = {
            "prepare": child_prepare,
            "iterate": child_iterate,
            "baseline": child_baseline,
        }
        print(json.dumps(children[name](*rest)))
        return
    if not (ROOT.parent / "shared" / "data" / "couplet").is_dir():
        raise SystemExit("needs ../shared/data/couplet beside the repository")
    base = yaml.safe_load((ROOT / "configs" / "couplet.yaml").read_text(encoding="utf-8"))
    runs = []
    for label, pairs in SIZES.items():
        raw = json.loads(json.dumps(base))
        raw["data"]["max_train_examples"] = pairs
        raw["data"]["output_dir"] = str(args.cache / f"couplet-{label}")
        config_path = args.cache / f"couplet-{label}.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        prepared = run_child("prepare", str(config_path))
        iterated = run_child("iterate", raw["data"]["output_dir"], str(raw["train"]["batch_tokens"]))
        runs.append({"slice": label, "prepare": prepared, "iterate_one_epoch": iterated})
        print(json.dumps(runs[-1]), flush=True)
    result = {
        "what": "couplet corpus (configs/couplet.yaml, char tokenizer): peak RSS of prepare and of one epoch",
        "batch_tokens": base["train"]["batch_tokens"],
        "baseline_import_torch": run_child("baseline"),
        "runs": runs,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
    }
    atomic_write_text(args.output, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
