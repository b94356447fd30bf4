"""The HTML report: relative images that exist, escaped text, scores and config shown, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from seqsmith.config import Config, DataConfig, TrainConfig, save_config
from seqsmith.errors import SeqsmithError
from seqsmith.evaluation.metrics import corpus_scores
from seqsmith.evaluation.report import write_report

EVIL = "<script>alert('x')</script> & \"quotes\""


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        self.scripts += tag == "script"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def write_log(path: Path) -> None:
    rows = [
        {"kind": "train", "step": s, "elapsed": 2.0 * s, "lr": 1e-3, "loss": 5.0 - s / 100}
        for s in range(1, 300)
    ]
    rows += [
        {"kind": "valid", "step": s, "elapsed": 2.0 * s, "loss": 4.0, "ppl": 54.6, "bleu": s / 10}
        for s in (100, 200)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def make_model_dir(root: Path) -> Path:
    model_dir = root / "model"
    model_dir.mkdir()
    config = Config(
        data=DataConfig(train="data/train", turn_separator=" <sep> "), train=TrainConfig(max_steps=777)
    )
    save_config(config, model_dir / "config.json")
    write_log(model_dir / "train_log.jsonl")
    return model_dir


def examples() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    tokens = {"source_tokens": ["我", "爱", "你", "<eos>"], "target_tokens": ["I", "love", "you", "<eos>"]}
    return [
        {"source": "我爱你", "reference": "I love you.", "hypothesis": EVIL,
         "attention": rng.dirichlet(np.ones(4), size=4).tolist(), **tokens},
        {"source": "两个参考", "reference": ["first ref", "second ref"], "hypothesis": "two refs",
         "attention": rng.dirichlet(np.ones(4), size=(2, 4)), **tokens},
        {"source": "no picture", "reference": "none", "hypothesis": "nothing"},
    ]  # fmt: skip


def test_report_page_images_scores_and_config(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path)
    scores = corpus_scores(
        ["the cat sat", "a dog ran"], [["the cat sat down", "a dog ran"]], ["bleu", "rouge1"]
    )
    index = write_report(model_dir, scores, examples())
    assert index == model_dir / "report" / "index.html"
    page = parse(index)
    assert len(page.images) == 7  # five curves and two attention pictures
    assert "attention_1.png" in page.images and "attention_2.png" in page.images
    for src in page.images:
        assert "/" not in src and ":" not in src  # relative, next to the page
        with Image.open(index.parent / src) as image:
            assert image.format == "PNG"
    text = "".join(page.text)
    assert page.scripts == 0 and EVIL in text  # shown as text, never run
    raw = index.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in raw
    assert f"{scores['bleu']['score']:.2f}" in text and scores["bleu"]["signature"] in text
    assert "first ref\nsecond ref" in text and "我爱你" in text
    assert "max_steps" in text and "777" in text and "tokenizer.vocab_size" in text
    assert '" <sep> "' in text  # the config shows exact values, spaces included
    assert "<style>" in raw and 'charset="utf-8"' in raw


def test_report_without_log_config_or_scores(tmp_path: Path) -> None:
    model_dir = tmp_path / "bare"
    model_dir.mkdir()
    out = tmp_path / "elsewhere"
    index = write_report(model_dir, None, [], out=out)
    assert index == out / "index.html"
    text = "".join(parse(index).text)
    assert "No config.json" in text and "No train_log.jsonl" in text and "No scores" in text
    assert "No examples" in text and parse(index).images == []


def test_report_errors(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path)
    with pytest.raises(SeqsmithError, match="example 2 lacks hypothesis"):
        write_report(model_dir, None, [{"source": "a", "hypothesis": "b"}, {"source": "c"}])
    with pytest.raises(SeqsmithError, match="example 1 has attention but no source_tokens"):
        write_report(model_dir, None, [{"source": "a", "hypothesis": "b", "attention": [[1.0]]}])
    wrong = {**examples()[0], "attention": np.ones((3, 4))}
    with pytest.raises(
        SeqsmithError, match=r"example 1: attention weights of shape \(3, 4\) do not match 4 target"
    ):
        write_report(model_dir, None, [wrong])
    assert not (model_dir / "report").exists()  # checked before anything is drawn
    (model_dir / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SeqsmithError, match=r"config\.json is not valid JSON"):
        write_report(model_dir, None, [])
    with pytest.raises(SeqsmithError, match="not found"):
        write_report(tmp_path / "missing", None, [])


def test_report_rewrite_keeps_a_whole_page(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path)
    first = write_report(model_dir, None, examples()[2:]).read_text(encoding="utf-8")
    with pytest.raises(SeqsmithError):
        write_report(model_dir, None, [{"source": "only"}])
    assert (model_dir / "report" / "index.html").read_text(encoding="utf-8") == first
    assert [p.name for p in (model_dir / "report").iterdir() if p.name.startswith(".")] == []


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    index = write_report(make_model_dir(tmp_path), None, examples())
    shot = tmp_path / "shot.png"
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,2400"]
    subprocess.run([*command, f"--screenshot={shot}", index.as_uri()], capture_output=True, timeout=120)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape == (2400, 1200)
    assert (pixels < 128).mean() > 0.005  # text and pictures drawn, not a blank page
