"""Lightweight models: a teacher, its int8 and its exports, and a distilled student, on one table.

    python bench/lightweight.py       # teacher runs/multi30k_en_de_tiny/model, student .../student/model
    python bench/lightweight.py --runs 1 --latency-sentences 10 --limit 64        # a smoke test, minutes

Systems: the teacher in float32 and with ``generate.quantize: int8`` (PyTorch dynamic int8 linears), its
``seqsmith export`` to CTranslate2 and ONNX in float32 and int8, and the student in float32 and int8. Each
runs through ``Generator`` (text in, text out, as ``seqsmith generate`` does) in its own process per thread
count, so its peak resident memory is its own (every child imports torch: the RSS floor is torch's).
Searches: greedy and beam 5 with length penalty "average" (the one every engine ranks alike). Batch 32:
the test sources sorted by length, 32 a call, one batch a call; its outputs give the test BLEU (sacrebleu,
13a, the references of ``--reference``). Batch 1: the first ``--latency-sentences`` sources one call each,
the interactive case; latency is the median milliseconds a sentence. Speeds are medians over ``--runs``
passes after one untimed warm-up call. Size on disk: the files a system loads (weights and tokenizer; for
torch int8, the quantized state dict as ``torch.save`` writes it, since it is quantized at load). Writes
docs/benchmarks/lightweight.json and its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from measure import machine, repo_path, run_measured
from tables import BENCHMARKS_MD, figures_path, invocation, publish

from seqsmith import api
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_write_text
from seqsmith.models.model_dir import load_model_dir

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT.parent / "shared" / "data" / "multi30k" / "test2016"
SEARCHES: dict[str, dict[str, Any]] = {
    "greedy": {"method": "greedy"},
    "beam5": {"method": "beam", "beam_size": 5},
}
COMMON: dict[str, Any] = {
    "length_penalty": "average",
    "batch_tokens": 1_000_000,
}  # one call of 32 is one batch


def loaded_bytes(directory: Path, options: dict[str, Any], model: Any) -> int:
    """What the system reads from disk; for load-time int8 the size its quantized weights would have."""
    if options.get("quantize") == "int8":
        import torch

        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        tokenizer = sum(p.stat().st_size for p in (directory / "tokenizer").rglob("*") if p.is_file())
        return buffer.tell() + tokenizer
    names = {"model.safetensors", "tokenizer", "config.json", "ctranslate2", "onnx"}
    return sum(
        p.stat().st_size
        for entry in directory.iterdir()
        if entry.name in names
        for p in ([entry] if entry.is_file() else entry.rglob("*"))
        if p.is_file()
    )


def parameters(directory: Path) -> int:
    """The float model's count (an int8 model keeps its packed weights outside ``parameters()``)."""
    exported = directory / "export.json"
    if exported.is_file():
        return int(json.loads(exported.read_text(encoding="utf-8"))["parameters"])
    return load_model_dir(directory).model.num_parameters()


