"""int8 decoding on CPU: every linear layer (``generate.quantize: int8``) or the vocabulary projection alone
(``int8_output``) becomes one with int8 weights (a scale per output row) whose input is quantized on the
fly, batch by batch (PyTorch's dynamic quantization, fbgemm/oneDNN kernels).

Embeddings stay float32 (a lookup gains nothing from int8); a tied output projection gets its own int8
copy of the embedding. ``torch.ao.quantization`` warns that it is deprecated in favour of torchao; it is
still what runs int8 matrix products on CPU in torch 2.13 without another dependency, so its warnings are
silenced here, the one place that calls it.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from seqsmith.errors import SeqsmithError
from seqsmith.models.interface import Seq2SeqModel


def vocabulary_projections(model: Seq2SeqModel) -> list[str]:
    """The names of the linear layers that give the target vocabulary's scores: those whose weight rows
    follow the target vocabulary (``Seq2SeqModel.vocabulary_rows``, which transfer learning reads too)."""
    modules = dict(model.named_modules())
    weights = [name for name, side in model.vocabulary_rows.items() if side == "target"]
    names = [name.removesuffix(".weight") for name in weights if name.endswith(".weight")]
    return [name for name in names if isinstance(modules.get(name), nn.Linear)]


def quantize_int8(model: Seq2SeqModel, projection_only: bool = False) -> Seq2SeqModel:
    """An int8 copy of ``model`` for inference (the float model is left as it is): every linear layer, or
    with ``projection_only`` the vocabulary projection alone. That one weight is most of what a step of a
    few rows reads from memory (bench/decode_step.py: 40% of a batch-1 step of the Multi30k model), so
    int8 there buys most of the batch-1 speed while the rest of the model keeps float32's numbers."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec: dict[Any, Any] = {nn.Linear: per_channel_dynamic_qconfig}
    if projection_only:
        names = vocabulary_projections(model)
        if not names:
            raise SeqsmithError(
                f"generate.quantize=int8_output: {type(model).__name__} names no linear layer that gives the "
                "vocabulary's scores (Seq2SeqModel.vocabulary_rows); use generate.quantize: int8"
            )
        spec = dict.fromkeys(names, per_channel_dynamic_qconfig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(model, spec, dtype=torch.qint8)
    return quantized.eval()
