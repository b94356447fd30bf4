"""Beam, diverse beam and greedy search against exhaustive search and teacher-forced recomputation."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from toy_model import OnRequestModel, ToyModel, batch, teacher_forced

from seqsmith.config import GenerateConfig
from seqsmith.errors import SeqsmithError
from seqsmith.generation import Hypothesis, generate_ids
from seqsmith.models.interface import Memory, Seq2SeqModel
from seqsmith.specials import EOS_ID, UNK_ID

SENTENCES = [[4, 5], [5, 4, 4, 5, 4], [4], [5, 5, 4]]


def config(**options: Any) -> GenerateConfig:
    defaults: dict[str, Any] = {
        "length_penalty": "none",
        "max_length_a": 1.0,
        "max_length_b": 4,
        "early_stopping": False,  # exact within the beam: what exhaustive search is compared with
        "keep_attention": True,
    }
    return GenerateConfig(**{**defaults, **options})


def count_rows(model: Seq2SeqModel, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the rows of every decode_step call: one entry a step, its value the active rows."""
    rows: list[int] = []
    step = model.decode_step

    def counting(prev: torch.Tensor, memory: Memory, state: Any, need_attention: bool = False) -> Any:
        rows.append(prev.size(0))
        return step(prev, memory, state, need_attention)

    monkeypatch.setattr(model, "decode_step", counting)
    return rows


def reference_score(log_prob: float, length: int, coverage: list[float], options: GenerateConfig) -> float:
    """Ranking score recomputed in plain Python from the GNMT paper's formulas."""
    divisor = {"none": 1.0, "average": float(length), "gnmt": ((5 + length) / 6) ** options.alpha}
    penalty = options.coverage_penalty * sum(math.log(max(min(c, 1.0), 1e-10)) for c in coverage)
    return log_prob / divisor[options.length_penalty] + penalty


def check_against_model(
    model: Seq2SeqModel, sentences: list[list[int]], found: list[list[Hypothesis]], options: GenerateConfig
) -> None:
    """Every hypothesis carries exactly the scores and attention the model gives its tokens."""
    for sentence, hyps in zip(sentences, found, strict=True):
        src, mask = batch([sentence])
        for hyp in hyps:
            token_lps, attention = teacher_forced(model, src, mask, hyp.tokens)
            assert attention is not None and hyp.attention is not None
            assert hyp.token_log_probs == pytest.approx(token_lps, abs=1e-9)
            assert hyp.log_prob == pytest.approx(sum(token_lps), abs=1e-9)
            coverage = attention.sum(0).tolist()
            expected = reference_score(sum(token_lps), len(hyp.tokens) + 1, coverage, options)
            assert hyp.score == pytest.approx(expected, abs=1e-9)
            torch.testing.assert_close(hyp.attention, attention)


def exhaustive(
    model: Seq2SeqModel, sentence: list[int], symbols: list[int], max_len: int, options: GenerateConfig
) -> list[tuple[float, list[int]]]:
    """Every output up to max_len tokens (EOS forced after max_len), scored by teacher forcing."""
    src, mask = batch([sentence])
    ranked = []
    for length in range(max_len + 1):
        for tokens in itertools.product(symbols, repeat=length):
            token_lps, attention = teacher_forced(model, src, mask, list(tokens))
            coverage = [] if attention is None else attention.sum(0).tolist()
            ranked.append((reference_score(sum(token_lps), length + 1, coverage, options), list(tokens)))
    return sorted(ranked, key=lambda item: -item[0])


@pytest.mark.parametrize("penalty", ["none", "average", "gnmt"])
@pytest.mark.parametrize("beta", [0.0, 0.4])
def test_beam_with_room_for_all_candidates_is_exhaustive_search(penalty: str, beta: float) -> None:
    symbols, max_len = [UNK_ID, 4, 5], 3
    total = sum(len(symbols) ** n for n in range(max_len + 1))
    options = config(
        beam_size=total,
        nbest=total,
        length_penalty=penalty,
        coverage_penalty=beta,
        max_length_a=0.0,
        max_length_b=max_len,
        alpha=1.3,
    )
    for seed in range(4):
        model = ToyModel(vocab_size=6, seed=seed, sharpness=0.7)
        src, mask = batch(SENTENCES[:2])
        found = generate_ids(model, src, mask, options)
        for sentence, hyps in zip(SENTENCES[:2], found, strict=True):
            truth = exhaustive(model, sentence, symbols, max_len, options)
            assert hyps[0].tokens == truth[0][1]
            assert [h.score for h in hyps] == pytest.approx([score for score, _ in truth], abs=1e-9)
            assert sorted(map(tuple, (h.tokens for h in hyps))) == sorted(tuple(t) for _, t in truth)


