"""Sequence-level objectives: a sentence metric, not the next token's likelihood, as what training raises.

``self_critical`` (Rennie et al. 2017; Paulus et al. 2018) is policy gradient on sampled outputs: each
sample's log-probability is weighted by its reward minus a baseline, the greedy output's reward (what the
model would say at test time) or the mean reward of the source's other samples. ``minimum_risk`` (Shen et
al. 2016; Edunov et al. 2018) lowers the expected cost ``1 - reward`` under the model's distribution
renormalized over a candidate set: samples (repeats counted once) or beam outputs, with the reference.

``SequenceLevel`` holds what every objective on sampled outputs shares (the adversarial one of
seqsmith.training.adversarial too); ``Rewarded`` adds rewards from sentence metrics. All of them count
sentences and add ``1 - gamma`` of the label-smoothed cross-entropy on the references (summed
over each reference's tokens, as in Paulus et al.), which keeps the model fluent while the reward moves it.
Candidates are decoded in eval mode without gradients; then one teacher-forced forward through the unit's
wrapper scores the references and the candidates together, in training mode, so that torch.distributed
all-reduces one graph. Rewards are computed on text: outputs and references decoded by the target
tokenizer, a pointer-generator's copy ids read as a placeholder word per slot (slot k is the same source
word in the output and in its reference).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqsmith.config import (
    AdversarialObjectiveConfig,
    GenerateConfig,
    MinimumRiskObjectiveConfig,
    SelfCriticalObjectiveConfig,
)
from seqsmith.data.batching import Batch
from seqsmith.data.tokenizer import TargetPieces, Tokenizers
from seqsmith.evaluation.metrics import check_tokenize
from seqsmith.evaluation.rewards import sentence_rewards
from seqsmith.generation.generator import copy_slots
from seqsmith.generation.search import generate_ids, pad
from seqsmith.generation.sequences import Sequences, decode_tensors
from seqsmith.models.interface import Seq2SeqModel, repeated
from seqsmith.training.losses import cross_entropy
from seqsmith.training.objective import MAIN, Loss, Objective, Unit, Units, model_of

FLAT = 1e-6  # rewards closer than this are the same reward: no signal


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off while candidates are decoded or scored; the module's mode back afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@dataclass
class Scored:
    """One teacher-forced forward over a batch's references and its candidates."""

    value: Tensor  # (1 - gamma) x label-smoothed cross-entropy on the references, plus auxiliary losses
    nll: Tensor  # the references' summed NLL, without smoothing
    log_probs: Tensor  # (candidates,) each candidate's log-probability, with gradients
    entropy: Tensor  # (candidates,) mean entropy of the next-token distribution along each candidate


