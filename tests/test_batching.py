"""Batching: collate layout, sampler invariants (each example once, budget, determinism, shards), resume."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqsmith.config import config_from_dict
from seqsmith.data.batching import TokenBatchSampler, collate, iterate
from seqsmith.data.binarize import BinarizedSplit, SplitWriter
from seqsmith.data.prepare import prepare
from seqsmith.errors import SeqsmithError
from seqsmith.specials import BOS_ID, EOS_ID, PAD_ID

DATA = Path(__file__).parents[2] / "shared" / "data"


def make_split(tmp_path: Path, count: int = 300, seed: int = 0) -> tuple[BinarizedSplit, list]:
    rng = np.random.default_rng(seed)
    pairs = []
    with SplitWriter(tmp_path, "train", 1000, keep_texts=False) as writer:
        for _ in range(count):
            source = [*rng.integers(5, 1000, rng.integers(0, 40)).tolist(), EOS_ID]
            target = rng.integers(5, 1000, rng.integers(0, 40)).tolist()
            writer.add(source, target)
            pairs.append((source, target))
    return BinarizedSplit(tmp_path, "train"), pairs


def test_collate_layout_against_a_direct_construction(tmp_path: Path) -> None:
    split, pairs = make_split(tmp_path, 20)
    indices = np.array([3, 0, 17])
    batch = collate(split, indices)
    width = max(len(pairs[i][0]) for i in indices)
    height = max(len(pairs[i][1]) for i in indices) + 1
    assert batch.src.shape == (3, width) and batch.tgt_in.shape == batch.tgt_out.shape == (3, height)
    assert batch.src.dtype == torch.long and batch.src_mask.dtype == torch.bool
    for row, index in enumerate(indices):
        source, target = pairs[index]
        assert batch.src[row].tolist() == source + [PAD_ID] * (width - len(source))
        assert batch.src_mask[row].tolist() == [True] * len(source) + [False] * (width - len(source))
        padding = [PAD_ID] * (height - len(target) - 1)
        assert batch.tgt_in[row].tolist() == [BOS_ID, *target, *padding]
        assert batch.tgt_out[row].tolist() == [*target, EOS_ID, *padding]
    assert batch.ids.tolist() == [3, 0, 17]
    assert batch.num_target_tokens == sum(len(pairs[i][1]) + 1 for i in indices)
    moved = batch.to("cpu")
    assert torch.equal(moved.tgt_out, batch.tgt_out) and len(moved) == 3


def check_epoch(sampler: TokenBatchSampler, sources: np.ndarray, targets: np.ndarray, epoch: int) -> None:
    batches = sampler.batches(epoch)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(sources)))  # every example exactly once
    for batch in batches:
        assert len(batch) * sources[batch].max() <= sampler.batch_tokens
        assert len(batch) * (targets[batch].max() + 1) <= sampler.batch_tokens


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 60), st.integers(0, 60)), min_size=1, max_size=300),
    budget=st.integers(61, 600),
    seed=st.integers(0, 5),
)
def test_every_example_once_within_budget(lengths: list[tuple[int, int]], budget: int, seed: int) -> None:
    sources, targets = (np.array(side) for side in zip(*lengths, strict=True))
    sampler = TokenBatchSampler(sources, targets, budget, seed=seed)
    check_epoch(sampler, sources, targets, 0)
    check_epoch(TokenBatchSampler(sources, targets, budget, shuffle=False), sources, targets, 0)


def test_deterministic_per_seed_and_epoch() -> None:
    rng = np.random.default_rng(1)
    sources, targets = rng.integers(1, 50, 2000), rng.integers(0, 50, 2000)

    def order(seed: int, epoch: int) -> list[list[int]]:
        sampler = TokenBatchSampler(sources, targets, 1000, seed=seed)
        return [batch.tolist() for batch in sampler.batches(epoch)]

    assert order(3, 1) == order(3, 1)
    assert order(3, 1) != order(3, 2) and order(3, 1) != order(4, 1)


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_shards_are_disjoint_equal_and_cover_everything(world_size: int) -> None:
    rng = np.random.default_rng(2)
    sources, targets = rng.integers(1, 50, 1001), rng.integers(0, 50, 1001)
    shards = [
        TokenBatchSampler(sources, targets, 700, seed=5, rank=r, world_size=world_size).batches(7)
        for r in range(world_size)
    ]
    assert len({len(shard) for shard in shards}) == 1
    seen = np.concatenate([np.concatenate(shard) for shard in shards])
    assert sorted(seen.tolist()) == list(range(1001))  # disjoint, nothing dropped


def test_too_few_examples_for_every_rank_gives_each_rank_nothing() -> None:
    shards = [
        TokenBatchSampler(np.array([4]), np.array([4]), 100, rank=r, world_size=2).batches(0) for r in (0, 1)
    ]
    assert shards == [[], []]


def test_bad_budget_and_rank_are_errors() -> None:
    with pytest.raises(SeqsmithError, match="batch_tokens=10 is smaller than the longest example"):
        TokenBatchSampler(np.array([5, 11]), np.array([3, 3]), 10)
    with pytest.raises(SeqsmithError, match="rank 2"):
        TokenBatchSampler(np.array([5]), np.array([3]), 10, rank=2, world_size=2)


def test_iterate_resumes_exactly_at_a_batch(tmp_path: Path) -> None:
    split, _ = make_split(tmp_path, 400)
    sampler = TokenBatchSampler(split.source_lengths, split.target_lengths, 400, seed=9)
    full = [batch.ids.tolist() for batch in iterate(split, sampler, epoch=2)]
    assert len(full) > 5
    resumed = [batch.ids.tolist() for batch in iterate(split, sampler, epoch=2, start=4)]
    assert resumed == full[4:]


def test_padding_efficiency_matches_collated_batches(tmp_path: Path) -> None:
    split, _ = make_split(tmp_path, 300)
    sampler = TokenBatchSampler(split.source_lengths, split.target_lengths, 500, seed=0)
    real = padded = 0
    for batch in iterate(split, sampler, 0):
        real += int(batch.src_mask.sum()) + 2 * batch.num_target_tokens
        padded += batch.src.numel() + batch.tgt_in.numel() + batch.tgt_out.numel()
    assert sampler.padding_efficiency(0) == pytest.approx(real / padded)


@pytest.mark.may_skip
@pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data (real data sets, not in a fresh clone)")
def test_multi30k_padding_efficiency_at_4096_tokens(tmp_path: Path) -> None:
    base = DATA / "multi30k"
    config = config_from_dict(
        {
            "data": {
                "train": str(base / "train"),
                "source_suffix": "en",
                "target_suffix": "de",
                "tokenizer": {"vocab_size": 8000},
                "max_source_length": 100,
                "max_target_length": 100,
                "output_dir": str(tmp_path / "data"),
            }
        }
    )
    prepare(config, progress=False)
    split = BinarizedSplit(tmp_path / "data", "train")
    sampler = TokenBatchSampler(split.source_lengths, split.target_lengths, 4096, seed=1)
    assert sampler.padding_efficiency(0) >= 0.9
    check_epoch(sampler, split.source_lengths, split.target_lengths, 0)


def resident_kib(path: Path) -> int:
    """Resident size of this process's mappings of ``path``, from /proc/self/smaps."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):  # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(
    not Path("/proc/self/smaps").is_file(), reason="needs Linux /proc to read resident memory"
)
def test_collate_keeps_no_pages_of_the_corpus_resident(tmp_path: Path) -> None:
    split, _ = make_split(tmp_path, 20_000)
    path = (tmp_path / "train.source.bin").resolve()
    assert path.stat().st_size > 500_000
    split.source(123).sum()
    split.source(15_000).sum()
    assert resident_kib(path) > 0  # reading through the map makes pages resident ...
    split.release()
    assert resident_kib(path) == 0  # ... release drops them ...
    batch = collate(split, np.arange(0, 20_000, 7))
    assert resident_kib(path) == 0  # ... and collate reads without the map
    assert batch.src[5].tolist()[: split.source_lengths[35]] == split.source(35).tolist()
