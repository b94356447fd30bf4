"""Build the model a config names, and describe it in one line."""

from __future__ import annotations

import logging

from seqsmith.config import ConvConfig, RNNConfig, TransformerConfig
from seqsmith.errors import SeqsmithError
from seqsmith.models.conv import ConvModel
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.models.pointer_generator import PointerGeneratorModel
from seqsmith.models.rnn import RNNModel
from seqsmith.models.transformer import TransformerModel
from seqsmith.specials import EOS_ID

logger = logging.getLogger(__name__)

_NEEDS_JOINT = (
    "model.pointer_generator copies source ids into the output, so it needs one vocabulary for both sides; "
    "set data.tokenizer.joint: true and prepare the data again"
)


def build_model(
    config: TransformerConfig | RNNConfig | ConvConfig,
    source_vocab_size: int,
    target_vocab_size: int,
    joint_vocabulary: bool = True,
) -> Seq2SeqModel:
    """A freshly initialized model; logs ``describe(model)`` at INFO level."""
    if isinstance(config, RNNConfig) and config.pointer_generator and not joint_vocabulary:
        raise SeqsmithError(_NEEDS_JOINT)
    for side, size in (("source", source_vocab_size), ("target", target_vocab_size)):
        if size <= EOS_ID:
            raise SeqsmithError(
                f"the {side} vocabulary has {size} entries, fewer than the {EOS_ID + 1} special symbols "
                "(pad, unk, bos, eos); check the tokenizer in data.tokenizer"
            )
    if config.share_embeddings and source_vocab_size != target_vocab_size:
        raise SeqsmithError(
            f"model.share_embeddings needs one vocabulary for both sides, but the source has "
            f"{source_vocab_size} entries and the target {target_vocab_size}; set data.tokenizer.joint: true "
            "and prepare the data again, or set model.share_embeddings: false"
        )
    model: Seq2SeqModel
    if isinstance(config, RNNConfig):
        if config.pointer_generator and source_vocab_size != target_vocab_size:
            raise SeqsmithError(_NEEDS_JOINT)
        if config.pointer_generator or config.coverage:
            model = PointerGeneratorModel(config, source_vocab_size, target_vocab_size)
        else:
            model = RNNModel(config, source_vocab_size, target_vocab_size)
    elif isinstance(config, ConvConfig):
        model = ConvModel(config, source_vocab_size, target_vocab_size)
    else:
        model = TransformerModel(config, source_vocab_size, target_vocab_size)
    logger.info(describe(model))
    return model


def describe(model: Seq2SeqModel) -> str:
    """E.g. ``transformer d_model=256 heads=4 layers=3+3 ffn=1024 pre-norm ...: 7,612,416 parameters``."""
    config = getattr(model, "config", None)
    sharing = [name for name in ("share_embeddings", "tie_output") if getattr(config, name, False)]
    extra = f" ({', '.join(sharing)})" if sharing else ""
    return f"{model.shape()}{extra}: {model.num_parameters():,} parameters"
