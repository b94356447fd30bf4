"""Every benchmark, one after another on this host, so that docs/benchmarks.md comes from one run.

    python bench/all.py                       # every table (hours: time to quality alone trains 2 x 60 min)
    python bench/all.py --quick               # each script's smoke settings, into runs/bench/quick/docs
    python bench/all.py --only roofline decode_speed

Each script runs in its own process, alone (two cores are one measurement at a time), with its output in
runs/bench/all/NAME.log; one that fails or lacks a trained model is reported and the others go on. The
models the decoding rows need are trained by their configs beforehand (the "needs" column below names
the command). The "host" section at the top of docs/benchmarks.md records the CPU, its flags, the load
and which scripts this run refreshed; a section that the run did not refresh keeps its own host line.
``--quick`` sets ``SEQSMITH_BENCH_DOCS`` for the scripts (bench/tables.py), so it leaves the tables alone.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from measure import machine
from tables import BENCHMARKS_MD, write_section

from seqsmith.hardware import cpu_flags

ROOT = Path(__file__).resolve().parents[1]
TINY = "runs/multi30k_en_de_tiny/model"  # configs/multi30k_en_de_tiny.yaml
STUDENT = "runs/multi30k_en_de_student/model"  # configs/multi30k_en_de_student.yaml, distilled from TINY
WEBNLG = "runs/webnlg/model"  # configs/webnlg.yaml: unseen names in byte pieces, for search_rules
TRAIN_TINY = "seqsmith prepare configs/multi30k_en_de.yaml && seqsmith train configs/multi30k_en_de_tiny.yaml"


@dataclass(frozen=True)
class Step:
    name: str
    args: list[str] = field(default_factory=list)
    quick: list[str] = field(default_factory=list)  # added to args by --quick
    needs: dict[str, str] = field(default_factory=dict)  # a path that must exist -> the command that makes it

    @property
    def script(self) -> str:
        return f"bench/{self.name}.py"


STEPS = [
    Step("train_throughput", quick=["--repeats", "1", "--steps", "10", "--warmup", "2"]),
    Step("train_length_scaling", quick=["--steps", "2", "--repeats", "1"]),
    Step("architectures", quick=["--repeats", "1", "--steps", "20", "--sentences", "50"]),
    Step(
        "decode_speed",
        ["--model-dir", TINY],
        ["--limit", "100", "--runs", "2", "--latency", "20"],
        {TINY: TRAIN_TINY},
    ),
    Step("decode_scaling", ["--model-dir", TINY], ["--limit", "50", "--runs", "1"], {TINY: TRAIN_TINY}),
    Step("decode_step", ["--model-dir", TINY], ["--quick"], {TINY: TRAIN_TINY}),
    Step("batch1_latency", ["--model-dir", TINY], ["--sentences", "10", "--passes", "2"], {TINY: TRAIN_TINY}),
    Step(
        "lightweight",
        quick=["--runs", "1", "--latency-sentences", "10", "--limit", "64"],
        needs={TINY: TRAIN_TINY, STUDENT: f"seqsmith distill {TINY} configs/multi30k_en_de_student.yaml"},
    ),
    Step(
        "ct2_threads",
        quick=["--runs", "1", "--limit", "64"],
        needs={"runs/bench/lightweight/ctranslate2-int8": "python bench/lightweight.py"},
    ),
    Step("objective_cost", ["--model-dir", TINY], ["--updates", "3", "--repeats", "1"], {TINY: TRAIN_TINY}),
    Step("serve_load", [TINY], ["--minutes", "0.2", "--baseline-minutes", "0.1"], {TINY: TRAIN_TINY}),
    Step(
        "thread_policy",
        quick=["--repeats", "1", "--steps", "30", "--sentences", "50"],
        needs={TINY: TRAIN_TINY},
    ),
    Step(
        "search_rules",
        ["--model-dir", WEBNLG, "--data", "runs/webnlg_unseen/data"],
        ["--limit", "50", "--runs", "1"],
        {WEBNLG: "docs/results.md, WebNLG", "runs/webnlg_unseen/data": "docs/results.md, WebNLG"},
    ),
    Step("data_memory", quick=["--repeats", "1"]),
    Step("time_to_quality", quick=["--minutes", "3"]),
    Step("roofline", quick=["--quick"]),  # last: it reads train_throughput's and decode_speed's figures
]


def run(step: Step, quick: bool, logs: Path, env: dict[str, str]) -> str:
    """Run one script; what happened, for the host section."""
    missing = [f"{path} (`{command}`)" for path, command in step.needs.items() if not (ROOT / path).exists()]
    if missing:
        return "skipped: needs " + "; ".join(missing)
    argv = [sys.executable, step.script, *step.args, *(step.quick if quick else [])]
    print(f"bench/all.py: {' '.join(argv[1:])}", flush=True)
    started = time.monotonic()
    with (logs / f"{step.name}.log").open("w", encoding="utf-8") as log:
        code = subprocess.run(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    minutes = (time.monotonic() - started) / 60
    outcome = "ran" if code == 0 else f"FAILED (exit {code}, runs/bench/all/{step.name}.log)"
    return f"{outcome} in {minutes:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke settings, tables left alone")
    parser.add_argument("--only", nargs="+", choices=[step.name for step in STEPS], default=None)
    args = parser.parse_args()
    env = dict(os.environ)
    if args.quick:
        docs = ROOT / "runs" / "bench" / "quick" / "docs"
        (docs / "benchmarks").mkdir(parents=True, exist_ok=True)
        env["SEQSMITH_BENCH_DOCS"] = str(docs)
    logs = ROOT / "runs" / "bench" / "all"
    logs.mkdir(parents=True, exist_ok=True)
    loadavg = [round(x, 2) for x in os.getloadavg()]
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    outcomes = {
        step.name: run(step, args.quick, logs, env)
        for step in STEPS
        if not args.only or step.name in args.only
    }
    host = machine(loadavg)
    vector = sorted(flag for flag in cpu_flags() if flag.startswith(("avx", "amx", "fma", "f16c")))
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    lines = [
        "## Host of the last `bench/all.py` run",
        "",
        f"{host['processor']}, {host['cpus']} CPUs, {host['platform']}, Python {host['python']}, torch "
        f"{host['torch']}; revision {revision.stdout.strip() or 'unknown'}, started {started}; load average "
        f"{host['loadavg_before']} before, {host['loadavg_after']} after"
        + (" (`--quick`: smoke settings)" if args.quick else "")
        + ".",
        "",
        f"Vector flags: {', '.join(vector) or 'none reported'}.",
        "",
        "| script | this run |",
        "|---|---|",
        *(f"| `bench/{name}.py` | {outcome} |" for name, outcome in outcomes.items()),
    ]
    markdown = Path(env["SEQSMITH_BENCH_DOCS"]) / "benchmarks.md" if args.quick else BENCHMARKS_MD
    write_section(markdown, "host", "\n".join(lines), first=True)
    print("\n".join(lines))
    if any("FAILED" in outcome for outcome in outcomes.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
