"""Beam search, batched over sentences and beams, and its diverse variant (Vijayakumar et al., 2018).

Rows are sentence-major: row ``a * K + k`` is beam k of active sentence a. Each step takes the best
2K/G candidates of every group from the best 2K/G tokens of each of its K/G beams; EOS candidates
ranked within the group's first K/G go to a fixed-size per-sentence buffer of K finished hypotheses,
the first K/G other candidates live on. A sentence stops when no live beam can still beat its K
finished ones (or at its maximum length, where EOS is forced), and its rows leave the batch, as in
fairseq.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from seqsmith.config import GenerateConfig
from seqsmith.errors import SeqsmithError
from seqsmith.generation.hypothesis import History, Hypothesis, length_penalty, rank_scores
from seqsmith.generation.rules import LengthLimits, constrain
from seqsmith.models.interface import Memory, Seq2SeqModel, repeated

NEG_INF = float("-inf")


@dataclasses.dataclass
class Finished:
    """The K best finished hypotheses of every sentence, best first; padded to the longest possible length."""

    score: Tensor  # (sentences, K), -inf in empty slots
    log_prob: Tensor  # (sentences, K)
    length: Tensor  # (sentences, K) tokens including the EOS
    tokens: Tensor  # (sentences, K, longest + 1)
    token_log_probs: Tensor  # (sentences, K, longest + 1)
    attention: Tensor | None  # (sentences, K, longest + 1, src_len)

    @classmethod
    def empty(
        cls,
        sentences: int,
        k: int,
        longest: int,
        src_len: int,
        dtype: torch.dtype,
        device: torch.device,
        attention: bool,
    ) -> Finished:
        size = (sentences, k, longest + 1)
        return cls(
            score=torch.full((sentences, k), NEG_INF, dtype=dtype, device=device),
            log_prob=torch.full((sentences, k), NEG_INF, dtype=dtype, device=device),
            length=torch.zeros(sentences, k, dtype=torch.long, device=device),
            tokens=torch.zeros(size, dtype=torch.long, device=device),
            token_log_probs=torch.zeros(size, dtype=dtype, device=device),
            attention=torch.zeros(*size, src_len, dtype=dtype, device=device) if attention else None,
        )

    def merge(
        self,
        ids: Tensor,
        score: Tensor,
        log_prob: Tensor,
        history: History,
        rows: Tensor,
        eos: Tensor,
        eos_log_prob: Tensor,
        attention: Tensor | None,
        distinct: bool,
    ) -> None:
        """Keep the K best of the buffer and the new candidates (``rows`` of ``history`` + EOS), for each
        active sentence ``ids``; all new tensors are (active, K) or (active, K, ...). New candidates are
        sorted best first; with ``distinct``, those already finished are dropped."""
        k, width = score.size(1), history.tokens.size(1) + 1
        if distinct:
            score = score.masked_fill(self._repeats(ids, history.tokens[rows], score), NEG_INF)
        best, pick = torch.cat([self.score[ids], score], dim=1).topk(k, dim=1)

        def merged(buffer: Tensor, new: Tensor) -> Tensor:
            both = torch.cat([buffer[ids, :, :width], new], dim=1)
            index = pick.view(*pick.shape, *([1] * (both.dim() - 2))).expand(-1, -1, *both.shape[2:])
            return both.gather(1, index)

        self.log_prob[ids] = torch.cat([self.log_prob[ids], log_prob], dim=1).gather(1, pick)
        self.length[ids] = torch.cat([self.length[ids], torch.full_like(pick, width)], dim=1).gather(1, pick)
        self.score[ids] = best
        self.tokens[ids, :, :width] = merged(self.tokens, torch.cat([history.tokens[rows], eos], dim=2))
        self.token_log_probs[ids, :, :width] = merged(
            self.token_log_probs, torch.cat([history.token_log_probs[rows], eos_log_prob], dim=2)
        )
        if self.attention is not None and history.attention is not None and attention is not None:
            new = torch.cat([history.attention[rows], attention[rows].unsqueeze(2)], dim=2)
            self.attention[ids, :, :width] = merged(self.attention, new)

    def _repeats(self, ids: Tensor, outputs: Tensor, score: Tensor) -> Tensor:
        """(active, K): True where a new output (without EOS) is already in the buffer or repeats a better
        new candidate; only diverse beam search, whose groups do not see each other, can repeat one."""
        steps = outputs.size(2)
        old = self.tokens[ids, :, :steps]
        same_old = (outputs.unsqueeze(2) == old.unsqueeze(1)).all(dim=3)
        same_old &= ((self.length[ids] == steps + 1) & (self.score[ids] > NEG_INF)).unsqueeze(1)
        same_new = (outputs.unsqueeze(2) == outputs.unsqueeze(1)).all(dim=3)
        earlier = torch.ones(score.size(1), score.size(1), dtype=torch.bool, device=score.device).tril(-1)
        same_new &= earlier & (score > NEG_INF).unsqueeze(1)
        return same_old.any(dim=2) | same_new.any(dim=2)

    def hypotheses(self, nbest: int, src_mask: Tensor) -> list[list[Hypothesis]]:
        """The ``nbest`` best outputs of every sentence."""
        scores, log_probs, lengths = self.score.tolist(), self.log_prob.tolist(), self.length.tolist()
        tokens, token_log_probs = self.tokens.tolist(), self.token_log_probs.tolist()
        out: list[list[Hypothesis]] = []
        for b, row in enumerate(scores):
            found: list[Hypothesis] = []
            for k, score in enumerate(row):
                if score == NEG_INF or len(found) == nbest:
                    break
                output = tokens[b][k][: lengths[b][k] - 1]
                attention = None
                if self.attention is not None:
                    attention = self.attention[b, k, : lengths[b][k]][:, src_mask[b]]
                found.append(
                    Hypothesis(
                        output, score, log_probs[b][k], token_log_probs[b][k][: lengths[b][k]], attention
                    )
                )
            out.append(found)
        return out


def beam_search(
    model: Seq2SeqModel, memory: Memory, limits: LengthLimits, config: GenerateConfig, keep_attention: bool
) -> list[list[Hypothesis]]:
    """Beam (or, with ``config.method == "diverse_beam"``, diverse beam) search over encoded sentences."""
    batch, src_len = memory.mask.shape
    device, k = memory.mask.device, config.beam_size
    groups = config.groups if config.method == "diverse_beam" else 1
    width = k // groups
    dtype = torch.promote_types(memory.states.dtype, torch.float32)
    src_mask = memory.mask
    coverage = config.coverage_penalty > 0

    expand = repeated(batch, k, device)
    memory, limits = memory.repeat_rows(k), limits.select(expand)
    ids = torch.arange(batch, device=device)  # active sentence -> original sentence
    history = History.empty(batch * k, src_len, dtype, device, keep_attention, coverage)
    finished = Finished.empty(batch, k, limits.longest, src_len, dtype, device, keep_attention)
    log_prob = torch.full((batch, k), NEG_INF, dtype=dtype, device=device)
    log_prob[:, ::width] = 0.0  # each group starts from one beam
    search_score = log_prob.clone()  # log_prob minus diversity penalties: what beams compete on
    prev = torch.full((batch * k,), model.bos_id, dtype=torch.long, device=device)
    state: Any = None

    for step in range(limits.longest + 1):
        step_log_probs, state = model.decode_step(prev, memory, state, keep_attention or coverage)
        attention = model.step_attention(state) if keep_attention or coverage else None
        if attention is None and step == 0:
            if coverage:
                raise SeqsmithError(
                    "generate.coverage_penalty needs attention, but this model's decoder state has none; "
                    "set generate.coverage_penalty: 0"
                )
            keep_attention = False
            history.attention = finished.attention = None
        scores = constrain(
            step_log_probs.to(dtype), step, limits, history.tokens, model, config.no_repeat_ngram
        )
        active, vocab = ids.numel(), scores.size(1)
        scores = scores.view(active, k, vocab)
        live, ends = _choose(search_score, log_prob, scores, groups, model.eos_id, config.diversity)

        base = (torch.arange(active, device=device) * k).unsqueeze(1)
        end_rows = base + ends["beam"]
        end_cover = end_mask = None
        if history.coverage is not None and attention is not None:
            end_cover, end_mask = history.coverage[end_rows] + attention[end_rows], memory.mask[end_rows]
        end_scores = rank_scores(ends["log_prob"], step + 1, end_cover, end_mask, config)
        end_scores = end_scores.masked_fill(~ends["ok"], NEG_INF)
        end_scores, pick = end_scores.topk(k, dim=1)  # at most K can finish per step
        end_rows = end_rows.gather(1, pick)
        eos = torch.full((active, k, 1), model.eos_id, dtype=torch.long, device=device)
        eos_lp = scores.view(active * k, vocab)[end_rows, model.eos_id].unsqueeze(2)
        finished.merge(
            ids,
            end_scores,
            ends["log_prob"].gather(1, pick),
            history,
            end_rows,
            eos,
            eos_lp,
            attention,
            distinct=groups > 1,
        )

        log_prob, search_score = live["log_prob"], live["search"]
        best = log_prob.max(dim=1).values
        sentence_max = limits.max_len.view(active, k)[:, 0]
        if config.early_stopping:  # K hypotheses have ended
            done = (step >= sentence_max) | (finished.score[ids, -1] > NEG_INF)
        else:  # no live beam can beat the K-th ended one, even at the longest allowed length
            bound = best / length_penalty(sentence_max + 1, config).to(best)
            done = (step >= sentence_max) | (bound <= finished.score[ids, -1])
        flags = done.tolist()
        if all(flags):
            break

        rows = (base + live["beam"]).view(-1)
        tokens, token_lp = live["token"], scores.view(active * k, vocab)[rows, live["token"].view(-1)]
        if any(flags):
            keep = torch.tensor([a for a, flag in enumerate(flags) if not flag], device=device)
            kept_rows = ((keep * k).unsqueeze(1) + torch.arange(k, device=device)).view(-1)
            rows, tokens, token_lp = rows.view(active, k)[keep].view(-1), tokens[keep], token_lp[kept_rows]
            ids, log_prob, search_score = ids[keep], log_prob[keep], search_score[keep]
            memory, limits = memory.select(kept_rows), limits.select(kept_rows)
        state = state.reorder(rows)
        prev = tokens.reshape(-1)
        history = history.select(rows).extend(prev, token_lp, None if attention is None else attention[rows])
    return finished.hypotheses(config.nbest, src_mask)


def top_k_chunk(block: int, k: int, width: int) -> int:
    """The chunk length ``top_k`` uses for rows of ``width`` made of ``block``-long blocks; 0: plain top-k."""
    return next((c for c in (64, 128, 32, 16) if block % c == 0 and 4 * k * c <= width), 0)


def top_k(scores: Tensor, k: int, block: int) -> tuple[Tensor, Tensor]:
    """``scores.topk(k, dim=1)`` for rows made of ``block``-long blocks (a beam's vocabulary), faster.

    The k best of a row lie in the k of its chunks with the highest maxima (a chunk outside them has k
    elements at least as large before it), so one pass of chunk maxima and two small top-k's replace the
    top-k over the whole row, which copies every element into a sort buffer on the CPU: half the time for
    400 rows of 8,000 (top 10). Chunks are a power of two long, which the maximum vectorizes best.
    """
    rows, width = scores.shape
    chunk = top_k_chunk(block, k, width)
    if not chunk or not scores.is_contiguous():
        return scores.topk(k, dim=1)
    best_chunks = scores.view(rows, width // chunk, chunk).amax(dim=2).topk(k, dim=1).indices
    inside = torch.arange(chunk, device=scores.device)
    index = (best_chunks.sort(dim=1).values.unsqueeze(2) * chunk + inside).view(rows, k * chunk)
    top, where = scores.gather(1, index).topk(k, dim=1)
    return top, index.gather(1, where)


def _choose(
    search_score: Tensor, log_prob: Tensor, scores: Tensor, groups: int, eos: int, diversity: float
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Pick, group after group, the live beams and the EOS candidates of one step.

    A candidate's search score is its beam's ``search_score`` (sentences, K: log-prob minus diversity
    penalties so far) plus its token's ``scores`` (sentences, K, vocab); ``log_prob`` (sentences, K) and
    ``scores`` give its plain log-prob. A group's scores are lowered by ``diversity`` times the number of
    earlier groups' live beams that chose the same token at this step (Hamming diversity). The best of a
    group are among the best of each of its beams, so the sums are formed for those only, never for the
    whole (K, vocab). Returned beams index the sentence's K beams.
    """
    active, k, vocab = scores.shape
    width = k // groups
    take = min(2 * width, width * vocab)
    per_beam = min(take, vocab)
    flat_scores = scores.view(active, k * vocab)
    counts = torch.zeros(active, vocab, dtype=scores.dtype, device=scores.device)
    rank = torch.arange(take, device=scores.device)
    live: dict[str, list[Tensor]] = {"beam": [], "token": [], "log_prob": [], "search": []}
    ends: dict[str, list[Tensor]] = {"beam": [], "log_prob": [], "ok": []}
    for g in range(groups):
        beams = slice(g * width, (g + 1) * width)
        group = scores[:, beams]
        if g and diversity:
            group = group - diversity * counts.unsqueeze(1)
        best, best_token = top_k(group.reshape(active * width, vocab), per_beam, vocab)
        sums = (search_score[:, beams].unsqueeze(2) + best.view(active, width, per_beam)).view(active, -1)
        top, index = sums.topk(take, dim=1)
        beam = index // per_beam + g * width
        token = best_token.view(active, -1).gather(1, index)
        total = log_prob.gather(1, beam) + flat_scores.gather(1, beam * vocab + token)
        is_eos = token == eos
        keep = (rank + is_eos * take).topk(width, dim=1, largest=False).indices  # first non-EOS, in order
        token_kept = token.gather(1, keep)
        score_kept = top.gather(1, keep)
        live["beam"].append(beam.gather(1, keep))
        live["token"].append(token_kept)
        live["log_prob"].append(total.gather(1, keep))
        live["search"].append(score_kept)
        ends["beam"].append(beam)
        ends["log_prob"].append(total)
        ends["ok"].append(is_eos & (rank < width) & (top > NEG_INF))
        if g + 1 < groups and diversity:
            counts.scatter_add_(1, token_kept, (score_kept > NEG_INF).to(counts))
    return (
        {name: torch.cat(parts, dim=1) for name, parts in live.items()},
        {name: torch.cat(parts, dim=1) for name, parts in ends.items()},
    )
