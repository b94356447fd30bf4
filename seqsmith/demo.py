"""The built-in demo corpus: dates written the many ways people write them -> ISO 8601.

It is made by this code (no download, no licence question), needs a real encoder-decoder with attention
(month names, day order, two-digit years, ordinals), and trains to near-perfect output in minutes on a CPU.
"""

from __future__ import annotations

import datetime
import random
from pathlib import Path

from seqsmith.config import Config, config_from_dict

MONTHS = [datetime.date(2000, m, 1).strftime("%B") for m in range(1, 13)]
ORDINAL = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}


def _ordinal(day: int) -> str:
    return f"{day}{ORDINAL.get(day, 'th')}"


def spell_date(date: datetime.date, rng: random.Random) -> str:
    """One of many human spellings of ``date``; two-digit years mean 1950-2049."""
    month, short = MONTHS[date.month - 1], MONTHS[date.month - 1][:3]
    weekday = date.strftime("%A")
    year = rng.choice([str(date.year), str(date.year), f"'{date.year % 100:02d}"])
    forms = [
        f"{month} {date.day}, {year}",
        f"{date.day} {month} {year}",
        f"the {_ordinal(date.day)} of {month} {year}",
        f"{short} {date.day} {year}",
        f"{short}. {_ordinal(date.day)}, {year}",
        f"{weekday}, {month} {_ordinal(date.day)} {year}",
        f"{date.day:02d}.{date.month:02d}.{date.year}",
        f"{date.year}/{date.month}/{date.day}",
        f"{weekday[:3]} {date.day} {short} {year}",
    ]
    text = rng.choice(forms)
    return rng.choice([text, text, text.lower(), text.upper()])


def make_pairs(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    first, span = datetime.date(1950, 1, 1).toordinal(), 100 * 365
    pairs = []
    for _ in range(count):
        date = datetime.date.fromordinal(first + rng.randrange(span))
        pairs.append((spell_date(date, rng), date.isoformat()))
    return pairs


def write_corpus(directory: Path, train: int = 20_000, dev: int = 500, test: int = 500) -> dict[str, Path]:
    """Write train/dev/test TSV files (seeded, so every machine gets the same corpus)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for offset, (split, count) in enumerate([("train", train), ("dev", dev), ("test", test)]):
        path = directory / f"{split}.tsv"
        lines = (f"{source}\t{target}\n" for source, target in make_pairs(count, seed=offset + 7))
        path.write_text("".join(lines), encoding="utf-8")
        paths[split] = path
    return paths


def demo_config(workdir: Path, minutes: float) -> Config:
    paths = write_corpus(workdir / "corpus")
    return config_from_dict(
        {
            "data": {
                "format": "tsv",
                "train": str(paths["train"]),
                "dev": str(paths["dev"]),
                "test": str(paths["test"]),
                "tokenizer": {"kind": "char", "joint": True},
                "max_source_length": 64,
                "max_target_length": 16,
                "output_dir": str(workdir / "data"),
            },
            "model": {
                "arch": "transformer",
                "d_model": 128,
                "heads": 4,
                "ffn_dim": 256,
                "encoder_layers": 2,
                "decoder_layers": 2,
                "dropout": 0.1,
            },
            "train": {
                "model_dir": str(workdir / "model"),
                "lr": 2e-3,
                "warmup_steps": 200,
                "batch_tokens": 3000,
                "max_minutes": minutes,
                "max_steps": 3000,
                "validate_every": 250,
                "checkpoint_every": 250,
                "log_every": 25,
                "patience": 4,
            },
            "generate": {"method": "beam", "beam_size": 4, "max_length_a": 0.0, "max_length_b": 14},
        },
        source="the built-in demo",
    )
