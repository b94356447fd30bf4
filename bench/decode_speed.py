"""Decoding speed, seqsmith (float32, int8) vs transformers ``generate`` vs CTranslate2 (float32, int8),
same weights.

    python bench/decode_speed.py --model-dir runs/multi30k_en_de/model          # test2016, 1000 sentences
    python bench/decode_speed.py --model-dir DIR --limit 100 --runs 2           # a quick check

The seqsmith Transformer in ``--model-dir`` is exported once with ``seqsmith.models.hf_export.export_marian``
(MarianMTModel: a post-norm Transformer, so the model needs ``model.norm: post``) and CTranslate2 converts
that export. Every system decodes the same source ids (seqsmith's tokenizer, EOS included) in the same
length-sorted batches (seqsmith's ``generate.batch_tokens`` budget divided by the beam), greedy and beam 5
with length penalty "average" (= HF's length_penalty 1.0), on ``--threads`` threads; ids in, ids out, so
tokenization is not timed. Figures: median of ``--runs`` timed passes, one a process, the systems taking turns
pass by pass (a host whose speed drifts then moves them alike), each process first decoding the first
(longest) batch once untimed, model loading excluded; peak memory is the highest of a system's processes;
sentences/s and output tokens/s (EOS included), the share of outputs identical to seqsmith's (float32),
sacrebleu BLEU against ``--references``, and the batch-1 latency (each of the first ``--latency`` sentences
decoded alone: median and 90th percentile). seqsmith-int8 is seqsmith with ``generate.quantize: int8``,
seqsmith-int8-output with ``int8_output``. Peers run in the hf virtualenv (bench/peers.py) through
bench/decode_worker.py. Writes docs/benchmarks/decode_speed.json and a table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import sacrebleu
from measure import MULTI30K_TEST, machine, repo_path, run_measured
from peers import ensure
from tables import BENCHMARKS_MD, figures_path, invocation, publish

from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_write_text, read_lines
from seqsmith.generation.generator import Generator
from seqsmith.generation.search import length_batches
from seqsmith.specials import BOS_ID, EOS_ID, PAD_ID, UNK_ID

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "bench" / "decode_worker.py"
SEQSMITH_SIDE = ROOT / "bench" / "decode_seqsmith.py"
PEER_SYSTEMS = ["hf", "ct2-float32", "ct2-int8"]
# beside seqsmith (float32), the reference of every comparison
SYSTEMS = ["seqsmith-int8", "seqsmith-int8-output", *PEER_SYSTEMS]


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """seqsmith's sentences/s over each peer's, per search: ``ratio_vs_transformers`` {"beam1": ..., ...}."""
    names = {"hf": "transformers", "ct2-float32": "ctranslate2_float32", "ct2-int8": "ctranslate2_int8"}
    out: dict[str, dict[str, float]] = {}
    for key, row in results.items():
        system, search = key.split("/")
        ours = results.get(f"seqsmith/{search}")
        if system in names and ours:
            out.setdefault(f"ratio_vs_{names[system]}", {})[search] = (
                ours["sentences_per_s"] / row["sentences_per_s"]
            )
    for search in ("beam1", "beam5"):  # seqsmith's int8 against CTranslate2's
        ours, theirs = results.get(f"seqsmith-int8/{search}"), results.get(f"ct2-int8/{search}")
        if ours and theirs:
            out.setdefault("ratio_int8_vs_ctranslate2_int8", {})[search] = (
                ours["sentences_per_s"] / theirs["sentences_per_s"]
            )
    return out


def export(model_dir: Path, out_dir: Path) -> Path:
    try:
        from seqsmith.models.hf_export import export_marian
    except ImportError:
        raise SeqsmithError(
            "seqsmith.models.hf_export.export_marian is missing: the peers need a Marian export"
        ) from None
    shutil.rmtree(out_dir, ignore_errors=True)  # always from the current weights, never a stale export
    export_marian(model_dir, out_dir)
    return out_dir


def run_system(
    name: str, request: dict[str, Any], work: Path, threads: int, timeout: float
) -> tuple[dict[str, Any], float]:
    """One system in its own process: its results (per beam) and its peak resident memory in MB."""
    request_path, result_path = work / f"request-{name}.json", work / f"result-{name}.json"
    atomic_write_text(request_path, json.dumps({**request, "systems": [name]}))
    result_path.unlink(missing_ok=True)
    if name.startswith("seqsmith"):
        argv = [sys.executable, str(SEQSMITH_SIDE), str(request_path), str(result_path)]
    else:
        argv = [str(ensure("hf")), str(WORKER), str(request_path), str(result_path)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    returncode, peak_rss_mb = run_measured(argv, env, None, timeout)
    if returncode or (not result_path.is_file() and not request.get("convert_only")):
        raise SeqsmithError(f"{name} failed (exit {returncode}); rerun by hand: {' '.join(argv)}")
    results = {} if request.get("convert_only") else json.loads(result_path.read_text(encoding="utf-8"))
    return results, peak_rss_mb


def merged_run(before: dict[str, Any] | None, row: dict[str, Any]) -> dict[str, Any]:
    """One system's results over its turns: every turn's seconds, the last turn's outputs and latencies,
    the lowest high-water mark with the model loaded."""
    if before is None:
        return row
    merged = {**row, "seconds": before["seconds"] + row["seconds"]}
    if "loaded_rss_mb" in row:
        merged["loaded_rss_mb"] = min(before["loaded_rss_mb"], row["loaded_rss_mb"])
    return merged


def latency_ms(seconds: list[float]) -> dict[str, float] | None:
    """Median and 90th percentile (nearest rank) of one-sentence decodes, in milliseconds."""
    if not seconds:
        return None
    ranked = sorted(seconds)
    p90 = ranked[min(len(ranked) - 1, math.ceil(0.9 * len(ranked)) - 1)]
    return {"median": 1000 * statistics.median(ranked), "p90": 1000 * p90, "sentences": len(ranked)}


def figures(
    row: dict[str, Any], reference: list[list[int]], limits: list[int], bleu: float | None = None
) -> dict[str, Any]:
    """Speed, batch-1 latency, ``bleu`` and agreement with seqsmith: over all sentences, and over those
    where seqsmith stopped before its length limit (the peers' limit is the batch's longest, so cut-off
    outputs may differ)."""
    seconds, outputs = row["seconds"], row["outputs"]
    median = statistics.median(seconds)
    tokens = sum(len(ids) + 1 for ids in outputs)
    finished = [i for i, ids in enumerate(reference) if len(ids) < limits[i]]
    return {
        "seconds": median,
        "seconds_all": seconds,
        "sentences_per_s": len(outputs) / median,
        "tokens_per_s": tokens / median,
        "output_tokens": tokens,
        "identical_to_seqsmith": sum(a == b for a, b in zip(outputs, reference)) / len(reference),
        "identical_where_seqsmith_finished": (
            sum(outputs[i] == reference[i] for i in finished) / len(finished) if finished else None
        ),
        "seqsmith_finished_share": len(finished) / len(reference),
        "latency_ms": latency_ms(row.get("latency_seconds", [])),
        "bleu": bleu,
    }


def loaded_text(report: dict[str, Any], system: str) -> str:
    """The high-water mark with the model loaded, in brackets; nothing for a figures file from before it."""
    loaded = report.get("loaded_rss_mb", {}).get(system)
    return "" if loaded is None else f" ({loaded:.0f})"


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        "## Decoding speed (Multi30k test2016, CPU)",
        "",
        f"{settings['sentences']} sentences from `{settings['source']}`, model `{settings['model_dir']}`, "
        f"{settings['threads']} threads, median of {settings['runs']} runs, same weights and batches, ids in "
        f"and out. Host: {report['machine']['processor']}. Load average: "
        f"{report['machine']['loadavg_before']} -> {report['machine']['loadavg_after']}. Produced by "
        f"`{settings['command']}`. Identical: share of outputs equal to seqsmith's; in brackets, among the "
        "sentences where seqsmith stopped before its length limit (the peers only take one limit a batch). "
        f"BLEU: sacrebleu's default against `{settings.get('references', '-')}`. "
        "Batch-1 latency: milliseconds to decode one sentence alone, median and 90th percentile over the "
        f"first {settings.get('latency', 0)} sentences. "
        "Peak RSS: the system's process over both searches; in brackets, its high-water mark with the model "
        "loaded, before decoding (seqsmith and transformers hold torch, CTranslate2 alone does not).",
        "",
        "| system | search | sentences/s | tokens/s | seconds | identical (finished) | BLEU "
        "| batch-1 ms (p90) | peak RSS (loaded) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, row in report["results"].items():
        system, beam = key.split("/")
        share = row["identical_where_seqsmith_finished"]
        finished = "-" if share is None else f"{100 * share:.1f}%"
        latency = row.get("latency_ms")
        alone = "-" if latency is None else f"{latency['median']:.1f} ({latency['p90']:.1f})"
        bleu = "-" if row.get("bleu") is None else f"{row['bleu']:.2f}"
        lines.append(
            f"| {system} | {'greedy' if beam == 'beam1' else beam.replace('beam', 'beam ')} | "
            f"{row['sentences_per_s']:.1f} | {row['tokens_per_s']:.0f} | {row['seconds']:.2f} | "
            f"{100 * row['identical_to_seqsmith']:.1f}% ({finished}) | {bleu} | {alone} | "
            f"{report['peak_rss_mb'][system]:.0f} MB{loaded_text(report, system)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="a trained seqsmith Transformer")
    parser.add_argument("--marian-dir", type=Path, help="an existing export of --model-dir (default: export)")
    parser.add_argument("--source", type=Path, default=MULTI30K_TEST, help="one source sentence a line")
    parser.add_argument(
        "--references", type=Path, default=MULTI30K_TEST.with_suffix(".de"), help="one reference a line"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument(
        "--latency", type=int, default=100, help="batch-1 latency over the first N sentences (0: none)"
    )
    parser.add_argument("--systems", nargs="*", choices=SYSTEMS, default=SYSTEMS, help="beside seqsmith")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "decode_speed")
    parser.add_argument("--out", type=Path, default=figures_path("decode_speed.json"))
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed for one system")
    args = parser.parse_args()
    work = args.work.resolve()
    try:
        texts = read_lines(args.source, "--source file")[: args.limit]
        references = read_lines(args.references, "--references file")[: len(texts)]
        generator = Generator.from_pretrained(args.model_dir)
        sources = [generator.encode(text) for text in texts]
        budget = generator.config.batch_tokens
        vocab = generator.tokenizers.target
        request: dict[str, Any] = {
            "model_dir": str(args.model_dir.resolve()),
            "work": str(work),
            "vocab": [vocab.piece(i) for i in range(vocab.vocab_size)],
            "special": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID},
            "sources": sources,
            "batches": {
                str(beam): [b.tolist() for b in length_batches([len(s) for s in sources], budget // beam)]
                for beam in args.beams
            },
            "beams": args.beams,
            "runs": args.runs,
            "latency": args.latency,
            "threads": args.threads,
            "max_length_a": generator.config.max_length_a,
            "max_length_b": generator.config.max_length_b,
        }
        if any(name in PEER_SYSTEMS for name in args.systems):
            request["marian_dir"] = str(args.marian_dir or export(args.model_dir, work / "marian"))
            for name in [n for n in args.systems if n.startswith("ct2-")]:
                run_system(name, {**request, "convert_only": True}, work, args.threads, args.timeout)
        loadavg_before = [round(x, 2) for x in os.getloadavg()]
        outputs: dict[str, Any] = {}
        peak_rss_mb: dict[str, float] = {}
        for turn in range(args.runs):  # the systems take turns, so a host that drifts moves them alike
            last = turn == args.runs - 1
            once = {**request, "runs": 1, "latency": args.latency if last else 0}
            for name in ["seqsmith", *args.systems]:
                found, peak = run_system(name, once, work, args.threads, args.timeout)
                peak_rss_mb[name] = max(peak, peak_rss_mb.get(name, 0.0))
                for key, row in found.items():
                    outputs[key] = merged_run(outputs.get(key), row)
        config = generator.config
        limits = [int(config.max_length_a * (len(ids) - 1)) + config.max_length_b for ids in sources]
        results = {}
        for key, row in outputs.items():
            reference = outputs[f"seqsmith/{key.split('/')[1]}"]["outputs"]
            texts = [vocab.decode(ids) for ids in row["outputs"]]
            results[key] = figures(row, reference, limits, sacrebleu.corpus_bleu(texts, [references]).score)
    except SeqsmithError as error:
        sys.exit(f"decode_speed: error: {error}")
    report = {
        "benchmark": "decode_speed",
        "settings": {
            "command": invocation(),
            "model_dir": repo_path(args.model_dir),
            "source": repo_path(args.source),
            "references": repo_path(args.references),
            "sentences": len(sources),
            "runs": args.runs,
            "latency": args.latency,
            "threads": args.threads,
            "beams": args.beams,
            "length_penalty": "average (HF length_penalty=1.0)",
            "batch_tokens": generator.config.batch_tokens,
        },
        "machine": machine(loadavg_before),
        "results": results,
        "peak_rss_mb": peak_rss_mb,
        "loaded_rss_mb": {
            name: min(row["loaded_rss_mb"] for key, row in outputs.items() if key.startswith(f"{name}/"))
            for name in peak_rss_mb
        },
        **ratios(results),
    }
    publish(report, args.out, args.markdown, "decode_speed", markdown(report))


if __name__ == "__main__":
    main()
