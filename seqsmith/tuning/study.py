"""A study of ``seqsmith tune``: Optuna picks the values (its samplers and pruners), seqsmith runs each trial
as a normal training in its own model directory (or, for a trained model, decodes the dev set with the
trial's generation settings), and the study lives in a database so that it survives a kill and takes
workers from several processes or machines.

Resume: a trial whose process died is failed and queued again with its values, its dev curve and its
model directory, so it restarts from its last checkpoint. A process knows its own host's dead trials at
once (their worker's pid is gone); trials of other machines are found by Optuna's heartbeat after
``GRACE`` seconds without one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import optuna
import sqlalchemy.exc
import yaml
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from seqsmith.config import Config, config_from_dict, load_config
from seqsmith.data.prepare import prepare
from seqsmith.errors import SeqsmithError
from seqsmith.evaluation.metrics import corpus_scores, reference_sets
from seqsmith.fileio import atomic_write_text, file_lock, one_line, text_lines
from seqsmith.generation.generator import Generator
from seqsmith.training.trainer import Trainer
from seqsmith.training.validation import TEACHER_FORCED
from seqsmith.tuning.space import SearchSpace, check_space, direction, load_space, suggest, with_values

STUDY = "study.json"  # marks a study directory: what it tunes and where its database is
HEARTBEAT, GRACE = 60, 600  # seconds: a trial without a heartbeat for GRACE is another machine's dead one
INFEASIBLE_IN_A_ROW = 100  # samples that break the space's conditions before the study gives up
WORKER = f"{socket.gethostname()}:{os.getpid()}"


class Infeasible(Exception):
    """The trial's values make no valid config (a condition, or the config's own rules)."""


class Trials(Protocol):
    """What a study runs per trial: a training from a config, or a decoding by a trained model."""

    metric: str
    raw: dict[str, Any]  # the config the best values are written into
    config: Config

    def run(self, trial: optuna.Trial, values: dict[str, Any], trial_dir: Path) -> float: ...

    def runnable(self, values: dict[str, Any], name: str) -> dict[str, Any]:
        """The config with ``values`` set, as a YAML mapping that runs as it is (study ``name``'s best)."""
        ...


class _Pruning:
    """Reports each dev validation to the study and stops the training when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric, self.reason = trial, metric, ""

    def __call__(self, step: int, figures: dict[str, float]) -> str:
        self.trial.report(figures[self.metric], step)
        if self.trial.should_prune():
            self.reason = f"pruned at step {step} (dev {self.metric} {figures[self.metric]:.3f})"
        return self.reason


class TrainingTrials:
    def __init__(
        self, raw: dict[str, Any], config: Config, space: SearchSpace, show_progress: bool, keep: bool
    ) -> None:
        if config.data.dev is None:
            raise SeqsmithError("tuning needs a dev set to score trials on: set data.dev in the config")
        self.raw, self.config, self.space = raw, config, space
        self.metric = space.metric or config.train.early_stopping_metric
        self.show_progress, self.keep_checkpoints = show_progress, keep

    def run(self, trial: optuna.Trial, values: dict[str, Any], trial_dir: Path) -> float:
        settings = {**self.space.fixed, **values}
        settings["train.model_dir"] = str(trial_dir / "model")
        settings["train.early_stopping_metric"] = self.metric
        if self.metric == "bleu":
            settings["train.validation_bleu"] = True
        if any(key.startswith("data.") for key in settings):  # its own tokenizer or corpus: its own data
            settings["data.output_dir"] = str(trial_dir / "data")
        try:
            config = config_from_dict(with_values(self.raw, settings), f"trial {trial.number}")
        except SeqsmithError as error:
            raise Infeasible(str(error).replace("\n", " ")) from None
        data_dir = Path(config.data.output_dir)
        with file_lock(data_dir.with_name(f"{data_dir.name}.lock")):  # workers share the data
            if not (data_dir / "report.json").is_file():
                prepare(config, progress=self.show_progress)
        watcher = _Pruning(trial, self.metric)
        result = Trainer(config, self.show_progress, watcher).train()
        if result.stop_reason.startswith("interrupted"):
            raise KeyboardInterrupt
        trial.set_user_attr("steps", result.steps)
        trial.set_user_attr("minutes", round(result.minutes, 2))
        trial.set_user_attr("stop_reason", result.stop_reason)
        if not self.keep_checkpoints:  # optimizer states: 3x the weights, of no use once a trial is over
            shutil.rmtree(trial_dir / "model" / "checkpoints", ignore_errors=True)
        if watcher.reason:
            raise optuna.TrialPruned(watcher.reason)
        if result.best_metric is None:
            raise SeqsmithError(
                f"trial {trial.number} made no dev validation: set train.validate_every below its budget"
            )
        return result.best_metric

    def runnable(self, values: dict[str, Any], name: str) -> dict[str, Any]:
        raw = with_values(
            self.raw, {**self.space.fixed, **values, "train.model_dir": f"runs/{name}-best/model"}
        )
        if any(key.startswith("data.") for key in [*self.space.fixed, *values]):
            raw["data"]["output_dir"] = f"runs/{name}-best/data"
        config_from_dict(raw, f"the best trial of study {name}")
        return raw


class GenerationTrials:
    """Generation settings of a trained model, scored on its prepared dev set: no retraining."""

    def __init__(self, model_dir: Path, space: SearchSpace) -> None:
        if wrong := [key for key in [*space.params, *space.fixed] if not key.startswith("generate.")]:
            raise SeqsmithError(
                f"a trained model tunes generate.* keys only, not {wrong[0]}: give a config to tune training"
            )
        self.space = space
        self.raw = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        self.generator = Generator.from_pretrained(model_dir)
        self.config = self.generator.full_config
        metric = space.metric or self.config.train.early_stopping_metric
        self.metric = "bleu" if metric in TEACHER_FORCED and space.metric is None else metric
        if self.metric in TEACHER_FORCED:
            raise SeqsmithError(
                f"{metric} does not depend on generation settings: pick bleu, chrf, rougeL, ..."
            )
        dev = Path(self.config.data.output_dir) / "dev.jsonl"
        if not dev.is_file():
            raise SeqsmithError(f"no prepared dev set at {dev}: set data.dev and run seqsmith prepare")
        self.rows = [json.loads(line) for line in text_lines(dev.read_text(encoding="utf-8"))]

    def run(self, trial: optuna.Trial, values: dict[str, Any], trial_dir: Path) -> float:
        options = {key.removeprefix("generate."): v for key, v in {**self.space.fixed, **values}.items()}
        try:
            self.generator.settings(**options)
        except SeqsmithError as error:
            raise Infeasible(str(error)) from None
        hypotheses = self.generator.generate([row["source"] for row in self.rows], **options)
        atomic_write_text(trial_dir / "hypotheses.txt", "".join(one_line(h) + "\n" for h in hypotheses))
        evaluate = self.config.evaluate
        references = reference_sets([row["references"] for row in self.rows])
        scores = corpus_scores(
            hypotheses, references, [self.metric], evaluate.bleu_tokenize, evaluate.lowercase
        )
        return float(scores[self.metric]["score"])

    def runnable(self, values: dict[str, Any], name: str) -> dict[str, Any]:
        """The model's own config with the best generation settings (what its model directory would hold)."""
        return with_values(self.raw, {**self.space.fixed, **values})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _experimental() -> Iterator[None]:
    """Optuna calls its heartbeat and TPE's multivariate grouping experimental; resume and conditional
    keys rest on them, so its warnings would only be noise to a user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


with _experimental():
    _requeue = RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)


def _recover(study: optuna.Study) -> int:
    """Fail and requeue this host's running trials whose process is gone; returns how many."""
    host = WORKER.rsplit(":", 1)[0]
    found = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if owner != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except RuntimeError:  # another process of this host failed it first, and requeued it
            continue
        _requeue(study, study._storage.get_trial(trial._trial_id))
        found += 1
    return found


def counted(trial: FrozenTrial) -> bool:
    """A trial that trained: complete, or pruned from its curve (not for breaking a condition)."""
    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.PRUNED and "infeasible" not in trial.user_attrs
    )


