"""HTTP face over ``Generator``: POST /generate through a dynamic batcher, health, readiness, metrics, a page.

The server's limits (``serve`` in the model's config, overridable at start) cap what a request may ask:
body size, texts, characters, beam, output length. Every refusal is a 4xx whose ``detail`` names the limit
and never echoes the request. Requests are read and parsed here; ``batcher.Batcher`` runs the searches.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seqsmith.config import GenerateConfig, ServeConfig
from seqsmith.errors import SeqsmithError
from seqsmith.generation.generator import Encoded, Generator, Output
from seqsmith.models.build import describe
from seqsmith.serving.batcher import Batcher, Job, QueueFull
from seqsmith.serving.metrics import Metrics

try:
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise SeqsmithError("serving needs the serve extra: pip install 'seqsmith[serve]'") from error

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ENVIRONMENT = "SEQSMITH_SERVE"  # how `--workers N` hands the settings to each worker process


class GenerateRequest(BaseModel):
    """The body of POST /generate."""

    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(min_length=1, description="inputs, one text each")
    options: dict[str, Any] = Field({}, description="generation options (generate.* keys), within the caps")
    nbest: bool = Field(False, description="return every hypothesis with its score")
    attention: bool = Field(False, description="return tokens and cross-attention of each hypothesis")


class ClientError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def parse_request(body: bytes, limits: ServeConfig) -> GenerateRequest:
    """The body as a request, or a ClientError that says what is wrong with it and which limit applies."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ClientError(
            400, f"the body is not UTF-8 (bad byte at offset {error.start}); send UTF-8 JSON"
        ) from None
    except json.JSONDecodeError as error:
        raise ClientError(
            400, f"the body is not JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except (ValueError, RecursionError):  # an integer of thousands of digits, or nesting thousands deep
        raise ClientError(
            400, "the body is JSON this server does not read (a huge number or deep nesting)"
        ) from None
    try:
        request = GenerateRequest.model_validate(payload)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p)[:40] for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()[:5]
        )
        raise ClientError(422, problems) from None
    if len(request.texts) > limits.max_texts:
        raise ClientError(
            422,
            f"texts: {len(request.texts)} texts; this server takes {limits.max_texts} a request "
            "(serve.max_texts): split the request",
        )
    for position, text in enumerate(request.texts):
        if not text.strip():
            raise ClientError(422, f"texts[{position}] is empty; send at least one non-space character")
        if len(text) > limits.max_chars:
            raise ClientError(
                422,
                f"texts[{position}] has {len(text)} characters; this server takes {limits.max_chars} "
                "(serve.max_chars)",
            )
    return request


def capped_settings(generator: Generator, request: GenerateRequest, limits: ServeConfig) -> GenerateConfig:
    """The request's options over the model's defaults, inside the server's caps."""
    if "batch_tokens" in request.options:
        raise ClientError(400, "options.batch_tokens is the server's to set (serve.batch_tokens)")
    try:
        settings = generator.settings(**request.options)
    except SeqsmithError as error:
        raise ClientError(400, str(error)) from None
    for name in ("max_length", "max_length_b", "min_length"):
        asked = getattr(settings, name)
        if name in request.options and asked > limits.max_output_tokens:
            raise ClientError(
                400,
                f"options.{name}={asked} is above this server's limit of {limits.max_output_tokens} "
                "output tokens (serve.max_output_tokens)",
            )
    if settings.width > limits.max_beam:
        name = "nbest" if settings.method == "sample" else "beam_size"
        raise ClientError(
            400,
            f"options.{name}={settings.width} is above this server's limit of {limits.max_beam} "
            "(serve.max_beam)",
        )
    return settings.model_copy(
        update={
            "max_length": min(settings.max_length, limits.max_output_tokens),
            "batch_tokens": limits.batch_tokens,
            "keep_attention": request.attention,
        }
    )


def batch_key(settings: GenerateConfig, job_id: int) -> str:
    """Jobs with equal settings share a search; seeded sampling runs alone so that a seed reproduces."""
    seeded = settings.method == "sample" and settings.seed is not None
    return settings.model_dump_json() + (f"#{job_id}" if seeded else "")


def answer(
    generator: Generator, request: GenerateRequest, inputs: list[Encoded], results: list[list[Output]]
) -> dict[str, Any]:
    if not (request.nbest or request.attention):
        return {"outputs": [nbest[0].text for nbest in results]}
    outputs = []
    for encoded, nbest in zip(inputs, results):
        rows = []
        for output in nbest if request.nbest else nbest[:1]:
            row: dict[str, Any] = {"text": output.text, "score": output.score}
            if request.attention:
                row["target_tokens"] = generator.pieces(
                    [*output.tokens, generator.model.eos_id], encoded.oovs, "target"
                )
                row["attention"] = output.attention
            rows.append(row)
        outputs.append(rows)
    reply: dict[str, Any] = {"outputs": outputs}
    if request.attention:
        reply["source_tokens"] = [generator.pieces(e.ids, e.oovs, "source") for e in inputs]
    return reply


@asynccontextmanager
async def _stopping(batcher: Batcher) -> AsyncIterator[None]:
    yield
    batcher.stop()


class Guard:
    """ASGI middleware: reads the body whole, within ``max_body_bytes`` and ``body_timeout_s``, before the app
    sees the request (so a body too large or too slow is refused here), and counts every response."""

    def __init__(self, app: Any, limits: ServeConfig, metrics: Metrics) -> None:
        self.app, self.limits, self.metrics = app, limits, metrics

    async def _body(self, scope: Message, receive: Receive) -> bytes | tuple[int, str]:
        """The body, or the status and detail of why it was refused."""
        limit = self.limits.max_body_bytes
        too_large = (
            413,
            f"the body is larger than this server's limit of {limit} bytes (serve.max_body_bytes)",
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return too_large
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                return (
                    408,
                    f"the body did not arrive within {self.limits.body_timeout_s:g} s (serve.body_timeout_s)",
                )
            if message["type"] != "http.request":
                return 400, "the client hung up before its body arrived"
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return too_large
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.monotonic(), 500

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            body = await self._body(scope, receive)
            if isinstance(body, tuple):
                await JSONResponse({"detail": body[1]}, body[0])(scope, receive, counted_send)
                return
            delivered = False

            async def replay() -> Message:
                nonlocal delivered
                if delivered:
                    return await receive()  # what comes next is the client hanging up
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, counted_send)
        finally:
            self.metrics.response(status, time.monotonic() - started)


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
            "model": describe(generator.model),
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
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **options)
