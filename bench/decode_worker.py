"""The peer half of decode_speed.py, run by the hf virtualenv's python: transformers ``generate`` and
CTranslate2 on an exported Marian directory, fed the very ids and batches seqsmith decodes.

    python decode_worker.py REQUEST.json RESULT.json    # systems hf, ct2-float32, ct2-int8

With ``"convert_only": true`` in the request it only converts the export for the CTranslate2 systems.

It never imports seqsmith (that lives in another environment): the request carries the source ids, the
batches, the vocabulary and the special ids. It imports torch only for transformers, so that a CTranslate2
row's memory is CTranslate2's own. CTranslate2's own Marian loader assumes an OPUS-MT layout (a
``<pad>`` row appended last, decoding from a zero vector); a seqsmith export keeps its vocabulary as it is
and starts from the BOS embedding, so the conversion goes through ``SeqsmithMarianLoader`` below.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def max_new_tokens(request: dict[str, Any], batch: list[list[int]]) -> int:
    """seqsmith's limit: a * (source length without EOS) + b output tokens, then EOS."""
    longest = max(len(ids) - 1 for ids in batch)
    return math.floor(request["max_length_a"] * longest) + request["max_length_b"] + 1


def cut(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


def hf_decoder(request: dict[str, Any], beam: int) -> Callable[[list[list[int]]], list[list[int]]]:
    """transformers ``generate`` on one batch of source ids, the model loaded once."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, GenerationConfig

    torch.set_num_threads(request["threads"])
    model = AutoModelForSeq2SeqLM.from_pretrained(request["marian_dir"], local_files_only=True).eval()
    special = request["special"]
    settings = GenerationConfig(
        decoder_start_token_id=model.config.decoder_start_token_id,
        eos_token_id=special["eos"],
        forced_eos_token_id=special["eos"],  # seqsmith forces EOS at the length limit
        pad_token_id=model.config.pad_token_id,
        num_beams=beam,
        do_sample=False,
        length_penalty=1.0,  # seqsmith length_penalty: average
        early_stopping=beam > 1,  # seqsmith's default: a sentence ends once beam_size hypotheses ended
        suppress_tokens=[special["pad"], special["bos"]],  # seqsmith never outputs PAD or BOS
        num_return_sequences=1,
    )

    def decode(batch: list[list[int]]) -> list[list[int]]:
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), model.config.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        settings.max_new_tokens = max_new_tokens(request, batch)
        with torch.inference_mode():
            generated = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=settings)
        return [cut(row, special["eos"]) for row in generated[:, 1:].tolist()]

    return decode


def convert_ct2(request: dict[str, Any], out_dir: Path, quantization: str) -> None:
    import ctranslate2.converters.transformers as ct2_transformers

    vocab: list[str] = request["vocab"]

    class SeqsmithMarianLoader(ct2_transformers.MarianMTLoader):
        def get_model_spec(self, model: Any) -> Any:
            model.config.normalize_before = False
            model.config.normalize_embedding = False
            return ct2_transformers.BartLoader.get_model_spec(self, model)  # keeps every vocabulary row

        def set_config(self, config: Any, model: Any, tokenizer: Any) -> None:
            config.bos_token = vocab[request["special"]["bos"]]
            config.eos_token = vocab[request["special"]["eos"]]
            config.unk_token = vocab[request["special"]["unk"]]
            config.decoder_start_token = vocab[model.config.decoder_start_token_id]

        def set_decoder(self, spec: Any, decoder: Any) -> None:
            ct2_transformers.BartLoader.set_decoder(self, spec, decoder)  # starts from the start embedding

        def get_vocabulary(self, model: Any, tokenizer: Any) -> list[str]:
            return vocab

    class Converter(ct2_transformers.TransformersConverter):
        def load_tokenizer(self, tokenizer_class: Any, model_name_or_path: str, **kwargs: Any) -> None:
            return None  # the loader above supplies the vocabulary

    ct2_transformers._MODEL_LOADERS["MarianConfig"] = SeqsmithMarianLoader()
    Converter(request["marian_dir"]).convert(str(out_dir), quantization=quantization, force=True)


def ct2_decoder(
    request: dict[str, Any], beam: int, compute_type: str
) -> Callable[[list[list[int]]], list[list[int]]]:
    """CTranslate2 on one batch of source ids, the converted model loaded once."""
    import ctranslate2

    out_dir = Path(request["work"]) / f"ct2-{compute_type}"
    translator = ctranslate2.Translator(
        str(out_dir),
        device="cpu",
        compute_type=compute_type,
        intra_threads=request["threads"],
        inter_threads=1,
    )
    vocab, special = request["vocab"], request["special"]
    index = {piece: i for i, piece in enumerate(vocab)}

    def decode(batch: list[list[int]]) -> list[list[int]]:
        results = translator.translate_batch(
            [[vocab[i] for i in ids] for ids in batch],
            beam_size=beam,
            length_penalty=1.0,
            max_decoding_length=max_new_tokens(request, batch),
            suppress_sequences=[[vocab[special["pad"]]], [vocab[special["bos"]]]],
            max_batch_size=0,
        )
        return [[index[piece] for piece in result.hypotheses[0]] for result in results]

    return decode


def timed(
    decode: Callable[[list[list[int]]], list[list[int]]], request: dict[str, Any], beam: int
) -> dict[str, Any]:
    """Seconds of every timed pass over the request's batches (after one untimed pass over the first), the
    outputs of the last, and the seconds of each of the first ``latency`` sentences decoded alone."""
    sources = request["sources"]
    batches = request["batches"][str(beam)]
    decode([sources[i] for i in batches[0]])
    seconds: list[float] = []
    outputs: list[Any] = [None] * len(sources)
    for _ in range(request["runs"]):
        started = time.perf_counter()
        for indices in batches:
            for k, ids in zip(indices, decode([sources[i] for i in indices])):
                outputs[k] = ids
        seconds.append(time.perf_counter() - started)
    latency: list[float] = []
    for ids in sources[: request.get("latency", 0)]:
        started = time.perf_counter()
        decode([ids])
        latency.append(time.perf_counter() - started)
    return {"seconds": seconds, "outputs": outputs, "latency_seconds": latency}


def high_water_mb() -> float:
    """This process's resident memory high-water mark so far: ``VmHWM``, not ``ru_maxrss``, which Linux
    carries over from the parent that forked this process (bench/measure.py)."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status: the memory figures need Linux")


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    if request.get("convert_only"):  # conversion in its own process: it must not count in the peak memory
        for system in request["systems"]:
            out_dir = Path(request["work"]) / system
            if system.startswith("ct2-"):  # always from the current export, never a stale conversion
                convert_ct2(request, out_dir, system.removeprefix("ct2-"))
        return
    result: dict[str, Any] = {}
    loaded = None  # the high-water mark with the first model loaded, before any decoding
    for system in request["systems"]:
        for beam in request["beams"]:
            if system == "hf":
                decode = hf_decoder(request, beam)
            else:
                decode = ct2_decoder(request, beam, system.removeprefix("ct2-"))
            loaded = loaded or high_water_mb()
            result[f"{system}/beam{beam}"] = found = {**timed(decode, request, beam), "loaded_rss_mb": loaded}
            print(f"{system} beam {beam}: {min(found['seconds']):.2f} s", flush=True)
    Path(sys.argv[2]).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
