"""`seqsmith tune`: the search space's checks, studies of tiny trainings (pruning, kill and resume, two
processes on one SQLite file) and generation settings tuned on a trained model."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import tiny_config, train_log

from seqsmith import api
from seqsmith.config import Config
from seqsmith.errors import SeqsmithError
from seqsmith.models.model_dir import read_config
from seqsmith.tuning.space import check_space, load_space, suggest

REPO = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, **train: Any) -> tuple[Path, Config]:
    config = tiny_config(tmp_path, train={"max_steps": 60, "validate_every": 20, **train})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    return path, config


def write_space(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def trials_of(study_dir: Path, name: str = "space") -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def best_dev(model_dir: Path, metric: str) -> float:
    values = [row[metric] for row in train_log(model_dir, "valid")]
    return min(values) if metric == "loss" else max(values)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            "params: {train.lrr: {low: 0.001, high: 0.01}}",
            "train.lrr is not a config key (train has no 'lrr')",
        ),
        ("params: {model.nope.deeper: {choices: [1, 2]}}", "model.nope.deeper is not a config key"),
        ("params: {train.lr: {low: 0.01, high: 0.001}}", "empty range: low 0.01 is above high 0.001"),
        ("params: {train.lr: {choices: []}}", "choices is empty"),
        ("params: {train.lr: {low: 0.0, high: 0.1, log: true}}", "a log range needs low > 0"),
        ("params: {train: {choices: [1, 2]}}", "train is a section, not a key"),
        ("params: {model.heads: {choices: [0, 2]}}", "params.model.heads = 0: Input should be greater than"),
        ("metric: blue\nparams: {train.lr: {low: 0.001, high: 0.01}}", "metric 'blue' is not validated"),
        ("params: {}", "params is empty"),
        (
            "params:\n  model.d_model: {choices: [32, 64]}\n"
            "  model.heads: {choices: [3, 5], divides: model.d_model}",
            "params.model.heads: no value of [3, 5] divides a value of model.d_model ([32, 64])",
        ),
        (
            "params: {train.warmup_steps: {low: 1, high: 9, when: {train.schedule: cosine}}}",
            "params.train.warmup_steps is never sampled: it needs train.schedule = 'cosine'",
        ),
        (
            "params:\n  train.warmup_steps: {low: 1, high: 9, when: {train.schedule: noam}}\n"
            "  train.schedule: {choices: [constant, noam]}",
            "`when` reads train.schedule, which must be listed before it",
        ),
        ("fixed: {train.lr: 0.01}\nparams: {train.lr: {low: 0.001, high: 0.01}}", "both fixed and searched"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_key_and_file(tmp_path: Path, space: str, message: str) -> None:
    config, _ = write_config(tmp_path)
    path = write_space(tmp_path, space)
    with pytest.raises(SeqsmithError) as error:
        api.tune(config, path, trials=1, study_dir=tmp_path / "study", show_progress=False)
    text = str(error.value)
    assert message in text
    assert "space.yaml" in text
    assert "\n" not in text.strip() or text.startswith("invalid configuration in search space")
    assert not list((tmp_path / "study").glob("trial-*"))  # nothing ran


def test_conditions_decide_what_is_sampled_and_what_is_rejected(tmp_path: Path) -> None:
    _, config = write_config(tmp_path)
    space = load_space(
        write_space(
            tmp_path,
            "params:\n"
            "  train.schedule: {choices: [constant, inverse_sqrt]}\n"
            "  train.warmup_steps: {low: 1, high: 100, when: {train.schedule: inverse_sqrt}}\n"
            "  model.d_model: {choices: [24, 32]}\n"
            "  model.heads: {choices: [2, 3, 4], divides: model.d_model}\n",
        )
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        values, broken = suggest(trial, space, config)
        assert ("train.warmup_steps" in values) == (values["train.schedule"] == "inverse_sqrt")
        divides = values["model.d_model"] % values["model.heads"] == 0
        assert (broken == "") == divides
        seen.add((values["model.d_model"], values["model.heads"], divides))
        study.tell(trial, 0.0)
    assert (32, 3, False) in seen and (24, 3, True) in seen  # both outcomes were exercised


def test_a_study_keeps_the_best_trial_and_writes_a_runnable_config(tmp_path: Path) -> None:
    config, _ = write_config(tmp_path)
    space = write_space(
        tmp_path,
        "metric: loss\nsampler: {kind: random, seed: 2}\npruner: {kind: none}\n"
        "params:\n  train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n  model.ffn_dim: {choices: [32, 64]}\n",
    )
    summary = api.tune(config, space, trials=3, study_dir=tmp_path / "study", show_progress=False)
    trials = trials_of(tmp_path / "study")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for t in trials:  # the trial's value is the best dev loss its own training logged
        model_dir = Path(t.user_attrs["trial_dir"]) / "model"
        assert t.value == pytest.approx(best_dev(model_dir, "loss"), abs=1e-9)
        written = read_config(model_dir)
        assert written.train.lr == pytest.approx(t.params["train.lr"])
        assert written.model.ffn_dim == t.params["model.ffn_dim"]  # type: ignore[union-attr]
        assert not (model_dir / "checkpoints").exists()
    best = min(trials, key=lambda t: t.value or 0.0)
    assert summary.best_trial == best.number and summary.best_value == best.value
    runnable = api.load_config(summary.best_config)
    assert runnable.train.lr == pytest.approx(best.params["train.lr"])
    assert runnable.train.model_dir == "runs/study-best/model"
    table = (tmp_path / "study" / "trials.md").read_text()
    assert table.count("| complete |") == 3 and f"{best.value:.4g}" in table
    page = api.report(tmp_path / "study")
    assert page.is_file() and "study_trials.png" in page.read_text()
    # the same command again trains nothing more: the study already has its trials
    again = api.tune(config, space, trials=3, study_dir=tmp_path / "study", show_progress=False)
    assert again.best_value == summary.best_value and len(trials_of(tmp_path / "study")) == 3


def test_a_poor_trial_is_pruned_from_its_curve(tmp_path: Path) -> None:
    config, _ = write_config(tmp_path)
    space = write_space(
        tmp_path,
        "metric: loss\nsampler: {kind: grid, seed: 1}\npruner: {kind: median, startup_trials: 1}\n"
        "params:\n  train.lr: {choices: [0.005, 1.0e-7]}\n",
    )
    api.tune(config, space, trials=2, study_dir=tmp_path / "study", show_progress=False)
    first, second = trials_of(tmp_path / "study")
    assert first.params["train.lr"] == 0.005, "the grid's order under seed 1 changed: pick another seed"
    assert first.state.name == "COMPLETE" and first.user_attrs["steps"] == 60
    assert second.state.name == "PRUNED"
    assert second.user_attrs["steps"] == 20 < 60  # stopped at its first validation, worse than the median
    assert second.intermediate_values[20] > first.intermediate_values[20]
    assert "pruned at step 20" in second.user_attrs["stop_reason"]


def tune_command(config: Path, space: Path, study_dir: Path, trials: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "seqsmith.cli",
        "tune",
        str(config),
        str(space),
        "--trials",
        str(trials),
        "--study-dir",
        str(study_dir),
        *extra,
    ]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_a_stopped_study_resumes_its_running_trial_from_its_checkpoint(tmp_path: Path, stop: int) -> None:
    config, _ = write_config(tmp_path, max_steps=100, validate_every=50, checkpoint_every=10)
    space = write_space(
        tmp_path,
        "metric: loss\nsampler: {kind: random, seed: 5}\npruner: {kind: none}\n"
        "params:\n  train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n",
    )
    study_dir = tmp_path / "study"
    command = tune_command(config, space, study_dir, 2)
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    index = study_dir / "trial-0001" / "model" / "checkpoints" / "index.json"
    deadline = time.monotonic() + 240
    while not index.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(stop)
    child.wait()
    # SIGKILL leaves the trial running in the database; SIGTERM is an interrupt that requeues it at once
    assert child.returncode == (-stop if stop == signal.SIGKILL else 130), "the study ended before the signal"
    (done,) = [t for t in trials_of(study_dir) if t.state.name == "COMPLETE"]
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    requeued = "requeued 1 trial(s) whose process stopped" in again.stdout
    assert requeued == (stop == signal.SIGKILL)
    assert "resuming at step 10;" in again.stdout  # from the checkpoint the kill left
    trials = trials_of(study_dir)
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]  # the killed trial, failed and queued again
    assert trials[0].value == done.value  # the finished trial was kept, not rerun
    killed, resumed = trials[1], trials[2]
    assert resumed.params == killed.params
    assert resumed.user_attrs["trial_dir"] == killed.user_attrs["trial_dir"] == str(study_dir / "trial-0001")
    log = [json.loads(line) for line in (study_dir / "trial-0001" / "model" / "train_log.jsonl").open()]
    steps = [row["step"] for row in log if row["kind"] == "train"]
    assert steps == list(range(1, 101))  # one row a step: the resumed run continued the log
    # exact resume: the same training uninterrupted reaches the same dev loss
    fresh = read_config(study_dir / "trial-0001" / "model")
    fresh.train.model_dir = str(tmp_path / "fresh")
    result = api.train(fresh, show_progress=False)
    assert resumed.value == pytest.approx(result.best_metric, abs=1e-9)


def test_two_processes_share_one_study_through_one_sqlite_file(tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, max_steps=100, validate_every=50)
    space = write_space(
        tmp_path,
        "metric: loss\nsampler: {kind: random, seed: 7}\npruner: {kind: none}\n"
        "params:\n  train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n",
    )
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    workers = [
        subprocess.Popen(
            tune_command(config, space, tmp_path / f"study-{i}", 4, "--storage", storage),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=400)
        assert worker.returncode == 0, err.decode()[-2000:]
    trials = optuna.load_study(study_name="space", storage=storage).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert 4 <= len(complete) <= 5  # a worker may finish the trial it had begun when the other hit 4
    assert len({t.number for t in trials}) == len(trials)
    # both processes seed their sampler alike, yet they draw their own values, not each other's again
    assert len({t.params["train.lr"] for t in trials}) == len(trials)
    pids = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in complete}
    assert pids == {str(w.pid) for w in workers}  # both did work
    for t in complete:  # each trial trained once, in its own directory, from the first step
        rows = train_log(Path(t.user_attrs["trial_dir"]) / "model")
        assert [row["step"] for row in rows].count(1) == 1
        assert t.value == pytest.approx(best_dev(Path(t.user_attrs["trial_dir"]) / "model", "loss"), abs=1e-9)


def test_a_database_of_another_space_is_refused(tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, max_steps=20)
    first = write_space(tmp_path, "metric: loss\nparams: {train.lr: {low: 1.0e-3, high: 1.0e-2}}\n", "s.yaml")
    api.tune(config, first, trials=1, study_dir=tmp_path / "study", show_progress=False)
    other = write_space(
        tmp_path / "b", "metric: loss\nparams: {train.lr: {low: 1.0e-4, high: 1.0e-2}}\n", "s.yaml"
    )
    with pytest.raises(SeqsmithError, match=r"study\.db: study 's' there searched another space or config"):
        api.tune(config, other, trials=1, study_dir=tmp_path / "study", show_progress=False)


def test_generation_settings_are_tuned_on_a_trained_model(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, train={"max_steps": 150})
    api.train(config, show_progress=False)
    space = write_space(
        tmp_path,
        "metric: bleu\nsampler: {kind: grid}\nfixed: {generate.method: beam}\n"
        "params:\n  generate.beam_size: {choices: [1, 3]}\n"
        "  generate.length_penalty: {choices: [none, gnmt]}\n",
    )
    model_dir = Path(config.train.model_dir)
    summary = api.tune(model_dir, space, trials=4, study_dir=tmp_path / "study", show_progress=False)
    trials = trials_of(tmp_path / "study")
    assert sorted((t.params["generate.beam_size"], t.params["generate.length_penalty"]) for t in trials) == [
        (1, "gnmt"),
        (1, "none"),
        (3, "gnmt"),
        (3, "none"),
    ]
    for t in trials:  # each value is what `seqsmith evaluate` scores with those settings
        options = {k.removeprefix("generate."): v for k, v in t.params.items()}
        out = tmp_path / f"eval{t.number}"
        scores = api.evaluate_model(model_dir, "dev", ["bleu"], out=out, method="beam", **options)
        assert t.value == pytest.approx(scores["bleu"]["score"], abs=1e-9)
    assert summary.best_value == max(t.value or 0.0 for t in trials)
    lr_space = write_space(tmp_path, "params: {train.lr: {low: 1.0e-3, high: 1.0e-2}}\n", "lr.yaml")
    with pytest.raises(SeqsmithError, match=r"a trained model tunes generate\.\* keys only, not train\.lr"):
        api.tune(model_dir, lr_space, trials=1, study_dir=tmp_path / "lr", show_progress=False)


def test_the_cli_refuses_absurd_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seqsmith.cli import main

    config, _ = write_config(tmp_path)
    space = write_space(tmp_path, "params: {train.lr: {low: 1.0e-3, high: 1.0e-2}}\n")
    study = ["--study-dir", str(tmp_path / "study")]
    assert main(["tune", str(config), str(space), "--trials", "0", *study]) == 2
    assert main(["tune", str(config), str(space), "--trials", "2", "--minutes", "-1", *study]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == ["seqsmith: error: --trials must be at least 1 and --minutes above 0"] * 2
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize(
    ("config", "space"),
    [
        ("configs/multi30k_en_de_tiny.yaml", "configs/tune/multi30k_en_de.yaml"),
        ("configs/multi30k_en_de_tiny.yaml", "configs/tune/generation.yaml"),
    ],
)
def test_the_shipped_search_spaces_fit_their_configs(config: str, space: str) -> None:
    raw = yaml.safe_load((REPO / config).read_text(encoding="utf-8"))
    check_space(load_space(REPO / space), raw, api.load_config(REPO / config), space)
    assert space in (REPO / "docs" / "tuning.md").read_text(encoding="utf-8")
