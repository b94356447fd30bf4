"""Exports (CTranslate2, ONNX), the engines that run them and int8 decoding, against seqsmith's search."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from toy_model import ToyModel

from seqsmith import api
from seqsmith.cli import main
from seqsmith.errors import SeqsmithError
from seqsmith.generation.generator import Generator
from seqsmith.models import export as export_module
from seqsmith.models.quantize import quantize_int8

pytest.importorskip("ctranslate2")
pytest.importorskip("onnxruntime")

TEXTS = ["alpha beta gamma", "delta eps zeta eta", "theta", "iota kappa alpha beta gamma delta", "beta beta"]
SAME = {"length_penalty": "average", "beam": 3}  # a search both engines run alike


def trained(root: Path, **model: object) -> Path:
    config = tiny_config(root, model=dict(model), train={"max_steps": 60})
    api.train(config, show_progress=False)
    return Path(config.train.model_dir)


@pytest.fixture(scope="module")
def post_norm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained(tmp_path_factory.mktemp("post"), norm="post", decoder_layers=2)


@pytest.fixture(scope="module")
def pre_norm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained(tmp_path_factory.mktemp("pre"), norm="pre", positions="learned", activation="gelu")


def outputs(directory: Path, **options: object) -> list[tuple[list[int], float, list[float]]]:
    nbest = Generator.from_pretrained(directory, **options).generate_full(TEXTS)
    return [(n[0].tokens, n[0].score, n[0].token_log_probs) for n in nbest]


@pytest.mark.parametrize("fmt", ["ctranslate2", "onnx"])
@pytest.mark.parametrize("which", ["post_norm", "pre_norm"])
@pytest.mark.parametrize("search", [{"method": "greedy", "length_penalty": "gnmt"}, SAME])
def test_an_export_searches_as_seqsmith_does(
    request: pytest.FixtureRequest, tmp_path: Path, fmt: str, which: str, search: dict[str, object]
) -> None:
    model_dir = request.getfixturevalue(which)
    out = api.export(model_dir, tmp_path / "export", fmt)
    ours, theirs = outputs(model_dir, **search), outputs(out, **search)
    assert [t for t, _, _ in theirs] == [t for t, _, _ in ours]
    for (_, score, logs), (_, their_score, their_logs) in zip(ours, theirs):
        assert their_score == pytest.approx(score, abs=1e-4)
        assert their_logs == pytest.approx(logs, abs=1e-4)  # per token, EOS included


def test_onnx_steps_give_the_torch_models_log_probabilities(post_norm: Path, tmp_path: Path) -> None:
    from seqsmith.models.onnx_model import OnnxModel

    torch_model = Generator.from_pretrained(post_norm).model
    onnx_model = OnnxModel.load(api.export(post_norm, tmp_path / "e", "onnx") / "onnx")
    assert torch_model is not None
    src = torch.tensor([[5, 6, 7, 8, 3], [9, 5, 3, 0, 0]])
    tgt_in = torch.tensor([[2, 6, 7, 5], [2, 9, 9, 9]])
    expected = torch.log_softmax(torch_model(src, src != 0, tgt_in), -1)
    assert torch.allclose(onnx_model(src, src != 0, tgt_in), expected, atol=1e-5)
    teacher = torch_model.teacher_forced_attention(src, src != 0, tgt_in, heads=True)
    assert teacher is not None
    assert torch.allclose(
        onnx_model.teacher_forced_attention(src, src != 0, tgt_in, heads=True), teacher, atol=1e-5
    )


def test_int8_everywhere_stays_close_to_float32(post_norm: Path, tmp_path: Path) -> None:
    """The tiny model is unsure (tokens at ~35%), so int8 rounding flips near ties: CTranslate2's and ONNX
    Runtime's int8 kernels on an AVX2-only host moved per-token log-probabilities by up to 0.35 nats and
    changed 2 of the 5 outputs, where PyTorch's changed none. What must hold everywhere: every output's
    score (mean log-probability per token) stays within 0.6 of float32's (a wrong scale or a garbled
    weight costs more than a nat per token), at least two of the five outputs agree, and PyTorch's int8
    nearly all of them."""
    reference = outputs(post_norm, **SAME)
    int8_dirs = {
        "ctranslate2": api.export(post_norm, tmp_path / "ct2", "ctranslate2", "int8"),
        "onnx": api.export(post_norm, tmp_path / "onnx", "onnx", "int8"),
    }
    runs = {name: outputs(d, **SAME) for name, d in int8_dirs.items()}
    runs["torch"] = outputs(post_norm, quantize="int8", **SAME)
    for name, found in runs.items():
        agree = sum(a[0] == b[0] for a, b in zip(found, reference))
        assert agree >= (len(TEXTS) - 1 if name == "torch" else len(TEXTS) // 2), name
        for (_, theirs, _), (_, score, _) in zip(found, reference):
            assert theirs == pytest.approx(score, abs=0.6), name
    float_dir = api.export(post_norm, tmp_path / "ct2f", "ctranslate2")
    weights = [
        (d / "ctranslate2" / "model.bin").stat().st_size for d in (float_dir, int8_dirs["ctranslate2"])
    ]
    assert weights[1] < 0.75 * weights[0]  # float32 norms and biases weigh much in a 35k-parameter model
    model = Generator.from_pretrained(post_norm, quantize="int8").model
    assert model is not None and "DynamicQuantizedLinear" in repr(model)


def test_int8_output_quantizes_the_vocabulary_projection_alone(post_norm: Path, tmp_path: Path) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    float_model = Generator.from_pretrained(post_norm).model
    model = Generator.from_pretrained(post_norm, quantize="int8_output").model
    assert model is not None and float_model is not None
    quantized = [name for name, module in model.named_modules() if isinstance(module, DynamicLinear)]
    assert quantized == ["output"]
    assert (
        sum(isinstance(m, torch.nn.Linear) for m in model.modules())
        == sum(isinstance(m, torch.nn.Linear) for m in float_model.modules()) - 1
    )  # every other linear layer stays float32
    src = torch.tensor([[5, 6, 7, 8, 3], [9, 5, 3, 0, 0]])
    tgt_in = torch.tensor([[2, 6, 7, 5], [2, 9, 9, 9]])
    with torch.no_grad():
        expected = torch.log_softmax(float_model(src, src != 0, tgt_in), -1)
        found = torch.log_softmax(model(src, src != 0, tgt_in), -1)
    assert not torch.equal(found, expected) and torch.allclose(found, expected, atol=0.2)
    agree = sum(
        a[0] == b[0]
        for a, b in zip(outputs(post_norm, quantize="int8_output", **SAME), outputs(post_norm, **SAME))
    )
    assert agree >= len(TEXTS) - 1
    export = api.export(post_norm, tmp_path / "ct2", "ctranslate2")
    with pytest.raises(SeqsmithError, match="int8_output applies to the torch engine, not to ctranslate2"):
        Generator.from_pretrained(export, quantize="int8_output")
    with pytest.raises(SeqsmithError, match="ToyModel names no linear layer that gives the vocabulary's"):
        quantize_int8(ToyModel(), projection_only=True)  # its projection is `out`, not in vocabulary_rows


def test_evaluate_and_the_cli_take_an_export(
    post_norm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(post_norm), str(tmp_path / "c"), "--format", "ctranslate2"]) == 0
    assert (tmp_path / "c" / "README.txt").read_text().count("seqsmith generate") == 1
    printed = capsys.readouterr().out
    assert "generate.length_penalty: average here (the model's gnmt" in printed
    options = {"length_penalty": "average"}
    scores = api.evaluate_model(tmp_path / "c", out=tmp_path / "ev", **options)
    ours = api.evaluate_model(post_norm, out=tmp_path / "ev2", **options)
    assert scores["bleu"]["score"] == pytest.approx(ours["bleu"]["score"], abs=1e-6)
    assert "perplexity" not in scores  # CTranslate2 has no teacher-forced model here
    onnx_dir = api.export(post_norm, tmp_path / "o", "onnx")
    onnx_scores = api.evaluate_model(onnx_dir, out=tmp_path / "ev3", **options)
    assert onnx_scores["perplexity"]["score"] == pytest.approx(ours["perplexity"]["score"], rel=1e-4)


def test_the_engine_refuses_what_it_cannot_do_by_name(post_norm: Path, tmp_path: Path) -> None:
    out = api.export(post_norm, tmp_path / "c", "ctranslate2")
    with pytest.raises(SeqsmithError, match="cannot honour generate.length_penalty=gnmt in beam"):
        Generator.from_pretrained(out, method="beam", length_penalty="gnmt", alpha=1.0)
    assert json.loads((out / "export.json").read_text())["generate_changed"] == {"length_penalty": "average"}
    assert "generate.length_penalty: average here (the model's gnmt" in (out / "README.txt").read_text()
    assert Generator.from_pretrained(out, method="beam").config.length_penalty == "average"
    generator = Generator.from_pretrained(out, length_penalty="average")
    for options, named in [
        ({"method": "diverse_beam", "groups": 1}, "diverse_beam"),
        ({"keep_attention": True}, "keep_attention"),
        ({"coverage_penalty": 0.2}, "coverage_penalty>0"),
        ({"engine": "torch"}, "generate.engine is chosen when the model is loaded"),
    ]:
        with pytest.raises(SeqsmithError, match=named):
            generator.generate(["alpha"], **options)
    with pytest.raises(SeqsmithError, match="holds no ctranslate2 files; export it first"):
        Generator.from_pretrained(post_norm, engine="ctranslate2")
    with pytest.raises(SeqsmithError, match="an export without torch weights"):
        Generator.from_pretrained(out, engine="torch")
    with pytest.raises(SeqsmithError, match="ONNX model is quantized when exported"):
        Generator.from_pretrained(api.export(post_norm, tmp_path / "o", "onnx"), quantize="int8")


def test_bad_exports_are_refused_and_leave_nothing_behind(
    post_norm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = api.export(post_norm, tmp_path / "c", "ctranslate2")
    with pytest.raises(SeqsmithError, match="exists already; choose a new directory or pass --force"):
        api.export(post_norm, out, "ctranslate2")
    with pytest.raises(SeqsmithError, match="--quantize int4: the onnx export offers float32, int8"):
        api.export(post_norm, tmp_path / "q", "onnx", "int4")
    with pytest.raises(SeqsmithError, match="--format tflite: known formats are ctranslate2, onnx, marian"):
        api.export(post_norm, tmp_path / "t", "tflite")
    with pytest.raises(SeqsmithError, match="would replace the model directory"):
        api.export(post_norm, post_norm, "onnx", force=True)
    broken = tmp_path / "incomplete"
    broken.mkdir()
    (broken / "config.json").write_text((post_norm / "config.json").read_text())
    with pytest.raises(SeqsmithError):
        api.export(broken, tmp_path / "b", "onnx")

    def fails(*args: object) -> None:
        raise OSError(28, "No space left on device")

    known = export_module.exporters()
    monkeypatch.setattr(
        export_module,
        "exporters",
        lambda: {**known, "onnx": export_module.Exporter("onnx", ("float32",), fails, "")},
    )
    monkeypatch.setattr(api, "exporters", export_module.exporters)
    before = (out / "ctranslate2" / "model.bin").read_bytes()
    with pytest.raises(OSError):
        api.export(post_norm, out, "onnx", force=True)
    assert (out / "ctranslate2" / "model.bin").read_bytes() == before  # the old export is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "incomplete"]  # no staging directory left
    replaced = api.export(post_norm, out, "ctranslate2", "int8", force=True)
    assert json.loads((replaced / "export.json").read_text())["quantize"] == "int8"


def test_models_a_format_cannot_express_get_one_line(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, arch="rnn", train={"max_steps": 2})
    api.train(config, show_progress=False)
    for fmt in ("ctranslate2", "onnx"):
        with pytest.raises(SeqsmithError, match="runs Transformers only .*this model is gru"):
            api.export(config.train.model_dir, tmp_path / fmt, fmt)
    assert not (tmp_path / "ctranslate2").exists() and not (tmp_path / "onnx").exists()


def test_a_missing_runtime_names_the_extra(
    post_norm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = api.export(post_norm, tmp_path / "c", "ctranslate2")
    onnx_out = api.export(post_norm, tmp_path / "o", "onnx")
    for name, directory in (("ctranslate2", out), ("onnxruntime", onnx_out)):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, name, None)  # what an import of an absent package does
            with pytest.raises(SeqsmithError, match=rf"{name} is not installed; .*seqsmith\[export\]"):
                Generator.from_pretrained(directory)
