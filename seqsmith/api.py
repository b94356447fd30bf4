"""The Python API: everything the CLI and the server do is one call here.

from seqsmith import api
config = api.load_config("configs/multi30k_en_de.yaml", ["train.max_minutes=30"])
api.prepare(config); api.train(config)
api.load("runs/multi30k_en_de/model").generate(["A man rides a bike."], beam=5)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from seqsmith.config import Config, load_config
from seqsmith.data.binarize import BinarizedSplit
from seqsmith.data.prepare import PrepareReport
from seqsmith.data.prepare import prepare as prepare_data
from seqsmith.errors import SeqsmithError
from seqsmith.evaluation.metrics import (
    corpus_scores,
    evaluate_files,
    format_markdown,
    reference_sets,
    sentence_scores,
    write_outputs,
)
from seqsmith.fileio import atomic_write_text, one_line, text_lines
from seqsmith.generation.generator import Generator
from seqsmith.generation.synthetic import SyntheticData, synthesize
from seqsmith.models.export import export_model, exporters
from seqsmith.models.hf_export import export_marian
from seqsmith.models.model_dir import WEIGHTS, check_prepared_data, load_model_dir, save_weights
from seqsmith.training.checkpoint import CheckpointDir, average_checkpoints
from seqsmith.training.distill import distilled_data
from seqsmith.training.trainer import Trainer, TrainResult, ValidationWatcher
from seqsmith.training.validation import perplexity_of, split_loss

if TYPE_CHECKING:
    from seqsmith.tuning.summary import StudySummary

logger = logging.getLogger(__name__)

__all__ = [
    "Generator",
    "average",
    "distill",
    "evaluate_files",
    "evaluate_model",
    "export",
    "format_markdown",
    "load",
    "load_config",
    "prepare",
    "report",
    "run",
    "train",
    "tune",
    "write_outputs",
]


def prepare(config: Config, show_progress: bool = True) -> PrepareReport:
    return prepare_data(config, progress=show_progress)


def train(
    config: Config, show_progress: bool = True, watcher: ValidationWatcher | None = None
) -> TrainResult:
    """Train (preparing the data first if that has not been done); resumes from the last checkpoint.
    ``watcher`` is told each dev validation and may stop the training (``ValidationWatcher``)."""
    if not (Path(config.data.output_dir) / "report.json").is_file():
        prepare(config, show_progress)
    return Trainer(config, show_progress, watcher).train()


def load(model_dir: str | Path, weights: str | Path | None = None, **options: Any) -> Generator:
    return Generator.from_pretrained(model_dir, weights, **options)


def _split_rows(generator: Generator, split: str, data_dir: Path | None = None) -> list[dict[str, Any]]:
    path = (data_dir or Path(generator.data_config.output_dir)) / f"{split}.jsonl"
    if not path.is_file():
        raise SeqsmithError(
            f"no prepared {split} set at {path}: set data.{split} in the config and run seqsmith prepare"
        )
    return [json.loads(line) for line in text_lines(path.read_text(encoding="utf-8"))]


def evaluate_model(
    model_dir: str | Path,
    split: str | None = None,
    metrics: list[str] | None = None,
    weights: str | Path | None = None,
    out: Path | None = None,
    data: str | Path | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Decode a prepared split, score it, and write the outputs to ``out``, by default
    ``<model_dir>/eval/<split>`` (``eval/<split>-<weights file stem>`` when other weights are given,
    ``eval/<split>-<name>`` for the ``data`` directory ``runs/<name>/data``); ``data`` is another prepared
    data directory with the model's tokenizer (``data.tokenizer.path``: another test set); ``options``
    override the model's generation settings (``method="sample", top_p=0.9``)."""
    generator = load(model_dir, weights, **options)
    settings = generator.full_config.evaluate
    split = split or settings.split
    data_dir = Path(data or generator.data_config.output_dir)
    rows = _split_rows(generator, split, data_dir)
    config = generator.full_config
    check_prepared_data(
        config.model_copy(update={"data": config.data.model_copy(update={"output_dir": str(data_dir)})}),
        Path(model_dir),
    )
    hypotheses = generator.generate([row["source"] for row in rows])
    references = reference_sets([row["references"] for row in rows])
    names = metrics or settings.metrics
    scores = corpus_scores(hypotheses, references, names, settings.bleu_tokenize, settings.lowercase)
    if generator.model is not None:  # the CTranslate2 engine has no teacher-forced model to score with
        loss = split_loss(generator.model, BinarizedSplit(data_dir, split), 4096)
        scores["perplexity"] = {"score": perplexity_of(loss), "signature": "per target token, EOS included"}
    exact = sum(h in row["references"] for h, row in zip(hypotheses, rows)) / len(rows)
    scores["exact_match"] = {"score": 100 * exact, "signature": "percent of outputs equal to a reference"}
    if generator.config.fixed_length:
        tokenizers = generator.tokenizers
        same = sum(
            len(tokenizers.target.encode(h)) == len(tokenizers.source.encode(row["source"]))
            for h, row in zip(hypotheses, rows)
        )
        signature = "percent of outputs with as many tokens as their source (generate.fixed_length)"
        scores["same_length"] = {"score": 100 * same / len(rows), "signature": signature}
    sentence_metrics = [m for m in ("bleu", "chrf", "rouge1", "rouge2", "rougeL") if m in names] or ["bleu"]
    per_sentence = sentence_scores(
        hypotheses, references, sentence_metrics, settings.bleu_tokenize, settings.lowercase
    )
    name = (
        split + (f"-{Path(weights).stem}" if weights else "") + (f"-{data_dir.parent.name}" if data else "")
    )
    out_dir = out or Path(model_dir) / "eval" / name
    write_outputs(scores, per_sentence, out_dir)
    atomic_write_text(out_dir / "hypotheses.txt", "".join(one_line(h) + "\n" for h in hypotheses))
    return scores


