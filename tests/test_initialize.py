"""train.init_from: parts of another model directory start a training, vocabulary rows matched by piece."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from seqsmith import api
from seqsmith.config import Config
from seqsmith.data.tokenizer import Tokenizers
from seqsmith.errors import SeqsmithError
from seqsmith.models.initialize import initial_model, part_of
from seqsmith.models.model_dir import load_model_dir

OLD, NEW = ["alpha", "beta", "gamma", "delta"], ["omega", "sigma"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_config(tmp_path_factory.mktemp("source"), train={"max_steps": 30})
    api.train(config, show_progress=False)
    return Path(config.train.model_dir)


def other_vocabulary(tmp_path: Path, **train: object) -> Config:
    """The reversal task on 4 of the source's words and 2 new ones: a word vocabulary with other ids."""
    rng = random.Random(5)
    paths = {}
    for split, count in (("train", 200), ("dev", 20), ("test", 20)):
        lines = []
        for _ in range(count):
            words = [rng.choice(OLD + NEW) for _ in range(rng.randint(2, 5))]
            lines.append(" ".join(words) + "\t" + " ".join(reversed(words)) + "\n")
        paths[split] = str(tmp_path / f"{split}.tsv")
        Path(paths[split]).write_text("".join(lines), encoding="utf-8")
    config = tiny_config(tmp_path, data=paths, train={"init_from": None, **train})
    api.prepare(config, show_progress=False)
    return config


def test_parts_are_copied_and_rows_follow_their_pieces(tmp_path: Path, source: Path) -> None:
    config = other_vocabulary(tmp_path, init_from=str(source), init_parts=["encoder", "embeddings"])
    tokenizers = Tokenizers.load(Path(config.data.output_dir) / "tokenizer")
    theirs = load_model_dir(source)
    model, notes = initial_model(config, tokenizers, None, fresh=True)
    mine, their_state = model.state_dict(), theirs.model.state_dict()
    size = tokenizers.target.vocab_size
    assert f"{size - len(NEW)} of {size} pieces matched" in notes[0]
    for name, tensor in mine.items():
        part = part_of(model, name)
        if part == "encoder":
            assert torch.equal(tensor, their_state[name]), name
        elif part == "decoder" and tensor.dim() > 1:
            assert not torch.equal(tensor, their_state[name]), name
    embedding, their_embedding = mine["source_embedding.weight"], their_state["source_embedding.weight"]
    for word in OLD:
        row = tokenizers.source.encode(word)[0]
        their_row = theirs.tokenizers.source.encode(word)[0]
        assert torch.equal(embedding[row], their_embedding[their_row]), word
    assert not any(
        torch.equal(embedding[tokenizers.source.encode(word)[0]], their_row)
        for word in NEW
        for their_row in their_embedding
    )


def test_a_model_that_does_not_fit_is_refused_by_name(tmp_path: Path, source: Path) -> None:
    config = other_vocabulary(tmp_path, init_from=str(source))
    wider = config.model_copy(
        update={"model": config.model.model_copy(update={"d_model": 64, "ffn_dim": 32})}
    )
    tokenizers = Tokenizers.load(Path(config.data.output_dir) / "tokenizer")
    with pytest.raises(
        SeqsmithError, match=r"does not fit.*kv.bias \(128,\) \(theirs: \(64,\)\).*more.*init_parts"
    ):
        initial_model(wider, tokenizers, None, fresh=True)
    with pytest.raises(SeqsmithError, match="not found"):
        missing = config.model_copy(
            update={"train": config.train.model_copy(update={"init_from": "nowhere"})}
        )
        initial_model(missing, tokenizers, None, fresh=True)


def test_training_starts_from_the_source_once(
    tmp_path: Path, source: Path, capsys: pytest.CaptureFixture
) -> None:
    config = other_vocabulary(tmp_path, init_from=str(source), max_steps=10)
    api.train(config, show_progress=False)
    assert "seqsmith: initialized encoder, decoder, embeddings from" in capsys.readouterr().out
    resumed = config.model_copy(update={"train": config.train.model_copy(update={"max_steps": 20})})
    api.train(resumed, show_progress=False)
    assert "initialized" not in capsys.readouterr().out  # a resumed training loads its checkpoint instead
