"""Training throughput, seqsmith vs JoeyNMT 2.3 vs OpenNMT-py 3.0.4, on the same Multi30k model and pieces.

    python bench/train_throughput.py                      # 10 warm-up + 60 measured steps, 3 repeats
    python bench/train_throughput.py --repeats 1 --steps 20 --systems seqsmith-transformer joeynmt-transformer

Every toolkit trains the same Transformer (3+3 layers, d_model 256, 4 heads, FFN 1024, dropout 0.1, shared
embeddings) or the same GRU + Bahdanau model on seqsmith's 8k joint SentencePiece pieces with a budget of
4096 tokens a batch, in its own process with 2 threads; runs alternate between toolkits so that a change of
machine load hits all of them. The figure is target tokens (non-pad, EOS included) per second of wall time
between the end of the last warm-up update and the end of the last measured one, counted by ``probe.py``
the same way in every process; each toolkit's own tokens/s report is kept beside it as a cross-check.
Writes docs/benchmarks/train_throughput.json and the table in docs/benchmarks.md. Run from the repository
root, beside ../shared (peers are installed on first use by bench/peers.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import yaml
from measure import machine, run_measured
from peers import PEERS, ensure
from tables import BENCHMARKS_MD, figures_path, invocation, publish

from seqsmith.config import config_from_dict, load_config
from seqsmith.data.prepare import prepare
from seqsmith.data.tokenizer import Tokenizers
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_write_text
from seqsmith.hardware import native_bf16

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "multi30k"
BASE_CONFIG = ROOT / "configs" / "multi30k_en_de.yaml"
PEER_CONFIGS = ROOT / "bench" / "peer_configs"
PROBE = ROOT / "bench" / "probe.py"
NOT_RUNNABLE = {
    "fairseq-0.12.2": "installs (`python bench/peers.py fairseq`) but `import fairseq` fails on Python 3.11: "
    "ValueError, mutable default CommonConfig for field common"
}

PARAMETERS = {  # where each toolkit's log states the model size
    "seqsmith": r"([\d,]+) parameters",
    "joeynmt": r"Total params: (\d+)",
    "opennmt": r"number of parameters: (\d+)",
}


@dataclass(frozen=True)
class System:
    toolkit: str  # seqsmith, joeynmt, opennmt
    arch: str  # transformer, rnn
    precision: str = "fp32"  # seqsmith's train.precision: fp32, bf16 (autocast) or auto; the peers run fp32

    @property
    def name(self) -> str:
        return f"{self.toolkit}-{self.arch}" + ("" if self.precision == "fp32" else f"-{self.precision}")


SYSTEMS = [
    System("seqsmith", "transformer"),
    System("seqsmith", "transformer", precision="bf16"),
    System("seqsmith", "transformer", precision="auto"),
    System("joeynmt", "transformer"),
    System("opennmt", "transformer"),
    System("seqsmith", "rnn"),
    System("seqsmith", "rnn", precision="bf16"),
    System("seqsmith", "rnn", precision="auto"),
    System("joeynmt", "rnn"),
]
SEQSMITH_MODELS: dict[str, dict[str, Any]] = {
    # pre-norm: OpenNMT-py 3.0.4 knows no other; JoeyNMT drops out inside attention too
    "transformer": {"norm": "pre", "dropout": 0.1, "attention_dropout": 0.1},
    "rnn": {
        "arch": "rnn",
        "cell": "gru",
        "embed_dim": 256,
        "hidden_dim": 512,
        "bidirectional": True,
        "attention": "bahdanau",
        "input_feeding": True,
        "dropout": 0.2,
        "share_embeddings": False,
        "tie_output": False,
    },
}


@dataclass
class Workspace:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def pieces(self) -> Path:
        return self.root / "pieces"

    def run_dir(self, system: System) -> Path:
        return self.root / "runs" / system.name


# ----------------------------------------------------------------------------------------------- inputs
def prepare_inputs(work: Workspace) -> int:
    """seqsmith's prepare trains the one SentencePiece model; the peers get its pieces and vocabulary."""
    if not DATA.is_dir():
        raise SeqsmithError(f"Multi30k not found at {DATA}: run from the repository root, beside ../shared")
    config = load_config(BASE_CONFIG, [f"data.output_dir={work.data}"])
    if not (work.data / "report.json").is_file():
        prepare(config, progress=False)
    tokenizers = Tokenizers.load(work.data / "tokenizer")
    work.pieces.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        for lang, tokenizer in (("en", tokenizers.source), ("de", tokenizers.target)):
            lines = (DATA / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
            pieces = "".join(" ".join(tokenizer.pieces(line)) + "\n" for line in lines)
            atomic_write_text(work.pieces / f"{split}.{lang}", pieces)  # always from the current model
    vocab = [tokenizers.target.piece(i) for i in range(tokenizers.target.vocab_size)]
    atomic_write_text(work.pieces / "vocab.joeynmt", "".join(p + "\n" for p in vocab))
    # OpenNMT-py puts its own <unk> <blank> <s> </s> first: leave out our <pad> so the size stays the same
    atomic_write_text(work.pieces / "vocab.opennmt", "".join(p + "\n" for p in vocab if p != "<pad>"))
    return len(vocab)


def seqsmith_config(work: Workspace, system: System, steps: int, log_every: int, threads: int) -> Path:
    raw = yaml.safe_load(BASE_CONFIG.read_text(encoding="utf-8"))
    raw["data"]["output_dir"] = str(work.data)
    model = SEQSMITH_MODELS[system.arch]
    raw["model"] = {**raw["model"], **model} if system.arch == "transformer" else model
    raw["train"].update(
        model_dir=str(work.run_dir(system)),
        threads=threads,
        max_steps=steps,
        log_every=log_every,
        validate_every=10**9,
        checkpoint_every=10**9,
        patience=None,
        precision=system.precision,
        max_minutes=None,
    )
    config_from_dict(raw, f"bench config for {system.name}")
    path = work.root / "configs" / f"{system.name}.yaml"
    atomic_write_text(path, yaml.safe_dump(raw, sort_keys=False))
    return path


def peer_config(work: Workspace, system: System, steps: int, log_every: int) -> Path:
    raw = yaml.safe_load((PEER_CONFIGS / f"{system.name.replace('-', '_')}.yaml").read_text("utf-8"))
    pieces = work.pieces
    if system.toolkit == "joeynmt":
        raw["model_dir"] = str(work.run_dir(system))
        raw["data"].update(train=str(pieces / "train"), dev=str(pieces / "val"))
        for side in ("src", "trg"):
            raw["data"][side]["voc_file"] = str(pieces / "vocab.joeynmt")
        # JoeyNMT wants validation_freq divisible by logging_freq; keep validation out of the window
        raw["training"].update(updates=steps, logging_freq=log_every, validation_freq=log_every * 10**6)
    else:
        run = work.run_dir(system)
        raw.update(
            save_data=str(run / "data"),
            save_model=str(run / "model"),
            src_vocab=str(pieces / "vocab.opennmt"),
            train_steps=steps,
            report_every=log_every,
            data={
                "corpus_1": {"path_src": str(pieces / "train.en"), "path_tgt": str(pieces / "train.de")},
                "valid": {"path_src": str(pieces / "val.en"), "path_tgt": str(pieces / "val.de")},
            },
        )
    path = work.root / "configs" / f"{system.name}.yaml"
    atomic_write_text(path, yaml.safe_dump(raw, sort_keys=False))
    return path


# ----------------------------------------------------------------------------------------------- one run
def command(system: System, config: Path, probe_out: Path) -> list[str]:
    if system.toolkit == "seqsmith":
        return [sys.executable, str(PROBE), str(probe_out), "seqsmith", "seqsmith.cli", "train", str(config)]
    python = str(ensure(system.toolkit))
    if system.toolkit == "joeynmt":
        return [python, str(PROBE), str(probe_out), "joeynmt", "joeynmt", "train", str(config), "--skip-test"]
    return [python, str(PROBE), str(probe_out), "opennmt", "onmt.bin.train", "-config", str(config)]


def reported_rates(system: System, run_dir: Path, log_text: str, warmup: int) -> list[float]:
    """The toolkit's own tokens/s for each logging window that starts after the warm-up."""
    if system.toolkit == "seqsmith":
        rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text("utf-8").splitlines()]
        pairs = [(r["step"], r["tokens_per_s"]) for r in rows if r["kind"] == "train" and r["step"] > 1]
    elif system.toolkit == "joeynmt":
        found = re.findall(r"Step:\s+(\d+),.*?Tokens per Sec:\s+([\d.]+)", log_text)
        pairs = [(int(step), float(rate)) for step, rate in found]
    else:
        found = re.findall(r"Step\s+(\d+)/\s*\d+;.*?[\d.]+/\s*([\d.]+) tok/s", log_text)
        pairs = [(int(step), float(rate)) for step, rate in found]
    steps = [step for step, _ in pairs]
    window = min((b - a for a, b in pairwise(steps)), default=0)
    return [rate for step, rate in pairs if step - window >= warmup]


