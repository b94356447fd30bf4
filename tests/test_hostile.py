"""A hostile-checkpoint set: every damaged or crafted model directory is refused with a clear error, no code
in it runs, and nothing outside it is read."""

from __future__ import annotations

import os
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file, save_file

from seqsmith import api
from seqsmith.errors import SeqsmithError
from seqsmith.models.model_dir import load_model_dir

MARKER = Path("/tmp/seqsmith-hostile-pickle-ran")


class Payload:
    """Unpickling this runs a shell command: weights_only loading must refuse it."""

    def __reduce__(self) -> tuple[Callable[..., int], tuple[str]]:
        return os.system, (f"touch {MARKER}",)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_config(tmp_path_factory.mktemp("hostile"), train={"max_steps": 10, "keep_best": 1})
    api.train(config, show_progress=False)
    return Path(config.train.model_dir)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def reshape(path: Path) -> None:
    tensors = load_file(str(path))
    name = next(iter(tensors))
    tensors[name] = torch.zeros(3, 3)
    save_file(tensors, str(path))


def integers(path: Path) -> None:
    tensors = load_file(str(path))
    save_file({name: tensor.to(torch.int32) for name, tensor in tensors.items()}, str(path))


def pickled(path: Path) -> None:
    path.write_bytes(pickle.dumps(Payload()))


def huge_header(path: Path) -> None:
    path.write_bytes(struct.pack("<Q", 10**15) + b"{}")


def outside(path: Path) -> None:
    target = path.parent.parent / "elsewhere.safetensors"
    shutil.copy(path, target)
    path.unlink()
    path.symlink_to(target)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (truncate, "corrupt or not a safetensors file"),
        (reshape, "do not fit the model"),
        (integers, "as I32, but it is a floating-point parameter"),
        (pickled, "corrupt or not a safetensors file"),
        (huge_header, "corrupt or not a safetensors file"),
        (outside, "points outside"),
    ],
    ids=["truncated", "wrong-shape", "wrong-dtype", "pickle", "huge-header", "symlink-out"],
)
def test_damaged_weights_are_refused(
    model_dir: Path, tmp_path: Path, damage: Callable[[Path], None], message: str
) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    damage(copy / "model.safetensors")
    with pytest.raises(SeqsmithError, match=message):
        load_model_dir(copy)
    assert not MARKER.exists()


def test_a_tokenizer_file_linked_out_is_refused(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    vocabulary = next(p for p in (copy / "tokenizer").iterdir() if p.name != "tokenizer.json")
    target = tmp_path / "vocabulary-elsewhere"
    shutil.move(vocabulary, target)
    vocabulary.symlink_to(target)
    with pytest.raises(SeqsmithError, match="tokenizer file .* points outside"):
        load_model_dir(copy)


def test_a_pickled_training_state_never_runs(tmp_path: Path) -> None:
    MARKER.unlink(missing_ok=True)
    api.train(tiny_config(tmp_path, train={"max_steps": 10, "keep_best": 1}), show_progress=False)
    config = tiny_config(tmp_path, train={"max_steps": 20, "keep_best": 1})
    for state in (Path(config.train.model_dir) / "checkpoints").glob("step-*/training_state.pt"):
        state.write_bytes(pickle.dumps({"progress": Payload()}))
    with pytest.raises(SeqsmithError, match="no intact checkpoint"):
        api.train(config, show_progress=False)
    assert not MARKER.exists()
