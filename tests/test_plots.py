"""Training curves and attention heatmaps: valid PNGs, labelled axes, the log's numbers, clear errors."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from seqsmith.errors import SeqsmithError
from seqsmith.evaluation import plots
from seqsmith.evaluation.plots import (
    attention_figure,
    attention_heads_figure,
    plot_attention,
    plot_attention_heads,
    plot_training_curves,
    read_training_log,
    training_figures,
)


def make_log(path: Path, bleu: bool = True, seconds_per_step: float = 0.5) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for step in range(10, 410, 10):
        loss = 2 + 5 * math.exp(-step / 100)
        rows.append(
            {"kind": "train", "step": step, "epoch": step // 200, "elapsed": step * seconds_per_step,
             "lr": 1e-3 * min(1.0, step / 100), "loss": loss, "tokens_per_s": 900.0}
        )  # fmt: skip
        if step % 100 == 0:
            valid = {
                "kind": "valid",
                "step": step,
                "elapsed": step * seconds_per_step + 1,
                "loss": loss + 0.3,
            }
            valid["ppl"] = math.exp(valid["loss"])
            if bleu:
                valid["bleu"] = step / 20
            rows.append(valid)
    rows.append({"kind": "note", "message": "rows of other kinds are ignored"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return rows


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100
        image.verify()


def assert_labelled(figure: Figure) -> None:
    heat_or_plot = [axes for axes in figure.axes if axes.get_label() != "<colorbar>"]
    assert heat_or_plot
    for axes in heat_or_plot:
        assert axes.get_title()
        assert axes.get_xlabel() or not any(t.get_text() for t in axes.get_xticklabels())


def test_training_curves_written_as_png(tmp_path: Path) -> None:
    make_log(tmp_path / "train_log.jsonl")
    paths = plot_training_curves(tmp_path / "train_log.jsonl", tmp_path / "out")
    assert [p.name for p in paths] == [
        "loss_by_step.png", "loss_by_time.png", "dev_bleu.png", "dev_ppl.png", "learning_rate.png"
    ]  # fmt: skip
    for path in paths:
        assert path.parent == tmp_path / "out"
        assert_png(path)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_training_figures_plot_the_logged_numbers_with_labels(tmp_path: Path) -> None:
    rows = make_log(tmp_path / "log.jsonl", seconds_per_step=3.0)
    train, valid = read_training_log(tmp_path / "log.jsonl")
    assert len(train) == 40 and len(valid) == 4
    figures = training_figures(train, valid)
    for figure in figures.values():
        axes = figure.axes[0]
        assert axes.get_xlabel() and axes.get_ylabel() and axes.get_title()
    by_step = figures["loss_by_step"].axes[0]
    lines = {line.get_label(): line for line in by_step.get_lines()}
    assert set(lines) == {"train", "dev"}
    assert list(lines["train"].get_ydata()) == [r["loss"] for r in rows if r["kind"] == "train"]
    assert list(lines["dev"].get_xdata()) == [100, 200, 300, 400]
    by_time = figures["loss_by_time"].axes[0]
    assert by_time.get_xlabel() == "wall time (minutes)"  # 400 steps x 3 s = 20 minutes
    assert by_time.get_lines()[0].get_xdata()[-1] == pytest.approx(400 * 3.0 / 60)
    bleu = figures["dev_bleu"].axes[0]
    assert bleu.get_ylabel() == "dev BLEU" and list(bleu.get_lines()[0].get_ydata()) == [5, 10, 15, 20]
    assert figures["dev_ppl"].axes[0].get_yscale() == "log"
    assert figures["learning_rate"].axes[0].get_ylabel() == "learning rate"


def test_what_an_objective_logs_gets_a_panel_per_figure() -> None:
    train = [
        {"kind": "train", "step": step, "elapsed": float(step), "lr": 1e-3, "loss": 2.0, "tokens_per_s": 9.0,
         "epoch": 1, "reward": 0.1 * step, "baseline": 0.05 * step}
        for step in range(1, 6)
    ]  # fmt: skip
    figure = training_figures(train, [])["objective"]
    panels = {axes.get_title(): axes for axes in figure.axes}
    assert set(panels) == {"baseline", "reward"}  # the trainer's own keys are plotted elsewhere
    assert list(panels["reward"].get_lines()[0].get_ydata()) == [row["reward"] for row in train]
    assert list(panels["baseline"].get_lines()[0].get_xdata()) == [1, 2, 3, 4, 5]
    assert "objective" not in training_figures(
        [{k: v for k, v in row.items() if k not in ("reward", "baseline")} for row in train], []
    )


def test_missing_bleu_and_empty_log(tmp_path: Path) -> None:
    make_log(tmp_path / "log.jsonl", bleu=False)
    names = [p.stem for p in plot_training_curves(tmp_path / "log.jsonl", tmp_path)]
    assert "dev_bleu" not in names and "dev_ppl" in names
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    assert plot_training_curves(tmp_path / "empty.jsonl", tmp_path / "none") == []


def test_bad_logs_name_the_line(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    good = json.dumps({"kind": "train", "step": 1, "elapsed": 1.0, "lr": 1e-3, "loss": 3.0})
    log.write_text(f"{good}\n{good}\n{{broken\n{good}\n", encoding="utf-8")
    with pytest.raises(SeqsmithError, match=r"log\.jsonl line 3 is not valid JSON"):
        read_training_log(log)
    log.write_text(f'{good}\n{good}\n{{"kind": "train", "st', encoding="utf-8")  # trainer still writing
    assert len(read_training_log(log)[0]) == 2
    log.write_text(f'{good}\n{{"kind": "valid", "step": 5, "elapsed": 2.0}}\n', encoding="utf-8")
    with pytest.raises(SeqsmithError, match=r"line 2: valid row lacks numeric loss"):
        read_training_log(log)
    with pytest.raises(SeqsmithError, match="not found"):
        plot_training_curves(tmp_path / "nope.jsonl", tmp_path)


SOURCE = ["我", "爱", "北京", "<eos>"]
TARGET = ["I", "love", "Beijing", "<eos>", "x"]


def test_attention_heatmap_labels_tokens(tmp_path: Path) -> None:
    weights = np.random.default_rng(0).dirichlet(np.ones(4), size=5)
    figure = attention_figure(weights.tolist(), SOURCE, TARGET, "sample")
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == SOURCE
    assert [t.get_text() for t in axes.get_yticklabels()] == TARGET
    assert (axes.get_xlabel(), axes.get_ylabel(), axes.get_title()) == ("source", "target", "sample")
    assert np.allclose(axes.images[0].get_array(), weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = plot_attention(weights, SOURCE, TARGET, tmp_path / "a" / "att.png", "sample")
    assert path == tmp_path / "a" / "att.png"
    assert_png(path)


def test_attention_without_cjk_font_still_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "cjk_font", lambda: None)
    assert_png(plot_attention(np.eye(4, 4)[:, ::-1], SOURCE, SOURCE, tmp_path / "plain.png"))


def test_attention_heads_grid(tmp_path: Path) -> None:
    weights = np.random.default_rng(1).dirichlet(np.ones(4), size=(3, 5))
    figure = attention_heads_figure(weights, SOURCE, TARGET, "layer 1")
    panels = [axes for axes in figure.axes if axes.images]
    assert [axes.get_title() for axes in panels] == ["head 1", "head 2", "head 3"]
    assert figure.get_suptitle() == "layer 1"
    for head, axes in enumerate(panels):
        assert np.allclose(axes.images[0].get_array(), weights[head])
    assert [t.get_text() for t in panels[0].get_yticklabels()] == TARGET  # first column labels the rows
    assert [t.get_text() for t in panels[2].get_xticklabels()] == SOURCE  # bottom row labels the columns
    assert_labelled(figure)
    assert_png(plot_attention_heads(weights, SOURCE, TARGET, tmp_path / "heads.png"))


def test_attention_shape_errors(tmp_path: Path) -> None:
    with pytest.raises(SeqsmithError, match=r"do not match 5 target and 4 source tokens"):
        plot_attention(np.ones((4, 5)), SOURCE, TARGET, tmp_path / "x.png")
    with pytest.raises(SeqsmithError, match=r"\(heads, target, source\)"):
        plot_attention_heads(np.ones((5, 4)), SOURCE, TARGET, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
