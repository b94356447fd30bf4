"""HTTP face over ``Generator``: POST /generate, GET /health, and a small page at /.

Requests are validated by pydantic (a malformed body is a 422 naming the field); generation options go
through the same GenerateConfig checks as the CLI, so an invalid option is a 400 that says which.
"""

from __future__ import annotations

import threading
from importlib.resources import files
from pathlib import Path
from typing import Any

from seqsmith.errors import SeqsmithError
from seqsmith.generation.generator import Generator

try:
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise SeqsmithError("serving needs the serve extra: pip install 'seqsmith[serve]'") from error

MAX_TEXTS = 64
MAX_CHARS = 5000


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS)
    options: dict[str, Any] = {}
    nbest: bool = False  # return every hypothesis with its score


def create_app(generator: Generator) -> FastAPI:
    app = FastAPI(title="seqsmith", description="Sequence-to-sequence generation")
    lock = threading.Lock()  # one search at a time: torch already uses every core for one batch
    page = files("seqsmith.serving").joinpath("index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "generate": generator.config.model_dump()}

    @app.post("/generate")
    def generate(request: GenerateRequest) -> dict[str, Any]:
        for position, text in enumerate(request.texts):
            if not text.strip():
                raise HTTPException(400, f"texts[{position}] is empty; send at least one non-space character")
            if len(text) > MAX_CHARS:
                raise HTTPException(
                    400, f"texts[{position}] has {len(text)} characters; the limit is {MAX_CHARS}"
                )
        try:
            with lock:
                results = generator.generate_full(request.texts, **request.options)
        except SeqsmithError as error:
            raise HTTPException(400, str(error)) from None
        if request.nbest:
            return {"outputs": [[{"text": o.text, "score": o.score} for o in nbest] for nbest in results]}
        return {"outputs": [nbest[0].text for nbest in results]}

    return app


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(Generator.from_pretrained(model_dir)), host=host, port=port)
