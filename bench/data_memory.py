"""Peak memory of the data pipeline on the couplet corpus, seqsmith vs JoeyNMT 2.3, against corpus size.

    python bench/data_memory.py     # 1k, 100k and all 734k pairs, 3 runs each; writes
                                    # docs/benchmarks/data_memory.json and its section of docs/benchmarks.md

Each step runs in its own subprocess and its peak RSS is the child's ``ru_maxrss`` (from ``os.wait4``), so
steps do not hide each other's peaks. seqsmith: ``prepare`` (tokenize, vocabulary, binarize) then one epoch of
batches read back from the binarized files. JoeyNMT (bench/joeynmt_data_child.py, in its own virtualenv):
``load_data`` (it tokenizes and keeps the corpus in memory) then one epoch of its token batches; same
character tokenization, same token budget (configs/couplet.yaml). ``baseline`` is a child that only imports
torch and seqsmith's batching module; the 1k slice shows the fixed cost of each code path. What grows with
the corpus in seqsmith is only the per-example index (offsets, lengths, the sampler's sort and batch arrays,
~60 bytes an example): batches are read with pread, so no token ids stay resident. Figures are medians over
``--repeats`` runs, spread = (max - min) / median. Run from the repository root, beside ../shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from peers import ensure
from tables import figures_path, invocation, write_section

from seqsmith.fileio import atomic_write_text
from seqsmith.hardware import cpu_name

ROOT = Path(__file__).resolve().parents[1]
COUPLETS = ROOT.parent / "shared" / "data" / "couplet" / "train"
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


def run_child(argv: list[str]) -> dict[str, Any]:
    """Run one child; returns its JSON result plus seconds and peak RSS (MB)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+", encoding="utf-8") as errors:  # JoeyNMT logs to stderr: keep it apart
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert process.stdout is not None
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        if code := os.waitstatus_to_exitcode(status):
            errors.seek(0)
            tail = "".join(errors.readlines()[-20:])
            raise SystemExit(f"child {' '.join(argv)} failed with exit code {code}:\n{tail}")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    result["peak_rss_mb"] = usage.ru_maxrss * scale / 2**20
    result["seconds"] = time.perf_counter() - start
    return result


def median_of(repeats: int, argv: list[str]) -> dict[str, Any]:
    """The child's result with median peak RSS and seconds over ``repeats`` runs, and their spreads."""
    runs = [run_child(argv) for _ in range(repeats)]
    result = dict(runs[0])
    for key in ("peak_rss_mb", "seconds"):
        values = [run[key] for run in runs]
        middle = statistics.median(values)
        result[key] = round(middle, 1)
        result[f"{key}_spread"] = round((max(values) - min(values)) / middle, 3)
    return result


def ours(*arguments: str) -> list[str]:
    return [sys.executable, __file__, "--child", *arguments]


def corpus_slice(cache: Path, label: str, pairs: int | None) -> Path:
    """Prefix of a plain-text copy of the first ``pairs`` couplets (the corpus itself for all of them)."""
    if pairs is None:
        return COUPLETS
    prefix = cache / f"couplet-{label}-text" / "train"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("in", "out"):
        with (COUPLETS.parent / f"train.{suffix}").open(encoding="utf-8") as source:
            lines = [next(source) for _ in range(pairs)]
        Path(f"{prefix}.{suffix}").write_text("".join(lines), encoding="utf-8")
    return prefix


def section(result: dict[str, Any]) -> str:
    lines = [
        "## Data pipeline memory against corpus size (couplets, 734k pairs)",
        "",
        "Peak resident memory of the processes that read a slice of the couplet corpus and iterate one "
        f"epoch of {result['batch_tokens']:,}-token batches, character tokens; median of "
        f"{result['repeats']} runs (spread in brackets). seqsmith prepares once (tokenize, vocabulary, "
        "binarize) and streams batches from the binarized files; JoeyNMT 2.3 loads and keeps the whole "
        "corpus in memory. `import torch` "
        f"alone is {result['baseline_import_torch']['peak_rss_mb']:.0f} MB of the iteration figures. "
        f"Produced by `{invocation()}`.",
        "",
        "| pairs | seqsmith prepare: peak RSS | seqsmith epoch: peak RSS | JoeyNMT load + epoch: peak RSS "
        "| JoeyNMT / seqsmith peak | seqsmith seconds (prepare + epoch) | JoeyNMT seconds "
        "| seqsmith padding efficiency |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in result["runs"]:
        prepare, epoch, peer = run["prepare"], run["iterate_one_epoch"], run["joeynmt"]
        memory = [f"{m['peak_rss_mb']:.0f} MB ({m['peak_rss_mb_spread']:.0%})" for m in (prepare, epoch)]
        memory.append(f"{peer['peak_rss_mb']:.0f} MB ({peer['peak_rss_mb_spread']:.0%})")
        lines.append(
            f"| {epoch['examples']:,} | {' | '.join(memory)} "
            f"| {run['ratio_vs_joeynmt']['peak_rss']:.2f}x "
            f"| {prepare['seconds']:.1f} + {epoch['seconds']:.1f} | {peer['seconds']:.1f} "
            f"| {epoch['padding_efficiency']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "seqsmith-bench-data")
    parser.add_argument("--output", type=Path, default=figures_path("data_memory.json"))
    parser.add_argument("--repeats", type=int, default=3)
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
    if not COUPLETS.parent.is_dir():
        raise SystemExit(f"needs {COUPLETS.parent} beside the repository")
    joeynmt = str(ensure("joeynmt"))
    peer_child = str(ROOT / "bench" / "joeynmt_data_child.py")
    base = yaml.safe_load((ROOT / "configs" / "couplet.yaml").read_text(encoding="utf-8"))
    runs = []
    for label, pairs in SIZES.items():
        raw = json.loads(json.dumps(base))
        raw["data"]["max_train_examples"] = pairs
        raw["data"]["output_dir"] = str(args.cache / f"couplet-{label}")
        config_path = args.cache / f"couplet-{label}.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        batch_tokens = str(raw["train"]["batch_tokens"])
        prepared = median_of(args.repeats, ours("prepare", str(config_path)))
        iterated = median_of(args.repeats, ours("iterate", raw["data"]["output_dir"], batch_tokens))
        prefix = str(corpus_slice(args.cache, label, pairs))
        peer = median_of(args.repeats, [joeynmt, peer_child, prefix, "in", "out", batch_tokens])
        ratio = {
            "peak_rss": peer["peak_rss_mb"] / max(prepared["peak_rss_mb"], iterated["peak_rss_mb"]),
            "seconds": peer["seconds"] / (prepared["seconds"] + iterated["seconds"]),
        }
        runs.append(
            {
                "slice": label,
                "prepare": prepared,
                "iterate_one_epoch": iterated,
                "joeynmt": peer,
                "ratio_vs_joeynmt": ratio,
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    result = {
        "what": "couplet corpus (configs/couplet.yaml, char tokenizer): peak RSS of reading it and one epoch",
        "batch_tokens": base["train"]["batch_tokens"],
        "repeats": args.repeats,
        "baseline_import_torch": median_of(args.repeats, ours("baseline")),
        "runs": runs,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": cpu_name(),
            "cpus": os.cpu_count(),
        },
    }
    atomic_write_text(args.output, json.dumps(result, indent=2) + "\n")
    write_section(args.output.parent.parent / "benchmarks.md", "data_memory", section(result))
    print(section(result))


if __name__ == "__main__":
    main()