def timed(call: Any, runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def child(request_path: Path, result_path: Path) -> None:
    """One system at one thread count: speeds per search and batching, outputs of batch 32."""
    import torch

    from seqsmith.generation.generator import Generator

    request = json.loads(request_path.read_text(encoding="utf-8"))
    torch.set_num_threads(request["threads"])
    directory = Path(request["directory"])
    generator = Generator.from_pretrained(directory, **request["options"])
    texts: list[str] = request["texts"]
    order = sorted(range(len(texts)), key=lambda i: -len(generator.encode(texts[i])))
    chunks = [[texts[i] for i in order[k : k + 32]] for k in range(0, len(order), 32)]
    interactive = texts[: request["latency_sentences"]]
    results: dict[str, Any] = {}
    for name, search in SEARCHES.items():
        options = {**COMMON, **search}
        generator.generate(chunks[0], **options)  # warm-up: allocations, onnxruntime's first-run planning
        found: dict[int, str] = {}

        def batched(options: dict[str, Any] = options, found: dict[int, str] = found) -> None:
            for k, chunk in enumerate(chunks):
                for i, text in zip(order[32 * k : 32 * k + 32], generator.generate(chunk, **options)):
                    found[i] = text

        def one_by_one(options: dict[str, Any] = options) -> None:
            for text in interactive:
                generator.generate([text], **options)

        results[name] = {
            "batch32_seconds": timed(batched, request["runs"]),
            "batch1_seconds": timed(one_by_one, request["runs"]),
            "outputs": [found[i] for i in range(len(texts))],
        }
    results["bytes"] = loaded_bytes(directory, request["options"], generator.model)
    atomic_write_text(result_path, json.dumps(results))


def systems(teacher: Path, student: Path, work: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    exports = {}
    for fmt in ("ctranslate2", "onnx"):
        for quantize in ("float32", "int8"):
            target = work / f"{fmt}-{quantize}"
            exports[(fmt, quantize)] = api.export(teacher, target, fmt, quantize, force=True)
    return {
        "teacher fp32": (teacher, {}),
        "teacher int8": (teacher, {"quantize": "int8"}),
        "ctranslate2 fp32": (exports[("ctranslate2", "float32")], {}),
        "ctranslate2 int8": (exports[("ctranslate2", "int8")], {}),  # int8 files run as int8
        "onnx fp32": (exports[("onnx", "float32")], {}),
        "onnx int8": (exports[("onnx", "int8")], {}),
        "student fp32": (student, {}),
        "student int8": (student, {"quantize": "int8"}),
    }


def bleu(outputs: list[str], references: list[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(outputs, [references], tokenize="13a").score)


def summary(rows: dict[int, Any], sentences: int, interactive: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for threads, row in rows.items():
        for search in SEARCHES:
            batch32 = statistics.median(row[search]["batch32_seconds"])
            batch1 = statistics.median(row[search]["batch1_seconds"])
            out[f"{search}/threads{threads}"] = {
                "batch32_sentences_per_s": sentences / batch32,
                "batch1_sentences_per_s": interactive / batch1,
                "batch1_latency_ms": 1000 * batch1 / interactive,
            }
    return out


def markdown(report: dict[str, Any]) -> str:
    settings, threads = report["settings"], report["settings"]["threads"]
    lines = [
        "## Lightweight models (Multi30k en-de test2016, CPU)",
        "",
        f"Teacher `{settings['teacher']}`, student `{settings['student']}` (distilled from it), "
        f"{settings['sentences']} test sentences; batch 1: the first {settings['latency_sentences']}. "
        f"Median of {settings['runs']} runs; length penalty average. Host: {report['machine']['processor']}, "
        f"load average {report['machine']['loadavg_before']} -> {report['machine']['loadavg_after']}. "
        f"Produced by `{invocation()}` (bench/README.md). Sentences/s at batch 32 (b32) and "
        "batch 1 (b1), and batch-1 latency in ms, at each thread count; BLEU is sacrebleu 13a on the "
        "batch-32 outputs; peak RSS is the 2-thread process's. Read with docs/lightweight.md, which "
        "says what the figures meet and what they leave open (the exports' slowdown at 2 threads).",
        "",
        "| system | params | MB | peak RSS | BLEU greedy | BLEU beam 5 | "
        + " | ".join(f"{s} {t}t b32 / b1 / ms" for s in ("greedy", "beam 5") for t in threads)
        + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * (2 * len(threads)),
    ]
    for name, row in report["results"].items():
        cells = []
        for search in SEARCHES:
            for t in threads:
                speed = row["speed"][f"{search}/threads{t}"]
                cells.append(
                    f"{speed['batch32_sentences_per_s']:.0f} / {speed['batch1_sentences_per_s']:.1f} / "
                    f"{speed['batch1_latency_ms']:.1f}"
                )
        lines.append(
            f"| {name} | {row['parameters'] / 1e6:.2f}M | {row['bytes'] / 1e6:.1f} | "
            f"{row['peak_rss_mb']:.0f} MB | {row['bleu']['greedy']:.2f} | {row['bleu']['beam5']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", type=Path, default=ROOT / "runs" / "multi30k_en_de_tiny" / "model")
    parser.add_argument("--student", type=Path, default=ROOT / "runs" / "multi30k_en_de_student" / "model")
    parser.add_argument("--source", type=Path, default=TEST.with_suffix(".en"))
    parser.add_argument("--reference", type=Path, default=TEST.with_suffix(".de"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    parser.add_argument("--latency-sentences", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", nargs="*", help="system names to run (default: all)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "lightweight")
    parser.add_argument("--out", type=Path, default=figures_path("lightweight.json"))
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed for one child")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        for path in (args.source, args.reference):
            if not path.is_file():
                raise SeqsmithError(f"{path} not found: pass --source/--reference or run beside ../shared")
        texts = args.source.read_text(encoding="utf-8").splitlines()[: args.limit]
        references = args.reference.read_text(encoding="utf-8").splitlines()[: args.limit]
        if len(texts) != len(references):
            raise SeqsmithError(f"{args.source} and {args.reference} differ in line count")
        table = systems(args.teacher.resolve(), args.student.resolve(), work)
        loadavg_before = [round(x, 2) for x in os.getloadavg()]
        results: dict[str, Any] = {}
        for name, (directory, options) in table.items():
            if args.only and name not in args.only:
                continue
            per_thread: dict[int, Any] = {}
            peak = 0.0
            for threads in args.threads:
                slug = f"{name.replace(' ', '-')}-{threads}"
                request_path, result_path = work / f"request-{slug}.json", work / f"result-{slug}.json"
                request = {
                    "directory": str(directory),
                    "options": options,
                    "threads": threads,
                    "texts": texts,
                    "latency_sentences": args.latency_sentences,
                    "runs": args.runs,
                }
                atomic_write_text(request_path, json.dumps(request))
                result_path.unlink(missing_ok=True)
                argv = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--child",
                    str(request_path),
                    str(result_path),
                ]
                env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
                code, peak_mb = run_measured(argv, env, None, args.timeout)
                if code or not result_path.is_file():
                    raise SeqsmithError(f"{name} failed (exit {code}); rerun by hand: {' '.join(argv)}")
                per_thread[threads] = json.loads(result_path.read_text(encoding="utf-8"))
                peak = peak_mb
                print(f"lightweight: {name}, {threads} threads done", flush=True)
            last = per_thread[args.threads[-1]]
            results[name] = {
                "directory": repo_path(directory),
                "options": options,
                "parameters": parameters(directory),
                "bytes": last["bytes"],
                "peak_rss_mb": peak,
                "bleu": {search: bleu(last[search]["outputs"], references) for search in SEARCHES},
                "speed": summary(per_thread, len(texts), min(args.latency_sentences, len(texts))),
                "raw_seconds": {
                    str(t): {s: {k: v for k, v in row[s].items() if k != "outputs"} for s in SEARCHES}
                    for t, row in per_thread.items()
                },
            }
    except SeqsmithError as error:
        sys.exit(f"lightweight: error: {error}")
    report = {
        "benchmark": "lightweight",
        "settings": {
            "teacher": repo_path(args.teacher),
            "student": repo_path(args.student),
            "source": repo_path(args.source),
            "sentences": len(texts),
            "latency_sentences": min(args.latency_sentences, len(texts)),
            "runs": args.runs,
            "threads": args.threads,
            "searches": {name: {**COMMON, **search} for name, search in SEARCHES.items()},
        },
        "machine": machine(loadavg_before),
        "results": results,
    }
    publish(report, args.out, args.markdown, "lightweight", markdown(report))


if __name__ == "__main__":
    main()
