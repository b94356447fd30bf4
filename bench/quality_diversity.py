"""Quality against diversity: a model's sampling frontier, its beam points, and other models on one picture.

    python bench/quality_diversity.py runs/dailydialog/model                        # the MLE model alone
    python bench/quality_diversity.py runs/dailydialog/model runs/dailydialog_gan/model --names mle gan

Each model decodes its evaluate split (``--split``) under every setting: sampling at temperatures 0.5-1.2
and with top-p 0.5-0.95 (seed 1), beam 5 and diverse beam (5 beams in 5 groups). Every output set is scored
by BLEU-2 against the references (quality), distinct-2 and self-BLEU (diversity); the references' own
distinct-2 is the human ceiling. The first model's sampling settings (temperatures and top-p) make the
frontier: its distinct-2 at a BLEU-2 is the most that any of them reaches at that BLEU-2 or more (the upper
envelope). Another point counts as more diverse only where it lies above the frontier at its BLEU-2 (Caccia
et al. 2020); one whose BLEU-2 no frontier setting reaches is beyond it, which says nothing of diversity at
equal quality. Writes
docs/benchmarks/quality_diversity.json and docs/benchmarks/quality_diversity.png and prints a table;
outputs go to runs/bench/quality_diversity/.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from measure import machine, repo_path
from tables import figures_path

from seqsmith import api
from seqsmith.evaluation.metrics import distinct_n
from seqsmith.fileio import atomic_write_text, read_lines

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURES = [0.5, 0.7, 0.9, 1.0, 1.2]
TOP_P = [0.5, 0.7, 0.9, 0.95]
SETTINGS: dict[str, dict[str, Any]] = {
    **{f"temperature {t}": {"method": "sample", "temperature": t, "seed": 1} for t in TEMPERATURES},
    **{f"top-p {p}": {"method": "sample", "top_p": p, "seed": 1} for p in TOP_P},
    "beam 5": {"method": "beam", "beam_size": 5},
    "diverse beam 5x5": {"method": "diverse_beam", "beam_size": 5, "groups": 5, "diversity": 0.5},
}
METRICS = ["bleu2", "distinct2", "self_bleu"]


SAMPLING = ("temperature", "top-p")


def frontier_distinct(points: list[tuple[float, float]], bleu2: float) -> float | None:
    """The most distinct-2 that a frontier point (BLEU-2, distinct-2) reaches at ``bleu2`` or more; None when
    none reaches that BLEU-2."""
    reached = [distinct for quality, distinct in points if quality >= bleu2]
    return max(reached) if reached else None


def against_the_frontier(results: dict[str, dict[str, dict[str, float]]], first: str) -> dict[str, Any]:
    """Each point that is not the first model's sampling, placed against that model's frontier."""
    points = [
        (row["bleu2"], row["distinct2"])
        for setting, row in results[first].items()
        if setting.startswith(SAMPLING)
    ]
    verdicts: dict[str, dict[str, Any]] = {}
    for name, rows in results.items():
        for setting, row in rows.items():
            if name == first and setting.startswith(SAMPLING):
                continue
            at = frontier_distinct(points, row["bleu2"])
            verdicts[f"{name}, {setting}"] = {
                "frontier_distinct2": at,
                "above_frontier": None if at is None else row["distinct2"] > at,
                "beyond_frontier_quality": at is None,
            }
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dirs", type=Path, nargs="+")
    parser.add_argument("--names", nargs="*", help="one label per model (default: the directory names)")
    parser.add_argument("--split", default=None, help="dev or test (default: the model's evaluate.split)")
    parser.add_argument("--out", type=Path, default=figures_path("quality_diversity.json"))
    args = parser.parse_args()
    names = args.names or [path.parent.name for path in args.model_dirs]
    if len(names) != len(args.model_dirs):
        parser.error(f"--names gives {len(names)} labels for {len(args.model_dirs)} models")
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    results: dict[str, dict[str, dict[str, float]]] = {}
    human: float | None = None
    for name, model_dir in zip(names, args.model_dirs, strict=True):
        results[name] = {}
        for setting, options in SETTINGS.items():
            out = ROOT / "runs" / "bench" / "quality_diversity" / name / setting.replace(" ", "_")
            scores = api.evaluate_model(model_dir, args.split, METRICS, out=out, **options)
            results[name][setting] = {metric: scores[metric]["score"] for metric in METRICS}
            print(f"{name}, {setting}: {results[name][setting]}", flush=True)
        if human is None:  # the first model's references (all models read the same split)
            generator = api.load(model_dir)
            split = args.split or generator.full_config.evaluate.split
            rows = read_lines(Path(generator.data_config.output_dir) / f"{split}.jsonl", "prepared split")
            references = [json.loads(line)["references"][0] for line in rows if line.strip()]
            human = distinct_n(references, 2, generator.full_config.evaluate.bleu_tokenize)
    first = names[0]
    curve = [
        (results[first][f"temperature {t}"]["bleu2"], results[first][f"temperature {t}"]["distinct2"])
        for t in TEMPERATURES
    ]
    verdicts = against_the_frontier(results, first)
    report = {
        "benchmark": "quality_diversity",
        "models": {name: repo_path(path) for name, path in zip(names, args.model_dirs, strict=True)},
        "split": args.split,
        "machine": machine(loadavg_before),
        "scores": results,
        "human_distinct2": human,
        "against_the_frontier": verdicts,
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    assert human is not None  # set with the first model
    plot(results, names, curve, human, args.out.with_suffix(".png"))
    print("| model, setting | BLEU-2 | distinct-2 | self-BLEU | frontier's distinct-2 at that BLEU-2 |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        for setting, row in results[name].items():
            verdict = verdicts.get(f"{name}, {setting}")
            if verdict is None:
                shown = "(the frontier)"
            elif verdict["frontier_distinct2"] is None:
                shown = "beyond: no frontier setting reaches this BLEU-2"
            else:
                shown = f"{verdict['frontier_distinct2']:.3f}"
            cells = f"{row['bleu2']:.2f} | {row['distinct2']:.3f} | {row['self_bleu']:.2f}"
            print(f"| {name}, {setting} | {cells} | {shown} |")
    print(f"references' distinct-2: {human:.3f}")


def plot(
    results: dict[str, dict[str, dict[str, float]]],
    names: list[str],
    curve: list[tuple[float, float]],
    human: float,
    path: Path,
) -> None:
    figure = Figure(figsize=(7, 4.8), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(*zip(*sorted(curve)), "o-", color="#4c72b0", label=f"{names[0]}: temperature 0.5-1.2")
    markers = iter("sD^vP*X<>")
    for name in names:
        kinds = (
            ("top-p", "beam", "diverse") if name == names[0] else ("temperature", "top-p", "beam", "diverse")
        )
        for kind in kinds:
            chosen = [row for setting, row in results[name].items() if setting.startswith(kind)]
            style = "o" if kind == "temperature" else next(markers, "o")
            xs, ys = [r["bleu2"] for r in chosen], [r["distinct2"] for r in chosen]
            axes.plot(xs, ys, style, ls="--" if kind == "temperature" else "", label=f"{name}: {kind}")
    axes.axhline(human, color="#55a868", ls=":", label="references (human)")
    axes.set_xlabel("BLEU-2 to the references (quality)")
    axes.set_ylabel("distinct-2 (diversity)")
    axes.set_title("Quality against diversity")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
