"""Two things the benchmark tables rest on: the command printed beside a table is the one that made it (every
flag that shapes the figures, none of the output paths, spelt so that a shell gives the script the same
words back), and the quality-diversity frontier that decides whether a point counts as more diverse."""

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


def test_the_frontier_is_the_upper_envelope_of_the_first_models_sampling() -> None:
    from quality_diversity import against_the_frontier

    results = {
        "mle": {
            "temperature 0.5": {"bleu2": 1.8, "distinct2": 0.10},
            "temperature 1.2": {"bleu2": 1.5, "distinct2": 0.70},
            "top-p 0.9": {"bleu2": 2.3, "distinct2": 0.40},
            "beam 5": {"bleu2": 0.5, "distinct2": 0.01},
        },
        "gan": {
            "temperature 1.2": {"bleu2": 1.6, "distinct2": 0.65},  # mle reaches 0.40 at >= 1.6
            "temperature 1.0": {"bleu2": 2.0, "distinct2": 0.30},  # below 0.40
            "temperature 0.5": {"bleu2": 2.9, "distinct2": 0.09},  # no mle setting is that good
        },
    }
    verdicts = against_the_frontier(results, "mle")
    assert set(verdicts) == {
        "mle, beam 5",
        "gan, temperature 1.2",
        "gan, temperature 1.0",
        "gan, temperature 0.5",
    }
    assert verdicts["mle, beam 5"] == {
        "frontier_distinct2": 0.70,
        "above_frontier": False,
        "beyond_frontier_quality": False,
    }
    assert verdicts["gan, temperature 1.2"]["frontier_distinct2"] == 0.40
    assert verdicts["gan, temperature 1.2"]["above_frontier"] is True
    assert verdicts["gan, temperature 1.0"]["above_frontier"] is False
    assert verdicts["gan, temperature 0.5"] == {
        "frontier_distinct2": None,
        "above_frontier": None,
        "beyond_frontier_quality": True,
    }
