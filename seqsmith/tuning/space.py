"""The search space of ``seqsmith tune``: a YAML file of dotted config keys, each a range or a list of
choices, checked against the config it tunes before any trial runs.

```yaml
metric: bleu                      # any dev metric the trainer validates (default: early_stopping_metric)
fixed: {train.max_minutes: 15}    # set in every trial
params:
  train.lr: {low: 1.0e-4, high: 3.0e-3, log: true}
  train.warmup_steps: {low: 500, high: 4000, step: 500}
  model.d_model: {choices: [128, 256]}
  model.heads: {choices: [2, 4, 8], divides: model.d_model}
  train.label_smoothing: {low: 0.0, high: 0.2, when: {train.objective.kind: mle}}
```

Conditions: ``when`` samples a key only where other keys (sampled earlier, or the config's) have the given
values; ``divides`` rejects a sample whose value does not divide another key's. Optuna's samplers need one
fixed set of values per key, so a rejected sample is not redrawn inside a trial: the trial is told as
pruned without training, which steers the sampler away from it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from seqsmith.config import (
    LOWER_IS_BETTER,
    Config,
    Section,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    describe_invalid,
)
from seqsmith.errors import SeqsmithError

Scalar = bool | int | float | str
ENUMERATED = 10_000  # the most values of one key that the static checks of conditions enumerate
METRICS: tuple[str, ...] = TrainConfig.model_fields["early_stopping_metric"].annotation.__args__  # type: ignore[union-attr]


class Param(Section):
    """One key's values: ``low``/``high`` (integers if both are; ``step``, ``log``), or ``choices``."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = Field(None, gt=0)
    choices: list[Scalar] | None = None
    when: dict[str, Scalar] = Field(default_factory=dict)
    divides: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices is empty: list at least two values")
            if len(self.choices) < 2:
                raise ValueError(f"one choice ({self.choices[0]!r}) is no search: put the key under fixed")
            if len({json.dumps(c) for c in self.choices}) < len(self.choices):
                raise ValueError(f"choices repeat a value: {self.choices}")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices (a list)")
        if self.low > self.high:
            raise ValueError(f"empty range: low {self.low} is above high {self.high}")
        if self.low == self.high:
            raise ValueError(f"low and high are both {self.low}: put the key under fixed")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        if self.log and self.step is not None and not (self.integer and self.step == 1):
            raise ValueError("log and step do not combine (Optuna): drop one")
        if self.step is not None and self.step > self.high - self.low:
            raise ValueError(f"step {self.step} is wider than the range {self.low}..{self.high}")
        return self

    @property
    def integer(self) -> bool:
        return all(
            isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step or 1)
        )

    def values(self) -> list[Scalar] | None:
        """Every value, where there are finitely many (few enough to enumerate)."""
        if self.choices is not None:
            return list(self.choices)
        if not self.integer:
            return None
        low, high, step = int(self.low or 0), int(self.high or 0), int(self.step or 1)
        return list(range(low, high + 1, step)) if (high - low) // step < ENUMERATED else None


class SamplerConfig(Section):
    kind: Literal["tpe", "random", "grid"] = "tpe"  # grid: every combination of choices, in turn
    startup_trials: int = Field(8, ge=0, le=1000)  # tpe: random trials before it models the results
    seed: int | None = None  # default: the config's train.seed


class PrunerConfig(Section):
    kind: Literal["median", "successive_halving", "hyperband", "none"] = "median"
    startup_trials: int = Field(3, ge=0, le=1000)  # median: trials that run whole before any is pruned
    warmup_steps: int = Field(0, ge=0)  # median: no pruning before this training step
    min_steps: int = Field(1, ge=1)  # successive_halving, hyperband: the smallest training budget


