"""HTTP face over ``Generator``: POST /generate through a dynamic batcher, health, readiness, metrics, a page.

The server's limits (``serve`` in the model's config, overridable at start) cap what a request may ask
(``requests.py``); ``guard.Guard`` bounds the body before the app reads it; ``batcher.Batcher`` runs the
searches. This module holds the endpoints, API keys and the process start.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from seqsmith.config import ServeConfig
from seqsmith.errors import SeqsmithError
from seqsmith.generation.generator import Generator
from seqsmith.serving.batcher import Batcher, Job, QueueFull
from seqsmith.serving.metrics import Metrics

try:
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

    from seqsmith.serving.guard import Guard
    from seqsmith.serving.requests import (
        ClientError,
        GenerateRequest,
        answer,
        batch_key,
        capped_settings,
        parse_request,
    )
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise SeqsmithError("serving needs the serve extra: pip install 'seqsmith[serve]'") from error

ENVIRONMENT = "SEQSMITH_SERVE"  # how `--workers N` hands the settings to each worker process


@asynccontextmanager
async def _stopping(batcher: Batcher) -> AsyncIterator[None]:
    yield
    batcher.stop()


def read_api_keys(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise SeqsmithError(f"API key file {path} not found; write one key a line, or drop --api-key-file")
    keys = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not keys:
        raise SeqsmithError(f"API key file {path} holds no key; write one key a line")
    return keys


def create_app(
    generator: Generator, limits: ServeConfig | None = None, api_keys: list[str] | None = None
) -> Any:
    """The ASGI app; ``limits`` default to the model's ``serve`` settings, ``api_keys`` to none (open)."""
    limits = limits or generator.full_config.serve
    metrics = Metrics()
    batcher = Batcher(
        lambda inputs, settings: generator.generate_encoded(inputs, settings),
        limits.batch_tokens,
        limits.max_wait_ms / 1000,
        limits.queue_texts,
        limits.batching,
        metrics.batch_done,
    )
    batcher.start()
    app = FastAPI(
        title="seqsmith",
        description="Sequence-to-sequence generation. Limits: GET /info.",
        docs_url=None,
        redoc_url=None,
        lifespan=lambda _: _stopping(batcher),
    )
    page = files("seqsmith.serving").joinpath("index.html").read_text(encoding="utf-8")
    docs = files("seqsmith.serving").joinpath("docs.html").read_text(encoding="utf-8")
    job_ids = iter(range(1 << 62))

    def authorized(request: Request) -> None:
        if not api_keys:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given[:7].lower() == "bearer " else ""
        if not any(hmac.compare_digest(token.encode(), key.encode()) for key in api_keys):
            raise HTTPException(
                401,
                "missing or wrong API key: send Authorization: Bearer <key>",
                {"WWW-Authenticate": "Bearer"},
            )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def api_docs() -> str:
        return docs

    @app.get("/health", summary="Liveness: the process answers")
    def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: the model is loaded, the worker runs and the queue has room")
    def ready() -> Response:
        if not batcher.alive:
            return JSONResponse({"status": "not ready", "detail": "the search worker is not running"}, 503)
        if batcher.queued_texts >= limits.queue_texts:
            return JSONResponse({"status": "not ready", "detail": "the queue is full"}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/info", summary="The model's default options, the server's limits, whether a key is needed")
    def info() -> dict[str, Any]:
        return {
            "model": generator.engine.describe(),
            "fields": generator.fields,  # an input is then an object of these, not a text
            "defaults": generator.config.model_dump(),
            "limits": limits.model_dump(exclude={"cors_origins", "threads"}),
            "auth": bool(api_keys),
        }

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(authorized)])
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(batcher.queued_texts), media_type="text/plain; version=0.0.4")

    @app.post(
        "/generate",
        dependencies=[Depends(authorized)],
        summary="Generate an output (or n-best) for each text",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": GenerateRequest.model_json_schema()}},
            }
        },
    )
    async def generate(http: Request) -> Response:
        loop = asyncio.get_running_loop()
        try:
            request = parse_request(await http.body(), limits)
            settings = capped_settings(generator, request, limits)
            inputs = generator.encode_texts(request.texts)
        except ClientError as error:
            return JSONResponse({"detail": error.detail}, error.status)
        except SeqsmithError as error:
            return JSONResponse({"detail": str(error)}, 400)
        future: asyncio.Future[Any] = loop.create_future()

        def resolve(result: Any) -> None:
            if not future.done():
                future.set_result(result)

        def finish(result: Any) -> None:
            loop.call_soon_threadsafe(resolve, result)

        cost = sum(len(i.ids) for i in inputs) * settings.width
        job = Job(inputs, settings, batch_key(settings, next(job_ids)), cost, finish)
        try:
            batcher.submit(job)
        except QueueFull as full:
            return JSONResponse({"detail": f"busy: {full}; retry shortly"}, 429, {"Retry-After": "1"})
        deadline = loop.time() + limits.timeout_s
        while not future.done():
            await asyncio.wait({future}, timeout=min(0.25, max(deadline - loop.time(), 0)))
            if future.done():
                break
            if await http.is_disconnected():
                batcher.cancel(job)
                metrics.cancel()
                return Response(status_code=499)  # nobody reads it; counted as what nginx calls it
            if loop.time() >= deadline:
                batcher.cancel(job)
                detail = f"no answer within {limits.timeout_s:g} s (serve.timeout_s); retry with fewer texts"
                return JSONResponse({"detail": detail}, 504)
        result = future.result()
        if isinstance(result, SeqsmithError):
            return JSONResponse({"detail": str(result)}, 400)
        if isinstance(result, BaseException):
            raise result
        metrics.answered(len(inputs), sum(len(nbest[0].tokens) for nbest in result))
        return JSONResponse(answer(generator, request, inputs, result))

    guarded: Any = Guard(app, limits, metrics)
    if limits.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        guarded = CORSMiddleware(
            guarded,
            allow_origins=limits.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return guarded


def serve_limits(generator: Generator, overrides: dict[str, Any]) -> ServeConfig:
    """The model's ``serve`` settings with ``overrides`` (``max_beam=8``) applied and checked."""
    unknown = sorted(set(overrides) - set(ServeConfig.model_fields))
    if unknown:
        raise SeqsmithError(
            f"unknown serve setting(s) {unknown}; valid: {', '.join(ServeConfig.model_fields)}"
        )
    try:
        return ServeConfig.model_validate({**generator.full_config.serve.model_dump(), **overrides})
    except ValidationError as error:
        problems = "; ".join(f"serve.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise SeqsmithError(f"invalid serve settings: {problems}") from None


def _load(settings: dict[str, Any]) -> tuple[Generator, ServeConfig, list[str] | None]:
    generator = Generator.from_pretrained(settings["model_dir"])
    limits = serve_limits(generator, settings["overrides"])
    keys = read_api_keys(settings["api_key_file"]) if settings["api_key_file"] else None
    return generator, limits, keys


def app_from_environment() -> Any:
    """The app of one worker process (uvicorn's factory under ``--workers N``)."""
    settings = json.loads(os.environ[ENVIRONMENT])
    generator, limits, keys = _load(settings)
    torch.set_num_threads(limits.threads or max(1, (os.cpu_count() or 1) // settings["workers"]))
    return create_app(generator, limits, keys)


def serve(
    model_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    api_key_file: str | None = None,
    **overrides: Any,
) -> None:
    """Run the server; with ``workers`` > 1, that many processes each load the model and share the port."""
    import uvicorn

    if not 1 <= workers <= 64:
        raise SeqsmithError(f"--workers {workers}: give 1 to 64 processes (each holds a copy of the model)")
    settings = {
        "model_dir": str(model_dir),
        "overrides": overrides,
        "workers": workers,
        "api_key_file": api_key_file,
    }
    os.environ[ENVIRONMENT] = json.dumps(settings)
    options: dict[str, Any] = {"host": host, "port": port, "timeout_keep_alive": 5, "limit_concurrency": 4096}
    if workers == 1:
        uvicorn.run(app_from_environment(), **options)
        return
    _load(settings)  # every setting checked here, once, before any worker starts; then freed
    # A worker answers the supervisor's health pings only once it has imported the command's modules
    # (torch among them); uvicorn's 5 s default killed and restarted every worker on a busy machine.
    options["timeout_worker_healthcheck"] = 120
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **options)
