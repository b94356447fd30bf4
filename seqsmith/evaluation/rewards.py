"""Sentence-level rewards for training objectives: any sentence metric of ``metrics`` or a weighted mix.

Every reward lies in [0, 1] so that terms mix on one scale: BLEU (sacrebleu's sentence BLEU with effective
order), chrF and ROUGE are divided by 100; distinct-n is the share of distinct n-grams within the sentence;
``length`` is min(h, r) / max(h, r) for the hypothesis and (closest) reference lengths in tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import get_args

from seqsmith.config import RewardName
from seqsmith.errors import SeqsmithError
from seqsmith.evaluation.metrics import (
    ROUGE_METRICS,
    bleu_tokens,
    check_tokenize,
    reference_sets,
    sentence_scores,
)

REWARDS: tuple[str, ...] = get_args(RewardName)


def sentence_rewards(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    weights: Mapping[str, float],
    bleu_tokenize: str = "13a",
    lowercase: bool = False,
) -> list[float]:
    """Per hypothesis, sum of ``weight * reward``; ``references`` holds each hypothesis's references."""
    unknown = sorted(set(weights) - set(REWARDS))
    if unknown:
        raise SeqsmithError(f"unknown reward(s) {unknown}; choose from {', '.join(REWARDS)}")
    if len(references) != len(hypotheses):
        raise SeqsmithError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    check_tokenize(bleu_tokenize)
    split = bleu_tokens(bleu_tokenize, lowercase)
    totals = [0.0] * len(hypotheses)
    scored = [name for name in weights if name in ("bleu", "chrf", "chrf++", *ROUGE_METRICS)]
    if scored and hypotheses:
        rows = sentence_scores(hypotheses, reference_sets(references), scored, bleu_tokenize, lowercase)
        for index, row in enumerate(rows):
            totals[index] += sum(weights[name] * row[name] / 100 for name in scored)
    for name in set(weights) - set(scored):
        for index, hypothesis in enumerate(hypotheses):
            tokens = split(hypothesis)
            if name == "length":
                value = _length_ratio(len(tokens), [len(split(r)) for r in references[index]])
            else:
                value = _distinct(tokens, int(name[-1]))
            totals[index] += weights[name] * value
    return totals


def _distinct(tokens: list[str], n: int) -> float:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _length_ratio(length: int, reference_lengths: list[int]) -> float:
    closest = min(reference_lengths, key=lambda r: (abs(r - length), r))
    longer = max(length, closest)
    return min(length, closest) / longer if longer else 1.0
