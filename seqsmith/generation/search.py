"""The one entry point of generation: ids in, ranked hypotheses out, for every algorithm and model.

Search sees only the model interface (encode / decode_step / state.reorder), so it works unchanged with
every architecture and with ensembles. ``length_batches`` and ``pad`` are the batching every engine shares.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from seqsmith.config import GenerateConfig
from seqsmith.data.tokenizer import TargetPieces
from seqsmith.errors import SeqsmithError
from seqsmith.generation.beam import beam_search
from seqsmith.generation.hypothesis import Hypothesis
from seqsmith.generation.rules import LengthLimits
from seqsmith.generation.sampling import sample
from seqsmith.models.interface import Seq2SeqModel


def generate_ids(
    model: Seq2SeqModel,
    src: Tensor,
    src_mask: Tensor,
    config: GenerateConfig,
    pieces: TargetPieces | None = None,
) -> list[list[Hypothesis]]:
    """Per source sentence, up to ``config.nbest`` hypotheses, best first.

    ``src`` (batch, src_len) holds ids, ``src_mask`` is True at real tokens; ``pieces`` (the tokenizer's)
    serve whole characters and ``config.whole_words``. The model runs in eval mode under
    ``torch.inference_mode`` and gets its previous mode back afterwards.
    """
    _check(src, src_mask, config)
    if src.size(0) == 0:
        return []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            memory = model.encode(src, src_mask)
            limits = LengthLimits.from_source(src, src_mask, config, model, pieces)
            if config.method in ("beam", "diverse_beam"):
                return beam_search(model, memory, limits, config, config.keep_attention)
            return sample(model, memory, limits, config, config.keep_attention, config.method == "greedy")
    finally:
        model.train(was_training)


def length_batches(lengths: Sequence[int], batch_tokens: int) -> Iterator[np.ndarray]:
    """Indices grouped by length (longest first) so that padded size stays under the token budget."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, batch_tokens // longest)
        yield order[start : start + size]
        start += size


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    src = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, ids in enumerate(sequences):
        src[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return src, src != pad_id


@torch.inference_mode()
def search_all(
    model: Seq2SeqModel,
    sources: Sequence[Sequence[int]],
    config: GenerateConfig,
    pieces: TargetPieces | None = None,
) -> list[list[Hypothesis]]:
    """Search every source (ids ending with EOS) in length-sorted batches; results in input order."""
    results: list[list[Hypothesis]] = [[] for _ in sources]
    device = model.device
    for indices in length_batches([len(s) for s in sources], config.batch_tokens // config.width):
        src, mask = pad([sources[i] for i in indices], model.pad_id)
        found = generate_ids(model, src.to(device), mask.to(device), config, pieces)
        for index, hypotheses in zip(indices, found):
            if not hypotheses:
                raise SeqsmithError(
                    f"input {int(index) + 1}: search found no output with a finite score (weights that hold "
                    "NaN or inf, or options such as generate.min_length that rule every output out)"
                )
            results[int(index)] = hypotheses
    return results


def _check(src: Tensor, src_mask: Tensor, config: GenerateConfig) -> None:
    if src.dim() != 2 or src_mask.shape != src.shape:
        raise SeqsmithError(
            f"generate_ids needs src and src_mask of the same shape (batch, src_len); got "
            f"{tuple(src.shape)} and {tuple(src_mask.shape)}"
        )
    if src_mask.dtype != torch.bool or src.dtype != torch.long:
        raise SeqsmithError(
            f"generate_ids needs long ids and a bool mask; got {src.dtype} and {src_mask.dtype}"
        )
    if config.method == "greedy" and config.nbest > 1:
        raise SeqsmithError(
            f"generate.nbest={config.nbest} needs generate.method beam, diverse_beam or sample; "
            "greedy decoding gives one output"
        )
