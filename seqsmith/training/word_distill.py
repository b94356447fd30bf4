"""Word-level knowledge distillation: the student matches a frozen teacher's next-token distributions.

At every target position of the reference prefix the teacher (teacher-forced, eval mode, no gradients)
gives a distribution over the shared target vocabulary; the loss is ``(1 - weight)`` times the
label-smoothed cross-entropy on the references plus ``weight`` times T^2 KL(teacher_T || student_T), both
summed over target tokens (T^2 keeps the soft term's gradient the same size at any temperature). The
teacher reads the student's source ids and scores its target pieces: ``start`` compares both vocabularies
piece by piece.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from seqsmith.config import WordDistillObjectiveConfig
from seqsmith.data.batching import Batch
from seqsmith.data.tokenizer import Tokenizers
from seqsmith.errors import SeqsmithError
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.models.model_dir import load_model_dir
from seqsmith.training.losses import cross_entropy
from seqsmith.training.objective import MAIN, Loss, Objective, Units, model_of


def soft_target_kl(
    student_scores: Tensor, teacher_scores: Tensor, keep: Tensor, temperature: float
) -> Tensor:
    """Sum over the kept positions of KL(softmax(teacher / T) || softmax(student / T)), in float32."""
    student = torch.log_softmax(student_scores.float() / temperature, dim=-1)
    teacher = torch.log_softmax(teacher_scores.float() / temperature, dim=-1)
    per_position = (teacher.exp() * (teacher - student)).sum(-1)
    return (per_position * keep).sum()


class WordDistill(Objective):
    config_class = WordDistillObjectiveConfig
    config: WordDistillObjectiveConfig
    teacher: Seq2SeqModel

    def start(self, model: Seq2SeqModel, tokenizers: Tokenizers, device: torch.device) -> None:
        where = f"train.objective.teacher={self.config.teacher}"
        try:
            loaded = load_model_dir(Path(self.config.teacher))
        except SeqsmithError as error:
            raise SeqsmithError(f"{where}: {error}") from None
        ours, theirs = tokenizers.vocabulary()[3:], loaded.tokenizers.vocabulary()[3:]
        for side, mine, its in zip(("source", "target"), ours, theirs):
            if mine != its:
                raise SeqsmithError(
                    f"{where}: its {side} vocabulary ({len(its)} pieces) is not the student's ({len(mine)}); "
                    "train the student on the teacher's prepared data (data.output_dir)"
                )
        self.teacher = loaded.model.to(device).requires_grad_(False)

    def loss(self, units: Units, batch: Batch, trained: str) -> Loss:
        model = model_of(units)
        scores = self.scores(units[MAIN], batch)
        with torch.no_grad(), self.autocast(batch.src.device):
            teacher_scores = self.teacher(batch.src, batch.src_mask, batch.tgt_in)
        keep = batch.tgt_out.ne(model.pad_id).to(torch.float32)
        t = self.config.temperature
        soft = soft_target_kl(scores, teacher_scores, keep, t)
        hard = cross_entropy(scores, batch.tgt_out, model.pad_id, self.train.label_smoothing)
        value = (1.0 - self.config.weight) * hard.loss + self.config.weight * t * t * soft
        auxiliary = model.auxiliary_loss()
        if auxiliary is not None:
            value = value + auxiliary
        return Loss(value, {"loss": hard.nll, "teacher_kl": soft.detach()})
