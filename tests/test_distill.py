"""Sequence-level distillation and the resumable file decoding under it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from seqsmith import api
from seqsmith.config import config_from_dict
from seqsmith.data.corpus import read_split, write_split
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import read_lines
from seqsmith.generation.file_decode import decode_to_file
from seqsmith.generation.generator import Generator
from seqsmith.models.model_dir import read_config


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_config(tmp_path_factory.mktemp("teacher"), train={"max_steps": 60})
    api.train(config, show_progress=False)
    return Path(config.train.model_dir)


def test_a_killed_decode_resumes_without_a_missing_or_repeated_line(
    teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = api.load(teacher)
    texts = [f"alpha beta {' '.join(['gamma'] * (i % 4))} delta" for i in range(23)]
    expected = generator.generate(texts)
    out = tmp_path / "out.txt"
    real, calls = Generator.generate_encoded, {"n": 0}

    def dies_on_third_chunk(self: Generator, *args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Generator, "generate_encoded", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        decode_to_file(generator, texts, out, chunk=5, show_progress=False)
    monkeypatch.setattr(Generator, "generate_encoded", real)
    partial = out.with_name("out.txt.partial")
    assert not out.exists() and len(read_lines(partial)) == 10
    with open(partial, "ab") as handle:  # a chunk torn by the kill, beyond what the progress file records
        handle.write(b"half a li")
    decode_to_file(generator, texts, out, chunk=5, show_progress=False)
    assert read_lines(out) == expected
    assert not partial.exists() and not out.with_name("out.txt.partial.json").exists()


def test_a_partial_decode_refuses_other_settings(teacher: Path, tmp_path: Path) -> None:
    generator = api.load(teacher)
    texts = ["alpha beta", "gamma delta", "eps"]
    out = tmp_path / "out.txt"
    partial = out.with_name("out.txt.partial")
    partial.write_bytes(b"x\n")
    progress = out.with_name("out.txt.partial.json")
    progress.write_text(json.dumps({"lines": 1, "bytes": 2, "digest": "another run"}))
    with pytest.raises(SeqsmithError, match="other inputs or generation settings; delete it"):
        decode_to_file(generator, texts, out, show_progress=False)
    progress.write_text("{not json")
    with pytest.raises(SeqsmithError, match="unreadable; delete it"):
        decode_to_file(generator, texts, out, show_progress=False)


@pytest.mark.parametrize("data_format", ["parallel", "tsv", "jsonl"])
def test_written_splits_read_back_as_written(tmp_path: Path, data_format: str) -> None:
    raw = tiny_config(tmp_path).model_dump(mode="json")
    raw["data"].update(format=data_format, source_column=2, target_column=0)
    data = config_from_dict(raw).data
    sources, targets = ["a b", "tab\there", "é ü"], ["b a", "line\nbreak", "ü é"]
    files = write_split(data, tmp_path / "split", sources, targets)
    assert all(path.is_file() for path in files)
    read = list(read_split(data.model_copy(update={"train": str(tmp_path / "split")}), "train"))
    assert [e.source for e in read][::2] == sources[::2] and [e.target for e in read][::2] == targets[::2]
    assert read[1].target == ("line\nbreak" if data_format == "jsonl" else "line break")  # JSON keeps it
    assert read[1].source == ("tab here" if data_format == "tsv" else "tab\there")


def test_dialogue_data_cannot_be_written_as_pairs(tmp_path: Path) -> None:
    raw = tiny_config(tmp_path).model_dump(mode="json")
    raw["data"]["format"] = "dialogue"
    with pytest.raises(SeqsmithError, match="use a config with data.format parallel, tsv or jsonl"):
        write_split(config_from_dict(raw).data, tmp_path / "x", ["a"], ["b"])


def test_distill_trains_the_student_on_the_teachers_outputs(teacher: Path, tmp_path: Path) -> None:
    student = tiny_config(tmp_path, train={"max_steps": 20})
    mono = tmp_path / "mono.txt"
    mono.write_text("zeta eta theta\n\niota kappa\n", encoding="utf-8")
    result = api.distill(teacher, student, mono, show_progress=False, beam=2)
    work = tmp_path / "distilled"
    sources = [e.source for e in read_split(student.data, "train")] + ["zeta eta theta", "iota kappa"]
    expected = api.load(teacher, beam=2).generate(sources)
    pairs = [
        (e.source, e.target)
        for e in read_split(student.data.model_copy(update={"train": str(work / "train")}), "train")
    ]
    assert pairs == list(zip(sources, expected))
    settings = json.loads((work / "distill.json").read_text())
    assert settings["pairs"] == len(sources) and settings["generate"]["beam_size"] == 2
    assert result.steps == 20 and (Path(student.train.model_dir) / "model.safetensors").is_file()
    assert api.load(student.train.model_dir).data_config.output_dir == str(work / "data")


def test_soft_targets_match_a_float64_kl_divergence() -> None:
    from seqsmith.training.word_distill import soft_target_kl

    generator = torch.Generator().manual_seed(0)
    student = torch.randn(3, 4, 11, generator=generator, requires_grad=True)
    teacher = torch.randn(3, 4, 11, generator=generator)
    keep = torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    for t in (1.0, 2.5):
        value = soft_target_kl(student, teacher, keep, t)
        reference = F.kl_div(
            torch.log_softmax(student.double() / t, -1),
            torch.log_softmax(teacher.double() / t, -1),
            log_target=True,
            reduction="none",
        ).sum(-1)
        reference = (reference * keep.double()).sum()
        assert float(value) == pytest.approx(float(reference), rel=1e-6)
        (grad,) = torch.autograd.grad(value, student)
        (expected,) = torch.autograd.grad(reference, student)
        assert torch.allclose(grad.double(), expected.double(), atol=1e-6)
        assert float(grad[0, 3].abs().sum()) == 0.0  # a padded position teaches nothing


def word_distilled(
    teacher: Path, root: Path, weight: float, data_of: Path | None = None, **train: object
) -> list[dict[str, float]]:
    teacher_data = read_config(data_of or teacher).data  # the student reads the teacher's prepared data
    config = tiny_config(
        root,
        model={"dropout": 0.0},
        data=teacher_data.model_dump(mode="json"),
        train={
            "max_steps": 40,
            "validate_every": 1000,
            "objective": {"kind": "word_distill", "teacher": str(teacher), "weight": weight},
            **train,
        },
    )
    api.train(config, show_progress=False)
    log = Path(config.train.model_dir) / "train_log.jsonl"
    return [row for row in map(json.loads, read_lines(log)) if row["kind"] == "train"]


def test_a_student_started_from_its_teacher_has_nothing_left_to_learn(teacher: Path, tmp_path: Path) -> None:
    rows = word_distilled(teacher, tmp_path, 1.0, init_from=str(teacher), lr=1e-9, max_steps=2)
    assert rows[0]["teacher_kl"] < 1e-6  # dropout off, same weights: the same distributions


def test_word_distillation_pulls_a_student_toward_its_teacher(teacher: Path, tmp_path: Path) -> None:
    soft = word_distilled(teacher, tmp_path / "soft", 1.0)
    hard = word_distilled(teacher, tmp_path / "hard", 0.0)
    assert soft[-1]["teacher_kl"] < 0.8 * hard[-1]["teacher_kl"]  # 0.046 vs 0.068 when written
    assert soft[-1]["teacher_kl"] < 0.5 * soft[0]["teacher_kl"]


def test_a_teacher_that_cannot_be_read_or_speaks_other_pieces_is_named(teacher: Path, tmp_path: Path) -> None:
    with pytest.raises(
        SeqsmithError, match=r"train.objective.teacher=.*nowhere: model directory .* not found"
    ):
        word_distilled(tmp_path / "nowhere", tmp_path / "a", 1.0, data_of=teacher, max_steps=1)
    chars = tiny_config(tmp_path / "chars", data={"tokenizer": {"kind": "char", "byte_fallback": False}})
    api.prepare(chars)
    student = tiny_config(
        tmp_path / "b",
        data=chars.data.model_dump(mode="json"),
        train={"max_steps": 1, "objective": {"kind": "word_distill", "teacher": str(teacher)}},
    )
    with pytest.raises(SeqsmithError, match="its source vocabulary .* is not the student's"):
        api.train(student, show_progress=False)
    with pytest.raises(SeqsmithError, match="weight"):
        tiny_config(
            tmp_path / "c", train={"objective": {"kind": "word_distill", "teacher": "x", "weight": 2}}
        )
