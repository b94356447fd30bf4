"""Imports go down the floors: data <- models <- generation <- training <- tuning <- api <- serving <- cli.

Every ``import`` in the package, module-level or inside a function, is read from the source; a room may
import its own modules and rooms on lower floors only (evaluation sits beside data: metrics need neither
models nor search, and both training and the API read them).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "seqsmith"
FLOORS = {
    "base": 0,  # config, errors, fileio, specials, allocator, hardware
    "data": 1,
    "evaluation": 1,
    "models": 2,
    "generation": 3,
    "training": 4,
    "tuning": 5,  # runs trainings and decodings as trials of a study
    "api": 6,  # api.py, demo.py
    "serving": 7,
    "cli": 8,  # the outermost face: `seqsmith serve` starts the server
}
BASE = {"config", "errors", "fileio", "specials", "allocator", "hardware", "__init__"}


def room(parts: list[str]) -> str:
    """The room of module ``seqsmith.<parts>``."""
    head = parts[0] if parts else "__init__"
    if head in BASE:
        return "base"
    return "api" if head == "demo" else head


def imports(path: Path) -> list[tuple[int, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "seqsmith":
            parts = node.module.split(".")[1:]
            if not parts:  # from seqsmith import api
                found.extend((node.lineno, [alias.name]) for alias in node.names)
            else:
                found.append((node.lineno, parts))
        elif isinstance(node, ast.Import):
            found.extend(
                (node.lineno, alias.name.split(".")[1:])
                for alias in node.names
                if alias.name.split(".")[0] == "seqsmith"
            )
    return found


def test_no_import_runs_up_a_floor() -> None:
    wrong = []
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 30
    for path in modules:
        here = room(list(path.relative_to(PACKAGE).with_suffix("").parts))
        for line, parts in imports(path):
            there = room(parts)
            if there != here and FLOORS[there] >= FLOORS[here]:
                wrong.append(
                    f"{path.relative_to(PACKAGE)}:{line} ({here}) imports seqsmith.{'.'.join(parts)}"
                )
    assert not wrong, "\n".join(wrong)


def test_the_trainer_knows_no_objective_arithmetic_and_no_model_class() -> None:
    source = (PACKAGE / "training" / "trainer.py").read_text(encoding="utf-8")
    for name in (
        "cross_entropy",
        "label_smoothing",
        "auxiliary_loss",
        "TransformerModel",
        "HFSeq2Seq",
        "hf_export",
    ):
        assert name not in source, name


def test_the_api_imports_no_plotting_or_rouge_stack() -> None:
    """Loading a model to decode pays for neither matplotlib (reports) nor rouge-score's nltk and scipy:
    together 2 s of start-up and ~110 MB of resident memory."""
    code = "import sys, seqsmith.api, seqsmith.cli; print(sorted(m for m in sys.modules if '.' not in m))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for heavy in ("matplotlib", "nltk", "scipy", "rouge_score"):
        assert f"'{heavy}'" not in loaded, heavy
