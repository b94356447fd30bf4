"""Bad options, bad input and interruptions: a one-line error naming the place and the fix, nothing lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import losses, tiny_config, train_log

from seqsmith import api
from seqsmith.cli import main
from seqsmith.config import save_config
from seqsmith.errors import SeqsmithError
from seqsmith.generation.generator import Generator
from seqsmith.generation.rules import LengthLimits
from seqsmith.models.model_dir import WEIGHTS, load_model_dir, save_weights


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model with 64 positions, and its config file."""
    tmp_path = tmp_path_factory.mktemp("reliable")
    config = tiny_config(tmp_path, model={"max_positions": 64}, train={"max_steps": 30, "keep_best": 2})
    api.train(config, show_progress=False)
    save_config(config, tmp_path / "config.json")
    return tmp_path / "config.json", Path(config.train.model_dir)


def test_no_option_makes_search_outgrow_the_models_positions(trained: tuple[Path, Path]) -> None:
    _, model_dir = trained
    generator = api.load(model_dir)
    src = torch.tensor([generator.encode("alpha beta gamma")])
    for options in ({"max_length_b": 100_000_000}, {"max_length_a": 1e12}, {"min_length": 10**9}):
        config = generator.settings(**options)
        limits = LengthLimits.from_source(src, src != 0, config, generator.model)
        assert limits.longest == generator.model.max_output_length == 63, options
    outputs = generator.generate_full(["alpha beta"], max_length_b=100_000_000, min_length=10**9, beam=2)
    assert len(outputs[0][0].tokens) == 63  # min_length asks for more: the model's table ends the output
    for absurd in (
        {"beam_size": 30_000},
        {"nbest": 5000},
        {"max_length_a": float("inf")},
        {"alpha": float("nan")},
    ):
        with pytest.raises(SeqsmithError, match="invalid generation options"):
            generator.settings(**absurd)


def test_a_model_dir_inside_the_prepared_data_is_refused(tmp_path: Path) -> None:
    for model_dir in ("data", "data/model"):
        with pytest.raises(SeqsmithError, match="lies inside data.output_dir"):
            tiny_config(tmp_path, train={"model_dir": str(tmp_path / model_dir)})


def test_resuming_on_data_prepared_with_another_vocabulary_is_refused(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, train={"max_steps": 10})
    api.train(config, show_progress=False)
    other = tmp_path / "other"
    other.mkdir()
    lines = "".join(f"{w} {w}\t{w} {w}\n" for w in ("omega", "sigma", "alpha", "beta") * 20)
    for split in ("train", "dev", "test"):
        (other / f"{split}.tsv").write_text(lines, encoding="utf-8")
    reprepared = config.model_copy(
        update={
            "data": config.data.model_copy(
                update={split: str(other / f"{split}.tsv") for split in ("train", "dev", "test")}
            ),
            "train": config.train.model_copy(update={"max_steps": 20}),
        }
    )
    api.prepare(reprepared, show_progress=False)
    with pytest.raises(SeqsmithError, match="another vocabulary"):
        api.train(reprepared, show_progress=False)
    with pytest.raises(SeqsmithError, match="another vocabulary"):
        api.evaluate_model(config.train.model_dir)
    assert max(losses(Path(config.train.model_dir))) == 10  # nothing was trained on the wrong ids


def test_generate_keeps_one_output_line_per_input_line(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, model_dir = trained
    inputs = tmp_path / "in.txt"
    inputs.write_text("alpha\u2028beta\ngamma\x0cdelta\nzeta\reta\r\nkappa", encoding="utf-8")
    out = tmp_path / "out.txt"
    assert main(["generate", str(model_dir), "-i", str(inputs), "-o", str(out)]) == 0
    assert out.read_bytes().count(b"\n") == 4
    inputs.write_bytes(b"alpha\nbeta \xff\xfe gamma\n")
    out.write_text("kept\n", encoding="utf-8")
    assert main(["generate", str(model_dir), "-i", str(inputs), "-o", str(out)]) == 2
    assert out.read_text(encoding="utf-8") == "kept\n"


def test_errors_come_before_the_work_and_in_one_line(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path, model_dir = trained
    inputs = tmp_path / "in.txt"
    inputs.write_text("alpha beta\n", encoding="utf-8")
    (tmp_path / "a-file").write_text("", encoding="utf-8")

    def no_decoding(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("decoded before checking the output path")

    monkeypatch.setattr(Generator, "generate_full", no_decoding)
    blocked = tmp_path / "a-file" / "out.txt"
    assert main(["generate", str(model_dir), "-i", str(inputs), "-o", str(blocked)]) == 2
    assert capsys.readouterr().err.strip().startswith(f"seqsmith: error: cannot write {blocked}")
    assert main(["prepare", str(config_path), f"data.output_dir={tmp_path / 'a-file' / 'data'}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "a-file" in error and "Traceback" not in error


def test_search_that_finds_nothing_says_so(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, model_dir = trained
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    loaded = load_model_dir(broken)
    with torch.no_grad():
        for parameter in loaded.model.parameters():
            parameter.fill_(float("nan"))
    save_weights(loaded.model, broken / WEIGHTS)
    with pytest.raises(SeqsmithError, match="input 1: search found no output with a finite score"):
        api.load(broken).generate(["alpha beta"], beam=3)


def test_damaged_checkpoints_give_way_to_the_newest_intact_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tiny_config(tmp_path, train={"max_steps": 30, "validate_every": 10, "keep_best": 3})
    api.train(config, show_progress=False)
    model_dir = Path(config.train.model_dir)
    root = model_dir / "checkpoints"
    assert sorted(p.name for p in root.glob("step-*")) == ["step-00000010", "step-00000020", "step-00000030"]
    (root / "step-00000030" / "training_state.pt").write_bytes(b"garbage")
    (root / ".step-00000040.x1y2.tmp").mkdir()  # what a kill inside a save leaves
    more = config.model_copy(update={"train": config.train.model_copy(update={"max_steps": 40})})
    assert api.train(more, show_progress=False).steps == 40
    assert "step-00000030/training_state.pt is corrupt" in caplog.text
    steps = [row["step"] for row in train_log(model_dir)]
    assert steps == list(range(1, 41))  # resumed at 20: the rows of 21..30 were trained again
    assert not list(root.glob(".step-*.tmp"))
    (root / "index.json").write_text("{not json", encoding="utf-8")
    even_more = more.model_copy(update={"train": more.train.model_copy(update={"max_steps": 45})})
    assert api.train(even_more, show_progress=False).steps == 45
    assert "index.json is damaged" in caplog.text


def test_a_report_says_what_it_lacks(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, model_dir = trained
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    shutil.rmtree(copy / "eval", ignore_errors=True)
    config = json.loads((copy / "config.json").read_text())
    config["data"]["output_dir"] = str(tmp_path / "moved-away")
    (copy / "config.json").write_text(json.dumps(config))
    page = api.report(copy).read_text(encoding="utf-8")
    assert f"run `seqsmith evaluate {copy}` first" in page
    assert "No examples: no prepared test set at" in page and "moved-away" in page
