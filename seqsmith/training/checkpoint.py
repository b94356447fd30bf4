"""Training checkpoints: every save is a new directory made atomically, then a pointer file names it.

A SIGKILL at any moment leaves the pointer on the previous complete checkpoint or on the new complete one.
A damaged pointer file is rebuilt from the checkpoint directories, a damaged checkpoint gives way to the
newest intact one, and temporary directories a kill left behind are removed at the next save.

A checkpoint holds every unit of the training: ``model.safetensors`` for the main model (what averaging
reads) and ``<unit>.safetensors`` for the others, and ``training_state.pt`` with each unit's optimizer,
the RNG of every device in use, the objective's own state and the data position. That file holds only
tensors and plain values and is read with ``weights_only=True``.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqsmith.errors import SeqsmithError
from seqsmith.fileio import atomic_directory, atomic_write_text
from seqsmith.models.model_dir import WEIGHTS, load_weights, read_weights, save_weights
from seqsmith.training.objective import MAIN, Objective, Units

STATE = "training_state.pt"
logger = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where training stands; the next batch to train is ``batches[epoch][batch]``."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of the epoch consumed by all processes together
    elapsed: float = 0.0  # seconds of training wall time before this run
    lr_factor: float = 1.0  # lowered by the plateau schedule
    best_metric: float | None = None
    bad_validations: int = 0
    world: int = 1  # processes that trained up to here
    fitted_steps: int | None = None  # where a cosine fitted to train.max_minutes ends (trainer._fit_schedule)
    fitted_minutes: float | None = None  # the train.max_minutes it was fitted to
    precision: str = ""  # fp32 or bf16, what train.precision stood for when this training started


@dataclass
class Entry:
    name: str
    step: int
    metric: float | None = None


@dataclass
class Index:
    latest: str | None = None
    best: list[Entry] = field(default_factory=list)  # best first, at most keep_best


class CheckpointDir:
    def __init__(self, model_dir: Path, keep_best: int, higher_is_better: bool) -> None:
        self.root = model_dir / "checkpoints"
        self.keep_best = keep_best
        self.higher_is_better = higher_is_better

    def _read_index(self) -> Index:
        path = self.root / "index.json"
        if not path.is_file():
            return Index()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return Index(raw.get("latest"), [Entry(**e) for e in raw.get("best", [])])
        except (ValueError, TypeError, AttributeError) as error:
            logger.warning(
                "%s is damaged (%s); going on from the newest checkpoint directory, the list of best "
                "checkpoints starts anew",
                path,
                error,
            )
            steps = self._step_directories()
            return Index(steps[0].name if steps else None)

    def _step_directories(self) -> list[Path]:
        """Complete checkpoint directories, newest first."""
        return sorted((d for d in self.root.glob("step-*") if (d / STATE).is_file()), reverse=True)

    def _write_index(self, index: Index) -> None:
        atomic_write_text(self.root / "index.json", json.dumps(asdict(index), indent=2) + "\n")

    def latest(self) -> Path | None:
        name = self._read_index().latest
        return self.root / name if name else None

    def best(self) -> list[Path]:
        return [self.root / e.name for e in self._read_index().best]

    def save(self, units: Units, objective: Objective, progress: Progress, metric: float | None) -> bool:
        """Save a checkpoint; return True when it is a new best (by ``metric``, if given)."""
        name = f"step-{progress.step:08d}"
        target = self.root / name
        for leftover in [*self.root.glob(".step-*.tmp"), *([target] if target.exists() else [])]:
            shutil.rmtree(leftover)  # left by a run killed while saving, or before naming it latest
        with atomic_directory(target) as temporary:
            for unit_name, unit in units.items():
                save_weights(unit.module, temporary / _weights_name(unit_name))
            state = (
                io.BytesIO()
            )  # torch.save reports a full disk as a RuntimeError; a plain write, as OSError
            torch.save(
                {
                    "progress": asdict(progress),
                    "optimizers": {key: unit.optimizer.state_dict() for key, unit in units.items()},
                    "rng": _rng_states(),
                    "objective": objective.state_dict(),
                },
                state,
            )
            (temporary / STATE).write_bytes(state.getvalue())
        index = self._read_index()
        index.latest = name
        is_best = False
        if metric is not None and self.keep_best:
            sign = -1.0 if self.higher_is_better else 1.0
            ranked = sorted(
                [*index.best, Entry(name, progress.step, metric)], key=lambda e: sign * (e.metric or 0)
            )
            index.best = ranked[: self.keep_best]
            is_best = index.best[0].name == name
        self._write_index(index)
        keep = {index.latest, *(e.name for e in index.best)}
        for stale in self.root.glob("step-*"):
            if stale.name not in keep:
                shutil.rmtree(stale, ignore_errors=True)
        return is_best

    def restore(self, units: Units, objective: Objective) -> Progress | None:
        """Load the latest intact checkpoint into every unit and the objective; None when there is none."""
        latest = self.latest()
        if latest is None:
            return None
        candidates = [latest, *(d for d in self._step_directories() if d != latest)]
        for directory in candidates:
            try:
                return self._load(directory, units, objective)
            except _Damaged as error:
                logger.warning("%s; trying the checkpoint before it", error)
        raise SeqsmithError(
            f"no intact checkpoint in {self.root} (tried {', '.join(d.name for d in candidates)}); "
            "delete that directory to train afresh"
        )

    def _load(self, directory: Path, units: Units, objective: Objective) -> Progress:
        if not (directory / STATE).is_file():
            raise _Damaged(f"checkpoint {directory} has no {STATE}")
        try:
            state: dict[str, Any] = torch.load(directory / STATE, weights_only=True)
        except Exception as error:
            raise _Damaged(f"training state {directory / STATE} is corrupt ({str(error)[:200]})") from None
        optimizers = state.get("optimizers") or {MAIN: state["optimizer"]}  # written before named units
        if set(optimizers) != set(units):
            raise SeqsmithError(
                f"checkpoint {directory} holds the units {sorted(optimizers)}, this training has "
                f"{sorted(units)}: it was written with another train.objective; choose another "
                "train.model_dir or delete its checkpoints/"
            )
        for name, unit in units.items():
            try:
                load_weights(unit.module, directory / _weights_name(name))
                unit.optimizer.load_state_dict(optimizers[name])
            except (SeqsmithError, ValueError, KeyError, RuntimeError) as error:
                raise _Damaged(f"checkpoint {directory}: {str(error)[:300]}") from None
        objective.load_state_dict(state.get("objective", {}))
        _set_rng_states(state["rng"])
        return Progress(**state["progress"])


class _Damaged(Exception):
    """A checkpoint that cannot be read; restore falls back to an older one."""


def _weights_name(unit: str) -> str:
    return WEIGHTS if unit == MAIN else f"{unit}.safetensors"


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: Any) -> None:
    if isinstance(states, torch.Tensor):  # checkpoints written before named units: the CPU generator only
        states = {"cpu": states}
    torch.set_rng_state(states["cpu"])
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def average_checkpoints(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of several weight files of one model (float64 accumulation)."""
    if not paths:
        raise SeqsmithError("no checkpoints to average; train with train.keep_best > 1 or name weight files")
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for path in paths:
        weights = read_weights(path)
        if total and weights.keys() != total.keys():
            raise SeqsmithError(f"{path} holds other parameters than {paths[0]}: not the same model")
        for key, value in weights.items():
            dtypes[key] = value.dtype
            total[key] = total.get(key, torch.zeros_like(value, dtype=torch.float64)) + value.double()
    return {key: (value / len(paths)).to(dtypes[key]) for key, value in total.items()}
