"""The training loop: budgets, logging, validation, checkpoints, exact resume and torch.distributed, for any
objective. The loop knows units and counts (``seqsmith.training.objective``), never a loss formula or a
model class.

Exact resume rests on three things: batches are a pure function of (seed, epoch), the learning rate is a
pure function of the step, and each checkpoint stores every unit's optimizer, the RNG of every device, the
objective's state and the data position. A training that reached its budget stays finished: running the
same command again trains nothing. A ``ValidationWatcher`` is told every dev validation and may stop the
training (a tuning study prunes a trial so).

Across processes, each takes every world-th batch; an update's micro-batches skip DDP's all-reduce but for
the last (``no_sync``) and the loss is divided by the count of all processes together, so N processes make
the update one process makes from N times the batch. One collective per update carries both that count
and rank 0's decision to stop (rank 0 alone validates, saves and keeps the clock).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from seqsmith.allocator import keep_freed_memory
from seqsmith.config import Config, save_config
from seqsmith.data.batching import Batch, TokenBatchSampler, collate, corpus_rates
from seqsmith.data.binarize import BinarizedSplit
from seqsmith.data.prepare import check_settings
from seqsmith.data.tokenizer import Tokenizers
from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_path, text_lines
from seqsmith.models.build import describe
from seqsmith.models.initialize import initial_model
from seqsmith.models.interface import Seq2SeqModel
from seqsmith.models.model_dir import (
    CONFIG,
    TOKENIZER,
    WEIGHTS,
    check_prepared_data,
    read_config,
    save_weights,
)
from seqsmith.training.checkpoint import CheckpointDir, Progress
from seqsmith.training.objective import MAIN, Unit, Units, build_objective, model_of, no_sync
from seqsmith.training.optim import (
    build_optimizer,
    fitted_horizon,
    learning_rate,
    part_groups,
    set_learning_rate,
)
from seqsmith.training.precision import Choice, auto_precision
from seqsmith.training.validation import improved, validate

LOG = "train_log.jsonl"


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    epochs_completed: int
    minutes: float
    stop_reason: str
    best_metric: float | None
    last_validation: dict[str, float] | None


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


class _Window:
    """Figures of the updates since the last log row (an objective may give different ones per unit)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.tokens, self.start = 0, time.monotonic()

    def add(self, figures: dict[str, float], tokens: int) -> None:
        for key, value in figures.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
        self.tokens += tokens

    def means(self) -> dict[str, float]:
        return {key: value / self.counts[key] for key, value in self.sums.items()}


class ValidationWatcher(Protocol):
    """Told every dev validation of rank 0; a non-empty answer stops the training with that reason (a
    tuning study prunes a trial from its curve this way)."""

    def __call__(self, step: int, figures: dict[str, float]) -> str: ...


