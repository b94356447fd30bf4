"""`seqsmith export`: a trained model directory as a self-contained directory another runtime runs.

An export holds ``config.json`` (the model's, with ``generate.engine`` and ``generate.quantize`` naming the
runtime and the weights' precision), ``tokenizer/``, the runtime's files in a subdirectory named after it,
``export.json`` (what was exported from where) and ``README.txt`` (how to load it); generation defaults
the runtime cannot run (GNMT's length penalty in CTranslate2's beam) become the nearest it can, said in
both. ``seqsmith generate``, ``evaluate`` and ``serve`` take it like a model directory. Each format is one
``Exporter``: a function that writes the runtime's files for a loaded model, and says by name what of the
model it cannot express.
The directory appears only once complete; ``force`` replaces an older export only then.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqsmith.config import GenerateConfig, save_config
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_directory, atomic_write_text
from seqsmith.models.model_dir import CONFIG, TOKENIZER, WEIGHTS, LoadedModel, load_model_dir

EXPORT_INFO = "export.json"


@dataclass(frozen=True)
class Exporter:
    """One runtime's format: ``write(loaded, directory, quantize)`` fills ``directory`` with its files."""

    engine: str  # the generate.engine that runs the export
    quantizations: tuple[str, ...]  # the first is the default
    write: Callable[[LoadedModel, Path, str], None]
    load_hint: str  # the README line: how to run the files without seqsmith
    # the model's generate defaults the runtime cannot run, replaced by the nearest it can
    settings: Callable[[GenerateConfig], dict[str, Any]] = lambda generate: {}


def export_model(
    model_dir: str | Path, out_dir: str | Path, exporter: Exporter, quantize: str | None, force: bool
) -> Path:
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    quantize = quantize or exporter.quantizations[0]
    if quantize not in exporter.quantizations:
        raise SeqsmithError(
            f"--quantize {quantize}: the {exporter.engine} export offers {', '.join(exporter.quantizations)}"
        )
    if out_dir.exists() and not force:
        raise SeqsmithError(f"{out_dir} exists already; choose a new directory or pass --force to replace it")
    if out_dir.resolve() == model_dir.resolve() or model_dir.resolve().is_relative_to(out_dir.resolve()):
        raise SeqsmithError(f"{out_dir} would replace the model directory {model_dir}; choose another one")
    loaded = load_model_dir(model_dir)
    staging = out_dir.with_name(f".{out_dir.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    with atomic_directory(staging) as temporary:
        exporter.write(loaded, temporary / exporter.engine, quantize)
        config = loaded.config.model_copy(deep=True)
        changed = exporter.settings(config.generate)
        update = {**changed, "engine": exporter.engine, "quantize": "none"}
        config.generate = config.generate.model_copy(update=update)
        save_config(config, temporary / CONFIG)
        shutil.copytree(model_dir / TOKENIZER, temporary / TOKENIZER)
        info = {
            "format": exporter.engine,
            "quantize": quantize,
            "from": str(model_dir),
            "weights": WEIGHTS,
            "parameters": loaded.model.num_parameters(),
            "files_bytes": sum(
                p.stat().st_size for p in (temporary / exporter.engine).rglob("*") if p.is_file()
            ),
            "generate_changed": changed,
        }
        atomic_write_text(temporary / EXPORT_INFO, json.dumps(info, indent=2) + "\n")
        atomic_write_text(
            temporary / "README.txt",
            f"A {exporter.engine} export ({quantize}) of {model_dir}, written by `seqsmith export`.\n"
            f"With seqsmith: seqsmith generate {out_dir} < input.txt (tokenization included)\n"
            f"Without: {exporter.load_hint}\n"
            + "".join(
                f"generate.{key}: {value} here (the model's {getattr(loaded.config.generate, key)} is "
                f"beyond {exporter.engine})\n"
                for key, value in changed.items()
            ),
        )
    _swap_into_place(staging, out_dir)
    return out_dir


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """``staging`` becomes ``out_dir``; an older ``out_dir`` (``--force``) is removed only after that."""
    old = out_dir.with_name(f".{out_dir.name}.old")
    if out_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def exporters() -> dict[str, Exporter]:
    """The formats ``seqsmith export --format`` knows (each writer imports its runtime only when run)."""
    from seqsmith.models.ctranslate2_export import QUANTIZATIONS, runnable_settings, write_ctranslate2
    from seqsmith.models.onnx_model import write_onnx

    return {
        "ctranslate2": Exporter(
            "ctranslate2",
            QUANTIZATIONS,
            write_ctranslate2,
            "ctranslate2.Translator('ctranslate2').translate_batch(piece lists ending with '</s>')",
            runnable_settings,
        ),
        "onnx": Exporter(
            "onnx",
            ("float32", "int8"),
            write_onnx,
            "onnxruntime: onnx/encoder.onnx once per batch, then onnx/decoder.onnx a step at a time "
            "with its key/value cache (inputs and outputs named in onnx/README.txt)",
        ),
    }