class SequenceLevel(Objective):
    """What the objectives on sampled outputs share: sampling, the joint forward, the MLE mix, figures."""

    config: SelfCriticalObjectiveConfig | MinimumRiskObjectiveConfig | AdversarialObjectiveConfig
    tokenizers: Tokenizers

    def start(self, model: Seq2SeqModel, tokenizers: Tokenizers, device: torch.device) -> None:
        self.tokenizers = tokenizers
        self.pieces = TargetPieces(first_byte=tokenizers.target.first_byte_id())  # samples: whole characters
        self.placeholders = [f"copy{slot}" for slot in range(copy_slots(model))]

    def count(self, batch: Batch, trained: str) -> int:
        return len(batch)

    def sampling(self, method: str = "sample", **settings: Any) -> GenerateConfig:
        c = self.config
        return GenerateConfig(
            method=method,
            temperature=c.temperature,
            top_k=c.top_k,
            top_p=c.top_p,
            max_length_a=c.max_length_a,
            max_length_b=c.max_length_b,
            **settings,
        )

    def texts(self, ids: Tensor, lengths: Tensor) -> list[str]:
        """Detokenized outputs (EOS and padding dropped)."""
        rows = [row[:length].tolist() for row, length in zip(ids, lengths.tolist(), strict=True)]
        return [self.tokenizers.decode_with_oovs(row, self.placeholders) for row in rows]

    def references(self, model: Seq2SeqModel, batch: Batch) -> list[str]:
        return self.texts(batch.tgt_out, batch.tgt_out.ne(model.pad_id).sum(1))

    def score(self, unit: Unit, batch: Batch, candidates: Sequences) -> Scored:
        """References and candidates in one teacher-forced forward."""
        model = model_of({MAIN: unit})
        size, width = len(batch), max(batch.tgt_in.size(1), candidates.ids.size(1))
        tgt_in, tgt_out = candidates.teacher_forcing(model.bos_id)
        rows = torch.cat([torch.arange(size, device=batch.src.device), candidates.source_rows])
        widen = lambda t: F.pad(t, (0, width - t.size(1)), value=model.pad_id)  # noqa: E731
        with self.autocast(batch.src.device):
            scores = unit.wrapped(
                batch.src[rows], batch.src_mask[rows], torch.cat([widen(batch.tgt_in), widen(tgt_in)])
            )
        reference = cross_entropy(
            scores[:size, : batch.tgt_out.size(1)], batch.tgt_out, model.pad_id, self.train.label_smoothing
        )
        value = (1.0 - self.config.gamma) * reference.loss
        auxiliary = model.auxiliary_loss()
        if auxiliary is not None:  # over references and candidates: scaled to the references' share
            value = value + (1.0 - self.config.gamma) * auxiliary * size / rows.numel()
        wide = torch.promote_types(scores.dtype, torch.float32)  # bf16 scores: softmax in float32
        log_probs = torch.log_softmax(scores[size:, : tgt_out.size(1)].to(wide), dim=-1)
        mask = candidates.mask
        chosen = log_probs.gather(2, tgt_out.masked_fill(~mask, 0).unsqueeze(2)).squeeze(2)
        with torch.no_grad():
            entropy = -(log_probs.exp() * log_probs).sum(-1).masked_fill(~mask, 0.0).sum(1)
            entropy = entropy / candidates.lengths.clamp(min=1)
        return Scored(value, reference.nll, chosen.masked_fill(~mask, 0.0).sum(1), entropy)

    def figures(
        self, batch: Batch, scored: Scored, lengths: Tensor, **per_source: Tensor
    ) -> dict[str, Tensor]:
        """Sums over the batch's sources (the trainer divides by the sentences of the update); ``lengths``
        and the entropy are of the decoded candidates, without the reference."""
        size = len(batch)

        def per(values: Tensor) -> Tensor:  # a mean over each source's rows, summed over sources
            return values.detach().float().view(size, -1).mean(1).sum()

        return {
            "loss": scored.nll.detach() * size / max(batch.num_target_tokens, 1),  # NLL per target token
            **{name: per(values) for name, values in per_source.items()},
            "sample_length": per(lengths),
            "entropy": per(scored.entropy.view(size, -1)[:, : lengths.numel() // size]),
        }

    def policy_gradient(
        self, batch: Batch, scored: Scored, samples: Sequences, rewards: Tensor, baseline: Tensor
    ) -> Loss:
        """REINFORCE with a baseline: each sample's log-probability weighted by its reward minus the
        baseline, averaged over a source's samples; ``rewards`` and ``baseline`` are (sources, samples)."""
        size, k = rewards.shape
        advantage = rewards - baseline
        policy = -(advantage.to(scored.log_probs.dtype) * scored.log_probs.view(size, k)).sum() / k
        figures = self.figures(
            batch, scored, samples.lengths, reward=rewards, baseline=baseline, advantage=advantage
        )
        figures["flat"] = advantage.abs().le(FLAT).all(1).sum().float()
        if k > 1:
            figures["length_spread"] = spread(samples.lengths, size)
        return Loss(self.config.gamma * policy + scored.value, figures)

    def advice(self, figures: dict[str, float]) -> dict[str, str]:
        found = {}
        if figures.get("flat", 0.0) > 0.9:
            found["flat_reward"] = (
                f"the reward is the same for every output of {100 * figures['flat']:.0f}% of the sources, "
                "so they give no gradient: raise the objective's temperature or samples, or mix in a finer "
                "reward (chrf)"
            )
        if figures.get("length_spread", 1.0) < 0.5:
            found["one_length"] = (
                "the sampled outputs of each source all have one length (the model has collapsed to one "
                "output): lower gamma to mix in more MLE, or lower train.lr"
            )
        return found


def leave_one_out(rewards: Tensor) -> Tensor:
    """(sources, samples): each sample's baseline is the mean reward of its source's other samples, which
    keeps the policy gradient unbiased."""
    return (rewards.sum(1, keepdim=True) - rewards) / (rewards.size(1) - 1)


def spread(lengths: Tensor, size: int) -> Tensor:
    """Per source, the standard deviation of its rows' lengths, summed over sources."""
    return lengths.float().view(size, -1).std(1, unbiased=False).sum()


class Rewarded(SequenceLevel):
    """The objectives whose reward is a mix of sentence metrics, computed on text."""

    config: SelfCriticalObjectiveConfig | MinimumRiskObjectiveConfig

    def start(self, model: Seq2SeqModel, tokenizers: Tokenizers, device: torch.device) -> None:
        check_tokenize(self.config.bleu_tokenize)
        super().start(model, tokenizers, device)

    def rewards(self, texts: list[str], references: list[str], rows: Tensor) -> Tensor:
        """(len(texts),) float64: text i scored against the reference of source ``rows[i]``."""
        c = self.config
        chosen = [[references[row]] for row in rows.tolist()]
        weights: dict[str, float] = {name: weight for name, weight in c.reward.items()}
        values = sentence_rewards(texts, chosen, weights, c.bleu_tokenize)
        return torch.tensor(values, dtype=torch.float64, device=rows.device)


class SelfCritical(Rewarded):
    config_class = SelfCriticalObjectiveConfig
    config: SelfCriticalObjectiveConfig

    def loss(self, units: Units, batch: Batch, trained: str) -> Loss:
        model, size, k = model_of(units), len(batch), self.config.samples
        with eval_mode(model):
            samples = decode_tensors(model, batch.src, batch.src_mask, self.sampling(), k, pieces=self.pieces)
            if self.config.baseline == "greedy":
                greedy = decode_tensors(
                    model, batch.src, batch.src_mask, self.sampling("greedy"), pieces=self.pieces
                )
        scored = self.score(units[MAIN], batch, samples)
        references = self.references(model, batch)
        rewards = self.rewards(self.texts(samples.ids, samples.lengths), references, samples.source_rows)
        rewards = rewards.view(size, k)
        if self.config.baseline == "greedy":
            rows = torch.arange(size, device=rewards.device)
            baseline = self.rewards(self.texts(greedy.ids, greedy.lengths), references, rows).unsqueeze(1)
        else:
            baseline = leave_one_out(rewards)
        return self.policy_gradient(batch, scored, samples, rewards, baseline.expand(size, k))


class MinimumRisk(Rewarded):
    config_class = MinimumRiskObjectiveConfig
    config: MinimumRiskObjectiveConfig

    def candidates(self, model: Seq2SeqModel, batch: Batch) -> tuple[Sequences, Tensor]:
        """(candidates, (sources, k) True where one counts): k a source, then the reference if
        add_reference. A repeat (of a sample, or of the reference) and a beam's missing output do not."""
        k = self.config.candidates
        if self.config.search == "sample":
            found = decode_tensors(model, batch.src, batch.src_mask, self.sampling(), k, pieces=self.pieces)
        else:
            found = beam_sequences(model, batch, self.sampling("beam", beam_size=k, nbest=k), k, self.pieces)
        if self.config.add_reference:
            found = with_references(model, found, batch, k)
        per_source = k + self.config.add_reference
        rows = [row[:length] for row, length in zip(found.ids.tolist(), found.lengths.tolist(), strict=True)]
        counts: list[bool] = []
        for start in range(0, len(rows), per_source):
            group = rows[start : start + per_source]
            seen = {tuple(group[-1])} if self.config.add_reference else set()
            for row in group[:k]:
                counts.append(bool(row) and tuple(row) not in seen)
                seen.add(tuple(row))
            counts += [True] * self.config.add_reference
        return found, torch.tensor(counts, device=batch.src.device).view(len(batch), per_source)

    def loss(self, units: Units, batch: Batch, trained: str) -> Loss:
        model, size = model_of(units), len(batch)
        with eval_mode(model):
            found, valid = self.candidates(model, batch)
        scored = self.score(units[MAIN], batch, found)
        references = self.references(model, batch)
        rewards = self.rewards(self.texts(found.ids, found.lengths), references, found.source_rows)
        rewards = rewards.view(size, -1)
        log_probs = scored.log_probs
        if self.config.log_prob == "mean":
            log_probs = log_probs / found.lengths.clamp(min=1).to(log_probs.dtype)
        logits = (self.config.alpha * log_probs.view(size, -1)).masked_fill(~valid, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        risk = (weights * (1.0 - rewards).to(weights.dtype)).sum()
        k = self.config.candidates
        figures = self.figures(batch, scored, found.lengths.view(size, -1)[:, :k])
        figures["risk"] = risk.detach()
        figures["reward"] = (weights.detach() * rewards).sum()  # expected under the candidate weights
        figures["candidates"] = valid.sum().float()
        highest = rewards.masked_fill(~valid, float("-inf")).amax(1)
        lowest = rewards.masked_fill(~valid, float("inf")).amin(1)
        figures["flat"] = (highest - lowest).le(FLAT).sum().float()
        if self.config.search == "sample":
            figures["length_spread"] = spread(found.lengths.view(size, -1)[:, :k], size)
        return Loss(self.config.gamma * risk + scored.value, figures)


def beam_sequences(
    model: Seq2SeqModel, batch: Batch, config: GenerateConfig, k: int, pieces: TargetPieces
) -> Sequences:
    """The beam's k best outputs of each source as Sequences (a source with fewer gets empty rows)."""
    found = generate_ids(model, batch.src, batch.src_mask, config, pieces)
    rows: list[list[int]] = []
    for hypotheses in found:
        outputs = [[*h.tokens, model.eos_id] for h in hypotheses[:k]]
        rows += outputs + [[]] * (k - len(outputs))
    ids = pad([row or [model.pad_id] for row in rows], model.pad_id)[0]
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    device = batch.src.device
    return Sequences(
        ids.to(device),
        lengths.to(device),
        torch.zeros(ids.shape, device=device),
        repeated(len(batch), k, device),
    )


def with_references(model: Seq2SeqModel, found: Sequences, batch: Batch, k: int) -> Sequences:
    """Each source's k candidates followed by its reference (tokens and EOS)."""
    size, device = len(batch), batch.src.device
    lengths = batch.tgt_out.ne(model.pad_id).sum(1)
    width = max(found.ids.size(1), batch.tgt_out.size(1))
    ids = torch.full((size, k + 1, width), model.pad_id, dtype=torch.long, device=device)
    ids[:, :k, : found.ids.size(1)] = found.ids.view(size, k, -1)
    ids[:, k, : batch.tgt_out.size(1)] = batch.tgt_out
    all_lengths = torch.cat([found.lengths.view(size, k), lengths.unsqueeze(1)], dim=1).reshape(-1)
    return Sequences(
        ids.view(size * (k + 1), width),
        all_lengths,
        torch.zeros(size * (k + 1), width, device=device),
        repeated(size, k + 1, device),
    )
