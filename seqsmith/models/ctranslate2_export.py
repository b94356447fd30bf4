"""A seqsmith Transformer in CTranslate2's format, written through its model-spec API.

The spec is filled from seqsmith's own weights: fused self-attention and cross-attention key/value
projections map one to one, the position table (sinusoidal or learned) is written as it is, embeddings
are scaled by sqrt(d_model), the decoder starts from seqsmith's BOS and the source keeps seqsmith's EOS
(CTranslate2 adds nothing). Pre- and post-norm both map (CTranslate2's ``pre_norm``). CTranslate2 gets the
vocabulary as pieces, so ``ctranslate2.Translator`` translates piece lists; ``seqsmith.generation.engines``
does the tokenizing around it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from torch import Tensor, nn

from seqsmith.config import GenerateConfig
from seqsmith.errors import SeqsmithError, import_extra
from seqsmith.models.model_dir import LoadedModel
from seqsmith.models.transformer import TransformerModel, _DecoderLayer, _EncoderLayer
from seqsmith.specials import BOS_ID, EOS_ID, SPECIALS, UNK_ID

QUANTIZATIONS = ("float32", "int8", "int16", "float16", "bfloat16", "int8_float32")


def runnable_settings(generate: GenerateConfig) -> dict[str, Any]:
    """The model's generate defaults CTranslate2 cannot run, as the nearest it can: its length penalty
    divides by length^a, not GNMT's ((5 + len) / 6)^a, so beam search ranks by the average log-probability,
    and it has no coverage term of seqsmith's."""
    changed: dict[str, Any] = {}
    if generate.length_penalty == "gnmt" and generate.alpha > 0:
        changed["length_penalty"] = "average"
    if generate.coverage_penalty > 0:
        changed["coverage_penalty"] = 0.0
    return changed


def _array(tensor: Tensor) -> Any:
    return tensor.detach().float().contiguous().numpy().copy()


def _linear(spec: Any, weight: Tensor, bias: Tensor | None) -> None:
    spec.weight = _array(weight)
    if bias is not None:
        spec.bias = _array(bias)


def _norm(spec: Any, module: Any) -> None:
    spec.gamma, spec.beta = _array(module.weight), _array(module.bias)


def transformer_model(loaded: LoadedModel, what: str) -> TransformerModel:
    """The loaded model as a Transformer, or the one-line error naming what the format cannot express."""
    model = loaded.model
    if not isinstance(model, TransformerModel):
        raise SeqsmithError(
            f"{what} runs Transformers only (model.arch: transformer); this model is {model.shape()}"
        )
    if getattr(model, "oov_slots", 0) or model.config.copy_source:
        raise SeqsmithError(f"{what} cannot express copying from the source (model.copy_source, oov_slots)")
    if model.config.knowledge_field is not None:
        raise SeqsmithError(f"{what} cannot express a second encoder (model.knowledge_field)")
    return model


def transformer_spec(model: TransformerModel) -> Any:
    if model.config.segment_embeddings:
        raise SeqsmithError("CTranslate2 cannot express segment embeddings (model.segment_embeddings)")
    ctranslate2 = import_extra("ctranslate2", "export")
    specs = ctranslate2.specs
    config = model.config
    pre_norm = config.norm == "pre"
    activation = specs.Activation.RELU if config.activation == "relu" else specs.Activation.GELU
    encoder = specs.TransformerEncoderSpec(
        config.encoder_layers, config.heads, pre_norm=pre_norm, activation=activation
    )
    decoder = specs.TransformerDecoderSpec(
        config.decoder_layers,
        config.heads,
        pre_norm=pre_norm,
        activation=activation,
        alignment_heads=config.heads,
    )
    encoder.embeddings[0].weight = _array(model.source_embedding.weight)
    encoder.position_encodings.encodings = _array(model.source_positions.table)
    decoder.embeddings.weight = _array(model.target_embedding.weight)
    decoder.position_encodings.encodings = _array(model.target_positions.table)
    decoder.scale_embeddings = encoder.scale_embeddings = True
    _linear(decoder.projection, model.output.weight, None)
    if pre_norm:
        _norm(encoder.layer_norm, model.encoder_norm)
        _norm(decoder.layer_norm, model.decoder_norm)
    for spec, layer in zip(encoder.layer, model.encoder_layers):
        ours = cast(_EncoderLayer, layer)
        _linear(spec.self_attention.linear[0], ours.attention.qkv.weight, ours.attention.qkv.bias)
        _linear(spec.self_attention.linear[1], ours.attention.out.weight, ours.attention.out.bias)
        _norm(spec.self_attention.layer_norm, ours.norm1)
        _ffn(spec.ffn, ours, ours.norm2)
    for spec, layer in zip(decoder.layer, model.decoder_layers):
        ours_d = cast(_DecoderLayer, layer)
        own, cross = ours_d.self_attention, ours_d.cross_attention
        _linear(spec.self_attention.linear[0], own.qkv.weight, own.qkv.bias)
        _linear(spec.self_attention.linear[1], own.out.weight, own.out.bias)
        _norm(spec.self_attention.layer_norm, ours_d.norm1)
        _linear(spec.attention.linear[0], cross.q.weight, cross.q.bias)
        _linear(spec.attention.linear[1], cross.kv.weight, cross.kv.bias)
        _linear(spec.attention.linear[2], cross.out.weight, cross.out.bias)
        _norm(spec.attention.layer_norm, ours_d.norm2)
        _ffn(spec.ffn, ours_d, ours_d.norm3)
    spec = specs.TransformerSpec(encoder, decoder)
    spec.config.layer_norm_epsilon = cast(_EncoderLayer, model.encoder_layers[0]).norm1.eps
    return spec


def _ffn(spec: Any, layer: _EncoderLayer | _DecoderLayer, norm: Any) -> None:
    first, second = cast(nn.Linear, layer.ffn[0]), cast(nn.Linear, layer.ffn[2])
    _linear(spec.linear_0, first.weight, first.bias)
    _linear(spec.linear_1, second.weight, second.bias)
    _norm(spec.layer_norm, norm)


def write_ctranslate2(loaded: LoadedModel, directory: Path, quantize: str) -> None:
    model = transformer_model(loaded, "CTranslate2 export")
    spec = transformer_spec(model)
    for side, register in (
        ("source", spec.register_source_vocabulary),
        ("target", spec.register_target_vocabulary),
    ):
        tokenizer = getattr(loaded.tokenizers, side)
        register([tokenizer.piece(i) for i in range(tokenizer.vocab_size)])
    spec.config.unk_token, spec.config.bos_token = SPECIALS[UNK_ID], SPECIALS[BOS_ID]
    spec.config.eos_token, spec.config.decoder_start_token = SPECIALS[EOS_ID], SPECIALS[BOS_ID]
    spec.validate()
    spec.optimize(quantization=quantize)
    directory.mkdir(parents=True)
    spec.save(str(directory))
