"""What a study leaves in its directory: ``trials.md`` and ``trials.json`` (every trial), ``best.yaml`` (the
best trial's config, runnable as it is) and ``report/`` (pictures and an HTML page)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from seqsmith.config import LOWER_IS_BETTER
from seqsmith.evaluation.plots import plot_study
from seqsmith.evaluation.report import write_study_report
from seqsmith.fileio import atomic_write_text
from seqsmith.tuning.study import Study, best_config, counted, importances, trial_rows

HEADER = ["trial", "state", "value", "steps", "minutes", "values", "note"]


@dataclass
class StudySummary:
    directory: Path
    trained: int  # trials that trained (complete or pruned from their curve)
    best_trial: int | None
    best_value: float | None
    best_values: dict[str, Any]
    best_config: Path | None
    report: Path


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cells(row: dict[str, Any]) -> list[str]:
    values = ", ".join(f"{k}={_cell(v)}" for k, v in row["params"].items())
    return [
        str(row["trial"]),
        row["state"],
        _cell(row["value"]),
        _cell(row["steps"]),
        _cell(row["minutes"]),
        values,
        row["note"],
    ]


def summarize(opened: Study) -> StudySummary:
    study, directory, metric = opened.study, opened.directory, opened.trials.metric
    rows = trial_rows(study)
    cells = [_cells(row) for row in rows]
    table = "\n".join(
        ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        + ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
    )
    atomic_write_text(directory / "trials.md", f"Dev {metric} of every trial of {directory}\n\n{table}\n")
    atomic_write_text(directory / "trials.json", json.dumps(rows, indent=1, default=str) + "\n")
    best = best_config(opened)
    best_path, best_text = None, None
    if best is not None:
        trial = study.best_trial
        best_text = (
            f"# The best trial ({trial.number}: dev {metric} {trial.value:.3f}) of the study {directory}\n"
            + yaml.safe_dump(best, sort_keys=False, allow_unicode=True)
        )
        best_path = directory / "best.yaml"
        atomic_write_text(best_path, best_text)
    weights = importances(study)
    report_dir = directory / "report"
    figures = plot_study(rows, weights, metric, metric in LOWER_IS_BETTER, report_dir)
    page = write_study_report(report_dir, f"{directory.name} ({metric})", HEADER, cells, figures, best_text)
    complete = best is not None
    return StudySummary(
        directory,
        sum(counted(t) for t in study.get_trials(deepcopy=False)),
        study.best_trial.number if complete else None,
        study.best_trial.value if complete else None,
        study.best_trial.params if complete else {},
        best_path,
        page,
    )
