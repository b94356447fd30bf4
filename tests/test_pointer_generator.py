"""Pointer-generator and coverage: the mixture is what the paper defines, recomputed independently."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from torch import Tensor

from seqsmith import api
from seqsmith.config import RNNConfig, config_from_dict
from seqsmith.data.tokenizer import Tokenizers
from seqsmith.errors import SeqsmithError
from seqsmith.models.build import build_model
from seqsmith.models.pointer_generator import PointerGeneratorModel
from seqsmith.models.rnn import RNNModel
from seqsmith.specials import PAD_ID

VOCAB = 15
SMALL = {"embed_dim": 12, "hidden_dim": 16, "share_embeddings": True, "dropout": 0.0}


def _model(**options: object) -> PointerGeneratorModel:
    torch.manual_seed(0)
    model = build_model(RNNConfig(**{**SMALL, **options}), VOCAB, VOCAB)  # type: ignore[arg-type]
    assert isinstance(model, PointerGeneratorModel)
    return model.eval()


def _inputs() -> tuple[Tensor, Tensor, Tensor]:
    src = torch.tensor([[5, 6, 5, 9, 3], [7, 8, 3, PAD_ID, PAD_ID]])
    tgt_in = torch.tensor([[2, 5, 9, 6], [2, 8, 7, PAD_ID]])
    return src, src.ne(PAD_ID), tgt_in


def test_closed_gate_copies_exactly_the_attention() -> None:
    model = _model(pointer_generator=True)
    assert model.gate is not None
    with torch.no_grad():
        model.gate.bias.fill_(-1e4)  # p_gen = 0: all mass goes through the pointer
        src, mask, tgt_in = _inputs()
        log_probs = model(src, mask, tgt_in)
        attention = model.teacher_forced_attention(src, mask, tgt_in)
    assert attention is not None
    expected = torch.zeros(2, 4, VOCAB)
    for b in range(2):
        for t in range(4):
            for i, token in enumerate(src[b].tolist()):
                expected[b, t, token] += attention[b, t, i]
    torch.testing.assert_close(log_probs.exp(), expected.clamp_min(1e-12), atol=1e-6, rtol=1e-5)


def test_open_gate_is_the_plain_model_and_rows_sum_to_one() -> None:
    model = _model(pointer_generator=True)
    plain = RNNModel(model.config, VOCAB, VOCAB).eval()
    assert plain.load_state_dict(model.state_dict(), strict=False).unexpected_keys == [
        "gate.weight",
        "gate.bias",
    ]
    src, mask, tgt_in = _inputs()
    with torch.no_grad():
        assert model.gate is not None
        mixed = model(src, mask, tgt_in)
        model.gate.bias.fill_(1e4)  # p_gen = 1: nothing is copied
        generated = model(src, mask, tgt_in)
        reference = torch.log_softmax(plain(src, mask, tgt_in), dim=-1)
    torch.testing.assert_close(generated, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed.exp().sum(-1), torch.ones(2, 4))
    assert not torch.allclose(mixed, generated, atol=1e-3)


def test_coverage_loss_is_the_summed_overlap_of_attention_and_coverage() -> None:
    model = _model(pointer_generator=True, coverage=True, coverage_loss_weight=0.5)
    src, mask, tgt_in = _inputs()
    with torch.no_grad():
        model(src, mask, tgt_in)
        loss = model.auxiliary_loss()
        attention = model.teacher_forced_attention(src, mask, tgt_in)
    assert loss is not None and attention is not None
    assert model.auxiliary_loss() is None  # handed over once
    expected = 0.0
    for b in range(2):
        coverage = torch.zeros(5)
        for t in range(4):
            if tgt_in[b, t] != PAD_ID:
                expected += float(torch.minimum(attention[b, t], coverage).sum())
            coverage += attention[b, t]
    assert float(loss) == pytest.approx(0.5 * expected, rel=1e-5)
    assert expected > 0


def test_coverage_changes_attention_once_learned() -> None:
    model = _model(coverage=True)
    src, mask, tgt_in = _inputs()
    with torch.no_grad():
        before = model.teacher_forced_attention(src, mask, tgt_in)
        assert model.coverage_feature is not None
        model.coverage_feature.fill_(-3.0)
        after = model.teacher_forced_attention(src, mask, tgt_in)
    assert before is not None and after is not None
    torch.testing.assert_close(before[:, 0], after[:, 0])  # no coverage yet at the first step
    assert not torch.allclose(before[:, 1:], after[:, 1:])


def test_copying_needs_one_vocabulary() -> None:
    with pytest.raises(SeqsmithError, match="joint: true"):
        build_model(RNNConfig(pointer_generator=True), 20, 30)
    with pytest.raises(SeqsmithError, match="joint: true"):
        build_model(RNNConfig(pointer_generator=True), 20, 20, joint_vocabulary=False)
    assert isinstance(build_model(RNNConfig(coverage=True), 20, 30), PointerGeneratorModel)


def test_extended_vocabulary_copies_words_never_seen_in_training(tmp_path: Path) -> None:
    """Greetings with a fresh name each time: a word vocabulary never holds the names (min_freq 3), so
    only the copy slots can write them, for names the model has never seen."""
    rng = random.Random(0)

    def name() -> str:
        return "".join(rng.choices("bcdfghjklmnpqrstvwz", k=6))

    def pair() -> str:
        person, greeting = name(), rng.choice(["hello", "hi", "good morning", "dear"])
        return f"{greeting} {person} , how are you\thi {person}\n"

    for split, count in (("train", 1500), ("dev", 50), ("test", 20)):
        (tmp_path / f"{split}.tsv").write_text("".join(pair() for _ in range(count)))
    raw = {
        "data": {
            **{split: str(tmp_path / f"{split}.tsv") for split in ("train", "dev", "test")},
            "format": "tsv",
            "tokenizer": {"kind": "word", "min_freq": 3},  # a name occurs twice: source and target
            "output_dir": str(tmp_path / "data"),
        },
        "model": {
            "arch": "rnn", "embed_dim": 32, "hidden_dim": 64, "dropout": 0.0, "share_embeddings": True,
            "pointer_generator": True, "oov_slots": 4,
        },
        "train": {
            "model_dir": str(tmp_path / "model"), "lr": 5e-3, "schedule": "constant", "warmup_steps": 10,
            "batch_tokens": 400, "max_steps": 250, "max_epochs": None, "validate_every": 250,
            "checkpoint_every": 250, "threads": 1, "label_smoothing": 0.0, "early_stopping_metric": "loss",
        },
        "generate": {"method": "greedy"},
    }  # fmt: skip
    config = config_from_dict(raw, "copy test")
    api.prepare(config, show_progress=False)
    vocabulary = Tokenizers.load(tmp_path / "data" / "tokenizer").source
    assert vocabulary.vocab_size < 30 + 256  # names are not in it; bytes would spell them, slots come first
    api.train(config, show_progress=False)
    generator = api.load(tmp_path / "model")
    names = ["xqzvkw", "mrtplb", "zzzzzz"]
    outputs = generator.generate([f"hello {n} , how are you" for n in names])
    assert outputs == [f"hi {n}" for n in names]
    assert generator.source_oovs("dear abc , how are abc you") == ["abc"]

    bad = config_from_dict({**raw, "model": {**raw["model"], "oov_slots": 2}}, "changed slots")
    with pytest.raises(SeqsmithError, match="oov_slots=4.*prepare"):
        api.train(bad, show_progress=False)
