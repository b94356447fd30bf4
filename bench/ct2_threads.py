"""CTranslate2 alone at 1 and 2 threads: is the exports' 2-thread slowdown in bench/lightweight.py its own?

    python bench/ct2_threads.py       # needs runs/bench/lightweight/ctranslate2-int8 (bench/lightweight.py)

Each run is a child process that imports only ctranslate2 and sentencepiece (no torch, no seqsmith),
loads the export's files, and decodes ``--limit`` test2016 sources greedily in length-sorted batches of 32
after one untimed batch, with ``intra_threads`` 1 or 2 and one OpenMP setting in its environment. Figures:
median sentences/s of ``--runs`` children. Writes docs/benchmarks/ct2_threads.json and its section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from measure import MULTI30K_TEST, machine, repo_path
from tables import BENCHMARKS_MD, figures_path, invocation, write_section

from seqsmith.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    "default",
    "OMP_WAIT_POLICY=ACTIVE",
    "OMP_WAIT_POLICY=PASSIVE",
    "GOMP_SPINCOUNT=0",
    "OMP_PROC_BIND=false",
]


def child(export: Path, source: Path, limit: int, threads: int) -> None:
    import ctranslate2
    import sentencepiece

    pieces = sentencepiece.SentencePieceProcessor(
        model_file=str(next((export / "tokenizer").glob("*.model")))
    )
    lines = source.read_text(encoding="utf-8").splitlines()[:limit]
    batch = sorted(([*pieces.encode(line, out_type=str), "</s>"] for line in lines), key=len, reverse=True)
    translator = ctranslate2.Translator(str(export / "ctranslate2"), device="cpu", intra_threads=threads)
    translator.translate_batch(batch[:32], beam_size=1)
    start = time.perf_counter()
    for k in range(0, len(batch), 32):
        translator.translate_batch(batch[k : k + 32], beam_size=1)
    print(len(batch) / (time.perf_counter() - start))


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--export", type=Path, default=ROOT / "runs" / "bench" / "lightweight" / "ctranslate2-int8"
    )
    parser.add_argument("--source", type=Path, default=MULTI30K_TEST)
    parser.add_argument("--limit", type=int, default=320)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=figures_path("ct2_threads.json"))
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    if not (args.export / "ctranslate2").is_dir():
        sys.exit(
            f"ct2_threads: error: {args.export} holds no CTranslate2 export; run bench/lightweight.py first"
        )
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    results: dict[str, float] = {}
    for setting in SETTINGS:
        for threads in (1, 2):
            env = dict(os.environ)
            if "=" in setting:
                key, value = setting.split("=", 1)
                env[key] = value
            argv = [sys.executable, __file__, "--child", str(args.export), str(args.source), str(args.limit)]
            speeds = [
                float(
                    subprocess.run(
                        [*argv, str(threads)], env=env, check=True, capture_output=True, text=True
                    ).stdout
                )
                for _ in range(args.runs)
            ]
            results[f"{setting}/threads{threads}"] = statistics.median(speeds)
    report: dict[str, Any] = {
        "benchmark": "ct2_threads",
        "settings": {"export": repo_path(args.export), "sentences": args.limit, "runs": args.runs},
        "machine": machine(loadavg_before),
        "sentences_per_s": results,
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    lines = [
        "## CTranslate2 alone at 1 and 2 threads",
        "",
        f"`{report['settings']['export']}`, greedy, batches of 32, {args.limit} test2016 sentences, median "
        f"of {args.runs} processes that import only ctranslate2. Host: {report['machine']['processor']}. "
        f"Produced by `{invocation()}`.",
        "",
        "| environment | 1 thread | 2 threads |",
        "|---|---:|---:|",
        *(f"| {s} | {results[s + '/threads1']:.0f} | {results[s + '/threads2']:.0f} |" for s in SETTINGS),
    ]
    write_section(args.markdown, "ct2_threads", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
