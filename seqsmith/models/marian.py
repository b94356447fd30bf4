"""Marian's names for a seqsmith Transformer's weights, and a seqsmith encoder started from a Marian one.

The name map serves both directions: ``seqsmith.models.hf_export`` writes a seqsmith model as Marian,
``init_encoder_from_hf`` copies a pretrained Marian encoder into a new seqsmith Transformer (the
``model.init_encoder_from`` option). See hf_export's docstring for how the two position tables differ.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seqsmith.config import TransformerConfig
from seqsmith.data.hf_tokenizer import import_transformers
from seqsmith.errors import SeqsmithError
from seqsmith.models.transformer import TransformerModel

logger = logging.getLogger(__name__)

# (Marian name, seqsmith name, part, parts): Marian's tensor is part ``part`` of ``parts`` equal row
# blocks of seqsmith's (seqsmith fuses q/k/v and cross-attention k/v into one projection).
Entry = tuple[str, str, int, int]

_ENCODER_LAYER: list[Entry] = [
    ("self_attn.q_proj", "attention.qkv", 0, 3),
    ("self_attn.k_proj", "attention.qkv", 1, 3),
    ("self_attn.v_proj", "attention.qkv", 2, 3),
    ("self_attn.out_proj", "attention.out", 0, 1),
    ("self_attn_layer_norm", "norm1", 0, 1),
    ("fc1", "ffn.0", 0, 1),
    ("fc2", "ffn.2", 0, 1),
    ("final_layer_norm", "norm2", 0, 1),
]
_DECODER_LAYER: list[Entry] = [
    ("self_attn.q_proj", "self_attention.qkv", 0, 3),
    ("self_attn.k_proj", "self_attention.qkv", 1, 3),
    ("self_attn.v_proj", "self_attention.qkv", 2, 3),
    ("self_attn.out_proj", "self_attention.out", 0, 1),
    ("self_attn_layer_norm", "norm1", 0, 1),
    ("encoder_attn.q_proj", "cross_attention.q", 0, 1),
    ("encoder_attn.k_proj", "cross_attention.kv", 0, 2),
    ("encoder_attn.v_proj", "cross_attention.kv", 1, 2),
    ("encoder_attn.out_proj", "cross_attention.out", 0, 1),
    ("encoder_attn_layer_norm", "norm2", 0, 1),
    ("fc1", "ffn.0", 0, 1),
    ("fc2", "ffn.2", 0, 1),
    ("final_layer_norm", "norm3", 0, 1),
]


def _layer_entries(side: str, layers: int, table: list[Entry]) -> list[Entry]:
    ours = "encoder_layers" if side == "encoder" else "decoder_layers"
    return [
        (f"model.{side}.layers.{i}.{theirs}.{kind}", f"{ours}.{i}.{mine}.{kind}", part, parts)
        for i in range(layers)
        for theirs, mine, part, parts in table
        for kind in ("weight", "bias")
    ]


def encoder_entries(config: TransformerConfig) -> list[Entry]:
    return _layer_entries("encoder", config.encoder_layers, _ENCODER_LAYER)


def decoder_entries(config: TransformerConfig) -> list[Entry]:
    return _layer_entries("decoder", config.decoder_layers, _DECODER_LAYER)


def row_block(tensor: Tensor, part: int, parts: int) -> Tensor:
    return tensor.chunk(parts, dim=0)[part]


def init_encoder_from_hf(model: TransformerModel, hf_dir: str | Path, embeddings: bool = True) -> None:
    """Copy a pretrained Marian encoder (and, with ``embeddings``, its token embeddings) into ``model``.

    The seqsmith model needs Marian's shape (post-norm, same d_model, heads, ffn size, encoder layers,
    activation) and ``positions: learned``, which receives Marian's sinusoidal table. Token embeddings
    are only meaningful if both vocabularies give the same ids to the same pieces.
    """
    hf_dir = Path(hf_dir)
    transformers = import_transformers()
    try:
        marian = transformers.MarianMTModel.from_pretrained(str(hf_dir), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise SeqsmithError(f"{hf_dir}: not a Marian model directory ({str(error)[:300]})") from None
    config, theirs = model.config, marian.config
    pairs = [
        ("norm", config.norm, "post"),
        ("positions", config.positions, "learned"),
        ("d_model", config.d_model, theirs.d_model),
        ("heads", config.heads, theirs.encoder_attention_heads),
        ("ffn_dim", config.ffn_dim, theirs.encoder_ffn_dim),
        ("encoder_layers", config.encoder_layers, theirs.encoder_layers),
        ("activation", config.activation, theirs.activation_function),
    ]
    if config.max_positions > theirs.max_position_embeddings:
        pairs.append(("max_positions", config.max_positions, theirs.max_position_embeddings))
    wrong = [f"model.{key}: {mine!r} (needs {needed!r})" for key, mine, needed in pairs if mine != needed]
    if wrong:
        raise SeqsmithError(f"the encoder of {hf_dir} does not fit this model: " + "; ".join(wrong))
    state = marian.state_dict()
    with torch.no_grad():
        mine = dict(model.named_parameters())
        for their_name, my_name, part, parts in encoder_entries(config):
            row_block(mine[my_name], part, parts).copy_(state[their_name])
        table = marian.model.encoder.embed_positions.weight
        model.source_positions.table.copy_(table[: config.max_positions])
        if embeddings:
            _copy_embeddings(model, marian, hf_dir)


def _copy_embeddings(model: TransformerModel, marian: Any, hf_dir: Path) -> None:
    weight = marian.model.encoder.embed_tokens.weight
    if weight.shape != model.source_embedding.weight.shape:
        raise SeqsmithError(
            f"{hf_dir}: Marian's embeddings are {tuple(weight.shape)} but the model's source embeddings are "
            f"{tuple(model.source_embedding.weight.shape)}; use the same vocabulary or embeddings=False"
        )
    scale = marian.model.encoder.embed_scale / model.embed_scale  # seqsmith always scales by sqrt(d)
    model.source_embedding.weight.copy_(weight * scale)
    if not math.isclose(scale, 1.0):
        logger.info("Marian's embeddings are unscaled; copied divided by sqrt(d_model)")
