"""The model a training starts from: built from the config, with its model-specific set-up done and, with
``train.init_from``, weights copied from another model directory.

``init_from`` copies the parts ``train.init_parts`` names (encoder, decoder, embeddings; see
``Seq2SeqModel.vocabulary_rows`` and ``encoder_prefixes`` for which tensor is which). Tensors indexed by a
vocabulary are copied row by row for the pieces both vocabularies hold, so fine-tuning on data with its own
vocabulary keeps what the pieces in common learned; every other tensor must have the same name and shape.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from seqsmith.config import Config, ModelPart
from seqsmith.data.tokenizer import Tokenizer, Tokenizers
from seqsmith.errors import SeqsmithError
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.models.model_dir import build_from_config, load_model_dir


def initial_model(
    config: Config, tokenizers: Tokenizers, model_dir: Path | None, fresh: bool
) -> tuple[Seq2SeqModel, list[str]]:
    """The model before its first step, and notes for the log.

    ``model_dir`` (given by the process that writes files) receives the files that rebuild the model;
    ``fresh`` (no checkpoint to resume) copies in pretrained parts and ``train.init_from``.
    """
    model = build_from_config(config, tokenizers)
    if model_dir is not None:
        model.save_architecture(model_dir)
    if not fresh:
        return model, []
    notes = model.load_pretrained_parts()
    if config.train.init_from is not None:
        notes.append(init_from(model, tokenizers, Path(config.train.init_from), config.train.init_parts))
    return model, notes


def part_of(model: Seq2SeqModel, name: str) -> ModelPart:
    if name in model.vocabulary_rows:
        return "embeddings"
    return "encoder" if name.startswith(model.encoder_prefixes) else "decoder"


def init_from(model: Seq2SeqModel, tokenizers: Tokenizers, source: Path, parts: list[ModelPart]) -> str:
    """Copy ``parts`` of the model in directory ``source`` into ``model``; returns what was copied."""
    loaded = load_model_dir(source)
    theirs = loaded.model.state_dict()
    ours = model.state_dict()
    wanted = {name for name in ours if part_of(model, name) in parts}
    misfits = [
        f"{name} {tuple(ours[name].shape)} (theirs: {tuple(theirs[name].shape) if name in theirs else None})"
        for name in sorted(wanted)
        if name not in theirs or not _fits(model, name, ours[name], theirs[name])
    ]
    if misfits:
        shown = "; ".join(misfits[:4]) + (f"; and {len(misfits) - 4} more" if len(misfits) > 4 else "")
        raise SeqsmithError(
            f"train.init_from: {source} does not fit this model's {', '.join(parts)}: {shown}; give the "
            "model the same architecture, or leave those parts out of train.init_parts"
        )
    if not wanted:
        raise SeqsmithError(f"train.init_from: this model has no tensors in the parts {parts}")
    matched: dict[str, tuple[int, int]] = {}
    with torch.no_grad():
        for name in wanted:
            side = model.vocabulary_rows.get(name)
            if side is None:
                ours[name].copy_(theirs[name])
                continue
            pairs = _common_pieces(_side(tokenizers, side), _side(loaded.tokenizers, side))
            if not pairs:
                raise SeqsmithError(
                    f"train.init_from: the {side} vocabularies of this model and {source} share no piece"
                )
            mine, their = (torch.tensor(ids, device=ours[name].device) for ids in zip(*pairs, strict=True))
            ours[name].index_copy_(0, mine, theirs[name].to(ours[name].device).index_select(0, their))
            matched[side] = (len(pairs), _side(tokenizers, side).vocab_size)
    rows = "".join(
        f"; {side} vocabulary: {n:,} of {size:,} pieces matched" for side, (n, size) in matched.items()
    )
    return f"{', '.join(parts)} from {source}{rows}"


def _fits(model: Seq2SeqModel, name: str, mine: Tensor, theirs: Tensor) -> bool:
    """Same shape, or, for vocabulary rows, the same row width."""
    if name in model.vocabulary_rows:
        return mine.shape[1:] == theirs.shape[1:]
    return mine.shape == theirs.shape


def _side(tokenizers: Tokenizers, side: str) -> Tokenizer:
    return tokenizers.source if side == "source" else tokenizers.target


def _common_pieces(ours: Tokenizer, theirs: Tokenizer) -> list[tuple[int, int]]:
    """(our id, their id) for every piece both vocabularies hold."""
    index = {theirs.piece(i): i for i in range(theirs.vocab_size)}
    return [(i, index[piece]) for i in range(ours.vocab_size) if (piece := ours.piece(i)) in index]
