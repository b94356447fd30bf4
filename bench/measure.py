"""Child processes with their peak memory, and what every benchmark records about its machine and inputs.

Every benchmark runs each system in its own process.
The peak is the child's ``VmHWM`` (high-water resident set of its own address space), polled from /proc.
``ru_maxrss`` from ``wait4`` would not do: Linux carries the parent's peak over into a forked child, so a
heavy benchmark process would set a floor under every child it measures. Where /proc is missing, the
fallback is ``ru_maxrss`` with that caveat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from tables import invocation

from seqsmith.errors import SeqsmithError
from seqsmith.fileio import read_lines
from seqsmith.hardware import cpu_name

# test2016's English side: the decoding benchmarks' default input (../shared beside the checkout)
MULTI30K_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k" / "test2016.en"


def high_water_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def run_measured(
    argv: list[str], env: dict[str, str], log: IO[str] | None, timeout: float, cwd: Path | None = None
) -> tuple[int, float]:
    """Exit status and peak resident memory in MB of a child process (see the module docstring)."""
    child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT if log else None)
    deadline = time.monotonic() + timeout
    peak: float | None = None
    while True:
        seen = high_water_mb(child.pid)
        if seen is not None:
            peak = max(peak or 0.0, seen)
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode, peak if peak is not None else usage.ru_maxrss / 1024
        if time.monotonic() > deadline:
            child.kill()
            child.wait()
            raise SeqsmithError(f"{' '.join(argv[:4])} ran past {timeout} s and was stopped")
        time.sleep(0.1)


def repo_path(path: Path | str) -> str:
    """A path as benchmarks record it: relative to the repository, not one machine's absolute path."""
    return os.path.relpath(Path(path).resolve(), Path(__file__).resolve().parents[1])


def machine(loadavg_before: list[float]) -> dict[str, object]:
    """What every benchmark JSON records about the machine and its load around the runs."""
    import torch

    return {
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loadavg_before": loadavg_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def decoding_sources(data_dir: Path, split: str, source: Path | None, limit: int) -> tuple[Path, list[str]]:
    """The first ``limit`` texts a decoding benchmark reads: ``source`` (one a line) when given, else the
    ``source`` field of ``split`` in the prepared ``data_dir``."""
    path = source or data_dir / f"{split}.jsonl"
    if not path.is_file():
        fix = "pass an existing --source FILE" if source else "prepare the data or pass --source / --data"
        raise SeqsmithError(f"{path} not found: {fix}")
    lines = read_lines(path, "source file")[:limit]
    return path, lines if source else [json.loads(line)["source"] for line in lines]


def decoding_settings(args: argparse.Namespace, source: Path, sentences: int) -> dict[str, Any]:
    """The settings a decoding benchmark's JSON records: its command, model, input and repetitions."""
    return {
        "command": invocation(),
        "model_dir": repo_path(args.model_dir),
        "source": repo_path(source),
        "sentences": sentences,
        "runs": args.runs,
        "threads": args.threads,
    }
