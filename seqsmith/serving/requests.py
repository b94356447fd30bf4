"""What a POST /generate body may be: parsed, checked against the server's limits, and answered.

Every refusal is a ``ClientError`` whose detail names the rule and the ``serve.*`` setting, and never
echoes the request back.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seqsmith.config import GenerateConfig, ServeConfig
from seqsmith.errors import SeqsmithError
from seqsmith.generation.generator import Encoded, Generator, Output


class GenerateRequest(BaseModel):
    """The body of POST /generate."""

    model_config = ConfigDict(extra="forbid")
    texts: list[str | dict[str, str]] = Field(
        min_length=1, description="inputs: one text each, or for a model of several fields an object of them"
    )
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
    for position, item in enumerate(request.texts):
        texts = [item] if isinstance(item, str) else list(item.values())
        if not any(text.strip() for text in texts):
            raise ClientError(422, f"texts[{position}] is empty; send at least one non-space character")
        if (size := sum(len(text) for text in texts)) > limits.max_chars:
            raise ClientError(
                422,
                f"texts[{position}] has {size} characters; this server takes {limits.max_chars} "
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
                    [*output.tokens, generator.eos_id], encoded.oovs, "target"
                )
                row["attention"] = output.attention
            rows.append(row)
        outputs.append(rows)
    reply: dict[str, Any] = {"outputs": outputs}
    if request.attention:
        reply["source_tokens"] = [generator.pieces(e.ids, e.oovs, "source") for e in inputs]
    return reply