def test_every_algorithm_reports_the_models_own_scores() -> None:
    src, mask = batch(SENTENCES)
    for seed, (method, penalty) in enumerate(
        itertools.product(["beam", "diverse_beam", "greedy"], ["none", "average", "gnmt"])
    ):
        model = ToyModel(vocab_size=12, seed=seed, sharpness=1.5)
        options = config(
            method=method,
            beam_size=4,
            groups=2,
            nbest=1 if method == "greedy" else 3,
            length_penalty=penalty,
            coverage_penalty=0.3,
            no_repeat_ngram=3,
        )
        found = generate_ids(model, src, mask, options)
        assert all(hyps for hyps in found)
        check_against_model(model, SENTENCES, found, options)


def test_beam_of_one_is_greedy() -> None:
    src, mask = batch(SENTENCES)
    for seed in range(10):
        model = ToyModel(vocab_size=10, seed=seed, sharpness=1.5)
        beam = generate_ids(model, src, mask, config(beam_size=1))
        greedy = generate_ids(model, src, mask, config(method="greedy", beam_size=1))
        assert [h[0].tokens for h in beam] == [h[0].tokens for h in greedy]
        assert [h[0].score for h in beam] == pytest.approx([h[0].score for h in greedy], abs=1e-12)


def test_greedy_takes_the_most_likely_allowed_token_at_every_step() -> None:
    for seed in range(5):
        model = ToyModel(vocab_size=10, seed=seed, sharpness=2.0)
        src, mask = batch(SENTENCES)
        for sentence, hyps in zip(SENTENCES, generate_ids(model, src, mask, config(method="greedy"))):
            one, one_mask = batch([sentence])
            tokens = [*hyps[0].tokens, EOS_ID]
            tgt_in = torch.tensor([[model.bos_id, *hyps[0].tokens]])
            for t, step in enumerate(model(one, one_mask, tgt_in)[0]):
                allowed = step.clone()
                allowed[[model.pad_id, model.bos_id]] = float("-inf")
                if t == len(sentence) + 4:  # max length reached: EOS forced
                    assert tokens[t] == EOS_ID
                else:
                    assert tokens[t] == int(allowed.argmax())


@pytest.mark.parametrize(
    "options",
    [
        config(beam_size=4, nbest=2, length_penalty="gnmt", coverage_penalty=0.2),
        config(beam_size=3, no_repeat_ngram=2, min_length=2, length_penalty="average"),
        config(method="diverse_beam", beam_size=4, groups=2, nbest=4, diversity=0.7),
        config(method="greedy", no_repeat_ngram=2),
        config(beam_size=3, fixed_length=True),
    ],
)
def test_output_does_not_depend_on_the_rest_of_the_batch(options: GenerateConfig) -> None:
    for seed in range(3):
        model = ToyModel(vocab_size=9, seed=seed, sharpness=1.5)
        src, mask = batch(SENTENCES)
        together = generate_ids(model, src, mask, options)
        for sentence, hyps in zip(SENTENCES, together, strict=True):
            alone = generate_ids(model, *batch([sentence]), options)[0]
            assert [h.tokens for h in hyps] == [h.tokens for h in alone]
            assert [h.score for h in hyps] == pytest.approx([h.score for h in alone], abs=1e-9)


def test_finished_sentences_leave_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ToyModel(vocab_size=9, seed=0)
    rows = count_rows(model, monkeypatch)
    src, mask = batch([[4], [5, 4, 4, 5, 4, 5]])
    found = generate_ids(model, src, mask, config(beam_size=3, fixed_length=True))
    assert [len(h[0].tokens) for h in found] == [1, 6]
    assert rows == [6, 6, 3, 3, 3, 3, 3]


def test_ngram_blocking_never_repeats_an_ngram() -> None:
    def repeats(tokens: list[int], n: int) -> bool:
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return len(grams) != len(set(grams))

    src, mask = batch(SENTENCES)
    for n in (2, 3):
        for method in ("beam", "diverse_beam", "greedy"):
            free, blocked = [], []
            for seed in range(4):
                model = ToyModel(vocab_size=8, seed=seed, sharpness=3.0)
                options = config(
                    method=method,
                    beam_size=4,
                    groups=2,
                    nbest=1 if method == "greedy" else 4,
                    min_length=6,
                    max_length_b=10,
                )
                free += generate_ids(model, src, mask, options)
                options = options.model_copy(update={"no_repeat_ngram": n})
                blocked += generate_ids(model, src, mask, options)
            assert any(repeats(h.tokens, n) for hyps in free for h in hyps)  # the test can fail
            assert not any(repeats(h.tokens, n) for hyps in blocked for h in hyps)


