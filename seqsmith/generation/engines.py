"""What runs the search behind ``Generator``: seqsmith's own over any ``Seq2SeqModel``, or CTranslate2.

An engine takes encoder ids (ending with EOS) and a generation config and returns ranked ``Hypothesis``
lists; tokenizing, unknown-word replacement and detokenizing stay in ``Generator``, so every engine gives
the same text for the same ids. ``check`` refuses, by name, the options an engine cannot honour, before
any work. The ONNX export needs no engine of its own: ``OnnxModel`` is a ``Seq2SeqModel``, so seqsmith's
searches (beam, sampling, diverse beam, every rule) run over onnxruntime sessions unchanged.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqsmith.config import GenerateConfig
from seqsmith.data.tokenizer import TargetPieces, Tokenizers
from seqsmith.errors import SeqsmithError, import_extra
from seqsmith.generation.hypothesis import Hypothesis, rank_scores
from seqsmith.generation.rules import length_bounds
from seqsmith.generation.search import length_batches, search_all
from seqsmith.models.build import describe
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.models.model_dir import WEIGHTS, load_model_dir
from seqsmith.models.quantize import quantize_int8
from seqsmith.specials import BOS_ID, EOS_ID, PAD_ID


class Engine(ABC):
    name: str
    model: Seq2SeqModel | None  # what teacher-forced scoring and attention pictures run on, if anything

    @abstractmethod
    def search(
        self, sources: Sequence[Sequence[int]], config: GenerateConfig, pieces: TargetPieces | None
    ) -> list[list[Hypothesis]]:
        """Hypotheses for every source, in input order."""

    @abstractmethod
    def describe(self) -> str:
        """The model and runtime in a line (the server's /info)."""

    def unsupported(self, config: GenerateConfig) -> list[str]:
        """The options of ``config`` this engine cannot honour, each named with its value."""
        return []

    def check(self, config: GenerateConfig) -> None:
        problems = self.unsupported(config)
        if problems:
            raise SeqsmithError(
                f"the {self.name} engine cannot honour "
                + "; ".join(problems)
                + " (generate.engine: torch can)"
            )


class TorchEngine(Engine):
    """seqsmith's searches over a model's ``encode`` / ``decode_step`` (torch, int8, or onnxruntime)."""

    def __init__(self, model: Seq2SeqModel, name: str = "torch") -> None:
        self.model, self.searched, self.name = model, model, name

    def search(
        self, sources: Sequence[Sequence[int]], config: GenerateConfig, pieces: TargetPieces | None
    ) -> list[list[Hypothesis]]:
        return search_all(self.searched, sources, config, pieces)

    def describe(self) -> str:
        return describe(self.searched) + ("" if self.name == "torch" else f" (on {self.name})")


def ctranslate2_threads() -> int:
    """CTranslate2's threads: one on a machine of two cores or fewer, where its second thread made greedy
    int8 decoding of 32-sentence batches 4.5x slower (AMD EPYC, 862 against 193 sentences/s) and 9.5x on an
    Intel Xeon (bench/ct2_threads.py, docs/benchmarks.md); torch's count elsewhere."""
    return 1 if (os.cpu_count() or 1) <= 2 else torch.get_num_threads()


class CTranslate2Engine(Engine):
    """``ctranslate2.Translator`` over piece lists; token log-probabilities by its ``score_batch``."""

    name = "ctranslate2"
    model = None

    def __init__(self, directory: Path, tokenizers: Tokenizers, quantize: str) -> None:
        ctranslate2 = import_extra("ctranslate2", "export")
        self.ctranslate2 = ctranslate2
        self.compute_type = "int8" if quantize == "int8" else "default"
        self.translator = ctranslate2.Translator(
            str(directory),
            device="cpu",
            compute_type=self.compute_type,
            intra_threads=ctranslate2_threads(),
        )
        self.source = [tokenizers.source.piece(i) for i in range(tokenizers.source.vocab_size)]
        target = tokenizers.target
        self.target_ids = {target.piece(i): i for i in range(target.vocab_size)}

    def describe(self) -> str:
        return f"CTranslate2 {self.ctranslate2.__version__} export, compute type {self.compute_type}"

    def unsupported(self, config: GenerateConfig) -> list[str]:
        problems = []
        if config.method == "diverse_beam":
            problems.append("generate.method=diverse_beam (it has beam, greedy and sample)")
        if config.length_penalty == "gnmt" and config.alpha > 0 and config.method == "beam":
            problems.append(
                "generate.length_penalty=gnmt in beam search (its penalty is length^a: use average)"
            )
        if config.coverage_penalty > 0:
            problems.append(
                "generate.coverage_penalty>0 (its coverage term is not the one seqsmith ranks by)"
            )
        if not config.early_stopping and config.method == "beam":
            problems.append("generate.early_stopping=false (it stops when beam_size hypotheses ended)")
        for name in ("fixed_length", "whole_words", "keep_attention"):
            if getattr(config, name):
                problems.append(f"generate.{name}=true")
        if config.method == "sample" and config.seed is not None and config.nbest > 1:
            problems.append("generate.seed with nbest > 1 (its samples of one source share one stream)")
        return problems

    def search(
        self, sources: Sequence[Sequence[int]], config: GenerateConfig, pieces: TargetPieces | None
    ) -> list[list[Hypothesis]]:
        self.check(config)
        results: list[list[Hypothesis]] = [[] for _ in sources]
        penalty = {"none": 0.0, "average": 1.0, "gnmt": 0.0}[config.length_penalty]
        sampling = config.method == "sample"
        if sampling and config.seed is not None:
            self.ctranslate2.set_random_seed(config.seed)
        for indices, longest in self._batches(sources, config):
            batch = [[self.source[i] for i in sources[int(j)]] for j in indices]
            found = self.translator.translate_batch(
                batch,
                beam_size=1 if sampling or config.method == "greedy" else config.beam_size,
                num_hypotheses=config.nbest,
                length_penalty=penalty,
                no_repeat_ngram_size=config.no_repeat_ngram,
                max_decoding_length=longest,
                min_decoding_length=config.min_length,
                return_scores=True,
                return_attention=config.replace_unk,
                sampling_topk=config.top_k if sampling else 1,
                sampling_topp=config.top_p if sampling else 1.0,
                sampling_temperature=config.temperature if sampling else 1.0,
                suppress_sequences=[["<pad>"], ["<s>"]],
            )
            sources_of = [batch[k] for k, result in enumerate(found) for _ in result.hypotheses]
            outputs = [pieces for result in found for pieces in result.hypotheses]
            scored = iter(self.translator.score_batch(sources_of, outputs))  # EOS included, as ours
            for j, result in zip(indices, found):
                found_here = [
                    self._hypothesis(pieces, next(scored).log_probs, result.attention, k, config)
                    for k, pieces in enumerate(result.hypotheses)
                ]
                results[int(j)] = sorted(found_here, key=lambda h: -h.score)
        return results

    @staticmethod
    def _batches(
        sources: Sequence[Sequence[int]], config: GenerateConfig
    ) -> Iterator[tuple[np.ndarray, int]]:
        """Length-sorted batches whose sources share one output limit, since CTranslate2 takes one a batch;
        the limit is the torch engine's (``length_bounds``), so each sentence stops where it would there."""
        reals = torch.tensor([sum(i not in (EOS_ID, BOS_ID, PAD_ID) for i in ids) for ids in sources])
        limits = length_bounds(reals, config, config.max_length)[1].tolist()
        budget = config.batch_tokens // config.width
        for limit in sorted(set(limits), reverse=True):
            group = np.array([k for k, one in enumerate(limits) if one == limit])
            for part in length_batches([len(sources[k]) for k in group], budget):
                yield group[part], limit

    def _hypothesis(
        self, pieces: list[str], log_probs: list[float], attention: Any, k: int, config: GenerateConfig
    ) -> Hypothesis:
        """Ranked by seqsmith's own score, so a greedy or sampled output scores as the torch engine's."""
        rows = torch.tensor(attention[k]) if attention and attention[k] else None
        tokens = [self.target_ids[p] for p in pieces]
        total = torch.tensor(sum(log_probs), dtype=torch.float64)
        score = float(rank_scores(total, len(log_probs), None, None, config))
        return Hypothesis(tokens, score, float(total), list(log_probs), rows)


def open_engine(directory: Path, config: GenerateConfig, weights: str | Path | None = None) -> Engine:
    """The engine ``config.engine`` names over the files in ``directory`` (a model directory or an export)."""
    if config.engine == "torch":
        if weights is None and not (directory / WEIGHTS).is_file() and (directory / "export.json").is_file():
            raise SeqsmithError(
                f"{directory} is an export without torch weights; run it with the engine its config names"
            )
        model = load_model_dir(directory, weights).model
        if config.quantize == "none":
            return TorchEngine(model)
        return TorchEngine(quantize_int8(model, projection_only=config.quantize == "int8_output"))
    files = directory / config.engine
    if not files.is_dir():
        raise SeqsmithError(
            f"{directory} holds no {config.engine} files; export it first (seqsmith export {directory} "
            f"OUT_DIR --format {config.engine}) and load OUT_DIR"
        )
    if weights is not None:
        raise SeqsmithError(f"--weights picks torch weights; the {config.engine} engine reads {files}")
    tokenizers = Tokenizers.load(directory / "tokenizer")
    if config.quantize == "int8_output":
        raise SeqsmithError(
            f"generate.quantize=int8_output applies to the torch engine, not to {config.engine}; set "
            "generate.engine: torch, or quantize the whole export (docs/lightweight.md)"
        )
    if config.engine == "ctranslate2":
        return CTranslate2Engine(files, tokenizers, config.quantize)
    if config.quantize != "none":
        raise SeqsmithError(
            "generate.quantize applies to the torch and ctranslate2 engines; an ONNX model is quantized when "
            "exported: seqsmith export MODEL_DIR OUT_DIR --format onnx --quantize int8"
        )
    from seqsmith.models.onnx_model import OnnxModel

    return TorchEngine(OnnxModel.load(files), "onnx")
