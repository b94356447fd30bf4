"""Several tagged and weighted training corpora, back-translation, and transfer (freezing, per-part rates)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_config

from seqsmith import api
from seqsmith.cli import main
from seqsmith.config import TrainConfig, config_from_dict
from seqsmith.data.batching import TokenBatchSampler, corpus_rates
from seqsmith.data.binarize import BinarizedSplit
from seqsmith.data.prepare import check_settings, prepare
from seqsmith.data.tokenizer import Tokenizers
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import read_lines
from seqsmith.models.initialize import part_of
from seqsmith.models.model_dir import load_model_dir
from seqsmith.training.optim import build_optimizer, part_groups, set_learning_rate


def write_corpus(prefix: Path, pairs: list[tuple[str, str]]) -> str:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".src").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    prefix.with_suffix(".tgt").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return str(prefix)


def two_corpora(tmp_path: Path, first: dict[str, Any], second: dict[str, Any], **data: Any) -> dict[str, Any]:
    real = write_corpus(tmp_path / "real", [(f"a b {i}", f"x {i}") for i in range(30)])
    synthetic = write_corpus(tmp_path / "synthetic", [(f"c d {i}", f"y {i}") for i in range(90)])
    return {
        "data": {
            "train": [{"path": real, **first}, {"path": synthetic, **second}],
            "tokenizer": {"kind": "word", "byte_fallback": False},
            "output_dir": str(tmp_path / "out"),
            **data,
        }
    }


def test_tagged_corpora_follow_each_other_and_the_tag_is_one_symbol(tmp_path: Path) -> None:
    config = config_from_dict(two_corpora(tmp_path, {"max_examples": 20}, {"tag": "<bt>"}))
    report = prepare(config, progress=False)
    assert report.splits["train"].corpora == [20, 90]
    split, tokenizers = (
        BinarizedSplit(tmp_path / "out", "train"),
        Tokenizers.load(tmp_path / "out" / "tokenizer"),
    )
    assert split.corpora == [20, 90]
    texts = [tokenizers.source.decode(split.source(i)) for i in range(len(split))]
    assert texts[:20] == [f"a b {i}" for i in range(20)]
    assert texts[20:] == [f"<bt> c d {i}" for i in range(90)]
    tag = tokenizers.source.encode("<bt>")
    assert len(tag) == 1 and all(split.source(i)[0] == tag[0] for i in range(20, 110))


def test_weights_and_upsampling_set_how_often_an_epoch_reads_each_corpus(tmp_path: Path) -> None:
    config = config_from_dict(two_corpora(tmp_path, {"weight": 3}, {"weight": 1}))
    prepare(config, progress=False)
    split = BinarizedSplit(tmp_path / "out", "train")
    rates = corpus_rates(config.data, split.corpora)
    assert rates == [(30, pytest.approx(3 / 4 * 120 / 30)), (90, pytest.approx(1 / 4 * 120 / 90))]
    sampler = TokenBatchSampler(split.source_lengths, split.target_lengths, 64, seed=3, rates=rates)
    for epoch in range(3):
        seen = np.concatenate(sampler.all_batches(epoch))
        real, synthetic = seen[seen < 30], seen[seen >= 30]
        assert (len(real), len(synthetic)) == (90, 30)  # 3:1 of an epoch of 120
        assert np.bincount(real, minlength=30).tolist() == [3] * 30  # every real pair three times
        assert len(set(synthetic.tolist())) == 30  # a third of the synthetic ones, none twice
        batches = sampler.all_batches(epoch)
        assert all(len(set(batch.tolist())) == len(batch) for batch in batches)  # copies spread over batches
    assert np.array_equal(np.concatenate(sampler.all_batches(1)), np.concatenate(sampler.all_batches(1)))
    upsampled = config_from_dict(two_corpora(tmp_path, {"upsample": 2}, {}))
    assert corpus_rates(upsampled.data, split.corpora) == [(30, 2.0), (90, 1.0)]
    check_settings(upsampled.data)  # rates act when batches are drawn: the prepared data still fits
    tagged = config_from_dict(two_corpora(tmp_path, {}, {"tag": "<bt>"}))
    with pytest.raises(SeqsmithError, match=r'\(data.train\[1\].tag: null there, "<bt>" in the config\)'):
        check_settings(tagged.data)


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ({"weight": 1}, {}, "give every corpus a weight, or none"),
        ({"weight": 0}, {"weight": 0}, "sum to 0"),
        ({"weight": 1, "upsample": 2}, {"weight": 1}, "give weight or upsample, not both"),
        ({"tag": "<sep>"}, {}, "special symbols"),
        ({"tag": "two words"}, {}, "without spaces"),
        ({"weight": -1}, {"weight": 1}, "greater than or equal to 0"),
    ],
)
def test_bad_corpus_lists_are_named(
    tmp_path: Path, first: dict[str, Any], second: dict[str, Any], message: str
) -> None:
    with pytest.raises(SeqsmithError, match=message):
        config_from_dict(two_corpora(tmp_path, first, second))


def test_a_tag_the_data_contains_and_stale_prepared_data_are_refused(tmp_path: Path) -> None:
    raw = two_corpora(tmp_path, {}, {"tag": "b"})
    with pytest.raises(SeqsmithError, match=r"real.src:1: the text holds 'b', a tag of data.train"):
        prepare(config_from_dict(raw), progress=False)
    assert not (tmp_path / "out").exists()
    config = config_from_dict(two_corpora(tmp_path, {}, {}))
    prepare(config, progress=False)
    three = config.data.model_copy(
        update={"train": [*config.data.train_sources, config.data.train_sources[0]]}
    )
    with pytest.raises(SeqsmithError, match="prepared from 2 corpora and data.train lists 3"):
        corpus_rates(three, BinarizedSplit(tmp_path / "out", "train").corpora)


@pytest.fixture(scope="module")
def reverse_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_config(tmp_path_factory.mktemp("reverse"), train={"max_steps": 60})
    api.train(config, show_progress=False)
    return Path(config.train.model_dir)


def test_back_translation_pairs_each_line_with_the_models_output(reverse_model: Path, tmp_path: Path) -> None:
    lines = [f"alpha {'beta ' * (i % 3)}gamma" for i in range(12)]
    mono = tmp_path / "mono.txt"
    mono.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    result = api.back_translate(
        reverse_model, mono, tmp_path / "bt", show_progress=False, beam_size=3, method="beam"
    )
    assert (result.inputs, result.outputs, result.pairs) == (tmp_path / "bt.src", tmp_path / "bt.tgt", 12)
    assert read_lines(result.inputs) == lines
    expected = api.load(reverse_model, beam_size=3, method="beam").generate(lines)
    assert read_lines(result.outputs) == expected
    settings = json.loads((tmp_path / "bt.json").read_text())
    assert settings["pairs"] == 12 and settings["generate"]["beam_size"] == 3
    sampled = api.back_translate(reverse_model, mono, tmp_path / "s", show_progress=False, method="sample")
    assert json.loads((tmp_path / "s.json").read_text())["generate"]["seed"] == 1  # resumable: seeded
    assert len(read_lines(sampled.outputs)) == 12


def test_the_cli_back_translates_with_options_and_prints_the_files(
    reverse_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mono = tmp_path / "mono.txt"
    mono.write_text("alpha beta\ngamma delta eps\n", encoding="utf-8")
    assert (
        main(["back-translate", str(reverse_model), str(mono), "-o", str(tmp_path / "bt"), "method=greedy"])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"inputs": str(tmp_path / "bt.src"), "outputs": str(tmp_path / "bt.tgt"), "pairs": 2}
    assert read_lines(tmp_path / "bt.tgt") == api.load(reverse_model, method="greedy").generate(
        ["alpha beta", "gamma delta eps"]
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"alpha\n\nbeta\n", "mono.txt:2: empty line"),
        (b"alpha\nbe\xfftag\n", "mono.txt:2: not valid UTF-8"),
        (b"", "mono.txt is empty"),
    ],
)
def test_bad_monolingual_files_are_named_by_line(
    reverse_model: Path, tmp_path: Path, content: bytes, message: str
) -> None:
    mono = tmp_path / "mono.txt"
    mono.write_bytes(content)
    with pytest.raises(SeqsmithError, match=message):
        api.back_translate(reverse_model, mono, tmp_path / "bt", show_progress=False)
    assert not list(tmp_path.glob("bt*"))


def test_a_missing_reverse_model_is_named(tmp_path: Path) -> None:
    (tmp_path / "mono.txt").write_text("alpha\n")
    with pytest.raises(SeqsmithError, match="nowhere is not a seqsmith model directory"):
        api.back_translate(tmp_path / "nowhere", tmp_path / "mono.txt", tmp_path / "bt")


def test_frozen_parts_keep_their_weights_and_part_rates_scale_the_schedule(
    reverse_model: Path, tmp_path: Path
) -> None:
    config = tiny_config(
        tmp_path,
        train={
            "init_from": str(reverse_model),
            "freeze": ["encoder"],
            "part_lr": {"decoder": 0.5},
            "max_steps": 10,
        },
    )
    api.train(config, show_progress=False)
    start, after = load_model_dir(reverse_model).model, load_model_dir(config.train.model_dir).model
    theirs = dict(start.named_parameters())
    for name, parameter in after.named_parameters():
        same = torch.equal(parameter, theirs[name])
        assert same == (part_of(after, name) == "encoder"), name
    model = load_model_dir(reverse_model).model
    optimizer = build_optimizer(
        part_groups(model, TrainConfig(freeze=["embeddings"], part_lr={"decoder": 0.1})), TrainConfig()
    )
    set_learning_rate(optimizer, 2e-3)
    rates = {
        part_of(model, name): group["lr"]
        for group in optimizer.param_groups
        for name, p in model.named_parameters()
        if any(p is q for q in group["params"])
    }
    assert rates == {"decoder": pytest.approx(2e-4), "encoder": pytest.approx(2e-3)}
    assert not any(p.requires_grad for n, p in model.named_parameters() if part_of(model, n) == "embeddings")


def test_transfer_options_are_checked() -> None:
    with pytest.raises(SeqsmithError, match="freeze names every part"):
        config_from_dict({"data": {"train": "x"}, "train": {"freeze": ["encoder", "decoder", "embeddings"]}})
    with pytest.raises(SeqsmithError, match="encoder is frozen and has a part_lr too"):
        config_from_dict(
            {"data": {"train": "x"}, "train": {"freeze": ["encoder"], "part_lr": {"encoder": 0.1}}}
        )
    with pytest.raises(SeqsmithError, match="part_lr"):
        config_from_dict({"data": {"train": "x"}, "train": {"part_lr": {"attention": 0.1}}})
