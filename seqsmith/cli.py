"""`seqsmith <verb>`: a thin face over seqsmith.api; argument parsing and printing only."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from seqsmith import api
from seqsmith.config import parse_override
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import (
    atomic_write_text,
    check_writable,
    explain_os_error,
    iter_lines,
    one_line,
    read_lines,
)


def _options(items: Sequence[str]) -> dict[str, Any]:
    """Generation options as key=value (``beam=5 top_p=0.9``), or generate.key=value as in configs."""
    options = {}
    for item in items:
        path, value = parse_override(item)
        options[path[-1]] = value
    return options


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _read_inputs(source: str | None) -> Iterable[str]:
    """One input a line, split on newline only so that output lines match input lines."""
    if source and source != "-":
        return read_lines(Path(source), "input file")
    return [text for _, text in iter_lines(sys.stdin.buffer, "standard input")]


def _interactive(generator: api.Generator, options: dict[str, Any]) -> None:
    print("seqsmith: type a sentence and press Enter (Ctrl-D to quit)", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            return
        if line.strip():
            try:
                print(generator.generate([generator.parse_input(line, "input")], **options)[0])
            except SeqsmithError as error:
                print(f"seqsmith: error: {error}", file=sys.stderr)


def cmd_generate(args: argparse.Namespace) -> None:
    options = _options(args.options)
    if args.attention:
        options["keep_attention"] = True
    generator = api.load(args.model_dir)
    if args.input is None and sys.stdin.isatty():
        _interactive(generator, options)
        return
    where = args.input if args.input and args.input != "-" else "standard input"
    texts = [
        generator.parse_input(t, f"{where}:{n}") for n, t in enumerate(_read_inputs(args.input), start=1)
    ]
    if args.output:
        check_writable(Path(args.output))
    results = generator.generate_full(texts, **options)
    lines = []
    for nbest in results:
        if args.jsonl:
            rows = [{"text": o.text, "score": o.score, "token_log_probs": o.token_log_probs} for o in nbest]
            if args.attention:
                for row, output in zip(rows, nbest):
                    row["attention"] = output.attention
            lines.append(json.dumps(rows if len(rows) > 1 else rows[0], ensure_ascii=False) + "\n")
        else:
            lines.append("".join(one_line(o.text) + "\n" for o in nbest))
    if args.output:
        atomic_write_text(Path(args.output), "".join(lines))  # a full disk leaves the old file whole
    else:
        sys.stdout.write("".join(lines))


def cmd_distill(args: argparse.Namespace) -> None:
    config = api.load_config(args.config, args.overrides)
    result = api.distill(args.teacher_dir, config, args.mono, args.work, **_options(args.teacher_option))
    _print_json(asdict(result))


def cmd_back_translate(args: argparse.Namespace) -> None:
    result = api.back_translate(args.model_dir, args.monolingual, args.out, **_options(args.options))
    _print_json(asdict(result))


def cmd_export(args: argparse.Namespace) -> None:
    """The directory, then its README (how to run it, and any generate default the runtime changed)."""
    out = api.export(args.model_dir, args.out_dir, args.format, args.quantize, args.force)
    readme = out / "README.txt"
    print(out)
    if readme.is_file():
        print(readme.read_text(encoding="utf-8"), end="")


def cmd_serve(args: argparse.Namespace) -> None:
    from seqsmith.serving.app import serve

    serve(args.model_dir, args.host, args.port, args.workers, args.api_key_file, **_options(args.options))


def cmd_tune(args: argparse.Namespace) -> None:
    if args.trials < 1 or (args.minutes is not None and args.minutes <= 0):
        raise SeqsmithError("--trials must be at least 1 and --minutes above 0")
    written = api.tune(
        args.target,
        args.space,
        args.trials,
        args.minutes,
        args.study_dir,
        args.storage,
        args.name,
        keep_checkpoints=args.keep_checkpoints,
    )
    _print_json(asdict(written))


def cmd_evaluate(args: argparse.Namespace) -> None:
    metrics = args.metrics.split(",") if args.metrics else None
    if args.model_dir:
        options = _options(args.options)
        out = Path(args.out) if args.out else None
        scores = api.evaluate_model(
            args.model_dir, args.split, metrics, args.weights, out, args.data, **options
        )
        _print_json(scores)
        return
    if not args.hyp or not args.ref:
        raise SeqsmithError("give a MODEL_DIR, or --hyp FILE and at least one --ref FILE")
    scores = api.evaluate_files(
        Path(args.hyp), [Path(r) for r in args.ref], metrics or ["bleu", "chrf"], args.tokenize
    )
    if args.out:
        api.write_outputs(scores, None, Path(args.out))
    print(api.format_markdown(scores))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqsmith", description="Sequence-to-sequence text generation.")
    verbs = parser.add_subparsers(dest="verb", required=True)

    demo = verbs.add_parser("demo", help="train the built-in date-normalisation demo and show outputs")
    demo.add_argument("--workdir", default="runs/demo")
    demo.add_argument("--minutes", type=float, default=3.0)
    demo.set_defaults(func=lambda a: _print_json(api.demo(a.workdir, a.minutes)))

    for verb, help_text, func in [
        ("prepare", "tokenize and binarize the corpus", lambda c: _print_json(asdict(api.prepare(c)))),
        ("train", "train (resumes from the last checkpoint)", lambda c: _print_json(asdict(api.train(c)))),
        ("run", "prepare, train, generate and evaluate", lambda c: _print_json(api.run(c))),
    ]:
        sub = verbs.add_parser(verb, help=help_text)
        sub.add_argument("config", help="YAML config file")
        sub.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4 model.heads=8")
        sub.set_defaults(func=lambda a, f=func: f(api.load_config(a.config, a.overrides)))

    tune = verbs.add_parser(
        "tune",
        help="search hyperparameters (a config) or generation settings (a model directory) with Optuna",
    )
    tune.add_argument("target", help="YAML config to train, or a trained model directory to decode with")
    tune.add_argument("space", help="search space YAML: params over dotted config keys (docs/tuning.md)")
    tune.add_argument("--trials", type=int, required=True, help="trials the study trains, over all workers")
    tune.add_argument("--minutes", type=float, help="start no trial after this many minutes")
    tune.add_argument("--study-dir", help="default: runs/tune/CONFIG-SPACE")
    tune.add_argument("--storage", help="SQLAlchemy URL shared by workers (default: SQLite in the study dir)")
    tune.add_argument("--name", help="the study's name in the database (default: the space file's stem)")
    tune.add_argument("--keep-checkpoints", action="store_true", help="keep finished trials' checkpoints")
    tune.set_defaults(func=cmd_tune)

    generate = verbs.add_parser("generate", help="generate outputs for inputs from a file or stdin")
    generate.add_argument("model_dir")
    generate.add_argument(
        "options", nargs="*", help="generation options, e.g. beam_size=5 method=sample top_p=0.9"
    )
    generate.add_argument("--input", "-i", help="input file, one source a line (default: stdin)")
    generate.add_argument("--output", "-o", help="output file (default: stdout)")
    generate.add_argument("--jsonl", action="store_true", help="JSON lines with scores and token log-probs")
    generate.add_argument("--attention", action="store_true", help="with --jsonl: add attention weights")
    generate.set_defaults(func=cmd_generate)

    evaluate = verbs.add_parser("evaluate", help="score hypotheses against references, or a model on a split")
    evaluate.add_argument("model_dir", nargs="?")
    evaluate.add_argument(
        "options", nargs="*", help="generation options for a model, e.g. method=sample top_p=0.9 seed=1"
    )
    evaluate.add_argument("--split", choices=["dev", "test"])
    evaluate.add_argument("--weights", help="another weights file, e.g. model.averaged.safetensors")
    evaluate.add_argument(
        "--data", help="another prepared data directory with the model's tokenizer (data.tokenizer.path)"
    )
    evaluate.add_argument("--hyp")
    evaluate.add_argument("--ref", action="append")
    evaluate.add_argument(
        "--metrics", help="comma-separated: bleu,chrf,ter,rouge,distinct,self_bleu,bleu1,bleu2,length,rep3,f1"
    )
    evaluate.add_argument("--tokenize", default="13a", help="sacrebleu tokenizer: 13a, intl, zh, char, none")
    evaluate.add_argument(
        "--out", help="directory for scores.json and scores.md (a model's default: MODEL_DIR/eval/SPLIT)"
    )
    evaluate.set_defaults(func=cmd_evaluate)

    average = verbs.add_parser("average", help="average the best checkpoints (or given weight files)")
    average.add_argument("model_dir")
    average.add_argument("--checkpoints", nargs="*", type=Path)
    average.add_argument("--out", type=Path)
    average.set_defaults(func=lambda a: print(api.average(a.model_dir, a.checkpoints, a.out)))

    report = verbs.add_parser("report", help="write an HTML report of a model directory")
    report.add_argument("model_dir")
    report.add_argument("--examples", type=int)
    report.set_defaults(func=lambda a: print(api.report(a.model_dir, a.examples)))

    distill = verbs.add_parser(
        "distill", help="train a student config on a teacher's outputs (sequence-level distillation)"
    )
    distill.add_argument("teacher_dir", help="the trained teacher's model directory")
    distill.add_argument("config", help="the student's YAML config (its data.train is what gets decoded)")
    distill.add_argument(
        "overrides", nargs="*", help="dotted overrides of the student config, e.g. train.max_minutes=30"
    )
    distill.add_argument("--mono", type=Path, help="monolingual source text to decode as well, one a line")
    distill.add_argument(
        "--work", type=Path, help="directory of the distilled data (default: beside the student's model dir)"
    )
    distill.add_argument(
        "--teacher-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the teacher's generation options, e.g. --teacher-option beam_size=8",
    )
    distill.set_defaults(func=cmd_distill)

    back = verbs.add_parser(
        "back-translate",
        help="decode monolingual text into synthetic pairs (back-translation with a reverse model, "
        "self-training with a forward one)",
    )
    back.add_argument("model_dir", help="the model that decodes (for back-translation: target -> source)")
    back.add_argument("monolingual", type=Path, help="one sentence a line, in the model's source language")
    back.add_argument(
        "-o",
        "--out",
        type=Path,
        required=True,
        help="prefix: writes OUT.<source suffix> and OUT.<target suffix>",
    )
    back.add_argument(
        "options", nargs="*", help="generation options, e.g. method=sample top_p=0.9 or beam_size=5"
    )
    back.set_defaults(func=cmd_back_translate)

    export = verbs.add_parser("export", help="write a model for CTranslate2, onnxruntime or transformers")
    export.add_argument("model_dir")
    export.add_argument("out_dir", help="a new directory (an existing one is replaced only with --force)")
    export.add_argument("--format", default="ctranslate2", help="ctranslate2 (default), onnx or marian")
    export.add_argument("--quantize", help="ctranslate2: int8, int16, float16, bfloat16; onnx: int8")
    export.add_argument("--force", action="store_true", help="replace an existing export")
    export.set_defaults(func=cmd_export)

    serve = verbs.add_parser("serve", help="HTTP server with a small web page (needs seqsmith[serve])")
    serve.add_argument("model_dir")
    serve.add_argument(
        "options", nargs="*", help="limits over the model's serve settings, e.g. max_beam=8 queue_texts=512"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers", type=int, default=1, help="processes, each with its own copy of the model"
    )
    serve.add_argument(
        "--api-key-file", help="file with one key a line: clients send Authorization: Bearer KEY"
    )
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    listed = "options" if hasattr(args, "options") else "overrides" if hasattr(args, "overrides") else None
    if extra and (listed is None or not all("=" in item and not item.startswith("-") for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra and listed:
        setattr(args, listed, [*getattr(args, listed), *extra])  # key=value items given after options
    try:
        args.func(args)
    except SeqsmithError as error:
        print(f"seqsmith: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"seqsmith: error: {explain_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqsmith: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
