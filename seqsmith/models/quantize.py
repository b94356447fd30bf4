"""int8 decoding on CPU: every linear layer becomes one with int8 weights (a scale per output row) whose
input is quantized on the fly, batch by batch (PyTorch's dynamic quantization, fbgemm/oneDNN kernels).

Embeddings stay float32 (a lookup gains nothing from int8); a tied output projection gets its own int8
copy of the embedding. ``torch.ao.quantization`` warns that it is deprecated in favour of torchao; it is
still what runs int8 matrix products on CPU in torch 2.13 without another dependency, so its warnings are
silenced here, the one place that calls it.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from seqsmith.models.interface import Seq2SeqModel


def quantize_int8(model: Seq2SeqModel) -> Seq2SeqModel:
    """An int8 copy of ``model`` for inference (the float model is left as it is)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    return quantized.eval()
