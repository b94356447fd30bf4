"""The seqsmith half of decode_speed.py, run in its own process so that its peak memory is its own.

    python bench/decode_seqsmith.py REQUEST.json RESULT.json

Decodes the request's source ids with ``search_all`` (the engine under ``Generator``, with the tokenizer's
``target_pieces`` as ``Generator`` passes them; seqsmith-int8 is ``generate.quantize: int8``,
seqsmith-int8-output ``int8_output``) in the
request's batches, greedy or beam, ``keep_attention: false`` and length penalty "average"; writes, per beam,
the seconds of every timed pass, the output ids of the last, and the seconds of each of the request's first
``latency`` sentences decoded alone, and the memory high-water mark with the model loaded, before decoding.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from measure import high_water_mb

from seqsmith.generation.generator import Generator, search_all, target_pieces

QUANTIZE = {"seqsmith": "none", "seqsmith-int8": "int8", "seqsmith-int8-output": "int8_output"}


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    torch.set_num_threads(request["threads"])
    system = request["systems"][0]
    generator = Generator.from_pretrained(request["model_dir"], quantize=QUANTIZE[system])
    model = generator.model
    assert model is not None  # the torch engine
    loaded = high_water_mb(os.getpid())
    sources: list[list[int]] = request["sources"]
    result: dict[str, Any] = {}
    for beam in request["beams"]:
        config = generator.settings(beam=beam, keep_attention=False, length_penalty="average", nbest=1)
        pieces = target_pieces(generator.tokenizers, config)  # the rules a user's search obeys
        first = request["batches"][str(beam)][0]
        search_all(model, [sources[i] for i in first], config, pieces)  # untimed warm-up
        seconds, outputs = [], []
        for _ in range(request["runs"]):
            started = time.perf_counter()
            found = search_all(model, sources, config, pieces)  # batched as requested
            seconds.append(time.perf_counter() - started)
            outputs = [nbest[0].tokens for nbest in found]
        latency: list[float] = []
        for ids in sources[: request.get("latency", 0)]:  # one sentence a search: batch-1 latency
            started = time.perf_counter()
            search_all(model, [ids], config, pieces)
            latency.append(time.perf_counter() - started)
        result[f"{system}/beam{beam}"] = {
            "seconds": seconds,
            "outputs": outputs,
            "latency_seconds": latency,
            "loaded_rss_mb": loaded,
        }
        print(f"{system} beam {beam}: {min(seconds):.2f} s", flush=True)
    Path(sys.argv[2]).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
