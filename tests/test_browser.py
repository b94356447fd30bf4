"""The web page in a real headless Chromium (Debian's, driven by Playwright) against the real server.

`.ci/run` installs chromium and the dev extra brings playwright, so under CI these run rather than skip.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, tiny_config, wait_ready

from seqsmith import api

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (dev extra)")
Image = pytest.importorskip("PIL.Image", reason="pillow comes with matplotlib")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TEXTS = ["alpha beta gamma", "delta eps"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp_path = tmp_path_factory.mktemp("browser")
    config = tiny_config(tmp_path, train={"max_steps": 30, "validate_every": 30}, generate={"method": "beam"})
    api.train(config, show_progress=False)
    port = free_port()
    command = [sys.executable, "-m", "seqsmith.cli", "serve", config.train.model_dir, "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    try:
        wait_ready(port, process)
        yield f"http://127.0.0.1:{port}/", Path(config.train.model_dir)
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


def generate(page: Any, texts: list[str], beam: str = "3", nbest: str = "2") -> None:
    page.fill("#texts", "\n".join(texts))
    page.fill("#beam", beam)
    page.fill("#nbest", nbest)
    page.click("#go")


def test_the_page_shows_nbest_outputs_and_the_attention_of_the_chosen_one(
    served: tuple[str, Path], browser: Any
) -> None:
    url, model_dir = served
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    page.goto(url)
    generate(page, TEXTS)
    page.wait_for_selector(".result li.hypothesis")
    expected = api.load(model_dir).generate_full(TEXTS, beam=3, nbest=2, keep_attention=True)
    shown = [
        [
            (li.query_selector(".text").inner_text(), float(li.query_selector(".score").inner_text()))
            for li in result.query_selector_all("li")
        ]
        for result in page.query_selector_all(".result")
    ]
    assert shown == [[(o.text, pytest.approx(o.score, abs=1e-3)) for o in nbest] for nbest in expected]

    second = page.query_selector_all(".result")[0].query_selector_all("li")[1]
    second.click()
    grid = page.query_selector(".result #heatmap")
    weights = expected[0][1].attention
    assert weights is not None
    cells = grid.query_selector_all(".cell")
    assert len(cells) == len(weights) * len(weights[0])
    picture = Image.open(io.BytesIO(grid.screenshot())).convert("L")
    origin = grid.bounding_box()
    width = len(weights[0])
    for index, cell in enumerate(cells):
        box = cell.bounding_box()
        x, y = box["x"] - origin["x"] + box["width"] / 2, box["y"] - origin["y"] + box["height"] / 2
        # rgba(36, 87, 166, w) over white is grey level 255 - 174.2 w: the picture is the weights
        weight = weights[index // width][index % width]
        assert 255 - picture.getpixel((int(x), int(y))) == pytest.approx(174.2 * weight, abs=3)
    page.close()


def test_a_server_error_reaches_the_user(served: tuple[str, Path], browser: Any) -> None:
    page = browser.new_page()
    page.goto(served[0])
    generate(page, ["alpha"], beam="99", nbest="1")
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert "serve.max_beam" in page.inner_text("#error")
    assert page.query_selector_all(".result") == []
    page.fill("#beam", "")
    page.fill("#nbest", "")
    page.fill("#texts", "   ")
    page.click("#go")
    assert page.inner_text("#error") == "Type at least one line."
    page.close()


def test_the_page_fits_a_phone_screen(served: tuple[str, Path], browser: Any) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page.goto(served[0])
    generate(page, ["alpha beta gamma delta eps alpha beta gamma delta eps"])
    page.wait_for_selector(".result li.hypothesis")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # wide pictures scroll inside
    box = page.query_selector("#go").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    shot = Image.open(io.BytesIO(page.screenshot()))
    assert shot.size == (780, 1688)
    page.close()


def test_a_model_of_several_fields_takes_one_json_object_a_line(
    tmp_path_factory: pytest.TempPathFactory, browser: Any
) -> None:
    from test_fields import fields_config

    config = fields_config(tmp_path_factory.mktemp("fields_page"))
    config.train.max_steps = 80
    api.train(config, show_progress=False)
    port = free_port()
    command = [sys.executable, "-m", "seqsmith.cli", "serve", config.train.model_dir, "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    try:
        wait_ready(port, process)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.getElementById('texts').placeholder.startsWith('One JSON object')")
        inputs = [{"context": "alpha", "facts": "beta gamma"}, {"context": "eps", "facts": "zeta"}]
        generate(page, [json.dumps(i) for i in inputs], beam="2", nbest="1")
        page.wait_for_selector(".result li.hypothesis")
        shown = [
            li.query_selector(".text").inner_text() for li in page.query_selector_all(".result li.hypothesis")
        ]
        expected = api.load(config.train.model_dir).generate(inputs, beam_size=2, nbest=1)  # as the page asks
        assert shown == expected and all(expected)
        generate(page, ["not json"], beam="2", nbest="1")
        assert "This model reads the fields context, facts" in page.inner_text("#error")
        page.close()
    finally:
        process.terminate()
        process.wait(30)
