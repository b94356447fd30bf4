"""Drills: a full disk, a read-only disk and SIGKILL at random moments, run through the CLI as a user would.

The disks are small tmpfs mounts (root only: the drills skip, saying so, where mounting is not allowed). After
every failure the error is one line naming the place and the fix, what was written before is intact, and the
same command finishes the work once the disk has room again, with the losses of an uninterrupted run.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import losses, tiny_config, write_reverse_corpus

from seqsmith import api
from seqsmith.config import Config
from seqsmith.models.model_dir import load_model_dir

TRAIN = {"max_steps": 20, "checkpoint_every": 10, "validate_every": 10, "keep_best": 2}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): the disk drills need root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seqsmith.cli", *arguments], capture_output=True, text=True, timeout=300
    )


def write_config(config: Config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    return path


def fill(disk: Path, leave: int) -> Path:
    """Take all of the disk's free space but ``leave`` bytes."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as handle:
        handle.truncate(0)
        handle.write(b"\0" * max(free - leave, 0))
    return filler


def one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("seqsmith: error: "), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert all(word in lines[-1] for word in words), lines[-1]


@pytest.mark.may_skip
def test_a_full_disk_during_training_loses_nothing(tmp_path: Path, small_disk: Path) -> None:
    reference = tiny_config(tmp_path / "reference", train={**TRAIN, "max_steps": 40})
    api.train(reference, show_progress=False)
    config = tiny_config(tmp_path / "run", train={**TRAIN, "model_dir": str(small_disk / "model")})
    path = write_config(config, tmp_path / "config.yaml")
    assert cli("train", str(path)).returncode == 0
    filler = fill(small_disk, leave=40_000)
    one_line_error(
        cli("train", str(path), "train.max_steps=40"), "No space left on device", "free some space"
    )
    load_model_dir(small_disk / "model")  # the model directory still loads
    filler.unlink()
    assert cli("train", str(path), "train.max_steps=40").returncode == 0
    assert losses(small_disk / "model") == losses(Path(reference.train.model_dir))


@pytest.mark.may_skip
def test_a_full_or_read_only_disk_keeps_the_prepared_data(tmp_path: Path, small_disk: Path) -> None:
    config = tiny_config(tmp_path, data={"output_dir": str(small_disk / "data")})
    path = write_config(config, tmp_path / "config.yaml")
    assert cli("prepare", str(path)).returncode == 0
    before = {p.name: p.read_bytes() for p in (small_disk / "data").iterdir() if p.is_file()}
    filler = fill(small_disk, leave=2_000)
    one_line_error(cli("prepare", str(path)), "No space left on device")
    after = {p.name: p.read_bytes() for p in (small_disk / "data").iterdir() if p.is_file()}
    assert after == before
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    one_line_error(cli("prepare", str(path)), "Read-only file system", "writable")
    read_only_model = f"train.model_dir={small_disk / 'model'}"
    one_line_error(cli("train", str(path), read_only_model), "Read-only file system", "writable")
    assert cli("train", str(path), "train.max_steps=5").returncode == 0  # the data still reads


def sigkill_drill(tmp_path: Path, kills: int) -> None:
    """SIGKILL a training ``kills`` times at random moments once it is under way (saves every 5 updates
    and validations every 50 take a good share of its time), resuming each time; then it finishes with the
    losses and a model directory of an uninterrupted run."""
    steps = 100 * kills  # about 0.5 s of training for each kill on this machine
    train = {
        "max_steps": steps,
        "checkpoint_every": 5,
        "validate_every": 50,
        "keep_best": 2,
        "max_epochs": 999,
    }
    reference = tiny_config(tmp_path / "reference", train=train)
    api.train(reference, show_progress=False)
    config = tiny_config(tmp_path / "run", train=train)
    api.prepare(config, show_progress=False)
    path = write_config(config, tmp_path / "config.yaml")
    log = Path(config.train.model_dir) / "train_log.jsonl"
    rng = random.Random(0)
    command = [sys.executable, "-m", "seqsmith.cli", "train", str(path)]
    killed = 0
    for _ in range(kills):
        rows = len(log.read_text().splitlines()) if log.exists() else 0
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while child.poll() is None and (len(log.read_text().splitlines()) if log.exists() else 0) <= rows:
            time.sleep(0.01)  # until the resumed run has trained a step
        time.sleep(rng.uniform(0.0, 0.4))
        killed += child.poll() is None
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert killed >= kills // 2, f"only {killed} of {kills} kills landed before the training ended"
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert losses(Path(config.train.model_dir)) == losses(Path(reference.train.model_dir))
    load_model_dir(config.train.model_dir)


def test_sigkill_at_3_random_moments(tmp_path: Path) -> None:
    sigkill_drill(tmp_path, 3)


@pytest.mark.slow
def test_sigkill_at_20_random_moments(tmp_path: Path) -> None:
    sigkill_drill(tmp_path, 20)


def snapshot(directory: Path) -> dict[str, object]:
    """A prepared directory's files, its report without what differs between runs (time, place)."""
    files: dict[str, object] = {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }
    report = json.loads(files.pop("report.json"))  # type: ignore[arg-type]
    files["report.json"] = {k: v for k, v in report.items() if k not in ("seconds", "output_dir")}
    return files


def test_sigkill_during_prepare_leaves_the_old_data_or_the_new(tmp_path: Path) -> None:
    """Kill prepare at 3 random moments while it writes (a corpus of 60k pairs takes a few seconds): the
    earlier prepared data stays whole each time, and the next run writes exactly what an uninterrupted one
    writes."""
    paths = write_reverse_corpus(tmp_path / "big", {"train": 60_000, "dev": 200, "test": 200}, seed=3)
    data = {split: str(path) for split, path in paths.items()}
    reference = tiny_config(tmp_path / "reference", data=data)
    api.prepare(reference, show_progress=False)
    expected = snapshot(Path(reference.data.output_dir))
    config = tiny_config(tmp_path / "run", data=data)
    path = write_config(config, tmp_path / "config.yaml")
    output = Path(config.data.output_dir)
    small = tiny_config(tmp_path / "run")  # the same output directory, prepared first from a small corpus
    api.prepare(small, show_progress=False)
    old = snapshot(output)
    rng = random.Random(1)
    partial = output.with_name(output.name + ".partial")
    killed_while_writing = 0
    command = [sys.executable, "-m", "seqsmith.cli", "prepare", str(path)]
    for _ in range(3):
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while child.poll() is None and not partial.exists():
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0))
        killed_while_writing += child.poll() is None
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert snapshot(output) in (old, expected)
    assert killed_while_writing, "every prepare finished before its kill: the drill needs a larger corpus"
    assert cli("prepare", str(path)).returncode == 0
    assert snapshot(output) == expected
