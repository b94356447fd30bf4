from __future__ import annotations

import datetime
import json
import random
import re
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

from seqsmith import api
from seqsmith.cli import main
from seqsmith.config import save_config
from seqsmith.demo import make_pairs, spell_date


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp_path = tmp_path_factory.mktemp("cli")
    config = tiny_config(tmp_path, train={"max_steps": 60, "validate_every": 30, "keep_best": 2})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    assert main(["prepare", str(config_path)]) == 0
    assert main(["train", str(config_path), "train.max_steps=60"]) == 0
    return config_path, Path(config.train.model_dir)


def test_generate_from_file_writes_one_line_per_input(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, model_dir = trained
    inputs = tmp_path / "in.txt"
    inputs.write_text("alpha beta\ngamma delta eps\nzeta\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    assert main(["generate", str(model_dir), "-i", str(inputs), "-o", str(out), "beam_size=3"]) == 0
    texts = ["alpha beta", "gamma delta eps", "zeta"]
    expected_lines = api.load(model_dir).generate(texts, beam_size=3)  # the options as typed
    assert out.read_text(encoding="utf-8") == "".join(t + "\n" for t in expected_lines)
    jsonl = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "generate",
                str(model_dir),
                "-i",
                str(inputs),
                "-o",
                str(jsonl),
                "--jsonl",
                "method=beam",
                "nbest=2",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    expected = api.load(model_dir).generate_full(texts, method="beam", nbest=2)
    assert [[(o["text"], o["score"], o["token_log_probs"]) for o in row] for row in rows] == [
        [(o.text, pytest.approx(o.score), pytest.approx(o.token_log_probs)) for o in nbest]
        for nbest in expected
    ]
    assert all(r[0]["score"] >= r[1]["score"] for r in rows)


def test_generate_attention_from_a_transformer(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """--attention asks the model for it: a Transformer computes attention only when asked."""
    _, model_dir = trained
    inputs = tmp_path / "in.txt"
    inputs.write_text("alpha beta\n", encoding="utf-8")
    jsonl = tmp_path / "out.jsonl"
    arguments = ["generate", str(model_dir), "-i", str(inputs), "-o", str(jsonl), "--jsonl", "--attention"]
    assert main(arguments) == 0
    row = json.loads(jsonl.read_text(encoding="utf-8"))
    source_tokens = 3  # alpha beta </s>
    assert len(row["attention"]) == len(row["token_log_probs"])
    for weights in row["attention"]:
        assert len(weights) == source_tokens and abs(sum(weights) - 1.0) < 1e-5


def test_evaluate_model_and_files(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _, model_dir = trained
    assert main(["evaluate", str(model_dir)]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert {"bleu", "chrf", "exact_match", "perplexity"} <= set(scores)
    assert scores["perplexity"]["score"] > 1.0
    hyp = model_dir / "eval" / "test" / "hypotheses.txt"
    assert len(hyp.read_text(encoding="utf-8").splitlines()) == 40
    ref = tmp_path / "ref.txt"
    ref.write_text(hyp.read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["evaluate", "--hyp", str(hyp), "--ref", str(ref), "--metrics", "bleu"]) == 0
    assert "| bleu | 100.00 |" in capsys.readouterr().out
    sampled = tmp_path / "sampled"
    args = [str(model_dir), "method=sample", "temperature=3.0", "seed=1", "--metrics", "bleu"]
    assert main(["evaluate", *args, "--out", str(sampled)]) == 0
    hot = json.loads(capsys.readouterr().out)
    assert (sampled / "hypotheses.txt").read_text(encoding="utf-8") != hyp.read_text(encoding="utf-8")
    assert hot["bleu"]["score"] < scores["bleu"]["score"]  # sampling hot is worse than the beam
    assert "same_length" not in scores
    fixed = [str(model_dir), "fixed_length=true", "--metrics", "bleu", "--out", str(tmp_path / "fixed")]
    assert main(["evaluate", *fixed]) == 0
    assert json.loads(capsys.readouterr().out)["same_length"]["score"] == 100.0


def test_average_and_report(trained: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    _, model_dir = trained
    assert main(["average", str(model_dir)]) == 0
    averaged = Path(capsys.readouterr().out.strip())
    assert averaged.is_file()
    assert main(["evaluate", str(model_dir), "--weights", str(averaged), "--metrics", "bleu"]) == 0
    assert "bleu" in json.loads(capsys.readouterr().out)
    assert (model_dir / "eval" / "test-model.averaged" / "scores.json").is_file()
    assert main(["report", str(model_dir), "--examples", "2"]) == 0
    page = Path(capsys.readouterr().out.strip())
    html = page.read_text(encoding="utf-8")
    assert page.name == "index.html"
    sources = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert any("attention" in src for src in sources) and any("loss" in src for src in sources)
    for src in sources:  # relative paths that resolve beside the page, and real PNGs
        assert (
            not src.startswith(("/", "http")) and (page.parent / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        )


def test_errors_are_one_line_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seqsmith: error: config file") and "Traceback" not in err
    config = tiny_config(tmp_path)
    path = tmp_path / "c.json"
    save_config(config, path)
    assert main(["train", str(path), "train.bogus=1"]) == 2
    assert "train.bogus: unknown key" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "nowhere"), "-i", str(path)]) == 2
    assert "model directory" in capsys.readouterr().err


def test_demo_corpus_is_deterministic_and_correct() -> None:
    pairs = make_pairs(300, seed=3)
    assert pairs == make_pairs(300, seed=3) and pairs != make_pairs(300, seed=4)
    for source, target in pairs:
        date = datetime.date.fromisoformat(target)
        assert 1950 <= date.year <= 2049
        assert str(date.day) in source or f"{date.day:02d}" in source
    rng = random.Random(0)
    spellings = {spell_date(datetime.date(2021, 3, 5), rng) for _ in range(200)}
    assert len(spellings) > 10 and any("march" in s.lower() for s in spellings)
