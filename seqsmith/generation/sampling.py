"""Greedy decoding and sampling (temperature, top-k, nucleus), batched; rows leave the batch as they end.

Sampling draws ``nbest`` independent outputs per sentence from a ``torch.Generator`` seeded with
``config.seed``, so a seed repeats exactly. Scores and log-probs always use the model's own (untempered,
untruncated) log-probabilities, so sampled and searched outputs are ranked alike.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from seqsmith.config import GenerateConfig
from seqsmith.errors import SeqsmithError
from seqsmith.generation.hypothesis import History, Hypothesis, rank_scores
from seqsmith.generation.rules import LengthLimits, constrain
from seqsmith.models.interface import Memory, Seq2SeqModel, repeated


def sample(
    model: Seq2SeqModel,
    memory: Memory,
    limits: LengthLimits,
    config: GenerateConfig,
    keep_attention: bool,
    greedy: bool,
) -> list[list[Hypothesis]]:
    """Greedy (the most likely token each step) or sampled outputs for encoded sentences."""
    batch, src_len = memory.mask.shape
    device, draws = memory.mask.device, 1 if greedy else config.nbest
    dtype = torch.promote_types(memory.states.dtype, torch.float32)
    src_mask = memory.mask
    coverage = config.coverage_penalty > 0
    generator = None
    if not greedy and config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)

    if draws > 1:
        expand = repeated(batch, draws, device)
        memory, limits = memory.repeat_rows(draws), limits.select(expand)
    ids = list(range(batch * draws))  # live row -> original row
    history = History.empty(batch * draws, src_len, dtype, device, keep_attention, coverage)
    results: list[Hypothesis | None] = [None] * (batch * draws)
    prev = torch.full((batch * draws,), model.bos_id, dtype=torch.long, device=device)
    state: Any = None

    for step in range(limits.longest + 1):
        log_probs, state = model.decode_step(prev, memory, state, keep_attention or coverage)
        attention = model.step_attention(state) if keep_attention or coverage else None
        if attention is None and coverage:
            raise SeqsmithError(
                "generate.coverage_penalty needs attention, but this model's decoder state has none; "
                "set generate.coverage_penalty: 0"
            )
        scores = constrain(log_probs.to(dtype), step, limits, history.tokens, model, config.no_repeat_ngram)
        tokens = scores.argmax(dim=1) if greedy else draw(scores, config, generator)
        history = history.extend(tokens, scores.gather(1, tokens.unsqueeze(1)).squeeze(1), attention)
        ended = tokens == model.eos_id
        if not bool(ended.any()):
            prev = tokens
            continue
        flags = ended.tolist()
        done = [a for a, flag in enumerate(flags) if flag]
        _collect(history, done, ids, results, memory.mask, src_mask, config, draws)
        keep = fill_holes(flags)
        if not keep:
            break
        rows = torch.tensor(keep, device=device)
        ids = [ids[a] for a in keep]
        memory, limits, history = memory.select(rows), limits.select(rows), history.select(rows)
        state, prev = state.reorder(rows), tokens[rows]

    out: list[list[Hypothesis]] = []
    for b in range(batch):
        found = [h for h in results[b * draws : (b + 1) * draws] if h is not None]
        out.append(sorted(found, key=lambda h: -h.score))
    return out


def fill_holes(ended: list[bool]) -> list[int]:
    """The rows that go on, each left where it is unless it moves into the place of an ended row, so that
    reordering the decoding state in place moves as many rows as ended, not every row after the first."""
    live = len(ended) - sum(ended)
    movers = iter([a for a in range(live, len(ended)) if not ended[a]])
    return [next(movers) if ended[a] else a for a in range(live)]


def draw(scores: Tensor, config: GenerateConfig, generator: torch.Generator | None) -> Tensor:
    """One token per row from the tempered distribution, cut to the top-k and to the nucleus top-p."""
    logits = scores / config.temperature
    if config.top_k and config.top_k < logits.size(1):
        kept = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, logits.topk(config.top_k).indices, True)
        logits = logits.masked_fill(~kept, float("-inf"))
    if config.top_p < 1.0:
        ordered, order = logits.sort(dim=1, descending=True)
        probs = ordered.softmax(dim=1)
        outside = probs.cumsum(dim=1) - probs >= config.top_p  # the mass before a token already reaches p
        logits = logits.masked_fill(outside.scatter(1, order, outside), float("-inf"))
    return torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)


def _collect(
    history: History,
    rows: list[int],
    ids: list[int],
    results: list[Hypothesis | None],
    mask: Tensor,
    src_mask: Tensor,
    config: GenerateConfig,
    draws: int,
) -> None:
    """Turn the rows that just emitted EOS into hypotheses, stored under their original row."""
    index = torch.tensor(rows, device=history.tokens.device)
    log_prob = history.token_log_probs[index].sum(1)
    cover = None if history.coverage is None else history.coverage[index]
    scores = rank_scores(log_prob, history.tokens.size(1), cover, mask[index], config).tolist()
    tokens, token_lps = history.tokens[index, :-1].tolist(), history.token_log_probs[index].tolist()
    for i, (row, score, lp) in enumerate(zip(rows, scores, log_prob.tolist(), strict=True)):
        attention = None
        if history.attention is not None:
            attention = history.attention[row][:, src_mask[ids[row] // draws]]
        results[ids[row]] = Hypothesis(tokens[i], score, lp, token_lps[i], attention)