class Trainer:
    def __init__(
        self, config: Config, show_progress: bool = True, watcher: ValidationWatcher | None = None
    ) -> None:
        self.config = config
        self.watcher = watcher
        self.cfg = config.train
        self.data_dir = Path(config.data.output_dir)
        self.model_dir = Path(self.cfg.model_dir)
        self.show_progress = show_progress
        self._advised: set[str] = set()  # the objective's conditions at the last log row
        self.rank, self.world = _distributed()
        self.device = torch.device(
            f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
        )
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        if self.device.type == "cpu":
            keep_freed_memory()  # +9% tokens/s on the 2-core machine: steps stop page-faulting
        check_prepared_data(config, self.model_dir)
        check_settings(config.data)
        self.tokenizers = Tokenizers.load(self.data_dir / TOKENIZER)
        self.train_split = BinarizedSplit(self.data_dir, "train")
        self.dev_split = (
            BinarizedSplit(self.data_dir, "dev") if (self.data_dir / "dev.jsonl").is_file() else None
        )
        self.sampler = TokenBatchSampler(
            self.train_split.source_lengths,
            self.train_split.target_lengths,
            self.cfg.batch_tokens,
            shuffle=True,
            seed=self.cfg.seed,
            rank=self.rank,
            world_size=self.world,
            rates=corpus_rates(config.data, self.train_split.corpora),
        )
        self.objective = build_objective(self.cfg)
        self.checkpoints = CheckpointDir(self.model_dir, self.cfg.keep_best, self.cfg.higher_is_better)
        self._epoch: tuple[int, list[np.ndarray]] = (-1, [])
        self._log_file: Any = None

    # ----------------------------------------------------------------- set-up
    def _prepare_model_dir(self) -> None:
        if self.rank:
            return
        self.model_dir.mkdir(parents=True, exist_ok=True)
        if (self.model_dir / CONFIG).is_file():
            previous = read_config(self.model_dir)
            if previous.model != self.config.model:
                raise SeqsmithError(
                    f"{self.model_dir} holds a model with another architecture ({previous.model.arch}, "
                    "different model section); choose another train.model_dir or delete that directory"
                )
        with atomic_path(self.model_dir / CONFIG) as temporary:
            save_config(self.config, temporary)
        if not (self.model_dir / TOKENIZER).is_dir():
            shutil.copytree(self.data_dir / TOKENIZER, self.model_dir / TOKENIZER)

    def _units(self, model: Seq2SeqModel) -> Units:
        """The main model and the objective's other modules, each with an optimizer (and DDP around it)."""
        units: Units = {}
        for name, module in {MAIN: model, **self.objective.extra_units(model)}.items():
            module.to(self.device)
            groups = (
                part_groups(model, self.cfg)
                if name == MAIN
                else [{"params": list(module.parameters()), "lr_factor": self.objective.lr_factor(name)}]
            )
            wrapped = DistributedDataParallel(module) if self.world > 1 else module
            units[name] = Unit(module, build_optimizer(groups, self.cfg), wrapped)
        return units

    def _resume_in_this_world(self, progress: Progress) -> None:
        """A checkpoint of another number of processes goes on after the same count of the epoch's batches:
        exact when both numbers cut the epoch alike (1 and 2 processes on an even count of batches), else
        a few examples of that epoch are seen twice or not at all."""
        if progress.world != self.world and self.rank == 0:
            tqdm.write(
                f"seqsmith: the checkpoint was written by {progress.world} processes, {self.world} resume "
                f"it; epoch {progress.epoch} continues after its first {progress.batch} batches"
            )
        progress.batch -= progress.batch % self.world
        progress.world = self.world

    def _open_log(self, resume_step: int) -> None:
        """Keep the log rows up to the resumed step, so a resumed run's log equals an uninterrupted one's."""
        if self.rank:
            return
        path = self.model_dir / LOG
        kept = []
        if path.is_file():
            for line in text_lines(path.read_text(encoding="utf-8")):
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line)["step"] <= resume_step:
                        kept.append(line + "\n")
        with atomic_path(path) as temporary:
            temporary.write_text("".join(kept), encoding="utf-8")
        self._log_file = path.open("a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard: Any = SummaryWriter(str(self.model_dir / "tensorboard"))
        except ImportError:
            self._tensorboard = None

    def _log(self, row: dict[str, Any]) -> None:
        if self._log_file is None:
            return
        self._log_file.write(json.dumps(row) + "\n")
        self._log_file.flush()
        if self._tensorboard is not None:
            for key, value in row.items():
                if isinstance(value, float):
                    self._tensorboard.add_scalar(f"{row['kind']}/{key}", value, row["step"])

    def _total_steps(self) -> int | None:
        per_epoch = math.ceil(len(self.sampler.batches(0)) / self.cfg.accumulate)
        candidates = [self.cfg.max_steps, self.cfg.max_epochs and self.cfg.max_epochs * per_epoch]
        known = [c for c in candidates if c]
        return min(known) if known else None

    def _settle_precision(self, progress: Progress, model: Seq2SeqModel) -> None:
        """What train.precision stands for in this training; auto keeps its first choice through resumes,
        and rank 0's probe decides for every process (only auto's probe needs a batch)."""
        setting = self.cfg.precision
        if setting != "auto":
            choice = Choice(setting == "bf16", f"train.precision={setting}")
        elif progress.precision:
            choice = Choice(progress.precision == "bf16", "auto, as chosen when this training started")
        else:
            choice = Choice(False, "auto, as rank 0's probe chose")
            if self.rank == 0:
                choice = auto_precision(model, self._group(progress, model)[0].to(self.device))
            if self.world > 1:
                flag = torch.tensor([int(choice.bf16)], device=self.device)
                dist.broadcast(flag, 0)
                choice = Choice(bool(flag.item()), choice.reason)
        progress.precision = "bf16" if choice.bf16 else "fp32"
        self.objective.bf16 = choice.bf16
        if self.rank == 0:
            tqdm.write(f"seqsmith: training in {progress.precision} ({choice.reason})")

    # ----------------------------------------------------------------- data position
    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """This process's batches of ``epoch`` (computed once an epoch)."""
        if self._epoch[0] != epoch:
            batches = self.sampler.batches(epoch)
            if not batches:
                raise SeqsmithError(
                    f"the training split in {self.data_dir} gives no batch to process {self.rank} of "
                    f"{self.world}; train on more examples or with fewer processes"
                )
            self._epoch = (epoch, batches)
        return self._epoch[1]

    def _group(self, progress: Progress, model: Seq2SeqModel) -> list[Batch]:
        """The micro-batches of the next update, on the CPU."""
        start = progress.batch // self.world
        picked = self._epoch_batches(progress.epoch)[start : start + self.cfg.accumulate]
        specials = model.pad_id, model.bos_id, model.eos_id
        return [collate(self.train_split, indices, *specials) for indices in picked]

    def _advance(self, progress: Progress, batches: int) -> None:
        progress.step += 1
        progress.batch += batches * self.world
        if progress.batch // self.world >= len(self._epoch_batches(progress.epoch)):
            progress.epoch += 1
            progress.batch = 0

    # ----------------------------------------------------------------- the loop
    def train(self) -> TrainResult:
        torch.manual_seed(self.cfg.seed)
        self._prepare_model_dir()
        fresh = self.checkpoints.latest() is None
        model, notes = initial_model(
            self.config, self.tokenizers, None if self.rank else self.model_dir, fresh
        )
        self.objective.start(model, self.tokenizers, self.device)  # before extra_units, which may need it
        units = self._units(model)
        progress = self.checkpoints.restore(units, self.objective) or Progress(world=self.world)
        self._resume_in_this_world(progress)
        if self.rank == 0:
            start = f"resuming at step {progress.step}" if progress.step else "starting"
            tqdm.write(f"seqsmith: {describe(model)}; {start}; model directory {self.model_dir}")
            for note in notes:
                tqdm.write(f"seqsmith: initialized {note}")
        self._settle_precision(progress, model)
        self._open_log(progress.step)
        for unit in units.values():
            unit.module.train()
        total_steps = self._fitted(progress) or self._total_steps()
        if total_steps and not progress.step:
            self._check_warmup(0, total_steps, "train.max_steps or train.max_epochs")
        started = time.monotonic() - progress.elapsed
        self._clock: tuple[int, float] | None = None  # (step, time) after the first update since a fit
        bar = tqdm(
            total=total_steps,
            initial=progress.step,
            disable=not self.show_progress or self.rank > 0,
            unit="step",
            dynamic_ncols=True,
        )
        window = _Window()
        last_validation: dict[str, float] | None = None
        stop_reason = self._budget_reason(progress, started)  # a finished training stays finished
        try:
            while not (stop_reason and self.world == 1):
                group = self._group(progress, model)
                name = self.objective.unit_for(progress.step + 1)
                count = sum(self.objective.count(batch, name) for batch in group)
                total, stop_reason = self._agree(count, stop_reason)
                if stop_reason:
                    break
                lr = learning_rate(self.cfg, progress.step + 1, total_steps, model.width, progress.lr_factor)
                set_learning_rate(units[name].optimizer, lr)
                figures = self._update(units, name, group, count, total, progress.step + 1)
                self._advance(progress, len(group))
                self._clock = self._clock or (progress.step, time.monotonic())
                window.add(figures, sum(batch.num_target_tokens for batch in group))
                bar.update(1)
                if progress.step % self.cfg.log_every == 0 or progress.step == 1:
                    self._log_window(window, progress, started, lr, bar)
                    window = _Window()
                stop_reason = self._budget_reason(progress, started)
                validate_now = progress.step % self.cfg.validate_every == 0
                if validate_now or stop_reason or progress.step % self.cfg.checkpoint_every == 0:
                    fit = validate_now and self._fit_due(progress)
                    last_validation, early = self._checkpoint(
                        units, progress, started, validate_now or bool(stop_reason), fit
                    )
                    stop_reason = stop_reason or early
                    if fit:
                        total_steps = bar.total = self._share_fit(progress)
                        bar.refresh()
                        self._clock = None  # the next fit times the steps after this validation
        except KeyboardInterrupt:
            stop_reason = "interrupted; the last checkpoint is kept, run the same command to resume"
        finally:
            bar.close()
            if self._log_file is not None:
                self._log_file.close()
        if self.world > 1:  # leave together: a rank that exits while the others still talk aborts
            dist.barrier()
            dist.destroy_process_group()
        minutes = (time.monotonic() - started) / 60
        if self.rank == 0:
            tqdm.write(f"seqsmith: stopped after {progress.step} steps, {minutes:.1f} min: {stop_reason}")
        return TrainResult(
            self.model_dir,
            progress.step,
            progress.epoch,
            minutes,
            stop_reason,
            progress.best_metric,
            last_validation,
        )

    def _update(
        self, units: Units, name: str, group: list[Batch], count: int, total: int, step: int
    ) -> dict[str, float]:
        """One optimizer step of unit ``name``; returns the figures per counted item of this process."""
        unit = units[name]
        for each in units.values():
            each.optimizer.zero_grad(set_to_none=True)
        losses: list[Tensor] = []
        sums: dict[str, Tensor] = {}
        for index, batch in enumerate(group):
            with no_sync(unit, index == len(group) - 1):
                result = self.objective.loss(units, batch.to(self.device), name)
                loss = result.value * self.world / total
                penalty = self.objective.regularizer(unit)
                if penalty is not None:
                    loss = loss + penalty / len(group)
                loss.backward()
            losses.append(loss.detach().double())
            for key, value in result.figures.items():
                sums[key] = sums[key] + value.detach().double() if key in sums else value.detach().double()
        values = torch.stack([torch.stack(losses).sum(), *sums.values()]).tolist()  # one device-to-host copy
        if not math.isfinite(values[0]):
            raise SeqsmithError(
                f"the training loss became {values[0]} at step {step}; lower train.lr, raise "
                "train.warmup_steps, set train.clip_grad_norm, or set train.precision: fp32"
            )
        if self.cfg.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(unit.module.parameters(), self.cfg.clip_grad_norm)
        unit.optimizer.step()
        return {key: value / count for key, value in zip(sums, values[1:], strict=True)}

    def _log_window(
        self, window: _Window, progress: Progress, started: float, lr: float, bar: tqdm[Any]
    ) -> None:
        now = time.monotonic()
        figures = window.means()
        row = {
            "kind": "train",
            "step": progress.step,
            "epoch": progress.epoch,
            "elapsed": now - started,
            "lr": lr,
            **figures,
            "tokens_per_s": window.tokens * self.world / max(now - window.start, 1e-9),
        }
        self._log(row)
        advice = self.objective.advice(figures)
        for condition in advice.keys() - self._advised:
            self._advise(progress.step, condition, advice[condition])
        self._advised = set(advice)
        shown = {key: f"{value:.3f}" for key, value in list(figures.items())[:2]}
        bar.set_postfix(**shown, lr=f"{lr:.2e}", tok_s=f"{row['tokens_per_s']:.0f}")

    def _advise(self, step: int, condition: str, message: str) -> None:
        """A condition the run should not go on in unnoticed: logged (the report shows it) and printed."""
        self._log({"kind": "advice", "step": step, "condition": condition, "message": message})
        if self.rank == 0:
            tqdm.write(f"seqsmith: step {step}: {message}")

    def _agree(self, count: int, reason: str) -> tuple[int, str]:
        """The update's count over all processes, and whether all stop: rank 0 decides, as it alone
        validates and keeps the clock. One all-reduce carries both."""
        if self.world == 1:
            return count, reason
        numbers = torch.tensor([count, int(bool(reason) and self.rank == 0)], device=self.device)
        dist.all_reduce(numbers)
        total, stop = (int(n) for n in numbers.tolist())
        if self.rank == 0:
            return total, reason if stop else ""
        return total, "stopped together with rank 0" if stop else ""

    def _budget_reason(self, progress: Progress, started: float) -> str:
        cfg = self.cfg
        if cfg.max_steps and progress.step >= cfg.max_steps:
            return f"reached train.max_steps={cfg.max_steps}"
        if cfg.max_epochs and progress.epoch >= cfg.max_epochs:
            return f"reached train.max_epochs={cfg.max_epochs}"
        if (fitted := self._fitted(progress)) and progress.step >= fitted:
            return f"reached step {fitted}, where the schedule fitted to train.max_minutes ends"
        if cfg.max_minutes and time.monotonic() - started >= cfg.max_minutes * 60:
            return f"reached train.max_minutes={cfg.max_minutes}"
        return self._early_stop_reason(progress)

    def _fit_due(self, progress: Progress) -> bool:
        """Whether this validation fits where the cosine ends: every validation of a run with a clock
        budget, so that a machine that slows down (or speeds up) during the run still anneals by the end."""
        cfg = self.cfg
        clock = self._clock is not None and progress.step > self._clock[0]
        return bool(cfg.max_minutes) and cfg.schedule == "cosine" and clock

    def _fitted(self, progress: Progress) -> int | None:
        """The fitted end of the schedule, if it was fitted to the train.max_minutes in force (a resume
        with another clock budget fits again)."""
        return progress.fitted_steps if progress.fitted_minutes == self.cfg.max_minutes else None

    def _fit_schedule(
        self, progress: Progress, started: float, began: float, validation_seconds: float
    ) -> None:
        """End the cosine where train.max_minutes ends, from the step time since the last fit and this
        validation's time, so that the last checkpoint is the annealed one on any machine (rank 0, before
        the checkpoint stores it). A refit moves the end a little and the learning rate with it."""
        assert self._clock is not None and self.cfg.max_minutes
        first_fit = self._fitted(progress) is None
        first_step, first_time = self._clock
        step_seconds = (began - first_time) / (progress.step - first_step)
        left = self.cfg.max_minutes * 60 - (time.monotonic() - started)
        horizon = fitted_horizon(
            progress.step, left, step_seconds, validation_seconds, self.cfg.validate_every
        )
        cap = self._total_steps()
        progress.fitted_steps = min(horizon, cap) if cap else horizon
        progress.fitted_minutes = self.cfg.max_minutes
        self._log(
            {
                "kind": "schedule",
                "step": progress.step,
                "ends": progress.fitted_steps,
                "step_seconds": step_seconds,
                "validation_seconds": validation_seconds,
            }
        )
        if first_fit:  # the refits at later validations are in the log
            tqdm.write(
                f"seqsmith: step {progress.step}: {step_seconds:.3f} s a step and {validation_seconds:.1f} s "
                f"a validation: the cosine schedule ends at step {progress.fitted_steps}, within "
                f"train.max_minutes={self.cfg.max_minutes} (fitted again at each validation)"
            )
            self._check_warmup(progress.step, progress.fitted_steps, "train.max_minutes")

    def _check_warmup(self, step: int, total_steps: int, limit: str) -> None:
        """A warm-up as long as the training keeps the learning rate below train.lr throughout: said once."""
        if total_steps <= self.cfg.warmup_steps:
            self._advise(
                step,
                "warmup_past_end",
                f"the warm-up (train.warmup_steps={self.cfg.warmup_steps}) outlasts the {total_steps} steps "
                f"that {limit} allows: the learning rate stops at {total_steps / self.cfg.warmup_steps:.0%} "
                f"of train.lr; lower train.warmup_steps or raise {limit}",
            )

    def _share_fit(self, progress: Progress) -> int:
        """Rank 0's fitted end of the schedule, on every process (each computes its own learning rate)."""
        if self.world > 1:
            ends = torch.tensor([progress.fitted_steps or 0], device=self.device)
            dist.broadcast(ends, 0)
            progress.fitted_steps, progress.fitted_minutes = int(ends.item()), self.cfg.max_minutes
        assert progress.fitted_steps
        return progress.fitted_steps

    def _early_stop_reason(self, progress: Progress) -> str:
        cfg = self.cfg
        if cfg.patience and progress.bad_validations >= cfg.patience:
            return f"early stopping: no dev {cfg.early_stopping_metric} gain in {cfg.patience} validations"
        return ""

    def _dev_references(self) -> list[list[str]]:
        lines = text_lines((self.data_dir / "dev.jsonl").read_text(encoding="utf-8"))
        return [json.loads(line)["references"] for line in lines]

    def _checkpoint(
        self, units: Units, progress: Progress, started: float, validate_now: bool, fit: bool
    ) -> tuple[dict[str, float] | None, str]:
        """Validate (when asked and a dev set exists), fit the schedule to the clock (when asked), save,
        and say whether to stop early."""
        if self.rank:
            return None, ""
        model = model_of(units)
        validation = None
        began = time.monotonic()
        if validate_now and self.dev_split is not None:
            validation = validate(model, self.dev_split, self.tokenizers, self._dev_references(), self.config)
        if fit:
            self._fit_schedule(progress, started, began, time.monotonic() - began)
        early = ""
        metric = None
        if validation is not None:
            name = self.cfg.early_stopping_metric
            metric = validation[name]
            self._log(
                {"kind": "valid", "step": progress.step, "elapsed": time.monotonic() - started, **validation}
            )
            tqdm.write(
                f"seqsmith: step {progress.step} dev "
                + ", ".join(f"{k} {v:.3f}" for k, v in validation.items())
            )
            if improved(metric, progress.best_metric, name):
                progress.best_metric, progress.bad_validations = metric, 0
                save_weights(model, self.model_dir / WEIGHTS)
            else:
                progress.bad_validations += 1
                if (
                    self.cfg.schedule == "plateau"
                    and progress.bad_validations % (self.cfg.plateau_patience + 1) == 0
                ):
                    progress.lr_factor *= self.cfg.plateau_factor
                early = self._early_stop_reason(progress)
            if self.watcher is not None:
                early = early or self.watcher(progress.step, validation)
        elif self.dev_split is None or not (self.model_dir / WEIGHTS).is_file():
            save_weights(model, self.model_dir / WEIGHTS)
        progress.elapsed = time.monotonic() - started
        self.checkpoints.save(units, self.objective, progress, metric)
        return validation, early
