"""Training objectives as plug-ins: what one update computes, apart from the loop around it.

A training holds named *units*: a module with its optimizer (``model`` always; a discriminator or a critic
beside it for objectives that need one). An objective receives the units and one batch and returns a
``Loss``: the sum to back-propagate and the figures to log. Before any forward pass the trainer asks
``count(batch)``, what that sum is normalized by (target tokens for MLE, sentences for a sequence-level
reward); the counts of all micro-batches and all processes of one update are added first, so that
accumulation and torch.distributed give exactly the gradient of one large batch.

A new objective is a config class (a subclass of ``seqsmith.config.ObjectiveConfig`` with its own ``kind``)
and a subclass of ``Objective`` naming it in ``config_class``; nothing else changes. ``start`` loads what it
only reads (a frozen teacher), ``extra_units`` names the modules it trains beside the model (and
``lr_factor`` how fast each learns), ``unit_for(step)`` the unit an update steps, ``advice`` what a log
row's figures warn of, and ``state_dict`` / ``load_state_dict`` carry whatever it keeps between updates
through checkpoints (tensors and plain values: checkpoints are read with ``weights_only=True``). See
docs/objectives.md.
"""

from __future__ import annotations

import contextlib
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from seqsmith.config import ObjectiveConfig, TrainConfig
from seqsmith.data.batching import Batch
from seqsmith.data.tokenizer import Tokenizers
from seqsmith.errors import SeqsmithError
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.training.losses import weight_penalty

MAIN = "model"  # the unit validated, saved as model.safetensors and used for generation
_BUILT_IN = {
    "mle": "seqsmith.training.mle",
    "word_distill": "seqsmith.training.word_distill",
    "self_critical": "seqsmith.training.sequence_level",
    "minimum_risk": "seqsmith.training.sequence_level",
    "adversarial": "seqsmith.training.adversarial",
}  # kind -> module, imported when first asked for


@dataclass
class Unit:
    """A module the training updates, with its optimizer."""

    module: nn.Module  # parameters, special ids, auxiliary losses
    optimizer: torch.optim.Optimizer
    wrapped: nn.Module  # what forward runs through: the module, or DistributedDataParallel around it


Units = dict[str, Unit]


@dataclass
class Loss:
    """One batch's contribution to an update."""

    value: Tensor  # summed over the items ``count`` counts; the trainer divides by the update's total
    figures: dict[str, Tensor] = field(default_factory=dict)  # sums over the same items, logged per item


class Objective(ABC):
    config_class: ClassVar[type[ObjectiveConfig]]
    _registry: ClassVar[dict[type[ObjectiveConfig], type[Objective]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "config_class" in cls.__dict__:
            Objective._registry[cls.config_class] = cls

    def __init__(self, config: ObjectiveConfig, train: TrainConfig) -> None:
        self.config = config
        self.train = train
        self.bf16 = train.precision == "bf16"  # the trainer settles train.precision: auto before training

    def start(self, model: Seq2SeqModel, tokenizers: Tokenizers, device: torch.device) -> None:
        """Called once, before ``extra_units`` and the first update, with the model and the data's
        tokenizers: load and check what the objective reads beside its units (a frozen teacher)."""
        return

    def extra_units(self, model: Seq2SeqModel) -> dict[str, nn.Module]:
        """Modules trained beside ``model`` (each gets an optimizer from the train section)."""
        return {}

    def lr_factor(self, unit: str) -> float:
        """An extra unit's learning rate as a multiple of the scheduled one: a module that starts from
        random weights beside a trained model may need to move faster than it."""
        return 1.0

    def unit_for(self, step: int) -> str:
        """The unit update ``step`` (1-based) trains; the others only feed it."""
        return MAIN

    def count(self, batch: Batch, trained: str) -> int:
        """What a batch's summed loss is normalized by when unit ``trained`` is updated; computed before the
        forward pass."""
        return batch.num_target_tokens

    @abstractmethod
    def loss(self, units: Units, batch: Batch, trained: str) -> Loss:
        """The batch's loss for an update of unit ``trained``."""

    def regularizer(self, unit: Unit) -> Tensor | None:
        """Added once per update, unnormalized: train.l1 / train.l2 on the trained unit's weight matrices."""
        return weight_penalty(unit.module, self.train.l1, self.train.l2)

    def advice(self, figures: dict[str, float]) -> dict[str, str]:
        """Given a log row's figures (means per counted item): the conditions under which training would go
        on without learning, by name, each with a message that says what to change. The trainer writes a
        condition's message to the log and the console when it appears (not again while it persists)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        if state:
            raise SeqsmithError(
                f"the checkpoint holds objective state ({', '.join(state)}) that {type(self).__name__} does "
                "not keep: it was written by another train.objective"
            )

    # ------------------------------------------------------------- helpers objectives share
    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """bfloat16 autocast for forward passes when training runs in bf16."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def scores(self, unit: Unit, batch: Batch) -> Tensor:
        """Teacher-forced scores of the batch through the unit's wrapper."""
        with self.autocast(batch.src.device):
            return cast(Tensor, unit.wrapped(batch.src, batch.src_mask, batch.tgt_in))


def model_of(units: Units, name: str = MAIN) -> Seq2SeqModel:
    """The unit's module as the Seq2SeqModel it is."""
    module = units[name].module
    if not isinstance(module, Seq2SeqModel):
        raise SeqsmithError(f"unit {name!r} holds a {type(module).__name__}, not a Seq2SeqModel")
    return module


def build_objective(train: TrainConfig) -> Objective:
    """The objective ``train.objective`` names (built-in ones are imported on first use)."""
    config = train.objective
    if type(config) not in Objective._registry and config.kind in _BUILT_IN:
        importlib.import_module(_BUILT_IN[config.kind])
    objective_class = Objective._registry.get(type(config))
    if objective_class is None:
        raise SeqsmithError(
            f"train.objective kind {config.kind!r} has a config but no Objective subclass naming it in "
            "config_class; import the module that defines it"
        )
    return objective_class(config, train)


def no_sync(unit: Unit, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """Skip DistributedDataParallel's gradient all-reduce for a micro-batch that is not an update's last."""
    if sync or not isinstance(unit.wrapped, DistributedDataParallel):
        return contextlib.nullcontext()
    return unit.wrapped.no_sync()