def run_once(
    work: Workspace, system: System, config: Path, warmup: int, threads: int, timeout: float
) -> dict[str, Any]:
    run_dir = work.run_dir(system)
    shutil.rmtree(run_dir, ignore_errors=True)  # never resume: every run starts from step 0
    run_dir.mkdir(parents=True)
    probe_out = work.root / "probe.json"
    probe_out.unlink(missing_ok=True)
    log_path = work.root / "logs" / f"{system.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
        "PYTHONUNBUFFERED": "1",
    }
    started = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        returncode, peak_rss_mb = run_measured(command(system, config, probe_out), env, log, timeout, ROOT)
    log_text = log_path.read_text(encoding="utf-8", errors="replace")
    if returncode or not probe_out.is_file():
        tail = "\n".join(log_text.splitlines()[-15:])
        raise SeqsmithError(f"{system.name} failed (exit {returncode}); log {log_path}:\n{tail}")
    probe = json.loads(probe_out.read_text(encoding="utf-8"))
    ends, tokens = probe["step_end"], probe["step_tokens"]
    if len(ends) <= warmup:
        raise SeqsmithError(f"{system.name} made {len(ends)} updates, not more than --warmup {warmup}")
    seconds = ends[-1] - ends[warmup - 1]
    measured = tokens[warmup:]
    reported = reported_rates(system, run_dir, log_text, warmup)
    rate = sum(measured) / seconds
    parameters = re.search(PARAMETERS[system.toolkit], log_text)
    return {
        "tokens_per_s": rate,
        "parameters": int(parameters.group(1).replace(",", "")) if parameters else None,
        "reported_tokens_per_s": statistics.mean(reported) if reported else None,
        "reported_over_counted": statistics.mean(reported) / rate if reported else None,
        "measured_steps": len(measured),
        "target_tokens_per_step": sum(measured) / len(measured),
        "seconds_per_step": seconds / len(measured),
        "process_seconds": time.monotonic() - started,
        "peak_rss_mb": peak_rss_mb,
    }


