"""Training curves and attention heatmaps as PNG files.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas, never through
pyplot, so plotting works without a display, keeps no global state and is safe inside a server. Each
``*_figure`` function returns the figure (tests and notebooks inspect it); the ``plot_*`` functions save it.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import font_manager, rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_path

# Fonts with Chinese and Japanese glyphs, in order of preference; the first one installed is used.
_CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Heiti SC",
)
_CJK_FILE_HINTS = ("cjk", "wqy", "droidsansfallback", "simhei", "msyh", "pingfang", "sourcehan", "uming")
_TRAIN_KEYS = ("step", "elapsed", "lr", "loss")
_VALID_KEYS = ("step", "elapsed", "loss")
_STANDARD_TRAIN_KEYS = {*_TRAIN_KEYS, "epoch", "tokens_per_s"}  # the trainer's own; the rest: objective


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """Family name of an installed CJK-capable font, or None (labels then show boxes, nothing fails)."""
    known = {entry.name for entry in font_manager.fontManager.ttflist}
    for family in _CJK_FAMILIES:
        if family in known:
            return family
    # A font installed after matplotlib built its cache is not in ttflist yet: look at the files.
    for path in font_manager.findSystemFonts():
        if any(hint in Path(path).name.lower() for hint in _CJK_FILE_HINTS):
            try:
                font_manager.fontManager.addfont(path)
                return font_manager.FontProperties(fname=path).get_name()
            except (OSError, RuntimeError, ValueError):
                continue
    return None


@contextmanager
def _text_style() -> Iterator[None]:
    """DejaVu Sans for Latin, a CJK fallback for Chinese; a missing glyph only warns, so hush it."""
    family = ["DejaVu Sans", *([cjk_font()] if cjk_font() else [])]
    font_log = logging.getLogger("matplotlib.font_manager")
    level = font_log.level
    font_log.setLevel(logging.ERROR)
    try:
        with rc_context({"font.family": family}), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from")
            warnings.filterwarnings("ignore", message=r"Matplotlib currently does not support")
            yield
    finally:
        font_log.setLevel(level)


def _save(figure: Figure, path: Path) -> Path:
    """Save through a temporary name so a crash never leaves a truncated PNG."""
    with atomic_path(Path(path)) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    return Path(path)


def read_training_log(log_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, valid rows) of a JSON-lines training log; rows of other kinds are ignored.

    A last line without its newline is a write still in progress (the trainer is running) and is skipped
    if it does not parse; a broken line anywhere else is an error naming the line.
    """
    log_path = Path(log_path)
    if not log_path.is_file():
        raise SeqsmithError(
            f"training log {log_path} not found; the trainer writes train_log.jsonl in model_dir"
        )
    text = log_path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    train: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise SeqsmithError(f"training log {log_path} line {number} is not valid JSON: {error}") from None
        if not isinstance(row, dict) or row.get("kind") not in ("train", "valid"):
            continue
        required = _TRAIN_KEYS if row["kind"] == "train" else _VALID_KEYS
        missing = [key for key in required if not isinstance(row.get(key), (int, float))]
        if missing:
            raise SeqsmithError(
                f"training log {log_path} line {number}: {row['kind']} row lacks numeric {', '.join(missing)}"
            )
        (train if row["kind"] == "train" else valid).append(row)
    return train, valid


def _time_unit(seconds: float) -> tuple[str, float]:
    if seconds < 120:
        return "seconds", 1.0
    if seconds < 7200:
        return "minutes", 60.0
    return "hours", 3600.0


def _column(rows: Sequence[dict[str, Any]], key: str, scale: float = 1.0) -> list[float]:
    return [float(row[key]) / scale for row in rows]


def _loss_axes(axes: Axes, train: Sequence[dict[str, Any]], valid: Sequence[dict[str, Any]], x: str) -> None:
    scale = 1.0
    if x == "elapsed":
        unit, scale = _time_unit(max(float(row["elapsed"]) for row in [*train, *valid]))
        axes.set_xlabel(f"wall time ({unit})")
    else:
        axes.set_xlabel("training step")
    if train:
        axes.plot(_column(train, x, scale), _column(train, "loss"), label="train", color="#4c72b0", lw=1.2)
    if valid:
        axes.plot(
            _column(valid, x, scale), _column(valid, "loss"), "o-", label="dev", color="#dd8452", lw=1.5
        )
    axes.set_ylabel("loss per token")
    axes.grid(alpha=0.3)
    axes.legend()


