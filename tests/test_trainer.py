from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import losses, run_training, tiny_config, train_log
from safetensors.torch import load_file

from seqsmith import api
from seqsmith.config import Config, save_config
from seqsmith.errors import SeqsmithError
from seqsmith.models.model_dir import load_model_dir
from seqsmith.training import trainer as trainer_module
from seqsmith.training.checkpoint import CheckpointDir, average_checkpoints


def test_training_writes_a_complete_model_directory(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, train={"max_steps": 40, "keep_best": 2})
    result = api.train(config, show_progress=False)
    model_dir = Path(config.train.model_dir)
    assert result.steps == 40 and "max_steps" in result.stop_reason
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer",
        "train_log.jsonl",
        "checkpoints/index.json",
    ):
        assert (model_dir / name).exists(), name
    rows = [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [20, 40]
    assert all({"loss", "ppl", "bleu"} <= set(r) for r in valid)
    train_losses = losses(model_dir)
    assert train_losses[40] < train_losses[1], "the loss should fall on a learnable task"
    assert len(list((model_dir / "checkpoints").glob("step-*"))) <= 3  # latest + best 2
    loaded = load_model_dir(model_dir)
    assert loaded.config == config


@pytest.mark.parametrize(
    "model", [{}, {"pointer_generator": True, "coverage": True}], ids=["rnn", "pointer-generator-coverage"]
)
def test_rnn_trains_and_generates_with_every_search(tmp_path: Path, model: dict[str, Any]) -> None:
    """After training, every search's outputs carry the scores teacher forcing gives them (``forward``, a
    path apart from the incremental ``decode_step``), and greedy picks forward's most likely token."""
    train = {"max_steps": 120, "max_epochs": 100, "validate_every": 60}
    config = tiny_config(tmp_path, arch="rnn", model=model, train=train)
    result = api.train(config, show_progress=False)
    assert result.steps == 120
    assert losses(Path(config.train.model_dir))[120] < 0.7 * losses(Path(config.train.model_dir))[1]
    generator = api.load(config.train.model_dir)
    network = generator.model
    searches: list[dict[str, Any]] = [
        {"method": "greedy"},
        {"method": "beam", "beam": 3, "nbest": 3, "coverage_penalty": 0.2},
        {"method": "diverse_beam", "beam": 4, "groups": 2, "nbest": 2},
        {"method": "sample", "top_p": 0.9, "seed": 3, "nbest": 2},
    ]
    texts = ["alpha beta", "gamma delta eps"]
    for options in searches:
        for text, nbest in zip(texts, generator.generate_full(texts, **options), strict=True):
            src = torch.tensor([generator.encode(text)])
            for output in nbest:
                tgt = torch.tensor([[network.bos_id, *output.tokens]])
                with torch.no_grad():
                    scores = torch.log_softmax(network(src, src != network.pad_id, tgt), dim=-1)[0]
                target = [*output.tokens, network.eos_id]
                forced = [float(scores[t, token]) for t, token in enumerate(target)]
                assert output.token_log_probs == pytest.approx(forced, abs=1e-4), options
                if options["method"] == "greedy":  # forward's best token each step (pad and BOS never)
                    scores[:, [network.pad_id, network.bos_id]] = float("-inf")
                    picks = scores.argmax(-1).tolist()
                    limit = math.floor(generator.config.max_length_a * (src.size(1) - 1))
                    assert picks[:-1] == target[:-1]
                    assert (
                        picks[-1] == network.eos_id
                        or len(output.tokens) == limit + generator.config.max_length_b
                    )


def test_sigkill_and_resume_gives_the_same_losses(tmp_path: Path) -> None:
    steps = 120
    reference = tiny_config(
        tmp_path / "a", train={"max_steps": steps, "max_epochs": 100, "validate_every": 60}
    )
    api.prepare(reference, show_progress=False)
    api.train(reference, show_progress=False)
    expected = losses(Path(reference.train.model_dir))

    resumed = tiny_config(tmp_path / "b", train={"max_steps": steps, "max_epochs": 100, "validate_every": 60})
    config_path = tmp_path / "b" / "config.yaml"
    save_config(resumed, config_path)
    run_training(config_path, kill_after_checkpoint=True)
    killed_at = max(losses(Path(resumed.train.model_dir)))
    assert killed_at < steps
    run_training(config_path, kill_after_checkpoint=False)
    got = losses(Path(resumed.train.model_dir))
    assert sorted(got) == sorted(expected)
    assert got == expected  # bit-identical: same batches, learning rates, dropout masks and optimizer state


def test_corrupt_checkpoint_is_reported(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, train={"max_steps": 10})
    api.train(config, show_progress=False)
    model_dir = Path(config.train.model_dir)
    (model_dir / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SeqsmithError, match="corrupt"):
        load_model_dir(model_dir)


def test_changed_architecture_in_the_same_model_dir_is_refused(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, train={"max_steps": 5})
    api.train(config, show_progress=False)
    other = tiny_config(tmp_path, model={"d_model": 64}, train={"max_steps": 5})
    with pytest.raises(SeqsmithError, match="another train.model_dir"):
        api.train(other, show_progress=False)


def test_data_prepared_with_other_settings_is_refused_until_prepared_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api.prepare(tiny_config(tmp_path), show_progress=False)
    settings = {"max_source_length": 64, "tokenizer": {"kind": "char", "joint": True}}
    changed = tiny_config(tmp_path, data=settings, train={"max_steps": 2})
    with pytest.raises(SeqsmithError) as refused:
        api.train(changed, show_progress=False)
    message = str(refused.value)
    assert "data.max_source_length: 256 there, 64 in the config" in message
    assert 'data.tokenizer.kind: "word" there, "char" in the config' in message
    assert "seqsmith prepare CONFIG" in message and not (tmp_path / "model").exists()
    api.prepare(changed, show_progress=False)
    assert api.train(changed, show_progress=False).steps == 2
    # a directory from before the settings were recorded is read with a warning, not refused
    report_path = tmp_path / "data" / "report.json"
    report = json.loads(report_path.read_text())
    del report["data"]
    report_path.write_text(json.dumps(report))
    resumed = tiny_config(tmp_path, data={**settings, "max_source_length": 65}, train={"max_steps": 4})
    assert api.train(resumed, show_progress=False).steps == 4
    assert "kept no record of its data settings" in caplog.text


def test_nan_loss_stops_with_the_step(tmp_path: Path) -> None:
    config = tiny_config(
        tmp_path, train={"max_steps": 50, "lr": 1e30, "warmup_steps": 0, "clip_grad_norm": None}
    )
    with pytest.raises(SeqsmithError, match="at step"):
        api.train(config, show_progress=False)


def test_averaging_is_the_elementwise_mean(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, train={"max_steps": 40, "validate_every": 10, "keep_best": 3})
    api.train(config, show_progress=False)
    model_dir = Path(config.train.model_dir)
    best = [path / "model.safetensors" for path in CheckpointDir(model_dir, 3, True).best()]
    assert len(best) == 3
    averaged_path = api.average(model_dir)
    averaged = load_model_dir(model_dir, weights=averaged_path).model.state_dict()
    manual = average_checkpoints(best)
    first = [load_file(str(p)) for p in best]
    for key, value in manual.items():
        expected = sum(f[key].double() for f in first) / len(first)
        assert torch.allclose(value.double(), expected, atol=1e-6)
        assert torch.allclose(averaged[key], value)


DISTRIBUTED_RUNNER = """
import os, sys
os.environ.update(RANK=sys.argv[2], WORLD_SIZE=sys.argv[3], MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[4])
from seqsmith import api
result = api.train(api.load_config(sys.argv[1], sys.argv[5:]), show_progress=False)
print("STEPS", result.steps, result.stop_reason)
"""


def train_processes(config_path: Path, world: int, overrides: list[str]) -> list[str]:
    """Train with ``world`` processes over gloo; returns each one's output."""
    port = str(29500 + (os.getpid() * 7 + world) % 2000)
    command = [sys.executable, "-c", DISTRIBUTED_RUNNER, str(config_path)]
    errors = [config_path.parent / f"stderr.{rank}" for rank in range(world)]
    children = [
        subprocess.Popen(
            [*command, str(rank), str(world), port, *overrides],
            stdout=subprocess.PIPE,
            stderr=errors[rank].open("w"),
            text=True,
        )
        for rank in range(world)
    ]
    outputs = [child.communicate(timeout=300)[0] for child in children]
    tails = [path.read_text()[-2000:] for path in errors]
    assert [child.returncode for child in children] == [0] * world, (outputs, tails)
    return outputs


def distributed_config(tmp_path: Path, accumulate: int) -> Config:
    """14 batches an epoch (even, so 1 and 2 processes cut the same batches), no dropout (each process
    draws its own masks) and SGD, so the runs can be compared number for number: Adam divides by the root
    of the squared gradients, which turns the rounding noise of a gradient near zero into steps of lr."""
    config = tiny_config(
        tmp_path,
        model={"dropout": 0.0},
        train={
            "optimizer": "sgd",
            "lr": 0.5,
            "batch_tokens": 160,
            "accumulate": accumulate,
            "max_steps": 20,
            "max_epochs": 100,
            "validate_every": 10,
            "checkpoint_every": 10,
        },
    )
    api.prepare(config, show_progress=False)
    save_config(config, tmp_path / "config.json")
    return config


def final_weights(config: Config) -> dict[str, torch.Tensor]:
    checkpoints = CheckpointDir(Path(config.train.model_dir), 0, True)
    latest = checkpoints.latest()
    assert latest is not None
    return load_file(str(latest / "model.safetensors"))


def assert_same_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    worst = max(float((got[k] - expected[k]).abs().max()) for k in got)
    assert worst < 1e-6, worst


def test_two_processes_update_like_one_with_both_batches(tmp_path: Path) -> None:
    """2 processes x 2 micro-batches (no all-reduce but at the last, no_sync) = 1 process x 4."""
    single = distributed_config(tmp_path / "one", accumulate=4)
    api.train(single, show_progress=False)
    pair = distributed_config(tmp_path / "two", accumulate=2)
    outputs = train_processes(tmp_path / "two" / "config.json", 2, [])
    assert all("STEPS 20" in out for out in outputs), outputs
    model_dir = Path(pair.train.model_dir)
    assert [row["step"] for row in train_log(model_dir, "valid")] == [10, 20]  # rank 0 alone validates
    assert losses(model_dir)[20] < losses(model_dir)[1]
    assert_same_weights(final_weights(pair), final_weights(single))
    load_model_dir(model_dir)


def test_a_checkpoint_moves_between_one_and_two_processes(tmp_path: Path) -> None:
    """2 processes for 6 updates, 1 process to 13, 2 again to 20 (each stop falls inside an epoch):
    the weights equal those of one process all the way."""
    single = distributed_config(tmp_path / "one", accumulate=4)
    api.train(single, show_progress=False)
    moved = distributed_config(tmp_path / "moved", accumulate=2)
    path = tmp_path / "moved" / "config.json"
    train_processes(path, 2, ["train.max_steps=6"])
    train_processes(path, 1, ["train.max_steps=13", "train.accumulate=4"])
    outputs = train_processes(path, 2, [])
    assert "written by 1 processes, 2 resume it" in outputs[0]
    assert_same_weights(final_weights(moved), final_weights(single))


def test_validation_picks_the_best_checkpoint_by_any_metric(tmp_path: Path) -> None:
    config = tiny_config(
        tmp_path,
        train={
            "max_steps": 40,
            "validate_every": 10,
            "keep_best": 2,
            "validation_bleu": False,
            "early_stopping_metric": "ter",
        },
    )
    api.train(config, show_progress=False)
    model_dir = Path(config.train.model_dir)
    valid = train_log(model_dir, "valid")
    assert all("ter" in row and "bleu" not in row for row in valid)
    by_step = {row["step"]: row["ter"] for row in valid}
    best = json.loads((model_dir / "checkpoints" / "index.json").read_text())["best"]
    assert [entry["metric"] for entry in best] == sorted(by_step.values())[:2]  # TER: lower is better
    assert [entry["metric"] for entry in best] == [by_step[entry["step"]] for entry in best]
    with pytest.raises(SeqsmithError, match="needs validation_bleu"):
        tiny_config(tmp_path, train={"validation_bleu": False})


def test_a_finished_training_stays_finished(tmp_path: Path) -> None:
    """Running the same command again after the budget or early stopping trains nothing."""
    config = tiny_config(tmp_path, train={"max_steps": 20, "validate_every": 10})
    api.train(config, show_progress=False)
    log = (Path(config.train.model_dir) / "train_log.jsonl").read_text()
    again = api.train(config, show_progress=False)
    assert again.steps == 20 and "max_steps" in again.stop_reason
    assert (Path(config.train.model_dir) / "train_log.jsonl").read_text() == log

    frozen = tiny_config(
        tmp_path / "frozen",
        train={"max_steps": 100, "validate_every": 10, "patience": 2, "lr": 1e-12, "warmup_steps": 0},
    )
    first = api.train(frozen, show_progress=False)
    assert first.steps == 30 and "early stopping" in first.stop_reason  # BLEU never rises: 2 bad ones
    second = api.train(frozen, show_progress=False)
    assert second.steps == 30 and "early stopping" in second.stop_reason


def test_bf16_autocast_changes_the_numbers_but_not_the_learning(tmp_path: Path) -> None:
    plain = tiny_config(tmp_path / "fp32", train={"max_steps": 30})
    api.train(plain, show_progress=False)
    mixed = tiny_config(tmp_path / "bf16", train={"max_steps": 30, "precision": "bf16"})
    api.train(mixed, show_progress=False)
    fp32, bf16 = losses(Path(plain.train.model_dir)), losses(Path(mixed.train.model_dir))
    assert bf16[1] != fp32[1] and bf16[1] == pytest.approx(fp32[1], rel=2e-2)  # autocast is on, and close
    assert bf16[30] < 0.8 * bf16[1]


def test_plateau_halves_the_rate_after_each_validation_without_gain(tmp_path: Path) -> None:
    config = tiny_config(
        tmp_path,
        train={
            "max_steps": 40,
            "validate_every": 10,
            "schedule": "plateau",
            "plateau_patience": 0,
            "plateau_factor": 0.5,
            "lr": 1e-9,  # BLEU cannot rise: every validation after the first is one without gain
            "warmup_steps": 0,
            "min_lr": 0.0,
        },
    )
    api.train(config, show_progress=False)
    rate = {row["step"]: row["lr"] for row in train_log(Path(config.train.model_dir))}
    assert [rate[s] / 1e-9 for s in (10, 11, 21, 31)] == pytest.approx([1.0, 1.0, 0.5, 0.25])


def test_max_minutes_stops_cleanly_with_a_checkpoint(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, train={"max_steps": 100_000, "max_epochs": 1000, "max_minutes": 0.02})
    result = api.train(config, show_progress=False)
    assert "max_minutes" in result.stop_reason and 0 < result.steps < 100_000
    assert 1.1 < result.minutes * 60 < 30
    latest = CheckpointDir(Path(config.train.model_dir), 0, True).latest()
    assert latest is not None and latest.name == f"step-{result.steps:08d}"


def clocked_cosine(root: Path, **train: Any) -> Config:
    budget = {"max_steps": None, "max_epochs": None, "max_minutes": 10.0, "schedule": "cosine"}
    return tiny_config(root, train={**budget, "warmup_steps": 5, "validate_every": 20, **train})


def test_a_cosine_on_a_clock_budget_anneals_by_the_deadline(tmp_path: Path) -> None:
    config = clocked_cosine(tmp_path, max_minutes=0.25)
    result = api.train(config, show_progress=False)
    fit, *refits = train_log(Path(config.train.model_dir), "schedule")
    assert fit["step"] == 20 and fit["ends"] > 20 and fit["step_seconds"] > 0
    assert [row["step"] for row in refits] == list(range(40, 20 * len(refits) + 21, 20))
    rates = [row["lr"] for row in train_log(Path(config.train.model_dir))]
    assert max(rates) == pytest.approx(config.train.lr) and rates[-1] < 0.3 * config.train.lr
    assert "fitted" in result.stop_reason or "max_minutes" in result.stop_reason
    assert result.minutes < 0.25 * 1.2


def test_a_warm_up_longer_than_the_fitted_schedule_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A budget (a clock or a step count) shorter than the warm-up would keep the learning rate below
    train.lr throughout: said once, when the budget is known."""
    monkeypatch.setattr(trainer_module, "fitted_horizon", lambda *_: 40)
    config = clocked_cosine(tmp_path, warmup_steps=100)
    assert api.train(config, show_progress=False).steps == 40
    (advice,) = train_log(Path(config.train.model_dir), "advice")
    assert advice["condition"] == "warmup_past_end" and advice["step"] == 20
    assert "train.warmup_steps=100" in advice["message"] and "40%" in advice["message"]
    assert "train.max_minutes" in advice["message"]
    assert advice["message"] in "".join(capsys.readouterr())
    monkeypatch.setattr(trainer_module, "fitted_horizon", lambda *_: 120)
    quiet = clocked_cosine(tmp_path / "quiet", warmup_steps=100)
    api.train(quiet, show_progress=False)
    assert not train_log(Path(quiet.train.model_dir), "advice")
    capped = tiny_config(tmp_path / "capped", train={"max_steps": 30, "warmup_steps": 60})
    api.train(capped, show_progress=False)
    (advice,) = train_log(Path(capped.train.model_dir), "advice")
    assert advice["step"] == 0 and "train.max_steps" in advice["message"] and "50%" in advice["message"]


def test_a_machine_that_slows_down_still_anneals_by_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps that become several times slower after the first fit: the next validation pulls the end in,
    so the clock does not cut the cosine near its start."""
    update = trainer_module.Trainer._update

    def slower_after_the_first_fit(self: Any, units: Any, name: str, group: Any, *rest: Any) -> Any:
        if rest[-1] > 10:  # the step number
            time.sleep(0.05)
        return update(self, units, name, group, *rest)

    monkeypatch.setattr(trainer_module.Trainer, "_update", slower_after_the_first_fit)
    config = clocked_cosine(tmp_path, max_minutes=0.08, validate_every=10)
    result = api.train(config, show_progress=False)
    fits = train_log(Path(config.train.model_dir), "schedule")
    assert [fit["step"] for fit in fits[:3]] == [10, 20, 30] and fits[1]["ends"] < 0.5 * fits[0]["ends"]
    assert fits[1]["step_seconds"] > 2 * fits[0]["step_seconds"]
    rates = [row["lr"] for row in train_log(Path(config.train.model_dir))]
    assert rates[-1] < 0.3 * config.train.lr and "fitted" in result.stop_reason


def test_a_fitted_schedule_is_kept_through_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A killed run resumes with the end it stored, exactly as if never stopped, until its next validation
    fits the end again."""
    monkeypatch.setattr(trainer_module, "fitted_horizon", lambda *_: 50)
    whole = clocked_cosine(tmp_path / "whole")
    assert api.train(whole, show_progress=False).steps == 50
    cut = clocked_cosine(tmp_path / "cut")
    log_window = trainer_module.Trainer._log_window

    def interrupt_at_35(self: Any, window: Any, progress: Any, *rest: Any) -> None:
        if progress.step == 35:
            raise KeyboardInterrupt
        log_window(self, window, progress, *rest)

    monkeypatch.setattr(trainer_module.Trainer, "_log_window", interrupt_at_35)
    assert "interrupted" in api.train(cut, show_progress=False).stop_reason
    monkeypatch.setattr(trainer_module.Trainer, "_log_window", log_window)
    fitted_at = []

    def fit_after_the_resume(step: int, *_: Any) -> int:
        fitted_at.append(step)
        return 50

    monkeypatch.setattr(trainer_module, "fitted_horizon", fit_after_the_resume)
    resumed = api.train(cut, show_progress=False)
    assert fitted_at == [40]
    assert resumed.steps == 50 and "fitted" in resumed.stop_reason
    for kind, keys in (("train", ("step", "loss", "lr")), ("schedule", ("step", "ends"))):
        seen = [[row[key] for key in keys] for row in train_log(Path(cut.train.model_dir), kind)]
        assert seen == [[row[key] for key in keys] for row in train_log(Path(whole.train.model_dir), kind)]
    monkeypatch.setattr(trainer_module, "fitted_horizon", lambda *_: 80)  # another budget: fitted again
    assert api.train(clocked_cosine(tmp_path / "cut", max_minutes=20.0), show_progress=False).steps == 80