def _storage(url: str) -> RDBStorage:
    """The study database; workers that start together race to create its tables, so a lost race is
    retried (the winner's tables are then there)."""
    try:
        for attempt in range(4):
            with contextlib.suppress(sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
                return _open_storage(url)
            time.sleep(0.5 * (attempt + 1))
        return _open_storage(url)
    except Exception as error:  # SQLAlchemy's errors for a bad URL or a file that is no database
        raise SeqsmithError(f"cannot open the study database {url}: {_first_line(error)}") from None


def _open_storage(url: str) -> RDBStorage:
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    with _experimental():
        return RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=HEARTBEAT,
            grace_period=GRACE,
            heartbeat_stale_trial_callback=_requeue,
        )


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


class SeededByTrial(optuna.samplers.BaseSampler):
    """A sampler whose draws for a trial depend on the seed, the trial's number and the study's history,
    not on which process draws them: each process builds its sampler from the same seed, so with one
    random stream per process, workers sharing a study (and a process resuming one) would draw the values
    of the first worker's trials again. (The grid sampler needs no such help: its seed fixes one order of
    the grid, and trial N takes its Nth point.)"""

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner = self._make(self._seed + trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def _sampler(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    settings = space.sampler
    seed = settings.seed if settings.seed is not None else seed
    if settings.kind == "random":
        return SeededByTrial(lambda s: optuna.samplers.RandomSampler(seed=s), seed)
    if settings.kind == "grid":
        grid = {key: param.values() for key, param in space.params.items()}
        if any(values is None for values in grid.values()) or any(p.when for p in space.params.values()):
            raise SeqsmithError("sampler grid needs choices or integer ranges on every key, and no `when`")
        return optuna.samplers.GridSampler(grid, seed=seed)  # type: ignore[arg-type]

    def tpe(s: int) -> optuna.samplers.BaseSampler:
        with _experimental():
            return optuna.samplers.TPESampler(
                n_startup_trials=settings.startup_trials, seed=s, multivariate=True, group=True
            )

    return SeededByTrial(tpe, seed)


def _pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    settings = space.pruner
    if settings.kind == "median":
        return optuna.pruners.MedianPruner(settings.startup_trials, settings.warmup_steps)
    if settings.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=settings.min_steps)
    if settings.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=settings.min_steps)
    return optuna.pruners.NopPruner()


