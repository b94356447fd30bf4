"""Sentence rewards against the reference implementations (sacrebleu, rouge-score) called directly."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

from seqsmith.errors import SeqsmithError
from seqsmith.evaluation.rewards import sentence_rewards

HYPOTHESES = ["the cat sat on the mat", "a dog a dog a dog", "", "completely different words here"]
REFERENCES = [
    ["the cat sat on a mat", "there is a cat on the mat"],
    ["a dog barks"],
    ["something"],
    ["some other sentence entirely", "words here"],
]


def test_bleu_chrf_and_rouge_are_the_tools_own_sentence_scores() -> None:
    bleu, chrf = BLEU(effective_order=True), CHRF()
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    got = sentence_rewards(HYPOTHESES, REFERENCES, {"bleu": 0.5, "chrf": 0.25, "rougeL": 0.25})
    for hypothesis, references, value in zip(HYPOTHESES, REFERENCES, got, strict=True):
        rouge = max(scorer.score(r, hypothesis)["rougeL"].fmeasure for r in references)
        expected = (
            0.5 * bleu.sentence_score(hypothesis, references).score / 100
            + 0.25 * chrf.sentence_score(hypothesis, references).score / 100
            + 0.25 * rouge
        )
        assert value == pytest.approx(expected, abs=1e-9)


def test_distinct_and_length_rewards() -> None:
    got = sentence_rewards(HYPOTHESES, REFERENCES, {"distinct2": 1.0})
    assert got == pytest.approx([5 / 5, 2 / 5, 0.0, 3 / 3])  # "a dog" and "dog a" among 5 bigrams
    lengths = sentence_rewards(HYPOTHESES, REFERENCES, {"length": 2.0})
    assert lengths == pytest.approx([2.0, 2 * 3 / 6, 0.0, 2.0])  # the closest reference length: 6, 3, 1, 4


def test_unknown_rewards_and_misaligned_references_are_refused() -> None:
    with pytest.raises(SeqsmithError, match="unknown reward"):
        sentence_rewards(HYPOTHESES, REFERENCES, {"meteor": 1.0})
    with pytest.raises(SeqsmithError, match="4 hypotheses but 3"):
        sentence_rewards(HYPOTHESES, REFERENCES[:3], {"bleu": 1.0})
