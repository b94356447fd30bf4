"""The precision of training's forward passes: ``train.precision: auto|fp32|bf16``.

bfloat16 autocast halves the bytes of every matrix product. Where the hardware has native bfloat16
(AVX512-BF16 or AMX on a CPU, a recent GPU) that can make a step faster, but not always: the casts cost
about what a narrow model's products save, and one GRU config ran 1.8x slower on an AVX512-BF16 CPU where
on another such CPU both a GRU and a Transformer ran 1.5-1.9x faster (docs/benchmarks.md, "Training
precision"). So ``auto`` does not guess from the flags alone: on hardware with native bfloat16 it times
a few forward and backward passes of the model on the first batch in both precisions and takes bf16 only
when clearly faster; elsewhere it stays in fp32 without a probe. The probe leaves the weights, gradients and
random state as it found them, and the trainer stores its choice in the checkpoint, so resume is exact.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from seqsmith.data.batching import Batch
from seqsmith.hardware import native_bf16
from seqsmith.models.interface import Seq2SeqModel

FASTER = 0.9  # bf16 is taken when its step takes at most this share of the fp32 step's time
ROUNDS = 3  # timed passes per precision, alternating, after one untimed pass each


@dataclass(frozen=True)
class Choice:
    bf16: bool
    reason: str  # for the log: why this precision


def auto_precision(model: Seq2SeqModel, batch: Batch) -> Choice:
    """What ``train.precision: auto`` stands for on this model, hardware and first batch."""
    device = batch.src.device
    if not native_bf16(device):
        return Choice(False, f"auto: no native bfloat16 on this {device.type}")
    fp32, bf16 = _probe(model, batch)
    faster = bf16 <= FASTER * fp32
    return Choice(faster, f"auto: a probe step took {bf16:.3f} s in bf16 against {fp32:.3f} s in fp32")


def _probe(model: Seq2SeqModel, batch: Batch) -> tuple[float, float]:
    """Median seconds of a forward and backward pass in fp32 and in bf16."""
    times: dict[bool, list[float]] = {False: [], True: []}
    with torch.random.fork_rng(devices=[batch.src.device] if batch.src.is_cuda else []):
        for round_ in range(ROUNDS + 1):
            for bf16 in (False, True):
                seconds = _timed_pass(model, batch, bf16)
                if round_:
                    times[bf16].append(seconds)
    model.zero_grad(set_to_none=True)
    return statistics.median(times[False]), statistics.median(times[True])


def _timed_pass(model: Seq2SeqModel, batch: Batch, bf16: bool) -> float:
    start = time.perf_counter()
    with torch.autocast(batch.src.device.type, dtype=torch.bfloat16, enabled=bf16):
        scores = model(batch.src, batch.src_mask, batch.tgt_in)
    scores.float().logsumexp(-1).mean().backward()
    if batch.src.is_cuda:
        torch.cuda.synchronize(batch.src.device)
    return time.perf_counter() - start