@dataclass
class Study:
    """A study directory and the study in its database."""

    directory: Path
    study: optuna.Study
    trials: Trials
    space: SearchSpace


def open_study(
    target: str | Path,
    space_path: str | Path,
    study_dir: str | Path | None = None,
    storage: str | None = None,
    name: str | None = None,
    show_progress: bool = True,
    keep_checkpoints: bool = False,
) -> Study:
    """Check the space against what ``target`` (a YAML config, or a trained model's directory) allows and
    open (or create) the study; a database whose study of that name searched another space is refused."""
    target, space_path = Path(target), Path(space_path)
    space = load_space(space_path)
    trials: Trials
    if target.is_dir():
        if not (target / "config.json").is_file():
            raise SeqsmithError(f"{target} is no model directory (no config.json); give a config or a model")
        trials = GenerationTrials(target, space)
    else:
        config = load_config(target)
        raw = yaml.safe_load(target.read_text(encoding="utf-8"))
        trials = TrainingTrials(raw, config, space, show_progress, keep_checkpoints)
    check_space(space, trials.raw, trials.config, str(space_path))
    label = target.parent.name if target.is_dir() and target.name == "model" else target.stem
    directory = Path(study_dir or Path("runs/tune") / f"{label}-{space_path.stem}")
    name = name or space_path.stem
    url = storage or f"sqlite:///{(directory / 'study.db').resolve()}"
    directory.mkdir(parents=True, exist_ok=True)
    fingerprint = space.fingerprint(trials.config)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=_storage(url),
        sampler=_sampler(space, trials.config.train.seed),
        pruner=_pruner(space),
        study_name=name,
        direction=direction(trials.metric),
        load_if_exists=True,
    )
    known = study.user_attrs.get("fingerprint")
    if known is None:
        study.set_user_attr("fingerprint", fingerprint)
        study.set_user_attr("metric", trials.metric)
    elif known != fingerprint:
        raise SeqsmithError(
            f"{url}: study {name!r} there searched another space or config (fingerprint {known}, this one "
            f"{fingerprint}); give another --study-dir, --storage or --name"
        )
    record = {"target": str(target), "space": str(space_path), "storage": url, "name": name}
    atomic_write_text(directory / STUDY, json.dumps(record, indent=2) + "\n")
    return Study(directory, study, trials, space)


