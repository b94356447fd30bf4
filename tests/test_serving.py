"""The HTTP server: answers equal to the Python API's, the server's limits, batching, 429/504, keys, metrics.

The batcher is tested on its own with a fake search (which jobs share a batch, in which order, within which
budget); the app through TestClient; one test starts the real `seqsmith serve` with two worker processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, tiny_config, wait_ready

from seqsmith import api
from seqsmith.config import ServeConfig
from seqsmith.errors import SeqsmithError

fastapi = pytest.importorskip(
    "fastapi", reason="serving needs the serve extra: pip install 'seqsmith[serve]'"
)
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from seqsmith.serving.app import create_app, read_api_keys, serve_limits  # noqa: E402
from seqsmith.serving.batcher import Batcher, Job, QueueFull  # noqa: E402

TEXTS = ["alpha beta", "gamma delta eps", "beta beta alpha gamma"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("serve")
    config = tiny_config(tmp_path, train={"max_steps": 30, "validate_every": 30})
    api.train(config, show_progress=False)
    return Path(config.train.model_dir)


@pytest.fixture(scope="module")
def generator(model_dir: Path) -> api.Generator:
    return api.load(model_dir)


@pytest.fixture(scope="module")
def client(generator: api.Generator) -> Iterator[TestClient]:
    with TestClient(create_app(generator)) as test_client:
        yield test_client


def limits(**changes: Any) -> ServeConfig:
    return ServeConfig(**changes)


def test_generate_matches_the_python_api(client: TestClient, generator: api.Generator) -> None:
    response = client.post("/generate", json={"texts": TEXTS, "options": {"method": "beam", "beam_size": 3}})
    assert response.status_code == 200
    assert response.json()["outputs"] == generator.generate(TEXTS, beam=3)
    options = {"method": "beam", "beam_size": 3, "nbest": 2}
    nbest = client.post("/generate", json={"texts": TEXTS, "options": options, "nbest": True})
    expected = generator.generate_full(TEXTS, method="beam", beam_size=3, nbest=2)
    assert nbest.json()["outputs"] == [
        [{"text": o.text, "score": pytest.approx(o.score)} for o in outputs] for outputs in expected
    ]


def test_attention_comes_with_the_tokens_it_is_over(client: TestClient, generator: api.Generator) -> None:
    body = client.post("/generate", json={"texts": TEXTS, "attention": True}).json()
    expected = generator.generate_full(TEXTS, keep_attention=True)
    for text, nbest, source_tokens, want in zip(TEXTS, body["outputs"], body["source_tokens"], expected):
        (best,) = nbest
        assert source_tokens == [*text.split(), "</s>"]
        assert best["target_tokens"] == [*want[0].text.split(), "</s>"]
        assert want[0].attention is not None
        assert [pytest.approx(row) for row in want[0].attention] == best["attention"]
        assert len(best["attention"]) == len(best["target_tokens"])
        assert all(
            len(row) == len(source_tokens) and sum(row) == pytest.approx(1, abs=1e-4)
            for row in best["attention"]
        )


def test_concurrent_requests_each_get_their_own_answer(generator: api.Generator) -> None:
    texts = [
        " ".join(["alpha", "beta", "gamma", "delta", "eps"][i % 5 :] + ["beta"] * (i % 3)) for i in range(24)
    ]
    expected = dict(zip(texts, generator.generate(texts)))
    answers: dict[str, Any] = {}
    with TestClient(create_app(generator, limits(max_wait_ms=50))) as test_client:

        def ask(text: str) -> None:
            answers[text] = test_client.post("/generate", json={"texts": [text]}).json()["outputs"][0]

        threads = [threading.Thread(target=ask, args=(text,)) for text in texts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        families = {f.name: f for f in text_string_to_metric_families(test_client.get("/metrics").text)}
    assert answers == expected
    batches = {s.name: s.value for s in families["seqsmith_batch_texts"].samples}
    assert batches["seqsmith_batch_texts_sum"] == len(texts)
    assert batches["seqsmith_batch_texts_count"] < len(texts)  # some requests shared a search


def finished_job(inputs: list[Any], key: str, cost: int, done: list[tuple[list[Any], Any]]) -> Job:
    return Job(inputs, key, key, cost, lambda result: done.append((inputs, result)))


def test_the_batcher_groups_compatible_jobs_in_order_within_the_budget() -> None:
    searched: list[list[Any]] = []
    gate = threading.Event()

    def search(inputs: list[Any], settings: Any) -> list[Any]:
        gate.wait(10)
        searched.append(list(inputs))
        return [f"{settings}:{item}" for item in inputs]

    done: list[tuple[list[Any], Any]] = []
    batcher = Batcher(search, batch_tokens=10, max_wait=0.2, queue_texts=100)
    batcher.submit(finished_job(["first"], "a", 1, done))
    batcher.start()
    time.sleep(0.2)  # the worker holds the first job and waits at the gate
    jobs = [
        finished_job(["a1", "a2"], "a", 4, done),
        finished_job(["b1"], "b", 1, done),
        finished_job(["a3"], "a", 4, done),
        finished_job(["a4"], "a", 4, done),  # over the budget of 10 beside a1 a2 a3: the next batch
        finished_job(["b2"], "b", 1, done),
    ]
    for job in jobs:
        batcher.submit(job)
    gate.set()
    deadline = time.monotonic() + 10
    while len(done) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    batcher.stop()
    assert searched == [["first"], ["a1", "a2", "a3"], ["b1", "b2"], ["a4"]]
    assert {tuple(inputs): result for inputs, result in done} == {
        ("first",): ["a:first"],
        ("a1", "a2"): ["a:a1", "a:a2"],
        ("a3",): ["a:a3"],
        ("a4",): ["a:a4"],
        ("b1",): ["b:b1"],
        ("b2",): ["b:b2"],
    }


def test_the_batcher_bounds_its_queue_and_drops_cancelled_jobs() -> None:
    searched: list[Any] = []
    batcher = Batcher(lambda inputs, _: searched.extend(inputs) or list(inputs), 100, 0.0, queue_texts=3)
    done: list[tuple[list[Any], Any]] = []
    kept, dropped = finished_job(["kept"], "a", 1, done), finished_job(["x", "y"], "a", 1, done)
    batcher.submit(kept)
    batcher.submit(dropped)
    with pytest.raises(QueueFull, match="3 of 3 texts"):
        batcher.submit(finished_job(["one too many"], "a", 1, done))
    batcher.cancel(dropped)
    assert batcher.queued_texts == 1
    batcher.start()
    deadline = time.monotonic() + 10
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    batcher.stop()
    assert searched == ["kept"] and done == [(["kept"], ["kept"])]


def test_a_failed_search_fails_only_the_job_that_caused_it() -> None:
    calls: list[list[Any]] = []
    gate = threading.Event()

    def search(inputs: list[Any], _: Any) -> list[Any]:
        gate.wait(10)
        calls.append(list(inputs))
        if "bad" in inputs:
            raise SeqsmithError("no output")
        return inputs

    done: list[tuple[list[Any], Any]] = []
    batcher = Batcher(search, 100, 0.2, 10)
    batcher.submit(finished_job(["first"], "a", 1, done))
    batcher.start()
    time.sleep(0.2)  # the worker holds the first job at the gate; the next three share one search
    for inputs in (["good"], ["bad"], ["also good"]):
        batcher.submit(finished_job(inputs, "a", 1, done))
    gate.set()
    deadline = time.monotonic() + 10
    while len(done) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher.alive
    batcher.stop()
    assert calls == [["first"], ["good", "bad", "also good"], ["good"], ["bad"], ["also good"]]
    answers = {tuple(inputs): result for inputs, result in done}
    assert answers[("good",)] == ["good"] and answers[("also good",)] == ["also good"]
    assert isinstance(answers[("bad",)], SeqsmithError)


SECRET = "Zq7secretZq7"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"texts": []}, 422, "texts"),
        ({"text": [SECRET]}, 422, "text"),
        ({"texts": SECRET}, 422, "texts"),
        ({"texts": [SECRET, 3]}, 422, "texts.1"),
        ({"texts": ["alpha"] * 65}, 422, "serve.max_texts"),
        ({"texts": ["a " * 2600]}, 422, "serve.max_chars"),
        ({"texts": ["   "]}, 422, "texts[0] is empty"),
        ({"texts": ["alpha"], "options": {"beam_size": 0}}, 400, "beam_size"),
        ({"texts": ["alpha"], "options": {"method": "beam", "beam_size": 17}}, 400, "beam_size=17 is above"),
        ({"texts": ["a"], "options": {"method": "sample", "nbest": 17, "beam_size": 17}}, 400, "nbest=17"),
        ({"texts": ["alpha"], "options": {"beam": 500}}, 400, "serve.max_beam"),
        ({"texts": ["alpha"], "options": {"max_length_b": 100_000_000}}, 400, "serve.max_output_tokens"),
        ({"texts": ["alpha"], "options": {"max_length": "1000"}}, 400, "serve.max_output_tokens"),
        ({"texts": ["alpha"], "options": {"min_length": 257}}, 400, "serve.max_output_tokens"),
        ({"texts": ["alpha"], "options": {"batch_tokens": 10**9}}, 400, "serve.batch_tokens"),
        ({"texts": ["alpha"], "options": {"nbest": 9}}, 400, "cannot exceed beam_size"),
        ({"texts": ["alpha"], "options": {SECRET: 3}}, 400, "unknown generation option"),
        ({"texts": ["alpha"], "options": {"method": SECRET}}, 400, "method"),
    ],
)
def test_bad_requests_get_a_4xx_that_names_the_rule(
    client: TestClient, body: dict, status: int, fragment: str
) -> None:
    response = client.post("/generate", json=body)
    assert response.status_code == status
    detail = response.json()["detail"]
    assert isinstance(detail, str) and fragment in detail
    if SECRET in json.dumps(body) and fragment != "unknown generation option":
        assert SECRET not in response.text  # errors do not echo the request


@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b"{not json", 400, "not JSON"),
        (b'{"texts": ["\xff"]}', 400, "not UTF-8"),
        (b"[" * 50_000 + b"]" * 50_000, 400, "deep nesting"),
        (b'{"texts": ["a"], "options": {"beam_size": ' + b"9" * 50_000 + b"}}", 400, "huge number"),
        (b'{"texts": ["' + b"a" * 1_100_000 + b'"]}', 413, "serve.max_body_bytes"),
    ],
)
def test_bodies_that_are_not_requests(client: TestClient, content: bytes, status: int, fragment: str) -> None:
    response = client.post("/generate", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status and fragment in response.json()["detail"]


def test_a_body_without_length_is_cut_off_at_the_limit(generator: api.Generator) -> None:
    sent = []

    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            sent.append(1)
            yield b" " * 65536

    with TestClient(create_app(generator, limits(max_body_bytes=100_000))) as test_client:
        response = test_client.post("/generate", content=chunks())
    assert response.status_code == 413 and "100000 bytes" in response.json()["detail"]


def test_output_length_is_capped_by_the_server(generator: api.Generator) -> None:
    with TestClient(create_app(generator, limits(max_output_tokens=2))) as test_client:
        body = test_client.post("/generate", json={"texts": TEXTS, "attention": True}).json()
    assert all(len(nbest[0]["target_tokens"]) <= 3 for nbest in body["outputs"])  # two tokens and </s>
    assert [len(o.tokens) for o in generator.generate_full(TEXTS, max_length=2)[0]] == [
        len(body["outputs"][0][0]["target_tokens"]) - 1
    ]


class Gate:
    """A search that waits until released, to hold the worker busy."""

    def __init__(self, generator: api.Generator) -> None:
        self.generator, self.open = generator, threading.Event()
        self.search = generator.generate_encoded

    def __enter__(self) -> Gate:
        self.generator.generate_encoded = self._held  # type: ignore[method-assign]
        return self

    def _held(self, inputs: Any, settings: Any) -> Any:
        self.open.wait(20)
        return self.search(inputs, settings)

    def __exit__(self, *_: object) -> None:
        self.open.set()
        self.generator.generate_encoded = self.search  # type: ignore[method-assign]


def test_a_full_queue_answers_429_and_a_slow_answer_504(model_dir: Path) -> None:
    generator = api.load(model_dir)
    statuses: list[int] = []
    settings = limits(queue_texts=2, timeout_s=1.5)
    with Gate(generator) as gate, TestClient(create_app(generator, settings)) as test_client:

        def ask(texts: list[str]) -> threading.Thread:
            def post() -> None:
                statuses.append(test_client.post("/generate", json={"texts": texts}).status_code)

            thread = threading.Thread(target=post)
            thread.start()
            time.sleep(0.3)
            return thread

        held = ask(["alpha"])  # the worker takes it and waits at the gate
        queued = ask(["alpha", "beta"])  # fills the queue of two texts
        refused = test_client.post("/generate", json={"texts": ["alpha"]})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "the queue holds 2 of 2 texts" in refused.json()["detail"]
        assert test_client.get("/ready").status_code == 503
        held.join(20)
        queued.join(20)
        assert statuses == [504, 504]  # neither answered within serve.timeout_s
        assert test_client.get("/ready").status_code == 200  # the queued job left the queue when it timed out
        gate.open.set()
        answer = test_client.post("/generate", json={"texts": ["alpha"]})
        assert answer.status_code == 200 and answer.json()["outputs"] == generator.generate(["alpha"])
        text = test_client.get("/metrics").text
    codes = {
        s.labels["code"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if f.name == "seqsmith_requests"
    }
    assert codes == {"200": 2, "429": 1, "503": 1, "504": 2}


def test_api_keys_guard_generate_and_metrics(generator: api.Generator, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("first-key\n\n  second-key  \n", encoding="utf-8")
    with TestClient(create_app(generator, api_keys=read_api_keys(keys))) as test_client:
        body = {"texts": ["alpha"]}
        assert test_client.post("/generate", json=body).status_code == 401
        wrong = test_client.post("/generate", json=body, headers={"Authorization": "Bearer first-ke"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert (
            test_client.post(
                "/generate", json=body, headers={"Authorization": "Bearer second-key"}
            ).status_code
            == 200
        )
        assert test_client.get("/metrics").status_code == 401
        assert test_client.get("/metrics", headers={"Authorization": "Bearer first-key"}).status_code == 200
        assert (
            test_client.get("/health").status_code == 200 and test_client.get("/info").json()["auth"] is True
        )
    keys.write_text("\n", encoding="utf-8")
    with pytest.raises(SeqsmithError, match="holds no key"):
        read_api_keys(keys)
    with pytest.raises(SeqsmithError, match="not found"):
        read_api_keys(tmp_path / "missing")


def test_cors_is_off_unless_origins_are_listed(generator: api.Generator, client: TestClient) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/generate", headers=preflight).headers
    with TestClient(create_app(generator, limits(cors_origins=["https://app.example"]))) as test_client:
        allowed = test_client.options("/generate", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = test_client.options("/generate", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_metrics_count_what_was_served(generator: api.Generator) -> None:
    with TestClient(create_app(generator)) as test_client:
        outputs = [
            test_client.post("/generate", json={"texts": TEXTS[: i + 1]}).json()["outputs"] for i in range(3)
        ]
        test_client.post("/generate", json={"texts": []})
        text = test_client.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("seqsmith_requests_total", (("code", "200"),))] == 3
    assert samples[("seqsmith_requests_total", (("code", "422"),))] == 1
    assert samples[("seqsmith_texts_total", ())] == 6
    tokens = sum(
        len(generator.generate_full([t])[0][0].tokens) for batch in outputs for t in TEXTS[: len(batch)]
    )
    assert samples[("seqsmith_output_tokens_total", ())] == tokens
    assert samples[("seqsmith_request_seconds_count", ())] == 4  # the metrics request itself is counted after
    assert samples[("seqsmith_queue_texts", ())] == 0


def test_health_ready_info_and_docs_need_nothing_from_outside(
    client: TestClient, generator: api.Generator
) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    info = client.get("/info").json()
    assert info["limits"]["max_beam"] == 16 and info["defaults"]["method"] == generator.config.method
    spec = client.get("/openapi.json").json()
    schema = spec["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"texts", "options", "nbest", "attention"}
    for page in ("/", "/docs"):
        html = client.get(page).text
        assert "<script src=" not in html and "https://" not in html and "http://" not in html


def test_serve_settings_are_checked(generator: api.Generator) -> None:
    assert serve_limits(generator, {"max_beam": 4}).max_beam == 4
    with pytest.raises(SeqsmithError, match="unknown serve setting.*max_bem"):
        serve_limits(generator, {"max_bem": 4})
    with pytest.raises(SeqsmithError, match=r"serve\.queue_texts"):
        serve_limits(generator, {"queue_texts": 0})


def test_the_cli_server_with_two_workers_and_a_key(
    model_dir: Path, generator: api.Generator, tmp_path: Path
) -> None:
    import httpx

    (tmp_path / "keys").write_text("k\n", encoding="utf-8")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "seqsmith.cli",
        "serve",
        str(model_dir),
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    command += ["--api-key-file", str(tmp_path / "keys"), "max_beam=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        wait_ready(port, process)
        url, key = f"http://127.0.0.1:{port}", {"Authorization": "Bearer k"}
        answers = [
            httpx.post(f"{url}/generate", json={"texts": TEXTS}, headers=key, timeout=30) for _ in range(4)
        ]
        assert all(a.status_code == 200 and a.json()["outputs"] == generator.generate(TEXTS) for a in answers)
        beam = httpx.post(f"{url}/generate", json={"texts": ["alpha"], "options": {"beam": 8}}, headers=key)
        assert beam.status_code == 400 and "limit of 4 (serve.max_beam)" in beam.json()["detail"]
        assert httpx.post(f"{url}/generate", json={"texts": ["alpha"]}).status_code == 401
    finally:
        process.terminate()
        process.wait(30)
    bad = subprocess.run(
        [sys.executable, "-m", "seqsmith.cli", "serve", str(model_dir), "--workers", "2", "max_bem=3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "unknown serve setting" in bad.stderr


def test_a_client_that_hangs_up_is_dropped_before_its_search(model_dir: Path) -> None:
    """Driven as raw ASGI: TestClient cannot hang up. The second request's client leaves while the first
    holds the worker; its job must leave the queue unsearched."""
    generator = api.load(model_dir)
    searched: list[str] = []
    search = generator.generate_encoded

    def recording(inputs: Any, settings: Any) -> Any:
        searched.extend(i.text for i in inputs)
        return search(inputs, settings)

    generator.generate_encoded = recording  # type: ignore[method-assign]

    async def call(app: Any, path: str, body: bytes, leaves_after: float | None) -> list[dict[str, Any]]:
        gone_at = None if leaves_after is None else time.monotonic() + leaves_after
        delivered, sent = False, []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            if gone_at is not None and time.monotonic() >= gone_at:
                return {"type": "http.disconnect"}
            await asyncio.sleep(3600)  # nothing more from a client that stays
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST" if body else "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        await app(scope, receive, send)
        return sent

    async def scenario() -> tuple[int, int, str]:
        with Gate(generator) as gate:
            app = create_app(generator)
            stays = asyncio.create_task(call(app, "/generate", b'{"texts": ["alpha"]}', None))
            await asyncio.sleep(0.3)  # the worker holds the first request at the gate
            leaves = await call(app, "/generate", b'{"texts": ["beta gamma"]}', 0.5)
            gate.open.set()
            first = await stays
            metrics = await call(app, "/metrics", b"", None)
        body = b"".join(m.get("body", b"") for m in metrics if m["type"] == "http.response.body")
        return leaves[0]["status"], first[0]["status"], body.decode()

    left, stayed, metrics = asyncio.run(scenario())
    assert (left, stayed) == (499, 200)
    assert searched == ["alpha"]
    cancelled = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
    assert cancelled["seqsmith_cancelled_total"] == 1 and cancelled["seqsmith_queue_texts"] == 0
