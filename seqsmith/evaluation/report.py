"""One HTML page per model: scores, training curves, example outputs with attention, and the config.

The page is a single file with its CSS inline and its pictures next to it, referenced by relative path,
so the whole ``report/`` folder can be copied, zipped or served as it is.
"""

from __future__ import annotations

import datetime
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqsmith.errors import SeqsmithError
from seqsmith.evaluation.plots import (
    check_attention,
    plot_attention,
    plot_attention_heads,
    plot_training_curves,
)
from seqsmith.fileio import atomic_write_text
from seqsmith.specials import field_marker

_CURVE_CAPTIONS = {
    "loss_by_step": "Training and dev loss by step",
    "loss_by_time": "Training and dev loss by wall time",
    "dev_bleu": "Dev BLEU by step",
    "dev_ppl": "Dev perplexity by step",
    "learning_rate": "Learning rate",
    "objective": "What the training objective logs beside the loss (reward, baseline, entropy, ...)",
}

_CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.55;
  font: 15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans CJK SC",
  "PingFang SC", "Microsoft YaHei", "WenQuanYi Zen Hei", sans-serif; }
header { background: var(--soft); border-bottom: 1px solid var(--line); }
header .wrap { padding: 1.4rem 1.5rem 1rem; }
h1 { margin: 0 0 .2rem; font-size: 1.6rem; }
h2 { margin: 2.2rem 0 .8rem; padding-bottom: .3rem; border-bottom: 1px solid var(--line);
  font-size: 1.25rem; }