def average(model_dir: str | Path, checkpoints: list[Path] | None = None, out: Path | None = None) -> Path:
    """Average the kept best checkpoints (or the given weight files) into one weights file."""
    model_dir = Path(model_dir)
    paths = checkpoints or [p / WEIGHTS for p in CheckpointDir(model_dir, 0, True).best()]
    loaded = load_model_dir(model_dir)
    loaded.model.load_state_dict(average_checkpoints(paths), strict=False)
    target = out or model_dir / "model.averaged.safetensors"
    save_weights(loaded.model, target)
    return target


def report(model_dir: str | Path, examples: int | None = None) -> Path:
    """One HTML page: config, curves, scores and example outputs with attention pictures; for a tuning
    study's directory, its trials, pictures and best config."""
    model_dir = Path(model_dir)
    if (model_dir / "study.json").is_file():
        study, summary = _tuning()
        return Path(summary.summarize(study.reopen(model_dir)).report)
    generator = load(model_dir, method="greedy")
    settings = generator.full_config.evaluate
    split = settings.split
    scores_path = model_dir / "eval" / split / "scores.json"
    scores = json.loads(scores_path.read_text(encoding="utf-8")) if scores_path.is_file() else None
    missing = []
    if scores is None:
        missing.append(
            f"No {split} scores: {scores_path} is missing; run `seqsmith evaluate {model_dir}` first."
        )
    try:
        rows = _split_rows(generator, split)[: examples if examples is not None else settings.examples]
    except SeqsmithError as error:
        rows = []
        missing.append(f"No examples: {error} (paths are relative to {Path.cwd()}).")
    model = generator.model
    outputs = generator.generate_full([row["source"] for row in rows]) if rows else []
    shown = []
    for row, nbest in zip(rows, outputs):
        best = nbest[0]
        ids = generator.encode(row["source"])  # what the model read: each field within its length
        src = torch.tensor([ids])
        attention = None
        if model is not None:
            tgt_in = torch.tensor([[model.bos_id, *best.tokens]])
            attention = model.teacher_forced_attention(src, src != model.pad_id, tgt_in, heads=True)
        if attention is not None:  # (tgt, src) or (tgt, heads, src) -> (heads, tgt, src) for the grid
            attention = attention[0].transpose(0, 1) if attention.dim() == 4 else attention[0]
        shown.append(
            {
                "source": row["source"],
                "reference": row["references"][0],
                "hypothesis": best.text,
                "attention": attention.tolist() if attention is not None else None,
                "source_tokens": generator.pieces(ids, generator.source_oovs(row["source"]), "source"),
                "target_tokens": [*(generator.tokenizers.target.decode([t]) for t in best.tokens), "</s>"],
                "fields": generator.fields,
            }
        )
    for note in missing:
        logger.warning("seqsmith: report: %s", note)
    # imported here, not at the top: matplotlib costs 0.8 s and ~40 MB that decoding never needs
    from seqsmith.evaluation.report import write_report

    return write_report(model_dir, scores, shown, missing=missing)