def training_figures(train: Sequence[dict[str, Any]], valid: Sequence[dict[str, Any]]) -> dict[str, Figure]:
    """Figures by file stem: loss by step and by wall time, dev BLEU and perplexity, learning rate.

    A figure is left out when the log has no data for it (no BLEU when validation_bleu is off).
    """
    figures: dict[str, Figure] = {}
    if not train and not valid:
        return figures
    for stem, x, title in (
        ("loss_by_step", "step", "Loss by step"),
        ("loss_by_time", "elapsed", "Loss by time"),
    ):
        figure = Figure(figsize=(7, 4.2))
        axes = figure.add_subplot()
        _loss_axes(axes, train, valid, x)
        axes.set_title(title)
        figures[stem] = figure
    scored = [row for row in valid if isinstance(row.get("bleu"), (int, float))]
    with_ppl = [
        row for row in valid if isinstance(row.get("ppl"), (int, float)) and math.isfinite(row["ppl"])
    ]
    for stem, rows, key, label in (
        ("dev_bleu", scored, "bleu", "BLEU"),
        ("dev_ppl", with_ppl, "ppl", "perplexity"),
    ):
        if not rows:
            continue
        figure = Figure(figsize=(7, 4.2))
        axes = figure.add_subplot()
        axes.plot(_column(rows, "step"), _column(rows, key), "o-", color="#55a868")
        axes.set_xlabel("training step")
        axes.set_ylabel(f"dev {label}")
        axes.set_title(f"Dev {label}")
        axes.grid(alpha=0.3)
        if key == "ppl":
            axes.set_yscale("log")
        figures[stem] = figure
    if train:
        figure = Figure(figsize=(7, 4.2))
        axes = figure.add_subplot()
        axes.plot(_column(train, "step"), _column(train, "lr"), color="#8172b3")
        axes.set_xlabel("training step")
        axes.set_ylabel("learning rate")
        axes.set_title("Learning rate schedule")
        axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        axes.grid(alpha=0.3)
        figures["learning_rate"] = figure
    if extra := objective_figures(train):
        figures["objective"] = extra
    return figures


def objective_figures(train: Sequence[dict[str, Any]]) -> Figure | None:
    """One panel per figure the objective logs beside the loss (reward, baseline, entropy, ...)."""
    keys = sorted(
        {key for row in train for key, value in row.items() if isinstance(value, (int, float))}
        - _STANDARD_TRAIN_KEYS
    )
    if not keys:
        return None
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure = Figure(figsize=(3.6 * columns, 2.7 * rows), layout="constrained")
    for index, key in enumerate(keys, 1):
        axes = figure.add_subplot(rows, columns, index)
        points = [row for row in train if isinstance(row.get(key), (int, float))]
        axes.plot(_column(points, "step"), _column(points, key), color="#4c72b0", lw=1.0)
        axes.set_title(key, fontsize=10)
        axes.set_xlabel("training step", fontsize=8)
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3)
    figure.suptitle("What the objective logs, by step")
    return figure


def plot_training_curves(log_path: Path, out_dir: Path) -> list[Path]:
    """PNG files of the curves in ``out_dir`` (none when the log has no rows yet)."""
    train, valid = read_training_log(log_path)
    with _text_style():
        return [
            _save(figure, Path(out_dir) / f"{stem}.png")
            for stem, figure in training_figures(train, valid).items()
        ]


def check_attention(
    weights: Any, ndim: int, source_tokens: Sequence[str], target_tokens: Sequence[str]
) -> np.ndarray:
    array = np.asarray(weights, dtype=float)
    expected = "(heads, target, source)" if ndim == 3 else "(target, source)"
    if array.ndim != ndim:
        raise SeqsmithError(f"attention weights must have shape {expected}; got {array.ndim} dimensions")
    if array.shape[-2:] != (len(target_tokens), len(source_tokens)):
        raise SeqsmithError(
            f"attention weights of shape {array.shape} do not match {len(target_tokens)} target and "
            f"{len(source_tokens)} source tokens; expected shape {expected}"
        )
    return array


def _heatmap(
    axes: Axes,
    weights: np.ndarray,
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    labels: tuple[bool, bool],
) -> Any:
    image = axes.imshow(
        weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=max(float(weights.max()), 1e-9)
    )
    axes.set_xticks(range(len(source_tokens)))
    axes.set_yticks(range(len(target_tokens)))
    axes.set_xticklabels(source_tokens if labels[0] else [], rotation=90, fontsize=9)
    axes.set_yticklabels(target_tokens if labels[1] else [], fontsize=9)
    if labels[0]:
        axes.set_xlabel("source")
    if labels[1]:
        axes.set_ylabel("target")
    return image


def _cell_size(count: int) -> float:
    return min(max(0.32 * count, 2.5), 16.0)


def attention_figure(
    weights: Any, source_tokens: Sequence[str], target_tokens: Sequence[str], title: str | None = None
) -> Figure:
    array = check_attention(weights, 2, source_tokens, target_tokens)
    figure = Figure(figsize=(_cell_size(len(source_tokens)) + 1.5, _cell_size(len(target_tokens)) + 1.0))
    axes = figure.add_subplot()
    image = _heatmap(axes, array, source_tokens, target_tokens, (True, True))
    figure.colorbar(image, ax=axes, label="attention weight")
    axes.set_title(title or "Attention")
    return figure


