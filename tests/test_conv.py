"""The convolutional model against a float64 loop-by-loop reading of Gehring et al. (2017), its encoder's
gradient scaling, and its config errors. Step-by-step decoding, padding, beams and training are checked
with the other families in test_models.py."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

import seqsmith.models.conv as conv
from seqsmith.config import ConvConfig, load_config
from seqsmith.errors import SeqsmithError
from seqsmith.models.conv import ConvModel
from seqsmith.specials import PAD_ID

CONFIG = ConvConfig(
    embed_dim=8, encoder_layers=2, decoder_layers=2, encoder_channels=[8, 5], decoder_channels=[5, 7],
    encoder_kernels=[3, 5], decoder_kernels=[2, 3], dropout=0.0, max_positions=32,
)  # fmt: skip


def glu_conv(x: list[list[float]], weight: Tensor, bias: Tensor, left: int) -> list[list[float]]:
    """Output position i reads inputs i - left .. i - left + kernel - 1 (zeros outside); GLU halves."""
    out_channels, in_channels, kernel = weight.shape
    rows = []
    for i in range(len(x)):
        a = [float(bias[o]) for o in range(out_channels)]
        for j in range(kernel):
            p = i - left + j
            if 0 <= p < len(x):
                for o in range(out_channels):
                    a[o] += sum(float(weight[o, c, j]) * x[p][c] for c in range(in_channels))
        half = out_channels // 2
        rows.append([a[o] / (1 + math.exp(-a[o + half])) for o in range(half)])
    return rows


def linear(x: list[float], layer: Any) -> list[float]:
    w, b = layer.weight.double(), layer.bias.double()
    return [float(b[o]) + sum(float(w[o, c]) * x[c] for c in range(len(x))) for o in range(w.size(0))]


def reference(model: ConvModel, src: list[int], tgt_in: list[int]) -> list[list[float]]:
    """Log-probabilities for one unpadded sentence, in float64 Python."""

    def embed(table: Tensor, ids: list[int], positions: Tensor) -> list[list[float]]:
        width = table.size(1)
        return [[float(table[t, c] + positions[i, c]) for c in range(width)] for i, t in enumerate(ids)]

    half = math.sqrt(0.5)
    e = embed(model.source_embedding.weight.double(), src, model.source_positions.weight.double())
    x = [linear(row, model.encoder.project_in) for row in e]
    for block in model.encoder.blocks:
        skip = x if block.residual is None else [linear(r, block.residual) for r in x]
        y = glu_conv(x, block.conv.weight.double(), block.conv.bias.double(), (block.kernel - 1) // 2)
        x = [[(a + b) * half for a, b in zip(r, s, strict=True)] for r, s in zip(y, skip, strict=True)]
    z = [linear(row, model.encoder.project_out) for row in x]
    values = [[(a + b) * half for a, b in zip(zr, er, strict=True)] for zr, er in zip(z, e, strict=True)]
    g = embed(model.target_embedding.weight.double(), tgt_in, model.target_positions.weight.double())
    x = [linear(row, model.decoder.project_in) for row in g]
    for block, attention in zip(model.decoder.blocks, model.attention, strict=True):
        skip = x if block.residual is None else [linear(r, block.residual) for r in x]
        h = glu_conv(x, block.conv.weight.double(), block.conv.bias.double(), block.kernel - 1)
        mixed = []
        for hi, gi in zip(h, g, strict=True):
            d = [(a + b) * half for a, b in zip(linear(hi, attention.query), gi, strict=True)]
            scores = [sum(a * b for a, b in zip(d, zj, strict=True)) for zj in z]
            top = max(scores)
            weights = [math.exp(s - top) for s in scores]
            weights = [w / sum(weights) for w in weights]
            context = [
                sum(w * v[c] for w, v in zip(weights, values, strict=True)) * math.sqrt(len(src))
                for c in range(len(values[0]))
            ]
            mixed.append([(a + b) * half for a, b in zip(hi, linear(context, attention.out), strict=True)])
        x = [[(a + b) * half for a, b in zip(r, s, strict=True)] for r, s in zip(mixed, skip, strict=True)]
    rows = []
    for row in x:
        logits = linear(linear(row, model.decoder.project_out), model.output)
        top = max(logits)
        norm = top + math.log(sum(math.exp(v - top) for v in logits))
        rows.append([v - norm for v in logits])
    return rows


@pytest.mark.parametrize("normalized", [True, False], ids=["weight-norm", "plain"])
def test_forward_and_steps_equal_a_float64_reading_of_the_paper(normalized: bool) -> None:
    torch.manual_seed(0)
    model = ConvModel(CONFIG.model_copy(update={"weight_norm": normalized}), 11, 11).eval()
    with torch.no_grad():  # larger biases, so that a misplaced one shows
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(std=0.3)
    src, tgt_in = [5, 9, 4, 7, 3], [2, 6, 8, 10]
    src_ids = torch.tensor([src + [PAD_ID] * 2])
    mask = src_ids != PAD_ID
    with torch.no_grad():
        scores = torch.log_softmax(model(src_ids, mask, torch.tensor([tgt_in])), dim=-1)[0]
        memory, state, steps = model.encode(src_ids, mask), None, []
        for token in tgt_in:
            log_probs, state = model.decode_step(torch.tensor([token]), memory, state)
            steps.append(log_probs[0])
        expected = torch.tensor(reference(model, src, tgt_in), dtype=torch.float32)
    assert torch.allclose(scores, expected, atol=1e-5)
    assert torch.allclose(torch.stack(steps), expected, atol=1e-5)
    assert state is not None and state.head_attention is not None
    assert state.head_attention.shape == (1, CONFIG.decoder_layers, 7)  # one picture per decoder layer


def test_the_encoder_gradient_is_scaled_by_twice_the_decoder_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every decoder layer attends to the encoder: its blocks learn at 1 / (2 * layers) of the rate."""

    def gradients() -> dict[str, Tensor]:
        torch.manual_seed(1)
        model = ConvModel(CONFIG, 11, 11).train()
        src = torch.tensor([[5, 9, 4, 7, 3]])
        model(src, src != PAD_ID, torch.tensor([[2, 6, 8]])).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    scaled = gradients()
    monkeypatch.setattr(conv._ScaleGradient, "apply", lambda x, scale: x)
    plain = gradients()
    for name, grad in scaled.items():
        factor = 1 / (2 * CONFIG.decoder_layers) if name.startswith("encoder.") else 1.0
        if name.startswith(("encoder.", "decoder.", "attention.", "target_")):
            assert torch.allclose(grad, plain[name] * factor, atol=1e-7), name
    assert not torch.allclose(scaled["source_embedding.weight"], plain["source_embedding.weight"])


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"encoder_kernels": 4}, "encoder_kernels=4 must be odd"),
        ({"encoder_layers": 3, "encoder_channels": [8, 8]}, "lists 2 values for 3 layers"),
        ({"decoder_kernels": [3, 0, 3, 3]}, r"must lie in 1\.\.4096"),
        ({"decoder_channel": 8}, "decoder_channel"),
    ],
)
def test_impossible_shapes_are_config_errors(tmp_path: Any, model: dict[str, Any], message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "data: {train: a, dev: b}\nmodel: {arch: conv, "
        + ", ".join(f"{k}: {v}" for k, v in model.items())
        + "}\n"
    )
    with pytest.raises(SeqsmithError, match=message):
        load_config(path)