def test_min_max_and_fixed_length() -> None:
    src, mask = batch(SENTENCES)
    for method in ("beam", "diverse_beam", "greedy"):
        nbest = 1 if method == "greedy" else 4
        for seed in range(4):
            model = ToyModel(vocab_size=8, seed=seed, sharpness=2.0)
            options = config(method=method, beam_size=4, groups=2, nbest=nbest)
            long = generate_ids(model, src, mask, options.model_copy(update={"min_length": 5}))
            assert all(len(h.tokens) >= 5 for hyps in long for h in hyps)
            short = generate_ids(model, src, mask, options.model_copy(update={"max_length_a": 0.5}))
            for sentence, hyps in zip(SENTENCES, short, strict=True):
                assert all(len(h.tokens) <= len(sentence) // 2 + 4 for h in hyps)
            capped = options.model_copy(update={"max_length_b": 10**8, "max_length": 3, "min_length": 10**6})
            assert all(len(h.tokens) == 3 for hyps in generate_ids(model, src, mask, capped) for h in hyps)
            for sampled in ("sample", "greedy"):
                capped = capped.model_copy(update={"method": sampled, "nbest": 1})
                found = generate_ids(model, src, mask, capped)
                assert all(len(h.tokens) == 3 for hyps in found for h in hyps)
            fixed = generate_ids(model, src, mask, options.model_copy(update={"fixed_length": True}))
            for sentence, hyps in zip(SENTENCES, fixed, strict=True):
                assert hyps and all(len(h.tokens) == len(sentence) for h in hyps)


def test_nbest_is_sorted_and_distinct() -> None:
    src, mask = batch(SENTENCES)
    for seed in range(5):
        model = ToyModel(vocab_size=8, seed=seed, sharpness=1.0)
        for method, groups in (("beam", 1), ("diverse_beam", 3)):
            options = config(method=method, beam_size=6, nbest=6, groups=groups, length_penalty="gnmt")
            for hyps in generate_ids(model, src, mask, options):
                assert len(hyps) >= 3
                scores = [h.score for h in hyps]
                assert scores == sorted(scores, reverse=True)
                assert len({tuple(h.tokens) for h in hyps}) == len(hyps)


def test_diverse_beam_with_one_group_is_beam_search() -> None:
    src, mask = batch(SENTENCES)
    for seed in range(5):
        model = ToyModel(vocab_size=9, seed=seed, sharpness=1.2)
        options = config(beam_size=4, nbest=4, length_penalty="gnmt", no_repeat_ngram=2)
        beam = generate_ids(model, src, mask, options)
        diverse = generate_ids(model, src, mask, options.model_copy(update={"method": "diverse_beam"}))
        assert [[h.tokens for h in hyps] for hyps in beam] == [[h.tokens for h in hyps] for hyps in diverse]


def test_hamming_diversity_pushes_later_groups_to_other_tokens() -> None:
    model = ToyModel(vocab_size=10, seed=3, sharpness=1.0)
    src, mask = batch([[4, 5, 6]])
    options = config(
        method="diverse_beam", beam_size=2, groups=2, nbest=2, min_length=1, max_length_a=0.0, max_length_b=1
    )
    first = model(src, mask, torch.tensor([[model.bos_id]]))[0, 0]
    first[[model.pad_id, model.bos_id, model.eos_id]] = float("-inf")
    ranked = first.argsort(descending=True)[:2].tolist()
    diverse = generate_ids(model, src, mask, options.model_copy(update={"diversity": 100.0}))[0]
    assert sorted(h.tokens for h in diverse) == sorted([[ranked[0]], [ranked[1]]])
    same = generate_ids(model, src, mask, options.model_copy(update={"diversity": 0.0}))[0]
    assert [h.tokens for h in same] == [[ranked[0]]]  # both groups found it; reported once


def test_bad_requests_are_explained() -> None:
    src, mask = batch(SENTENCES)
    blind = ToyModel(vocab_size=8, attention=False)
    for method in ("beam", "greedy"):
        with pytest.raises(SeqsmithError, match="coverage_penalty"):
            generate_ids(blind, src, mask, config(method=method, beam_size=1, coverage_penalty=0.2))
    with pytest.raises(SeqsmithError, match="nbest"):
        generate_ids(blind, src, mask, config(method="greedy", nbest=2))
    with pytest.raises(SeqsmithError, match="same shape"):
        generate_ids(blind, src, mask[:, :2], config())
    assert all(h.attention is None for hyps in generate_ids(blind, src, mask, config()) for h in hyps)
    assert generate_ids(blind, src[:0], mask[:0], config()) == []


def test_model_mode_is_restored() -> None:
    model = ToyModel(vocab_size=8)
    model.train()
    generate_ids(model, *batch(SENTENCES), config())
    assert model.training


def test_attention_is_asked_for_per_call() -> None:
    model = OnRequestModel(vocab_size=8, seed=1)
    reference = ToyModel(vocab_size=8, seed=1)
    src, mask = batch(SENTENCES)
    options = config(beam_size=3, coverage_penalty=0.5, keep_attention=False)
    found = generate_ids(model, src, mask, options)
    assert [h[0].score for h in found] == [h[0].score for h in generate_ids(reference, src, mask, options)]
    plain = config(keep_attention=False)
    assert all(h.attention is None for hyps in generate_ids(model, src, mask, plain) for h in hyps)
    asked, expected = generate_ids(model, src, mask, config()), generate_ids(reference, src, mask, config())
    for mine, theirs in zip(asked, expected, strict=True):
        assert mine[0].attention is not None and theirs[0].attention is not None
        torch.testing.assert_close(mine[0].attention, theirs[0].attention)


def test_search_stops_when_no_live_beam_can_win(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ToyModel(vocab_size=8, seed=4, sharpness=2.0)  # its best output, [6], ends early
    calls = count_rows(model, monkeypatch)
    for penalty, most in (("none", 6), ("gnmt", 20)):
        calls.clear()
        found = generate_ids(
            model, *batch([[4, 5]]), config(beam_size=3, length_penalty=penalty, max_length_b=40)
        )
        assert found[0][0].tokens == [6]
        assert len(calls) <= most  # not the 42 steps that max length allows


def test_early_stopping_ends_a_sentence_once_beam_size_hypotheses_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = ToyModel(vocab_size=8, seed=4, sharpness=2.0)
    calls = count_rows(model, monkeypatch)
    steps = {}
    for early in (False, True):
        calls.clear()
        found = generate_ids(
            model,
            *batch([[4, 5]]),
            config(beam_size=3, nbest=3, length_penalty="gnmt", max_length_b=40, early_stopping=early),
        )
        steps[early] = len(calls)
        assert len(found[0]) == 3 and found[0][0].tokens == [6]
    assert steps[True] < steps[False]


@pytest.mark.parametrize("vocab", [8000, 7919, 512])  # 7919 is prime: no block size, plain top-k
def test_blockwise_top_k_equals_torch_top_k(vocab: int) -> None:
    from seqsmith.generation.beam import top_k, top_k_chunk

    assert (top_k_chunk(vocab, 10, 5 * vocab) > 0) == (vocab != 7919)
    generator = torch.Generator().manual_seed(vocab)
    scores = torch.randn(12, 5 * vocab, generator=generator)
    scores[0, vocab:] = float("-inf")  # first step: only the first beam is live
    scores[1] = torch.randint(0, 4, (5 * vocab,), generator=generator).float()  # heavy ties
    scores[2, :] = float("-inf")
    scores[2, 17] = 0.0
    for k in (1, 10):
        values, index = top_k(scores, k, vocab)
        expected = scores.topk(k, dim=1).values
        assert torch.equal(values, expected)
        assert torch.equal(scores.gather(1, index), values)
        assert all(len(set(row)) == k for row in index.tolist())


@pytest.mark.parametrize(
    "options",
    [
        config(beam_size=5, nbest=5, length_penalty="gnmt"),
        config(method="diverse_beam", beam_size=4, groups=2, nbest=4, diversity=0.7, no_repeat_ngram=2),
    ],
)
def test_beam_search_with_blockwise_top_k_equals_plain_top_k(
    options: GenerateConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import seqsmith.generation.beam as beam

    model = ToyModel(vocab_size=1024, dim=16, seed=3, sharpness=0.5)
    take = 2 * options.beam_size // (options.groups if options.method == "diverse_beam" else 1)
    assert beam.top_k_chunk(1024, take, 1024) > 0  # each beam's row takes the block path
    src, mask = batch(SENTENCES)
    fast = generate_ids(model, src, mask, options)
    monkeypatch.setattr(beam, "top_k", lambda scores, k, block: scores.topk(k, dim=1))
    plain = generate_ids(model, src, mask, options)
    assert [[h.tokens for h in hyps] for hyps in fast] == [[h.tokens for h in hyps] for hyps in plain]
    assert [[h.score for h in hyps] for hyps in fast] == [[h.score for h in hyps] for hyps in plain]
