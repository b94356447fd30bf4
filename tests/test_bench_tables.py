"""The command printed beside a benchmark table is the one that made it: every flag that shapes the figures,
none of the output paths, spelt so that a shell gives the script the same words back."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from tables import invocation

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("docs", [None, "/tmp/scratch"])
def test_invocation_keeps_the_flags_and_drops_where_the_figures_go(
    monkeypatch: pytest.MonkeyPatch, docs: str | None
) -> None:
    flags = ["--model-dir", "runs/a b/model", "--runs=3", "--limit", "50"]
    outputs = ["--out", "x.json", "--markdown=m.md"]
    argv = [*flags[:2], *outputs[:2], flags[2], outputs[2], *flags[3:]]
    monkeypatch.setattr(sys, "argv", [str(ROOT / "bench" / "decode_scaling.py"), *argv])
    if docs:
        monkeypatch.setenv("SEQSMITH_BENCH_DOCS", docs)
    else:
        monkeypatch.delenv("SEQSMITH_BENCH_DOCS", raising=False)
    shown = invocation()
    words = shlex.split(shown)
    prefix = ["SEQSMITH_BENCH_DOCS=DIR"] if docs else []
    assert words == [*prefix, "python", "bench/decode_scaling.py", *flags]
