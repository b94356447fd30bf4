"""Batches by token budget: similar lengths together (little padding), shuffled, deterministic, shardable.

A sampler only sees lengths, so it works for any split; ``collate`` turns one list of indices into padded
tensors. Lengths are as ``BinarizedSplit`` stores them: source with EOS, target without BOS/EOS (a batch
adds one: ``tgt_in`` = BOS + target, ``tgt_out`` = target + EOS).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
from torch import Tensor

from seqsmith.config import DataConfig
from seqsmith.data.binarize import BinarizedSplit
from seqsmith.errors import SeqsmithError
from seqsmith.specials import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Batch:
    src: Tensor  # (B, S) long, PAD after the source's EOS
    src_mask: Tensor  # (B, S) bool, True at real tokens
    tgt_in: Tensor  # (B, T) long: BOS + target, PAD after
    tgt_out: Tensor  # (B, T) long: target + EOS, PAD after
    ids: Tensor  # (B,) example indices in the split

    @property
    def num_target_tokens(self) -> int:
        return int((self.tgt_out != PAD_ID).sum())

    def __len__(self) -> int:
        return int(self.ids.numel())

    def to(self, device: torch.device | str) -> Batch:
        non_blocking = torch.device(device).type == "cuda"
        return Batch(*(tensor.to(device, non_blocking=non_blocking) for tensor in self._tensors()))

    def pin_memory(self) -> Batch:
        return Batch(*(tensor.pin_memory() for tensor in self._tensors()))

    def _tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return self.src, self.src_mask, self.tgt_in, self.tgt_out, self.ids


def collate(
    split: BinarizedSplit,
    indices: np.ndarray,
    pad_id: int = PAD_ID,
    bos_id: int = BOS_ID,
    eos_id: int = EOS_ID,
) -> Batch:
    """Padded tensors for ``indices``; a pretrained model passes its own special ids."""
    indices = np.asarray(indices, dtype=np.int64)
    source_lengths = split.source_lengths[indices]
    target_lengths = split.target_lengths[indices]
    size = len(indices)
    src = np.full((size, int(source_lengths.max(initial=1))), pad_id, dtype=np.int64)
    target_width = int(target_lengths.max(initial=0)) + 1
    tgt_in = np.full((size, target_width), pad_id, dtype=np.int64)
    tgt_out = np.full((size, target_width), pad_id, dtype=np.int64)
    tgt_in[:, 0] = bos_id
    rows = zip(split.rows(0, indices), split.rows(1, indices), target_lengths, strict=True)
    for row, (source, target, target_length) in enumerate(rows):
        src[row, : len(source)] = source
        tgt_in[row, 1 : target_length + 1] = target
        tgt_out[row, :target_length] = target
        tgt_out[row, target_length] = eos_id
    src_mask = np.arange(src.shape[1])[None, :] < source_lengths[:, None]
    return Batch(
        torch.from_numpy(src),
        torch.from_numpy(src_mask),
        torch.from_numpy(tgt_in),
        torch.from_numpy(tgt_out),
        torch.from_numpy(indices.copy()),
    )


class TokenBatchSampler:
    """Length-bucketed batches whose padded size (count x longest, on each side) fits ``batch_tokens``.

    Examples are sorted by (source, target) length with ties broken at random, cut greedily into batches,
    and the batch order is shuffled; everything follows from (seed, epoch), so every rank computes the same
    list. A corpus read more than once an epoch (``rates``) is read in rounds, each sorted and cut on its
    own, so that an example's copies land in different batches: sorted together, copies (of equal length)
    would share a batch, and upsampling would weight one update's loss instead of adding updates. With
    ``world_size`` w the largest batches are halved until the count divides by w (no example is dropped
    unless there are too few examples to split), and rank r takes every w-th batch from r on.
    """

    def __init__(
        self,
        source_lengths: np.ndarray,
        target_lengths: np.ndarray,
        batch_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        rates: Sequence[tuple[int, float]] = (),
    ) -> None:
        if not 0 <= rank < world_size:
            raise SeqsmithError(f"rank {rank} must lie in [0, world_size={world_size})")
        self.source_sizes = np.asarray(source_lengths, dtype=np.int32)
        self.target_sizes = np.asarray(target_lengths, dtype=np.int32) + 1
        if len(self.source_sizes) != len(self.target_sizes):
            raise SeqsmithError("source_lengths and target_lengths must have the same length")
        longest = int(max(self.source_sizes.max(initial=0), self.target_sizes.max(initial=0)))
        if longest > batch_tokens:
            raise SeqsmithError(
                f"batch_tokens={batch_tokens} is smaller than the longest example ({longest} tokens with "
                "BOS/EOS); raise train.batch_tokens or lower data.max_source_length / max_target_length"
            )
        if rates and sum(count for count, _ in rates) != len(self.source_sizes):
            raise SeqsmithError(
                f"rates cover {sum(c for c, _ in rates)} examples of {len(self.source_sizes)}"
            )
        self.batch_tokens, self.shuffle, self.seed = batch_tokens, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.rates = [] if all(rate == 1.0 for _, rate in rates) else list(rates)

    def _pool(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The examples of an epoch and the round of each: corpus i (the next ``count`` examples) read
        ``rate`` times, the fraction as a sample drawn without replacement; an example's copies go to
        consecutive rounds from a random one, so no round holds it twice."""
        if not self.rates:
            return np.arange(len(self.source_sizes)), np.zeros(len(self.source_sizes), dtype=np.int64)
        parts: list[np.ndarray] = []
        copies: list[np.ndarray] = []
        start = 0
        for count, rate in self.rates:
            indices = np.arange(start, start + count)
            extra = round((rate - int(rate)) * count)
            reads = [indices] * int(rate)
            if extra:
                reads.append(np.sort(rng.choice(indices, extra, replace=False)))
            parts += reads
            copies += [np.full(len(read), copy) for copy, read in enumerate(reads)]
            start += count
        pool = np.concatenate(parts)
        rounds = max(math.ceil(rate) for _, rate in self.rates)
        if rounds == 1:
            return pool, np.zeros(len(pool), dtype=np.int64)
        first = rng.integers(rounds, size=len(self.source_sizes))
        return pool, (first[pool] + np.concatenate(copies)) % rounds

    def _order(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's examples sorted by round, then length, and where each round starts and ends."""
        pool, rounds = self._pool(rng)
        if self.shuffle:
            permutation = rng.permutation(len(pool))
            pool, rounds = pool[permutation], rounds[permutation]
        order = np.lexsort((self.target_sizes[pool], self.source_sizes[pool], rounds))
        bounds = np.searchsorted(rounds[order], np.arange(int(rounds.max(initial=0)) + 2))
        return pool[order], bounds

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        starts, count, longest = [0], 0, 0
        budget = self.batch_tokens
        sizes = np.maximum(self.source_sizes, self.target_sizes)[order].tolist()
        for position, size in enumerate(sizes):
            if (count + 1) * max(longest, size) > budget:
                starts.append(position)
                count, longest = 0, 0
            count, longest = count + 1, max(longest, size)
        starts.append(len(order))
        return [order[a:b] for a, b in pairwise(starts) if b > a]

    def _even(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        while len(batches) % self.world_size:
            largest = max(range(len(batches)), key=lambda i: len(batches[i]))
            batch = batches[largest]
            if len(batch) < 2:
                return batches[: len(batches) - len(batches) % self.world_size]
            half = len(batch) // 2
            batches[largest : largest + 1] = [batch[:half], batch[half:]]
        return batches

    def all_batches(self, epoch: int) -> list[np.ndarray]:
        """The batches of every rank together, in the epoch's order."""
        rng = np.random.default_rng([self.seed, epoch])
        order, bounds = self._order(rng)
        batches = self._even([batch for a, b in pairwise(bounds) for batch in self._cut(order[a:b])])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches (arrays of example indices) for ``epoch``."""
        return self.all_batches(epoch)[self.rank :: self.world_size]

    def padding_efficiency(self, epoch: int = 0) -> float:
        """Real tokens / all tokens including padding, over src, tgt_in and tgt_out of all batches."""
        real = padded = 0
        for batch in self.all_batches(epoch):
            sources, targets = self.source_sizes[batch], self.target_sizes[batch]
            real += int(sources.sum()) + 2 * int(targets.sum())
            padded += len(batch) * (int(sources.max()) + 2 * int(targets.max()))
        return real / padded if padded else 1.0


def corpus_rates(data: DataConfig, corpora: Sequence[int]) -> list[tuple[int, float]]:
    """(examples, times an epoch reads them) per training corpus, from the weights or upsample factors of
    ``data.train`` and the examples ``corpora`` that prepare binarized from each."""
    sources = data.train_sources
    if len(corpora) != len(sources):
        raise SeqsmithError(
            f"the training data was prepared from {len(corpora)} corpora and data.train lists "
            f"{len(sources)}; run `seqsmith prepare CONFIG` again"
        )
    if sources[0].weight is None:
        return [(count, 1.0 if s.upsample is None else s.upsample) for count, s in zip(corpora, sources)]
    total, weights = sum(corpora), [s.weight or 0.0 for s in sources]
    return [
        (count, weight / sum(weights) * total / count if count else 0.0)
        for count, weight in zip(corpora, weights, strict=True)
    ]


def iterate(split: BinarizedSplit, sampler: TokenBatchSampler, epoch: int, start: int = 0) -> Iterator[Batch]:
    """The epoch's batches for this rank from batch ``start`` on (resume exactly where training stopped)."""
    for indices in sampler.batches(epoch)[start:]:
        yield collate(split, indices)
