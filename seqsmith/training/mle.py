"""Maximum likelihood: teacher-forced cross-entropy with label smoothing, plus the model's auxiliary losses
(coverage) and, through ``Objective.regularizer``, train.l1 / train.l2."""

from __future__ import annotations

from seqsmith.config import MLEObjectiveConfig
from seqsmith.data.batching import Batch
from seqsmith.training.losses import cross_entropy
from seqsmith.training.objective import MAIN, Loss, Objective, Units, model_of


class MLE(Objective):
    config_class = MLEObjectiveConfig

    def loss(self, units: Units, batch: Batch, trained: str) -> Loss:
        model = model_of(units)
        scores = self.scores(units[MAIN], batch)
        parts = cross_entropy(scores, batch.tgt_out, model.pad_id, self.train.label_smoothing)
        auxiliary = model.auxiliary_loss()
        value = parts.loss if auxiliary is None else parts.loss + auxiliary
        return Loss(value, {"loss": parts.nll})
