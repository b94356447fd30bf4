"""bench/roofline.py's FLOP count of a Transformer against torch's own FLOP counter on a real forward and
backward pass: the shares it reports are only as right as that count."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from seqsmith.config import config_from_dict
from seqsmith.models.build import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from roofline import Shape, decoder, encoder, flops, model_flops


def counted(backward: bool, sizes: tuple[int, int, int]) -> float:
    """Matrix-product FLOPs that torch counts for one pass of a seqsmith Transformer."""
    d_model, ffn, vocab = 64, 128, 300
    model_config = {"arch": "transformer", "d_model": d_model, "heads": 4, "ffn_dim": ffn, "dropout": 0.0}
    model_config |= {"encoder_layers": 2, "decoder_layers": 3}
    model = build_model(config_from_dict({"data": {"train": "x"}, "model": model_config}).model, vocab, vocab)
    batch, source, target = sizes
    src = torch.randint(4, vocab, (batch, source))
    tgt = torch.randint(4, vocab, (batch, target))
    with FlopCounterMode(display=False) as counter:
        scores = model(src, torch.ones(batch, source, dtype=torch.bool), tgt)
        if backward:
            scores.float().logsumexp(-1).sum().backward()
    return float(sum(value for op, value in counter.get_flop_counts()["Global"].items() if "mm" in str(op)))


@pytest.mark.parametrize("sizes", [(2, 9, 7), (3, 5, 11)])
def test_forward_and_training_flops_match_torchs_counter(sizes: tuple[int, int, int]) -> None:
    batch, source, target = sizes
    shape = Shape(64, 128, 2, 3, 300, source_length=source, target_length=target)
    forward = flops(encoder(shape, batch * source)) + flops(decoder(shape, batch * target))
    assert forward == counted(False, sizes)
    per_token = model_flops(shape)["train_per_target_token"]
    assert per_token * batch * target == pytest.approx(counted(True, sizes), rel=1e-9)