def plot_attention(
    weights: Any,
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    path: Path,
    title: str | None = None,
) -> Path:
    """Heatmap of one (target, source) attention matrix with token labels."""
    with _text_style():
        return _save(attention_figure(weights, source_tokens, target_tokens, title), path)


def attention_heads_figure(
    weights: Any, source_tokens: Sequence[str], target_tokens: Sequence[str], title: str | None = None
) -> Figure:
    array = check_attention(weights, 3, source_tokens, target_tokens)
    heads = array.shape[0]
    if heads == 0:
        raise SeqsmithError("attention weights have no heads (shape starts with 0)")
    columns = math.ceil(math.sqrt(heads))
    rows = math.ceil(heads / columns)
    width, height = _cell_size(len(source_tokens)), _cell_size(len(target_tokens))
    figure = Figure(figsize=(columns * width + 1.5, rows * height + 1.0), layout="constrained")
    images = []
    for head in range(heads):
        axes = figure.add_subplot(rows, columns, head + 1)
        labels = (head // columns == rows - 1 or head + columns >= heads, head % columns == 0)
        images.append(_heatmap(axes, array[head], source_tokens, target_tokens, labels))
        axes.set_title(f"head {head + 1}", fontsize=10)
    figure.colorbar(images[-1], ax=figure.axes, label="attention weight", shrink=0.8)
    figure.suptitle(title or "Attention by head")
    return figure


def plot_attention_heads(
    weights: Any,
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    path: Path,
    title: str | None = None,
) -> Path:
    """A grid of heatmaps, one panel per head, for (heads, target, source) weights."""
    with _text_style():
        return _save(attention_heads_figure(weights, source_tokens, target_tokens, title), path)


def study_figures(
    rows: Sequence[dict[str, Any]], importances: dict[str, float], metric: str, lower_is_better: bool
) -> dict[str, Figure]:
    """A tuning study's pictures: the metric of every trial with the best so far, each trial's dev curve,
    and the keys' importances (when there are enough trials to estimate them)."""
    figures: dict[str, Figure] = {}
    scored = [row for row in rows if row["state"] == "complete"]
    if scored:
        figure = Figure(figsize=(7, 4.2))
        axes = figure.add_subplot()
        axes.plot(
            [r["trial"] for r in scored], [r["value"] for r in scored], "o", color="#4c72b0", label="complete"
        )
        pick = min if lower_is_better else max
        best = [pick(r["value"] for r in scored[: i + 1]) for i in range(len(scored))]
        axes.step([r["trial"] for r in scored], best, where="post", color="#c44e52", label="best so far")
        pruned = [r for r in rows if r["state"] == "pruned" and r.get("curve")]
        if pruned:
            axes.plot(
                [r["trial"] for r in pruned],
                [r["curve"][-1][1] for r in pruned],
                "x",
                color="#8c8c8c",
                label="pruned (last dev value)",
            )
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("trial")
        axes.set_ylabel(f"dev {metric}")
        axes.set_title(f"Dev {metric} by trial")
        axes.legend()
        axes.grid(alpha=0.3)
        figures["study_trials"] = figure
    curves = [row for row in rows if row.get("curve")]
    if curves:
        figure = Figure(figsize=(7, 4.2))
        axes = figure.add_subplot()
        for row in curves:
            steps, values = zip(*row["curve"])
            style = "-" if row["state"] == "complete" else ":"
            axes.plot(
                steps, values, style, lw=1.0, label=f"trial {row['trial']}" if len(curves) <= 10 else None
            )
        axes.set_xlabel("training step")
        axes.set_ylabel(f"dev {metric}")
        axes.set_title("Dev curves (dotted: pruned or unfinished)")
        if len(curves) <= 10:
            axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
        figures["study_curves"] = figure
    if importances:
        keys = list(importances)[::-1]
        figure = Figure(figsize=(7, 0.5 * len(keys) + 1.5))
        axes = figure.add_subplot()
        axes.barh(keys, [importances[k] for k in keys], color="#55a868")
        axes.set_xlabel("importance (PED-ANOVA)")
        axes.set_title(f"What moved dev {metric}")
        figures["study_importances"] = figure
    return figures


def plot_study(
    rows: Sequence[dict[str, Any]], importances: dict[str, float], metric: str, lower: bool, out_dir: Path
) -> list[Path]:
    with _text_style():
        return [
            _save(figure, Path(out_dir) / f"{stem}.png")
            for stem, figure in study_figures(rows, importances, metric, lower).items()
        ]