# ----------------------------------------------------------------------------------------------- summary
def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [run["tokens_per_s"] for run in runs]
    median = statistics.median(rates)
    reported = [run["reported_tokens_per_s"] for run in runs if run["reported_tokens_per_s"]]
    return {
        "tokens_per_s": median,
        "min": min(rates),
        "max": max(rates),
        "spread_pct": 100 * (max(rates) - min(rates)) / median,
        "reported_tokens_per_s": statistics.median(reported) if reported else None,
        "target_tokens_per_step": statistics.mean(run["target_tokens_per_step"] for run in runs),
        "parameters": runs[0]["parameters"],
        "seconds_per_step": statistics.median(run["seconds_per_step"] for run in runs),
        "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
        "runs": runs,
    }


def ratios(results: dict[str, Any], peer: str) -> dict[str, float]:
    """seqsmith over the peer, per model: fp32 against fp32, and seqsmith's bf16 and auto (bf16 is a feature
    the peers lack on a CPU) against the peer's fp32."""
    out = {}
    for arch in ("transformer", "rnn"):
        theirs = results.get(f"{peer}-{arch}")
        for suffix in ("", "-bf16", "-auto"):
            ours = results.get(f"seqsmith-{arch}{suffix}")
            if ours and theirs:
                out[f"{arch}{suffix}"] = ours["tokens_per_s"] / theirs["tokens_per_s"]
    return out


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        "## Training throughput (Multi30k en->de, CPU)",
        "",
        f"Target tokens/s (non-pad, EOS included) over {settings['steps']} updates after "
        f"{settings['warmup']} warm-up updates, {settings['threads']} threads, batch budget "
        f"{settings['batch_tokens']} tokens, {settings['vocab_size']} joint SentencePiece pieces; median of "
        f"{settings['repeats']} runs (spread = (max - min) / median). Load average during the runs: "
        f"{report['machine']['loadavg_before']} -> {report['machine']['loadavg_after']}. Host: "
        f"{report['machine']['processor']}. "
        f"Produced by `{settings['command']}`.",
        "",
        "| system | parameters | tokens/s | spread | own log tok/s | tgt tok/update | s/update | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in report["results"].items():
        reported, parameters = result["reported_tokens_per_s"], result["parameters"]
        lines.append(
            f"| {name} | {f'{parameters:,}' if parameters else '-'} | {result['tokens_per_s']:.0f} | "
            f"{result['spread_pct']:.1f}% | "
            f"{f'{reported:.0f}' if reported else '-'} | {result['target_tokens_per_step']:.0f} | "
            f"{result['seconds_per_step']:.2f} | {result['peak_rss_mb']:.0f} MB |"
        )
    for name, reason in report["not_runnable"].items():
        lines.append(f"| {name} | not runnable: {reason} | | | | | | |")
    lines.append("")
    for peer in ("joeynmt", "opennmt"):
        for arch, value in report[f"ratio_vs_{peer}"].items():
            lines.append(f"- seqsmith / {peer} ({arch}): **{value:.2f}x**")
    lines += ["", report["note"], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60, help="measured updates")
    parser.add_argument("--warmup", type=int, default=10, help="updates before the measured window (>= 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=10, help="each toolkit's own logging interval")
    parser.add_argument("--systems", nargs="+", choices=[s.name for s in SYSTEMS], default=None)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "train_throughput")
    parser.add_argument("--out", type=Path, default=figures_path("train_throughput.json"))
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed for one training run")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be at least 1")
    not_runnable = dict(NOT_RUNNABLE)
    if args.systems is None and not native_bf16(torch.device("cpu")):
        # emulated bfloat16 runs a d256 update for about a minute, and auto picks fp32 without a probe
        for system in SYSTEMS:
            if system.precision == "bf16":
                not_runnable[system.name] = "skipped: this CPU has no native bfloat16 (AVX512-BF16, AMX)"
            elif system.precision == "auto":
                not_runnable[system.name] = "skipped: without native bfloat16, auto is the fp32 row"
    chosen = args.systems or [s.name for s in SYSTEMS if s.name not in not_runnable]
    systems = [s for s in SYSTEMS if s.name in chosen]
    work = Workspace(args.work.resolve())
    try:
        vocab_size = prepare_inputs(work)
        total = args.warmup + args.steps
        configs = {
            s: seqsmith_config(work, s, total, args.log_every, args.threads)
            if s.toolkit == "seqsmith"
            else peer_config(work, s, total, args.log_every)
            for s in systems
        }
        loadavg_before = [round(x, 2) for x in os.getloadavg()]
        runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in systems}
        for repeat in range(args.repeats):
            for system in systems:
                result = run_once(work, system, configs[system], args.warmup, args.threads, args.timeout)
                runs[system.name].append(result)
                print(f"[{repeat + 1}/{args.repeats}] {system.name}: {result['tokens_per_s']:.0f} tokens/s")
    except SeqsmithError as error:
        sys.exit(f"train_throughput: error: {error}")
    results = {name: summarize(rs) for name, rs in runs.items()}
    report = {
        "benchmark": "train_throughput",
        "settings": {
            "command": invocation(),
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "threads": args.threads,
            "batch_tokens": 4096,
            "vocab_size": vocab_size,
            "peers": {name: " ".join(PEERS[name][0]) for name in ("joeynmt", "opennmt")},
        },
        "machine": machine(loadavg_before),
        "results": results,
        "ratio_vs_joeynmt": ratios(results, "joeynmt"),
        "ratio_vs_opennmt": ratios(results, "opennmt"),
        "not_runnable": not_runnable,
        "note": (
            "Each toolkit forms its own batches from the same 4096-token budget (JoeyNMT: random order, "
            "no length bucketing, so more padding and fewer real tokens an update; OpenNMT-py and seqsmith: "
            "length-bucketed), which is part of what is compared; target tokens/update shows the difference."
        ),
    }
    publish(report, args.out, args.markdown, "train_throughput", markdown(report))


if __name__ == "__main__":
    main()
