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


def test_decode_speed_reports_batch1_latency_as_median_and_nearest_rank_p90() -> None:
    from decode_speed import figures, latency_ms, markdown, merged_run, ratios

    seconds = [0.001 * (i + 1) for i in range(20)]  # 1..20 ms, shuffled below
    shuffled = seconds[10:] + seconds[:10]
    latency = latency_ms(shuffled)
    assert latency == pytest.approx({"median": 10.5, "p90": 18.0, "sentences": 20})
    assert latency_ms([]) is None

    reference = [[5, 6], [7]]
    row = {"seconds": [2.0, 1.0, 3.0], "outputs": [[5, 6], [8]], "latency_seconds": shuffled}
    found = figures(row, reference, limits=[10, 10], bleu=40.123)
    assert found["seconds"] == 2.0 and found["sentences_per_s"] == 1.0
    assert found["identical_to_seqsmith"] == 0.5
    assert found["latency_ms"] == latency
    without = figures({"seconds": [1.0], "outputs": reference}, reference, limits=[10, 10])
    assert without["latency_ms"] is None  # a figures file from before the latency pass

    report = {
        "settings": {
            "sentences": 2,
            "source": "s",
            "model_dir": "m",
            "threads": 2,
            "runs": 3,
            "command": "python bench/decode_speed.py",
            "latency": 20,
        },
        "machine": {"processor": "CPU X", "loadavg_before": [0, 0, 0], "loadavg_after": [0, 0, 0]},
        "results": {"seqsmith/beam5": found, "hf/beam5": without},
        "peak_rss_mb": {"seqsmith": 500.0, "hf": 700.0},
        "loaded_rss_mb": {"seqsmith": 270.4, "hf": 355.6},
    }
    text = markdown(report)
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert "Host: CPU X." in text
    assert "| 40.12 | 10.5 (18.0) | 500 MB (270) |" in rows["| seqsmith"]
    assert "| - | - | 700 MB (356) |" in rows["| hf"]  # no BLEU, no latency: a figures file from before them
    int8 = {"seqsmith/beam5": found, "seqsmith-int8/beam5": {**found, "sentences_per_s": 3.0}}
    int8["ct2-int8/beam5"] = {**found, "sentences_per_s": 2.0}
    assert ratios(int8) == {
        "ratio_vs_ctranslate2_int8": {"beam5": 0.5},
        "ratio_int8_vs_ctranslate2_int8": {"beam5": 1.5},
    }
    first = {"seconds": [2.0], "outputs": [[5]], "latency_seconds": [], "loaded_rss_mb": 280.0}
    second = {"seconds": [1.0], "outputs": [[6]], "latency_seconds": [0.1], "loaded_rss_mb": 270.0}
    assert merged_run(merged_run(None, first), second) == {
        "seconds": [2.0, 1.0],  # every turn's pass
        "outputs": [[6]],  # the last turn's outputs and latencies
        "latency_seconds": [0.1],
        "loaded_rss_mb": 270.0,
    }
    del report["loaded_rss_mb"]  # a figures file from before the loaded column
    rows = {line.split(" | ")[0]: line for line in markdown(report).splitlines() if line.startswith("| ")}
    assert rows["| seqsmith"].endswith("| 10.5 (18.0) | 500 MB |")


def test_webnlg_challenge_bleu_normalises_as_the_2017_scorer_and_reads_three_references() -> None:
    from webnlg_challenge_bleu import challenge_bleu, challenge_form

    assert challenge_form("São Paulo’s 1.5–2 m, Øresund") == ("sao paulo ' s 1 . 5 - 2 m , oresund", 0)
    assert challenge_form("Zürich 北京") == ("zurich", 2)
    same = [
        {
            "hypothesis": "THE ÁIRPORT serves Abilene, Texas.",
            "references": ["the airport serves abilene , texas ."],
        }
    ]
    assert challenge_bleu(same) == (pytest.approx(100.0), 0)
    fourth = ["a b c d e", "f g h i j", "k l m n o", "the airport serves abilene , texas ."]
    beyond = [{"hypothesis": "the airport serves abilene, Texas.", "references": fourth}]
    assert challenge_bleu(beyond)[0] == 0.0