h3 { margin: 1.2rem 0 .5rem; font-size: 1rem; }
.wrap { max-width: 1100px; margin: 0 auto; padding: 0 1.5rem 3rem; }
.meta { color: var(--muted); font-size: .9rem; }
nav a { margin-right: 1rem; color: var(--accent); text-decoration: none; font-size: .95rem; }
nav a:hover { text-decoration: underline; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 1rem; font-size: .93rem; }
th, td { text-align: left; padding: .45rem .7rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, pre, .sig { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .82rem; }
.sig { color: var(--muted); word-break: break-all; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: .8rem 1rem;
  overflow-x: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 1rem; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: .6rem; background: #fff; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: var(--muted); font-size: .85rem; text-align: center; margin-top: .3rem; }
.example { border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem 1rem; margin: 0 0 1.2rem; }
.example h3 { margin-top: 0; }
.example dl { display: grid; grid-template-columns: 8.5rem 1fr; gap: .35rem 1rem; margin: 0 0 .8rem; }
.example dt { color: var(--muted); font-weight: 600; font-size: .88rem; }
.example dd { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; }
.example dd.hyp { background: #eef6ff; border-radius: 4px; padding: 0 .3rem; }
.config { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 0 1.5rem; }
.config td, .config th { padding: .25rem .6rem; }
.note { color: var(--muted); font-style: italic; }
details summary { cursor: pointer; color: var(--accent); margin: .4rem 0; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _read_config(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SeqsmithError(f"{path} is not valid JSON ({error}); re-save it or remove it") from None
    if not isinstance(config, dict):
        raise SeqsmithError(f"{path} must hold a JSON object with the config sections")
    return config


def _flatten(node: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in node.items():
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _config_html(config: dict[str, Any] | None) -> str:
    if config is None:
        return '<p class="note">No config.json in the model directory.</p>'
    parts = []
    sections = {k: v for k, v in config.items() if isinstance(v, dict)}
    loose = {k: v for k, v in config.items() if not isinstance(v, dict)}
    for name, section in [*sections.items(), *([("other", loose)] if loose else [])]:
        rows = "".join(
            f"<tr><td><code>{_e(key)}</code></td>"
            f"<td><code>{_e(json.dumps(value, ensure_ascii=False))}</code></td></tr>"
            for key, value in _flatten(section)
        )
        parts.append(
            f"<div><h3>{_e(name)}</h3><table><tr><th>key</th><th>value</th></tr>{rows}</table></div>"
        )
    raw = json.dumps(config, indent=2, ensure_ascii=False)
    details = f"<details><summary>config.json as written</summary><pre>{_e(raw)}</pre></details>"
    return f'<div class="config">{"".join(parts)}</div>{details}'


def _scores_html(scores: dict[str, Any] | None) -> str:
    if not scores:
        return '<p class="note">No scores given.</p>'
    rows = []
    for name, entry in scores.items():
        entry = entry if isinstance(entry, dict) else {"score": entry}
        value = entry.get("score")
        if isinstance(value, (int, float)):
            shown = f"{value:.4f}" if name.startswith("distinct") else f"{value:.2f}"
        else:
            shown = str(value)
        detail = entry.get("details", "")
        signature = entry.get("signature", "")
        rows.append(
            f'<tr><td>{_e(name)}</td><td class="num">{_e(shown)}</td>'
            f'<td class="sig">{_e(signature)}</td><td class="sig">{_e(detail)}</td></tr>'
        )
    header = '<tr><th>metric</th><th class="num">score</th><th>signature</th><th>details</th></tr>'
    return f"<table>{header}{''.join(rows)}</table>"


def _figure(src: str, caption: str) -> str:
    return f'<figure><img src="{_e(src)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _curves_html(model_dir: Path, report_dir: Path) -> str:
    log = model_dir / "train_log.jsonl"
    if not log.is_file():
        return '<p class="note">No train_log.jsonl in the model directory.</p>'
    paths = plot_training_curves(log, report_dir)
    if not paths:
        return '<p class="note">The training log has no rows yet.</p>'
    figures = "".join(_figure(p.name, _CURVE_CAPTIONS.get(p.stem, p.stem)) for p in paths)
    return f'<div class="grid">{figures}</div>'


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "\n".join(str(item) for item in value)
    return str(value)


def _check_examples(examples: Sequence[dict[str, Any]]) -> None:
    """Fail before drawing anything, so a bad example never leaves a half-updated report folder."""
    for index, example in enumerate(examples, 1):
        missing = [key for key in ("source", "hypothesis") if key not in example]
        if missing:
            raise SeqsmithError(
                f"example {index} lacks {', '.join(missing)}; each example needs source and hypothesis"
            )
        if example.get("attention") is None:
            continue
        source_tokens, target_tokens = example.get("source_tokens"), example.get("target_tokens")
        if source_tokens is None or target_tokens is None:
            raise SeqsmithError(
                f"example {index} has attention but no source_tokens/target_tokens to label it"
            )
        weights = np.asarray(example["attention"], dtype=float)
        try:
            check_attention(weights, 3 if weights.ndim == 3 else 2, source_tokens, target_tokens)
        except SeqsmithError as error:
            raise SeqsmithError(f"example {index}: {error}") from None


def field_spans(source_tokens: Sequence[str], fields: Sequence[str]) -> list[tuple[str, int, int]]:
    """(field, first column, end) of each input field's tokens, its marker included (none: one source)."""
    starts = [(i, name) for name in fields for i, t in enumerate(source_tokens) if t == field_marker(name)]
    starts.sort()
    ends = [i for i, _ in starts[1:]] + [len(source_tokens)]
    return [(name, start, end) for (start, name), end in zip(starts, ends)]


def _example_html(index: int, example: dict[str, Any], report_dir: Path) -> str:
    rows = [("source", example["source"], "")]
    if example.get("reference") is not None:
        references = example["reference"]
        label = "references" if isinstance(references, (list, tuple)) and len(references) > 1 else "reference"
        rows.append((label, references, ""))
    rows.append(("hypothesis", example["hypothesis"], "hyp"))
    items = "".join(
        f'<dt>{_e(label)}</dt><dd class="{css}">{_e(_text(value))}</dd>' for label, value, css in rows
    )
    picture = ""
    if example.get("attention") is not None:
        source_tokens, target_tokens = example["source_tokens"], example["target_tokens"]
        weights = np.asarray(example["attention"], dtype=float)
        spans = field_spans(source_tokens, example.get("fields", []))
        for name, start, end in spans or [("", 0, len(source_tokens))]:
            part = weights[..., start:end]
            what = f" over the field {name}" if name else ""
            path = report_dir / (f"attention_{index}_{name}.png" if name else f"attention_{index}.png")
            title = f"Example {index}: attention{what}"
            if part.ndim == 3:
                plot_attention_heads(part, source_tokens[start:end], target_tokens, path, title)
            else:
                plot_attention(part, source_tokens[start:end], target_tokens, path, title)
            caption = f"Attention of each target token (rows) over the source tokens{what} (columns)"
            picture += _figure(path.name, caption)
    return (
        f'<div class="example" id="example-{index}"><h3>Example {index}</h3><dl>{items}</dl>{picture}</div>'
    )


def write_report(
    model_dir: Path,
    scores: dict[str, Any] | None,
    examples: Sequence[dict[str, Any]],
    out: Path | None = None,
    missing: Sequence[str] = (),
) -> Path:
    """Write ``index.html`` and its pictures into ``out`` (default ``model_dir/report``); returns the page.

    ``missing`` says what the page lacks and how to get it (shown at its top).

    ``examples`` are dicts with source, reference (a string or a list), hypothesis and optionally attention
    ((target, source) or (heads, target, source) weights) with source_tokens and target_tokens, and
    ``fields`` (the input fields' names: one picture of the attention over each field).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise SeqsmithError(f"model directory {model_dir} not found")
    _check_examples(examples)
    config = _config_html(_read_config(model_dir))
    report_dir = Path(out) if out is not None else model_dir / "report"
    if report_dir.exists() and not report_dir.is_dir():
        raise SeqsmithError(f"report directory {report_dir} is a file; choose another path with out=")
    report_dir.mkdir(parents=True, exist_ok=True)
    curves = _curves_html(model_dir, report_dir)
    shown = "".join(_example_html(i, example, report_dir) for i, example in enumerate(examples, 1))
    shown = shown or '<p class="note">No examples given.</p>'
    notes = "".join(f'<p class="note">{_e(note)}</p>' for note in missing)
    sections = [
        ("scores", "Scores", _scores_html(scores)),
        ("training", "Training", curves),
        ("examples", "Examples", shown),
        ("config", "Configuration", config),
    ]
    name = model_dir.resolve().name
    return _write_page(report_dir, f"Model report: {name}", model_dir.resolve(), sections, notes)


def _write_page(
    report_dir: Path, heading: str, where: Path, sections: Sequence[tuple[str, str, str]], notes: str = ""
) -> Path:
    """``report_dir/index.html``: a header with a link to each section, then the sections."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    links = "".join(f'<a href="#{key}">{_e(title)}</a>' for key, title, _ in sections)
    body = "\n".join(
        f'<section id="{key}"><h2>{_e(title)}</h2>{html}</section>' for key, title, html in sections
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>seqsmith: {_e(heading)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><div class="wrap">
<h1>{_e(heading)}</h1>
<p class="meta">{_e(where)} &middot; written {_e(stamp)} by seqsmith</p>
<nav>{links}</nav>
</div></header>
{notes}
<main class="wrap">
{body}
</main>
</body>
</html>
"""
    index = report_dir / "index.html"
    atomic_write_text(index, page)
    return index


def write_study_report(
    report_dir: Path,
    title: str,
    header: Sequence[str],
    cells: Sequence[Sequence[str]],
    figures: Sequence[Path],
    best_yaml: str | None,
) -> Path:
    """A tuning study's page in ``report_dir`` (where its pictures are): trials, pictures, the best config."""
    table = "<table><tr>" + "".join(f"<th>{_e(cell)}</th>" for cell in header) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in cells)
    table += "</table>"
    pictures = "".join(_figure(f.name, f.stem.removeprefix("study_").replace("_", " ")) for f in figures)
    best = f"<pre>{_e(best_yaml)}</pre>" if best_yaml else '<p class="note">No trial has completed yet.</p>'
    sections = [
        ("trials", "Trials", table),
        ("pictures", "Pictures", f'<div class="grid">{pictures}</div>'),
        ("best", "Best config", best),
    ]
    return _write_page(report_dir, f"Tuning study: {title}", Path(report_dir).resolve().parent, sections)
