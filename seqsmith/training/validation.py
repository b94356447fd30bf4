"""Dev-set figures: the loss and perplexity of teacher forcing, and any corpus metric of greedy outputs
(BLEU, chrF, TER, ROUGE, distinct-n) that the best checkpoint and early stopping can be picked by."""

from __future__ import annotations

import math

import torch

from seqsmith.config import LOWER_IS_BETTER, Config, GenerateConfig
from seqsmith.data.batching import TokenBatchSampler, collate
from seqsmith.data.binarize import BinarizedSplit
from seqsmith.data.tokenizer import Tokenizers
from seqsmith.evaluation.metrics import corpus_scores, reference_sets
from seqsmith.generation.generator import decode_split
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.training.losses import cross_entropy

TEACHER_FORCED = ("loss", "ppl")


@torch.no_grad()
def split_loss(model: Seq2SeqModel, split: BinarizedSplit, batch_tokens: int) -> float:
    """Mean negative log-likelihood per target token (EOS included) of a binarized split."""
    device = model.device
    sampler = TokenBatchSampler(split.source_lengths, split.target_lengths, batch_tokens, shuffle=False)
    nll, tokens = 0.0, 0
    for indices in sampler.batches(0):
        batch = collate(split, indices, model.pad_id, model.bos_id, model.eos_id).to(device)
        parts = cross_entropy(
            model(batch.src, batch.src_mask, batch.tgt_in), batch.tgt_out, model.pad_id, 0.0
        )
        nll += float(parts.nll)
        tokens += parts.tokens
    return nll / max(tokens, 1)


def perplexity_of(loss: float) -> float:
    return math.exp(min(loss, 50.0))


def decoded_metrics(config: Config) -> list[str]:
    """The corpus metrics a validation computes from greedy outputs (none: no decoding)."""
    names = ["bleu"] if config.train.validation_bleu else []
    metric = config.train.early_stopping_metric
    if metric not in TEACHER_FORCED and metric not in names:
        names.append(metric)
    return names


@torch.no_grad()
def validate(
    model: Seq2SeqModel,
    split: BinarizedSplit,
    tokenizers: Tokenizers,
    references: list[list[str]],
    config: Config,
) -> dict[str, float]:
    """Loss, perplexity and the decoded metrics on the dev split; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        loss = split_loss(model, split, config.train.batch_tokens)
        result = {"loss": loss, "ppl": perplexity_of(loss)}
        names = decoded_metrics(config)
        if names:
            greedy = GenerateConfig(method="greedy", batch_tokens=config.generate.batch_tokens)
            hypotheses = [nbest[0] for nbest in decode_split(model, split, tokenizers, greedy)]
            evaluate = config.evaluate
            scores = corpus_scores(
                hypotheses, reference_sets(references), names, evaluate.bleu_tokenize, evaluate.lowercase
            )
            result.update({name: scores[name]["score"] for name in names})
        return result
    finally:
        model.train(was_training)


def improved(metric: float, best: float | None, name: str) -> bool:
    if best is None:
        return True
    return metric < best if name in LOWER_IS_BETTER else metric > best