def reopen(study_dir: str | Path) -> Study:
    """The study a directory records (for a report), with the settings it was made with."""
    directory = Path(study_dir)
    path = directory / STUDY
    if not path.is_file():
        raise SeqsmithError(f"{directory} is no study directory (no {STUDY}); run seqsmith tune first")
    record = json.loads(path.read_text(encoding="utf-8"))
    return open_study(record["target"], record["space"], directory, record["storage"], record["name"], False)


def run_study(opened: Study, trials: int, minutes: float | None = None) -> None:
    """Run trials until ``trials`` of them trained (over every worker of the study), or ``minutes`` pass
    (a running trial finishes)."""
    study, space, runner = opened.study, opened.space, opened.trials
    if recovered := _recover(study):
        tqdm.write(f"seqsmith: requeued {recovered} trial(s) whose process stopped; they resume")
    infeasible = [0]

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", WORKER)
        trial_dir = Path(trial.user_attrs.get("trial_dir") or opened.directory / f"trial-{trial.number:04d}")
        trial.set_user_attr("trial_dir", str(trial_dir))
        values, broken = suggest(trial, space, runner.config)
        try:
            if broken:
                raise Infeasible(broken)
            value = runner.run(trial, values, trial_dir)
        except Infeasible as reason:
            infeasible[0] += 1
            if infeasible[0] >= INFEASIBLE_IN_A_ROW:
                raise SeqsmithError(
                    f"{infeasible[0]} samples in a row broke the space's conditions (last: {reason}); "
                    "widen the ranges or loosen the conditions"
                ) from None
            trial.set_user_attr("infeasible", str(reason))
            raise optuna.TrialPruned(str(reason)) from None
        except KeyboardInterrupt:
            _requeue(study, _frozen(study, trial))
            raise
        infeasible[0] = 0
        return value

    def stop_when_done(study: optuna.Study, trial: FrozenTrial) -> None:
        _announce(study, trial, runner.metric)
        if sum(counted(t) for t in study.get_trials(deepcopy=False)) >= trials:
            study.stop()

    if sum(counted(t) for t in study.get_trials(deepcopy=False)) >= trials:
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        study.optimize(objective, timeout=minutes * 60 if minutes else None, callbacks=[stop_when_done])
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _frozen(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    return study._storage.get_trial(trial._trial_id)


def _announce(study: optuna.Study, trial: FrozenTrial, metric: str) -> None:
    values = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    if trial.state == TrialState.COMPLETE:
        best = study.best_trial
        outcome = f"dev {metric} {trial.value:.3f} (best {best.value:.3f}, trial {best.number})"
    else:
        outcome = str(
            trial.user_attrs.get("infeasible") or trial.user_attrs.get("stop_reason") or trial.state.name
        )
        outcome = f"{trial.state.name.lower()}: {outcome}"
    tqdm.write(f"seqsmith: trial {trial.number} {outcome}; {values}")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def best_config(opened: Study) -> dict[str, Any] | None:
    """The config with the best trial's values (None before any trial completes)."""
    if not any(t.state == TrialState.COMPLETE for t in opened.study.get_trials(deepcopy=False)):
        return None
    return opened.trials.runnable(opened.study.best_trial.params, opened.directory.name)


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row a trial: number, state, value, params and what its training reported."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "params": t.params,
                "steps": t.user_attrs.get("steps"),
                "minutes": t.user_attrs.get("minutes"),
                "note": t.user_attrs.get("infeasible") or t.user_attrs.get("stop_reason", ""),
                "curve": sorted(t.intermediate_values.items()),
            }
        )
    return rows


def importances(study: optuna.Study) -> dict[str, float]:
    """PED-ANOVA importances of the keys (dependency-free in Optuna); empty with too few trials."""
    completed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(completed) < 3:
        return {}
    try:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except (ValueError, RuntimeError):  # one value for every key, or too few distinct results
        return {}
