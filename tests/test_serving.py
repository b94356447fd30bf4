from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_config

from seqsmith import api

fastapi = pytest.importorskip(
    "fastapi", reason="serving needs the serve extra: pip install 'seqsmith[serve]'"
)
from fastapi.testclient import TestClient  # noqa: E402

from seqsmith.serving.app import MAX_TEXTS, create_app  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("serve")
    config = tiny_config(tmp_path, train={"max_steps": 30, "validate_every": 30})
    api.train(config, show_progress=False)
    return Path(config.train.model_dir)


@pytest.fixture(scope="module")
def client(model_dir: Path) -> TestClient:
    return TestClient(create_app(api.load(model_dir)))


def test_generate_matches_the_python_api(client: TestClient, model_dir: Path) -> None:
    texts = ["alpha beta", "gamma delta eps"]
    response = client.post("/generate", json={"texts": texts, "options": {"method": "beam", "beam_size": 3}})
    assert response.status_code == 200
    assert response.json()["outputs"] == api.load(model_dir).generate(texts, beam=3)
    options = {"method": "beam", "beam_size": 3, "nbest": 2}
    nbest = client.post("/generate", json={"texts": texts, "options": options, "nbest": True})
    expected = api.load(model_dir).generate_full(texts, method="beam", beam_size=3, nbest=2)
    assert nbest.json()["outputs"] == [
        [{"text": o.text, "score": pytest.approx(o.score)} for o in outputs] for outputs in expected
    ]
    assert all(first["score"] >= second["score"] for first, second in nbest.json()["outputs"])


def test_page_and_health(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<textarea" in page.text and 'fetch("generate"' in page.text
    assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"texts": []}, 422, "texts"),
        ({"text": ["a"]}, 422, "text"),
        ({"texts": "alpha"}, 422, "texts"),
        ({"texts": ["alpha"] * (MAX_TEXTS + 1)}, 422, "texts"),
        ({"texts": ["   "]}, 400, "texts[0] is empty"),
        ({"texts": ["alpha"], "options": {"beam_size": 0}}, 400, "beam_size"),
        ({"texts": ["alpha"], "options": {"beem": 3}}, 400, "unknown generation option"),
    ],
)
def test_malformed_requests_get_clear_errors(
    client: TestClient, body: dict, status: int, fragment: str
) -> None:
    response = client.post("/generate", json=body)
    assert response.status_code == status
    assert fragment in str(response.json()["detail"])


def test_broken_json_is_a_client_error(client: TestClient) -> None:
    response = client.post("/generate", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