class SearchSpace(Section):
    metric: str | None = None
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    fixed: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Param]

    @model_validator(mode="after")
    def _some_params(self) -> SearchSpace:
        if not self.params:
            raise ValueError("params is empty: name at least one key to search, e.g. train.lr")
        if both := sorted(set(self.params) & set(self.fixed)):
            raise ValueError(f"{', '.join(both)} is both fixed and searched: drop one")
        return self

    def fingerprint(self, config: Config) -> str:
        """What makes two studies comparable: the keys, their values, the metric and the config they tune
        (the sampler and pruner may change between runs)."""
        what = {
            "params": {k: v.model_dump() for k, v in self.params.items()},
            "fixed": self.fixed,
            "metric": self.metric,
            "config": config.model_dump(mode="json"),
        }
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_space(path: Path) -> SearchSpace:
    if not path.is_file():
        raise SeqsmithError(f"search space {path} not found (working directory: {Path.cwd()})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as error:
        raise SeqsmithError(f"search space {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise SeqsmithError(f"search space {path} must hold a mapping with a params section")
    try:
        return SearchSpace.model_validate(raw)
    except ValidationError as error:
        raise SeqsmithError(describe_invalid(error, f"search space {path}")) from None


def with_values(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a raw config with dotted keys set (as command-line overrides are)."""
    return apply_overrides(
        copy.deepcopy(raw), [f"{key}={json.dumps(value)}" for key, value in values.items()]
    )


def config_value(config: Config, key: str) -> Any:
    """The value of dotted ``key`` in ``config``; a SeqsmithError names the first part that is not a key."""
    node: Any = config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if isinstance(node, dict):
            return node.get(".".join(parts[depth:]))
        if not isinstance(node, BaseModel) or part not in type(node).model_fields:
            where = ".".join(parts[:depth]) or "the config"
            raise SeqsmithError(
                f"{key} is not a config key ({where} has no {part!r}); see configs/reference.yaml"
            )
        node = getattr(node, part)
    if isinstance(node, BaseModel):
        raise SeqsmithError(f"{key} is a section, not a key: name one of its keys, e.g. {key}.<key>")
    return node


def _value_errors(raw: dict[str, Any], key: str, value: Any) -> list[str]:
    """Errors of ``key`` itself (not of combinations with other keys) when set to ``value``."""
    try:
        Config.model_validate(with_values(raw, {key: value}))
    except ValidationError as error:
        last = key.split(".")[-1]
        return [e["msg"] for e in error.errors() if e["loc"] and str(e["loc"][-1]) == last]
    except SeqsmithError as error:
        return [str(error)]
    return []


def check_space(space: SearchSpace, raw: dict[str, Any], config: Config, where: str) -> None:
    """Every key a config key, every end of a range a value the config accepts, every condition one that
    some values meet: else a one-line error naming the key and the file."""
    if space.metric is not None and space.metric not in METRICS:
        raise SeqsmithError(
            f"{where}: metric {space.metric!r} is not validated; pick one of {', '.join(METRICS)}"
        )
    for key in space.fixed:
        config_value(config, key)
    config_from_dict(with_values(raw, space.fixed), f"{where} fixed")
    declared: list[str] = []
    for key, param in space.params.items():
        try:
            config_value(config, key)
        except SeqsmithError as error:
            raise SeqsmithError(f"{where}: params.{error}") from None
        ends = param.choices if param.choices is not None else [param.low, param.high]
        for value in ends:
            if problems := _value_errors(raw, key, value):
                raise SeqsmithError(f"{where}: params.{key} = {value!r}: {problems[0]}")
        for other, wanted in param.when.items():
            _check_when(space, config, where, key, declared, other, wanted)
        if param.divides is not None:
            _check_divides(space, config, where, key, param)
        declared.append(key)


def _check_when(
    space: SearchSpace, config: Config, where: str, key: str, declared: list[str], other: str, wanted: Scalar
) -> None:
    if other in space.params:
        if other not in declared:
            raise SeqsmithError(
                f"{where}: params.{key}: `when` reads {other}, which must be listed before it"
            )
        values = space.params[other].values()
        if values is not None and wanted not in values:
            raise SeqsmithError(
                f"{where}: params.{key} is never sampled: it needs {other} = {wanted!r}, not among {values}"
            )
        return
    have = space.fixed.get(other, config_value(config, other))
    if have != wanted:
        raise SeqsmithError(
            f"{where}: params.{key} is never sampled: it needs {other} = {wanted!r}, and it is {have!r}"
        )


def _check_divides(space: SearchSpace, config: Config, where: str, key: str, param: Param) -> None:
    other = param.divides or ""
    mine = param.values()
    if other in space.params:
        theirs = space.params[other].values()
    else:
        theirs = [space.fixed.get(other, config_value(config, other))]
    if mine is None or theirs is None or not all(isinstance(v, int) for v in [*mine, *theirs]):
        raise SeqsmithError(f"{where}: params.{key}: divides {other} needs integer choices or ranges on both")
    if not any(int(w) % int(v) == 0 for v in mine if v for w in theirs):
        raise SeqsmithError(
            f"{where}: params.{key}: no value of {mine} divides a value of {other} ({theirs})"
        )


def direction(metric: str) -> Literal["minimize", "maximize"]:
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


Suggest = Any  # an optuna.Trial; typed loosely so that this module does not import Optuna


def suggest(trial: Suggest, space: SearchSpace, config: Config) -> tuple[dict[str, Any], str]:
    """One trial's values, and why they break a condition ("" when they do not)."""
    values: dict[str, Any] = {}

    def current(key: str) -> Any:
        return values[key] if key in values else space.fixed.get(key, config_value(config, key))

    for key, param in space.params.items():
        if any(current(other) != wanted for other, wanted in param.when.items()):
            continue
        if param.choices is not None:
            values[key] = trial.suggest_categorical(key, param.choices)
        elif param.integer:
            values[key] = trial.suggest_int(key, param.low, param.high, step=param.step or 1, log=param.log)
        else:
            values[key] = trial.suggest_float(key, param.low, param.high, step=param.step, log=param.log)
    for key, param in space.params.items():
        if param.divides and key in values and current(param.divides) % values[key]:
            return values, f"{key} = {values[key]} does not divide {param.divides} = {current(param.divides)}"
    return values, ""