def distill(
    teacher_dir: str | Path,
    config: Config,
    monolingual: Path | None = None,
    work: Path | None = None,
    show_progress: bool = True,
    **options: Any,
) -> TrainResult:
    """Sequence-level distillation: the teacher (with its generation settings and ``options``) decodes the
    training sources (and ``monolingual`` text) into ``work`` (default: beside the student's model
    directory), then the student ``config`` trains on the result. Both steps resume where they stopped."""
    work = Path(work) if work is not None else Path(config.train.model_dir).parent / "distilled"
    teacher = load(teacher_dir, **options)
    data = distilled_data(teacher, Path(teacher_dir), config, work, monolingual, show_progress)
    del teacher
    return train(data.config, show_progress)


def back_translate(
    model_dir: str | Path,
    monolingual: str | Path,
    out: str | Path,
    show_progress: bool = True,
    **options: Any,
) -> SyntheticData:
    """Decode every line of ``monolingual`` with the model (its generation settings and ``options``) into
    the parallel files ``out.<its source suffix>`` (the lines) and ``out.<its target suffix>`` (its
    outputs): back-translation with a reverse model, self-training with a forward one. Sampling without a
    seed gets seed 1, so that a resumed run continues the same corpus."""
    generator = load(model_dir, **options)
    if generator.config.method == "sample" and generator.config.seed is None:
        generator.config = generator.config.model_copy(update={"seed": 1})
    return synthesize(generator, Path(monolingual), Path(out), show_progress)


def export(
    model_dir: str | Path,
    out_dir: str | Path,
    format: str = "ctranslate2",
    quantize: str | None = None,
    force: bool = False,
) -> Path:
    """Write ``model_dir`` as a directory another runtime runs (``seqsmith.models.export``); ``marian``
    writes a Hugging Face MarianMTModel directory instead."""
    if format == "marian":
        if quantize is not None or force:
            raise SeqsmithError("--quantize and --force do not apply to the Marian export")
        return export_marian(model_dir, out_dir)
    known = exporters()
    if format not in known:
        raise SeqsmithError(f"--format {format}: known formats are {', '.join([*known, 'marian'])}")
    return export_model(model_dir, out_dir, known[format], quantize, force)


def _tuning() -> Any:
    """seqsmith.tuning, imported on use: Optuna is an extra (``pip install 'seqsmith[tune]'``)."""
    try:
        from seqsmith.tuning import study, summary
    except ModuleNotFoundError as error:
        if error.name in ("optuna", "sqlalchemy"):
            raise SeqsmithError("seqsmith tune needs Optuna: pip install 'seqsmith[tune]'") from None
        raise
    return study, summary


def tune(
    target: str | Path,
    space: str | Path,
    trials: int,
    minutes: float | None = None,
    study_dir: str | Path | None = None,
    storage: str | None = None,
    name: str | None = None,
    show_progress: bool = True,
    keep_checkpoints: bool = False,
) -> StudySummary:
    """Search ``space`` (a YAML file of dotted keys) over ``target``: a config, each trial a training in
    its own model directory, pruned from its dev curve; or a trained model's directory, each trial a
    decoding of its dev set with other generation settings. The study is kept in ``storage`` (default:
    SQLite in the study directory): run again to resume, or from several processes to share the work.
    Returns the ``StudySummary`` (its table, best config and report page are in the study directory)."""
    study, summary = _tuning()
    opened = study.open_study(target, space, study_dir, storage, name, show_progress, keep_checkpoints)
    try:
        study.run_study(opened, trials, minutes)
    finally:
        written = summary.summarize(opened)
    return written


def run(config: Config, show_progress: bool = True) -> dict[str, Any]:
    """prepare, train, generate and evaluate in one call; returns the test scores."""
    train(config, show_progress)
    return evaluate_model(config.train.model_dir)


def demo(
    workdir: str | Path = "runs/demo", minutes: float = 3.0, show_progress: bool = True
) -> dict[str, Any]:
    """Train the built-in date-normalisation demo and score it; returns scores and sample outputs."""
    from seqsmith.demo import demo_config

    config = demo_config(Path(workdir), minutes)
    result = train(config, show_progress)
    scores = evaluate_model(config.train.model_dir)
    generator = load(config.train.model_dir)
    samples = ["March 5, 2021", "the 1st of july '99", "FRI 13 OCT 2006", "2049/12/31"]
    return {
        "model_dir": str(result.model_dir),
        "minutes": result.minutes,
        "steps": result.steps,
        "scores": {name: entry["score"] for name, entry in scores.items()},
        "samples": dict(zip(samples, generator.generate(samples))),
    }
