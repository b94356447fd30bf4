"""Adversarial training (SeqGAN, Yu et al. 2017; Li et al. 2017 for dialogue): a generator against a
discriminator.

Two units: the model (the generator) and a ``Discriminator`` (seqsmith.models.discriminator). The first
``pretrain_discriminator`` updates train the discriminator alone; then cycles of ``discriminator_steps``
discriminator updates and ``generator_steps`` generator updates follow. A discriminator update is binary
cross-entropy on the batch's references (human) and the generator's samples for the same sources
(generated, each source's samples weighing as much as its reference). A generator update is policy
gradient per sequence: each sample's log-probability weighted by the discriminator's probability that it
is human, minus a baseline (a running mean of that reward, kept in the checkpoint, or the mean of the
source's other samples), plus ``1 - gamma`` of MLE on the references, which Li et al. found necessary for
stability. Samples are decoded in eval mode without gradients; the discriminator scores them in eval mode.
Per-token rewards by Monte-Carlo rollouts (SeqGAN's; Li et al.'s REGS) are not built: they decode the
rest of every prefix of every sample several times over, a cost per update that grows with the output
length times the rollouts.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqsmith.config import AdversarialObjectiveConfig
from seqsmith.data.batching import Batch
from seqsmith.generation.sequences import Sequences, decode_tensors
from seqsmith.models.discriminator import Discriminator
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.training.objective import MAIN, Loss, Units, model_of
from seqsmith.training.sequence_level import SequenceLevel, eval_mode, leave_one_out

DISCRIMINATOR = "discriminator"


class Adversarial(SequenceLevel):
    config_class = AdversarialObjectiveConfig
    config: AdversarialObjectiveConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.running = 0.5  # the running baseline: a discriminator at chance says 0.5

    def extra_units(self, model: Seq2SeqModel) -> dict[str, nn.Module]:
        return {
            DISCRIMINATOR: Discriminator(
                self.config.discriminator, self.tokenizers.source.vocab_size, model.output_size
            )
        }

    def lr_factor(self, unit: str) -> float:
        return self.config.discriminator.lr_factor if unit == DISCRIMINATOR else 1.0

    def unit_for(self, step: int) -> str:
        c = self.config
        if step <= c.pretrain_discriminator:
            return DISCRIMINATOR
        cycle = c.discriminator_steps + c.generator_steps
        return (
            DISCRIMINATOR if (step - c.pretrain_discriminator - 1) % cycle < c.discriminator_steps else MAIN
        )

    def loss(self, units: Units, batch: Batch, trained: str) -> Loss:
        model, k = model_of(units), self.config.samples
        with eval_mode(model):
            samples = decode_tensors(model, batch.src, batch.src_mask, self.sampling(), k, pieces=self.pieces)
        if trained == DISCRIMINATOR:
            return self.discriminator_loss(units, batch, samples)
        discriminator = units[DISCRIMINATOR].module
        rows = samples.source_rows
        with torch.no_grad(), eval_mode(discriminator):
            logits = discriminator(batch.src[rows], batch.src_mask[rows], samples.ids, samples.mask)
        size = len(batch)
        rewards = torch.sigmoid(logits.double()).view(size, k)
        if self.config.baseline == "mean":
            baseline = leave_one_out(rewards)
        else:
            baseline = torch.full_like(rewards, self.running)
            decay = self.config.baseline_decay
            self.running = decay * self.running + (1 - decay) * float(rewards.mean())
        return self.policy_gradient(
            batch, self.score(units[MAIN], batch, samples), samples, rewards, baseline
        )

    def discriminator_loss(self, units: Units, batch: Batch, samples: Sequences) -> Loss:
        """References labelled human, samples generated, in one forward through the unit's wrapper."""
        model = model_of(units)
        size, k = len(batch), self.config.samples
        real_mask = batch.tgt_out.ne(model.pad_id)
        width = max(batch.tgt_out.size(1), samples.ids.size(1))

        def widen(t: Tensor, fill: Any) -> Tensor:
            return F.pad(t, (0, width - t.size(1)), value=fill)

        rows = torch.cat([torch.arange(size, device=batch.src.device), samples.source_rows])
        outputs = torch.cat([widen(batch.tgt_out, model.pad_id), widen(samples.ids, model.pad_id)])
        masks = torch.cat([widen(real_mask, False), widen(samples.mask, False)])
        logits = units[DISCRIMINATOR].wrapped(batch.src[rows], batch.src_mask[rows], outputs, masks).float()
        labels = torch.cat([logits.new_ones(size), logits.new_zeros(rows.numel() - size)])
        weights = torch.cat([logits.new_ones(size), logits.new_full((rows.numel() - size,), 1.0 / k)])
        losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        correct = (logits > 0).float().eq(labels).float()
        real, fake = torch.sigmoid(logits[:size]), torch.sigmoid(logits[size:]).view(size, k)
        figures = {
            "discriminator_loss": (weights * losses).sum().detach(),
            "discriminator_accuracy": ((correct * weights).sum() / 2).detach(),  # a share: /2 per source
            "human_probability": real.sum().detach(),
            "generated_probability": fake.mean(1).sum().detach(),
        }
        return Loss((weights * losses).sum(), figures)

    def advice(self, figures: dict[str, float]) -> dict[str, str]:
        found = super().advice(figures)
        accuracy = figures.get("discriminator_accuracy")
        if accuracy is not None and (accuracy > 0.98 or accuracy < 0.02):
            found["pinned_discriminator"] = (
                f"the discriminator is right on {100 * accuracy:.0f}% of its pairs: its reward no longer "
                "tells outputs apart; lower discriminator_steps or pretrain_discriminator, or raise its "
                "dropout"
            )
        # a reward in the window means the generator trains: a discriminator at chance then rewards noise
        if accuracy is not None and "reward" in figures and abs(accuracy - 0.5) < 0.05:
            found["chance_discriminator"] = (
                f"the discriminator is right on only {100 * accuracy:.0f}% of its pairs while the generator "
                "trains: its reward is noise; raise pretrain_discriminator, discriminator_steps or "
                "discriminator.lr_factor, or try discriminator.arch: gru"
            )
        return found

    def state_dict(self) -> dict[str, Any]:
        return {"running": self.running}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.running = float(state["running"])
