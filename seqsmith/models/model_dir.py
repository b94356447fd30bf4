"""A model is a directory: config.json, model.safetensors and tokenizer/. Loading never runs its code."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_model

from seqsmith.config import Config, PretrainedConfig, config_from_dict
from seqsmith.data.tokenizer import Tokenizers
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_path, check_inside
from seqsmith.models.build import build_model
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.specials import field_marker

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer"


@dataclass
class LoadedModel:
    model: Seq2SeqModel
    tokenizers: Tokenizers
    config: Config


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Atomically; a failed write (a full disk) is an OSError naming ``path``, as Python's own writes are."""
    with atomic_path(path) as temporary:
        try:
            save_model(model, str(temporary))
        except SafetensorError as error:
            code = re.search(r"os error (\d+)", str(error))
            if code is None:
                raise
            number = int(code.group(1))
            raise OSError(number, os.strerror(number), str(path)) from None


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise SeqsmithError(f"weights file {path} not found; train a model first (seqsmith train CONFIG)")


def _corrupt(path: Path, error: Exception) -> SeqsmithError:
    return SeqsmithError(
        f"weights file {path} is corrupt or not a safetensors file ({error}); "
        "restore it from checkpoints/ in the model directory or train again"
    )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    _check_file(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise _corrupt(path, error) from None


def _check_dtypes(model: torch.nn.Module, path: Path) -> None:
    """Floating-point tensors for floating-point parameters (read from the header alone): integer or
    boolean data under a weight's name is not weights of this model, however it would convert."""
    expected = {name: tensor.is_floating_point() for name, tensor in model.state_dict().items()}
    with safe_open(str(path), framework="pt") as handle:
        for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
            dtype = handle.get_slice(name).get_dtype()
            if expected.get(name) and not (dtype.startswith("F") or dtype == "BF16"):
                raise SeqsmithError(
                    f"weights file {path} holds {name} as {dtype}, but it is a floating-point parameter; "
                    "the file does not hold this model's weights"
                )


def load_weights(model: torch.nn.Module, path: Path) -> None:
    _check_file(path)
    try:
        _check_dtypes(model, path)
        load_model(model, str(path))
    except (SafetensorError, OSError) as error:
        raise _corrupt(path, error) from None
    except RuntimeError as error:
        raise SeqsmithError(
            f"weights in {path} do not fit the model described by config.json ({str(error)[:300]}); "
            "the config and the weights come from different models"
        ) from None


def read_config(directory: Path) -> Config:
    path = directory / CONFIG
    if not path.is_file():
        raise SeqsmithError(f"{directory} is not a seqsmith model directory: {CONFIG} is missing")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SeqsmithError(f"{path} is not valid JSON ({error}); the model directory is damaged") from None
    return config_from_dict(raw, str(path))


def check_prepared_data(config: Config, model_dir: Path) -> None:
    """The one check that prepared data and a model directory agree: the ids in ``data.output_dir`` must
    mean the tokens the model reads (its tokenizer, its copy slots), or training and scoring go on silently
    with ids that mean other tokens."""
    data_dir = Path(config.data.output_dir)
    if not (data_dir / "report.json").is_file():
        raise SeqsmithError(f"no prepared data in {data_dir}; run `seqsmith prepare CONFIG` first")
    report = json.loads((data_dir / "report.json").read_text(encoding="utf-8"))
    prepared, wanted = report.get("oov_slots", 0), getattr(config.model, "oov_slots", 0)
    if prepared != wanted:
        raise SeqsmithError(
            f"{data_dir} was prepared with model.oov_slots={prepared}, the config asks for {wanted}; run "
            "`seqsmith prepare CONFIG` again"
        )
    if not (model_dir / TOKENIZER).is_dir():
        return
    if (
        Tokenizers.load(data_dir / TOKENIZER).vocabulary()
        != Tokenizers.load(model_dir / TOKENIZER).vocabulary()
    ):
        raise SeqsmithError(
            f"{data_dir} was prepared with another vocabulary than the model in {model_dir} reads, so its "
            "ids mean other tokens; prepare the data with the config the model was trained with, or train "
            "into a new train.model_dir"
        )


def build_from_config(config: Config, tokenizers: Tokenizers, model_dir: Path | None = None) -> Seq2SeqModel:
    """The model a config describes. A pretrained model comes with its weights from ``model.path``, or,
    given a ``model_dir`` that holds its architecture, uninitialized (for ``load_weights``)."""
    if isinstance(config.model, PretrainedConfig):
        from seqsmith.models import hf  # needs transformers: only for pretrained models

        if model_dir is not None and (model_dir / hf.SAVED).is_dir():
            return hf.load_architecture(model_dir)
        return hf.load_hf(config.model.path)
    sizes = tokenizers.source.vocab_size, tokenizers.target.vocab_size
    model = build_model(config.model, *sizes, joint_vocabulary=tokenizers.joint)
    if config.data.fields:
        model.read_fields(
            {f.name: tokenizers.source.symbol_id(field_marker(f.name)) for f in config.data.fields}
        )
    return model


def load_model_dir(directory: str | Path, weights: str | Path | None = None) -> LoadedModel:
    """Load a model directory for inference (eval mode); ``weights`` picks another safetensors file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SeqsmithError(f"model directory {directory} not found")
    for name in (CONFIG, TOKENIZER, *([] if weights else [WEIGHTS])):
        check_inside(directory, directory / name, "model file")
    config = read_config(directory)
    tokenizers = Tokenizers.load(directory / TOKENIZER)
    model = build_from_config(config, tokenizers, directory)
    load_weights(model, Path(weights) if weights else directory / WEIGHTS)
    model.eval()
    return LoadedModel(model, tokenizers, config)
